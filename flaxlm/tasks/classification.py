"""Sequence classification (single sentences or sentence pairs): data, encoding, loss and metrics.

Built-in data: "movie_sentiment", the 10,605 movie-review snippets (Pang &
Lee's sentences) that Hutto & Gilbert (VADER, ICWSM 2014) had rated by 20
people each on -4..+4; the file is
additional_resources/hutto_ICWSM_2014.tar.gz:hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt
in the vaderSentiment==3.3.2 sdist (MIT licence). Binary labels: mean rating
>= +0.5 is positive (1), <= -0.5 negative (0); the 533 snippets in between
are dropped as neutral, and a repeated text is kept once. That leaves 10,070
snippets, 49.6% positive, split 80/10/10 by the hash of the text
(`common.split_of`).

Your own data: JSON lines with "text" (or "text_a" and "text_b" for pairs)
and "label" (a string or an int), one file per split.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm import files
from flaxlm.errors import DataError
from flaxlm.tasks import common
from flaxlm.tasks import metrics
from flaxlm.tasks import sources

NEUTRAL_BAND = 0.5  # |mean rating| below this is neither positive nor negative
MOVIE_MEMBERS = (
    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
    "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
)
MOVIE_CACHE = "movie_snippets_v1.jsonl"
SENTIMENT_LABELS = ("negative", "positive")


def parse_movie_snippets(text: str) -> list[dict]:
    """movieReviewSnippets_GroundTruth.txt (id TAB mean rating TAB text, CRLF lines) -> rows."""
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"movie snippets line {i}: expected id, rating and text separated by tabs")
        rows.append({"id": parts[0], "rating": float(parts[1]), "text": parts[2].strip()})
    return rows


def sentiment_examples(rows: list[dict], band: float = NEUTRAL_BAND) -> list[dict]:
    """Rated rows -> {"text", "label"} (1 positive, 0 negative), neutral band dropped, texts unique."""
    seen, out = set(), []
    for row in rows:
        if abs(row["rating"]) < band or row["text"] in seen:
            continue
        seen.add(row["text"])
        out.append({"text": row["text"], "label": int(row["rating"] > 0)})
    return out


def load_movie_snippets(data_dir: str) -> list[dict]:
    """The rated snippets, from DATA_DIR/finetune/movie_snippets_v1.jsonl (made from the sdist once)."""
    cache = os.path.join(data_dir, "finetune", MOVIE_CACHE)
    if not os.path.exists(cache):
        archive = sources.fetch(sources.VADER, data_dir, "the movie-review sentiment data")
        rows = parse_movie_snippets(sources.read_member(archive, *MOVIE_MEMBERS).decode("utf-8"))
        with files.atomic_path(cache) as tmp:
            common.write_jsonl(tmp, rows)
    return common.read_jsonl(cache)


def _file_examples(path: str) -> list[dict]:
    out = []
    for i, row in enumerate(common.read_jsonl(path), 1):
        a = row.get("text", row.get("text_a"))
        if not isinstance(a, str) or "label" not in row:
            raise DataError(
                f"{path}:{i}: expected 'text' (or 'text_a' and 'text_b') and 'label' in each JSON line"
            )
        b = row.get("text_b")
        out.append({"text": a, "text_b": b if isinstance(b, str) else None, "label": row["label"]})
    return out


def _index_labels(splits: dict[str, list[dict]], source: str) -> tuple[str, ...]:
    """Turns the files' labels into ids in place; returns the label names.

    Integer labels keep their values (names "0", "1", ...); strings are
    numbered in sorted order.
    """
    raw = sorted({ex["label"] for exs in splits.values() for ex in exs}, key=lambda x: (str(type(x)), x))
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        if raw[0] < 0:
            raise DataError(f"label {raw[0]} in {source} or its dev/test files is negative")
        names, to_id = tuple(str(i) for i in range(max(raw) + 1)), {x: x for x in raw}
    else:
        names, to_id = tuple(str(x) for x in raw), {x: i for i, x in enumerate(raw)}
    for exs in splits.values():
        for ex in exs:
            ex["label"] = to_id[ex["label"]]
    return names


class ClassificationTask:
    """One label per input; accuracy and F1 (binary F1 of label 1 for 2 labels, macro-F1 for more)."""

    head = "sequence"

    def __init__(self, task_cfg, splits: dict[str, list[dict]], labels: tuple[str, ...]):
        """splits: {"train", "dev", "test"} -> [{"text", "text_b" (optional), "label": int}]."""
        if len(labels) < 2:
            raise DataError(f"the classification data has {len(labels)} label(s); it needs at least 2")
        self.cfg = task_cfg
        self.splits = splits
        self.labels = tuple(labels)
        self.num_labels = len(self.labels)

    @classmethod
    def load(cls, task_cfg, data_dir: str) -> "ClassificationTask":
        """The user's files (config.task.*_file) or the built-in set, fetched into `data_dir` once."""
        if task_cfg.train_file:
            splits = {s: _file_examples(task_cfg[f"{s}_file"]) for s in common.SPLITS}
            return cls(task_cfg, splits, _index_labels(splits, task_cfg.train_file))
        if task_cfg.dataset == "movie_sentiment":
            examples = sentiment_examples(load_movie_snippets(data_dir))
            return cls(task_cfg, common.split_by_key(examples, lambda ex: ex["text"]), SENTIMENT_LABELS)
        raise DataError(
            f"config.task.dataset={task_cfg.dataset!r} is not a classification set; "
            "use 'movie_sentiment' or give --config.task.train_file/dev_file/test_file"
        )

    def encode(self, examples: list[dict], tok, arch: str) -> common.Features:
        T = self.cfg.max_seq_len
        texts_a = tok.encode_batch([ex["text"] for ex in examples])
        rows = []
        for ex, a in zip(examples, texts_a):
            b = tok.encode(ex["text_b"]) if ex.get("text_b") is not None else None
            a, b = common.truncate_pair(a, b, T - common.special_count(arch, b is not None))
            rows.append(common.join_pair(tok, arch, a, b))
        arrays = common.pad_rows(rows, T, tok.pad_id)
        arrays["label"] = np.asarray([ex["label"] for ex in examples], np.int32)
        return common.Features(arrays)

    def loss(self, logits_BL: jax.Array, batch) -> tuple[jax.Array, dict]:
        ce_B = common.cross_entropy(logits_BL, batch["label"])
        w_B = batch["weight"]
        loss = jnp.sum(ce_B * w_B) / jnp.maximum(jnp.sum(w_B), 1.0)
        return loss, {"loss": loss}

    def predict(self, logits_BL: jax.Array):
        return jnp.argmax(logits_BL, axis=-1)

    def score(self, predictions: np.ndarray, features: common.Features, examples) -> dict[str, float]:
        gold = features.arrays["label"]
        out = {"accuracy": metrics.accuracy(predictions, gold)}
        if self.num_labels == 2:
            out["f1"] = metrics.binary_f1(predictions, gold, positive=1)
        else:
            out["macro_f1"] = metrics.macro_f1(predictions, gold, self.num_labels)
        return out
