"""Trivial baselines scored on the very targets a model is evaluated on.

A held-out MLM loss of 6.3 means little alone; 0.3 nats below a unigram model
of the training tokens says the model has learned almost nothing beyond token
frequencies. Every evaluation therefore logs, next to the model's metrics:

* `unigram_{mlm,lm}_loss` / `_accuracy`: a unigram model of the training split's
  tokens (add-one smoothed counts), scored on the same held-out targets: the
  masked positions for MLM, the next tokens for causal LM. Its accuracy is
  always predicting the most frequent training token.
* `majority_{nsp,sop}_accuracy`: always predicting the training split's more
  frequent pair label.

The counts are read once from the prepared train split and cached beside it.
"""

import json
import logging
import os

import numpy as np

from flaxlm import files, objectives
from flaxlm.data import builders

log = logging.getLogger(__name__)

_CACHE = "flaxlm_unigram.json"


def original_ids(example) -> np.ndarray:
    """The example's tokens before masking (static masks replaced input_ids at preparation)."""
    ids = np.array(example["input_ids"], np.int64)
    if "mlm_positions" in example:
        w = np.asarray(example["mlm_weights"]) > 0
        ids[np.asarray(example["mlm_positions"])[w]] = np.asarray(example["mlm_targets"])[w]
    return ids


def train_statistics(data) -> dict:
    """Token counts and pair-label counts of `data`'s train split (`data`: prepare.PreparedData).

    Counts the tokens a model is asked to predict: every non-special token for an
    encoder (MLM never targets [CLS]/[SEP]/[PAD]), every real token for a decoder
    (its end-of-document token is a target too). Cached as JSON in the prepared folder.
    """
    path = os.path.join(data.path, _CACHE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    tok, causal = data.tokenizer, data.settings.builder in ("causal", "prefix_lm")
    # T5's objectives: the decoder's targets, sentinels and end-of-piece token included.
    spans = data.settings.builder in builders.SEQ2SEQ_BUILDERS
    special = [tok.pad_id, tok.cls_id, tok.mask_id] + ([] if causal or spans else [tok.sep_id])
    counts = np.zeros(data.settings.model_vocab_size if spans else tok.vocab_size, np.int64)
    labels = np.zeros(2, np.int64)
    for i in range(len(data.train)):
        ex = data.train[i]
        if spans:
            ids = np.asarray(ex["targets"], np.int64)[np.asarray(ex["decoder_segment_ids"]) > 0]
        else:
            ids = original_ids(ex)[np.asarray(ex["segment_ids"]) > 0]
        counts += np.bincount(ids, minlength=len(counts))
        if "pair_label" in ex:
            labels[int(ex["pair_label"])] += 1
    counts[special] = 0
    stats = {"token_counts": counts.tolist(), "pair_label_counts": labels.tolist()}
    files.write_atomic(path, json.dumps(stats))
    log.info("unigram baseline: %d training tokens counted", int(counts.sum()))
    return stats


def unigram_log_probs(token_counts) -> np.ndarray:
    """log p(token) of the add-one smoothed unigram model, [vocab] float64."""
    c = np.asarray(token_counts, np.float64) + 1.0
    return np.log(c / c.sum())


def _next_token_targets(batch):
    """(targets, weights) of causal LM, as objectives.causal_lm_loss counts them (a prefix LM's:
    only targets outside the prefix)."""
    ids, seg = np.asarray(batch["input_ids"]), np.asarray(batch["segment_ids"])
    targets = np.concatenate([ids[:, 1:], np.zeros_like(ids[:, :1])], axis=1)
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    if "prefix_mask" in batch:
        same &= np.asarray(batch["prefix_mask"])[:, 1:] == 0
    return targets, np.concatenate([same, np.zeros_like(same[:, :1])], axis=1).astype(np.float64)


def evaluate(stats: dict, batches, objective: str) -> dict[str, float]:
    """The baselines' metrics on `batches` (the evaluation's own list), named like the model's."""
    logp = unigram_log_probs(stats["token_counts"])
    top = int(np.argmax(stats["token_counts"]))
    lm = objectives.is_decoder_only(objective) or objectives.is_seq2seq(objective)
    name = "lm" if lm else "mlm"
    nll = correct = total = 0.0
    labels = np.zeros(2)
    for batch in batches:
        if objectives.is_decoder_only(objective):
            targets, weights = _next_token_targets(batch)
        elif objectives.is_seq2seq(objective):
            targets = np.asarray(batch["targets"])
            weights = (np.asarray(batch["decoder_segment_ids"]) != 0).astype(np.float64)
        else:
            targets, weights = np.asarray(batch["mlm_targets"]), np.asarray(batch["mlm_weights"], np.float64)
        nll -= float((logp[targets] * weights).sum())
        correct += float(((targets == top) * weights).sum())
        total += float(weights.sum())
        if "pair_label" in batch:
            labels += np.bincount(np.asarray(batch["pair_label"]).reshape(-1), minlength=2)
    out = {
        f"unigram_{name}_loss": nll / max(total, 1e-9),
        f"unigram_{name}_accuracy": correct / max(total, 1e-9),
    }
    if objective in ("mlm_nsp", "mlm_sop") and labels.sum():
        majority = int(np.argmax(stats["pair_label_counts"]))
        out[f"majority_{objective[4:]}_accuracy"] = float(labels[majority] / labels.sum())
    return out


def summary(model_metrics: dict, baseline: dict) -> str:
    """One line: the model's held-out metrics against the baselines' ("mlm_loss 5.10 (unigram 6.67, 1.57
    nats below), nsp_accuracy 0.812 (majority 0.516)")."""
    parts = []
    for name in ("mlm", "lm"):
        if f"unigram_{name}_loss" in baseline and f"{name}_loss" in model_metrics:
            m, u = model_metrics[f"{name}_loss"], baseline[f"unigram_{name}_loss"]
            parts.append(f"{name}_loss {m:.3f} (unigram {u:.3f}, {u - m:.2f} nats below)")
    for name in ("nsp", "sop"):
        if f"majority_{name}_accuracy" in baseline and f"{name}_accuracy" in model_metrics:
            m, b = model_metrics[f"{name}_accuracy"], baseline[f"majority_{name}_accuracy"]
            parts.append(f"{name}_accuracy {m:.3f} (majority label {b:.3f})")
    return ", ".join(parts)
