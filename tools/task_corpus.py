"""A fine-tuning task's unlabeled training text as a pretraining corpus (task-adaptive pretraining).

  python tools/task_corpus.py --out=/tmp/movie_train.jsonl
  flaxlm train --config=configs/bert_tiny.py --workdir=/tmp/self_pretrained \
      --config.data.corpus=/tmp/movie_train.jsonl --config.train.num_steps=600
  flaxlm train --config=configs/bert_tiny.py --workdir=/tmp/mixed \
      --config.data.corpus=default,/tmp/movie_train.jsonl

Writes the texts of the movie-review sentiment snippets (`flaxlm finetune`'s
built-in "movie_sentiment" set, fetched once into the data dir) that fall in
the task's *train* split, without their labels, as corpus JSON lines
(flaxlm.data.corpus): one document per `--per_document` consecutive snippets,
one paragraph per snippet, source "movie_snippets_train". Snippets are placed
by the task's own split function (flaxlm.tasks.common.split_of on the text),
so no dev or test text is ever written; the neutral snippets the task drops
are kept when their text hashes to train (they have no label to leak). This
is the "self-pretraining" of Krishna et al. (2022) and the task-adaptive
pretraining of Gururangan et al. (2020); docs/cpu_recipe.md has what it did
for bert_tiny.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from flaxlm import files  # noqa: E402
from flaxlm.errors import FlaxlmError  # noqa: E402
from flaxlm.tasks import classification  # noqa: E402
from flaxlm.tasks import common  # noqa: E402

SOURCE = "movie_snippets_train"


def split_texts(rows: list[dict], split: str = "train") -> list[str]:
    """The distinct snippet texts of `split`, in file order, labelled or not."""
    seen, out = set(), []
    for row in rows:
        text = row["text"]
        if text and text not in seen and common.split_of(text) == split:
            seen.add(text)
            out.append(text)
    return out


def documents(texts: list[str], per_document: int) -> list[dict]:
    """Corpus JSON objects: `per_document` consecutive texts each, one paragraph per text."""
    return [
        {"id": f"{SOURCE}/{k}", "source": SOURCE, "text": "\n\n".join(texts[i : i + per_document])}
        for k, i in enumerate(range(0, len(texts), per_document))
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the .jsonl file to write")
    p.add_argument("--per_document", type=int, default=20, help="snippets per corpus document (default 20)")
    p.add_argument("--data_dir", default="", help="the task data's cache (default: flaxlm's)")
    args = p.parse_args(argv)
    if args.per_document < 1:
        print(f"task_corpus: --per_document={args.per_document}; give 1 or more", file=sys.stderr)
        return 2
    from flaxlm.data import prepare

    try:
        rows = classification.load_movie_snippets(args.data_dir or prepare.default_data_dir())
    except FlaxlmError as e:
        print(f"task_corpus: {e}", file=sys.stderr)
        return 1
    texts = split_texts(rows)
    docs = documents(texts, args.per_document)
    out = os.path.abspath(args.out)
    with files.atomic_path(out) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    words = sum(len(t.split()) for t in texts)
    print(f"{out}: {len(docs)} documents, {len(texts)} train-split snippets, {words} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
