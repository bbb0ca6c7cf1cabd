"""What every fine-tuning task shares: the fixed train/dev/test split, input layout and padded features.

Input layout (T = max_seq_len). BERT: [CLS] a [SEP] (b [SEP]) with token
types 0 for [CLS] a [SEP] and 1 for b [SEP]. GPT has no [CLS]: a [SEP] (b [SEP]),
so its last real token, the one the sequence classifier reads, is a [SEP]
that has seen the whole input (pretraining ends every document with [SEP]).
Rows are left-aligned: real tokens first, then [PAD]; segment_ids are 1 on
real tokens and 0 on padding, positions count from 0.
"""

import dataclasses
import hashlib
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm.errors import DataError

SPLITS = ("train", "dev", "test")
SPLIT_SALT = "flaxlm-finetune-split-v1"
DEV_FRACTION = 0.1
TEST_FRACTION = 0.1
MODEL_KEYS = ("input_ids", "token_type_ids", "segment_ids", "positions")


def split_of(key: str) -> str:
    """ "train", "dev" or "test" for an example key, from a salted SHA-1: never changes, needs no list.

    The first 8 bytes of sha1(SPLIT_SALT + key) as a fraction u in [0, 1):
    u < 0.1 is test, u < 0.2 is dev, the rest train (80/10/10).
    """
    digest = hashlib.sha1(f"{SPLIT_SALT}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < TEST_FRACTION:
        return "test"
    if u < TEST_FRACTION + DEV_FRACTION:
        return "dev"
    return "train"


def split_by_key(examples: list, key_fn) -> dict[str, list]:
    """{"train": [...], "dev": [...], "test": [...]} by `split_of(key_fn(example))`, order kept."""
    out = {s: [] for s in SPLITS}
    for ex in examples:
        out[split_of(key_fn(ex))].append(ex)
    return out


def subsample(examples: list, n: int) -> list:
    """A fixed pseudo-random n of `examples` (same list in, same subset out), in their original order."""
    keep = np.sort(np.random.default_rng(0).permutation(len(examples))[:n])
    return [examples[i] for i in keep]


@dataclasses.dataclass
class Features:
    """Encoded examples of one split.

    arrays: what the model step reads, each [N, ...] (the MODEL_KEYS, the
      task's targets and `weight`, 1.0 per real example).
    meta: host-only arrays or lists the metrics need (e.g. token -> word maps).
    """

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arrays["input_ids"])


def truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None]:
    """Drops tokens from the end of the longer of a and b until together they fit `budget`."""
    a = list(a)
    b = None if b is None else list(b)
    while len(a) + (len(b) if b is not None else 0) > budget:
        if b is not None and len(b) > len(a):
            b.pop()
        else:
            a.pop()
    return a, b


def special_count(arch: str, pair: bool) -> int:
    """How many special tokens `join_pair` adds."""
    return (1 if arch == "bert" else 0) + (2 if pair else 1)


def join_pair(tok, arch: str, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
    """(ids, token_types) of the layout in the module docstring."""
    head = [tok.cls_id] if arch == "bert" else []
    ids = head + list(a) + [tok.sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += list(b) + [tok.sep_id]
        types += [1] * (len(b) + 1)
    return ids, types


def pad_rows(rows: list[tuple[list[int], list[int]]], max_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """(ids, token_types) rows of length <= max_len -> the MODEL_KEYS arrays [N, max_len] and weight [N]."""
    n = len(rows)
    out = {k: np.zeros((n, max_len), np.int32) for k in MODEL_KEYS}
    out["input_ids"][:] = pad_id
    for i, (ids, types) in enumerate(rows):
        if len(ids) > max_len:
            raise ValueError(f"row {i} has {len(ids)} tokens > max_len {max_len}")
        t = len(ids)
        out["input_ids"][i, :t] = ids
        out["token_type_ids"][i, :t] = types
        out["segment_ids"][i, :t] = 1
        out["positions"][i, :t] = np.arange(t)
    out["weight"] = np.ones((n,), np.float32)
    return out


def read_jsonl(path: str) -> list[dict]:
    """JSON objects, one per non-blank line; a bad line or a missing file is a one-line DataError."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (offset {e.start}); re-encode it as UTF-8") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: not JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no examples; expected one JSON object per line")
    return rows


def write_jsonl(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def cross_entropy(logits_XL: jax.Array, labels_X: jax.Array) -> jax.Array:
    """Per-item CE in float32 over the last axis; labels outside [0, L) are clipped (weight them out)."""
    logits_XL = logits_XL.astype(jnp.float32)
    labels_X = jnp.clip(labels_X, 0, logits_XL.shape[-1] - 1)
    target_X = jnp.take_along_axis(logits_XL, labels_X[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits_XL, axis=-1) - target_X
