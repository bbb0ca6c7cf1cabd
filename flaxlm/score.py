"""Sentence scores under a language model: log-probability (causal LM) and pseudo-log-likelihood (masked LM).

Causal LM (`clm_scores`): log p(x) = sum_t log p(x_t | x_<t), natural log,
over every token that has a context. flaxlm decoders are trained on packed
documents that never attend across the separator, so a sentence's first token
has no context and is not scored (n tokens -> n - 1 scored); a model given a
`bos_id` (GPT-2: <|endoftext|>) gets it prepended and scores all n tokens.
Perplexity over a set of sentences is exp(-sum log p / sum tokens scored).

Masked LM (`pll_scores`): the pseudo-log-likelihood of Salazar et al. (2020,
"Masked Language Model Scoring"), PLL(x) = sum_t log p(x_t | x with x_t
replaced by [MASK]), each sentence encoded as [CLS] x [SEP]. Every token
needs its own masked copy; copies of many sentences share each forward batch,
and only the masked position goes through the vocabulary projection.
Pseudo-perplexity is exp(-sum PLL / sum tokens).

Sentences are batched by length (rounded up to a multiple of 16, so a file
compiles a handful of shapes) in batches of a fixed number of rows.
"""

import dataclasses
import functools
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlm import objectives
from flaxlm.errors import FlaxlmError

LENGTH_BUCKET = 16  # Sequence lengths are padded up to a multiple of this.
# Per mode: the names of a sentence's score and of the perplexity derived from it.
FIELDS = {"clm": ("log_prob", "perplexity"), "pll": ("pll", "pseudo_perplexity")}


class ScoreError(FlaxlmError):
    """A scoring request that cannot run: input file problems, a sentence too long, a wrong mode."""


@dataclasses.dataclass(frozen=True)
class Scores:
    """log_probs: float64 [N] per-sentence sum of log-probabilities (CLM) or PLL (MLM), natural log.
    num_tokens: int64 [N] tokens scored per sentence (0: nothing to score, log_prob 0)."""

    log_probs: np.ndarray
    num_tokens: np.ndarray


def _bucket(length: int, max_len: int) -> int:
    """length rounded up to a multiple of LENGTH_BUCKET (at least one; an empty sentence scores 0)."""
    return min(max(-(-length // LENGTH_BUCKET), 1) * LENGTH_BUCKET, max_len)


def _check_lengths(lengths: Sequence[int], max_len: int, extra: str) -> None:
    for i, n in enumerate(lengths):
        if n > max_len:
            raise ScoreError(
                f"sentence {i + 1} has {n} tokens{extra}, more than the model's max_len={max_len} "
                "positions; split it into shorter sentences"
            )


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_len: int):
    """Yields (indices, padded length): consecutive runs of `order` with the same length bucket."""
    start = 0
    while start < len(order):
        bucket = _bucket(int(lengths[order[start]]), max_len)
        end = start
        while (
            end < len(order)
            and end - start < batch_size
            and _bucket(int(lengths[order[end]]), max_len) == bucket
        ):
            end += 1
        yield order[start:end], bucket
        start = end


# ----------------------------------------------------------------------------- causal LM


# The model is a static argument (flax modules hash by their config): one compilation per model
# and batch shape, reused across calls.
@functools.partial(jax.jit, static_argnames="model")
def _clm_sums(model, params, ids_BT, segment_ids_BT, positions_BT):
    """(sum of log p(x_t | x_<t), tokens scored) per row, float32/int32 [B]."""
    logits_BTV = model.apply({"params": params}, ids_BT, segment_ids_BT, positions_BT, deterministic=True)
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    target_BT = jnp.concatenate([ids_BT[:, 1:], jnp.zeros_like(ids_BT[:, :1])], axis=1)
    logp_BT = jnp.take_along_axis(logp_BTV, target_BT[:, :, None], axis=-1)[:, :, 0]
    weights_BT = objectives.next_token_weights(segment_ids_BT)
    return jnp.sum(logp_BT * weights_BT, axis=1), jnp.sum(weights_BT, axis=1).astype(jnp.int32)


def clm_scores(
    model,
    params,
    sentences: Sequence[Sequence[int]],
    *,
    bos_id: int | None = None,
    pad_id: int = 0,
    batch_size: int = 32,
) -> Scores:
    """Log-probabilities of token-id sentences under a GPTDecoder (see the module docstring)."""
    rows = [([bos_id] if bos_id is not None else []) + list(s) for s in sentences]
    max_len = model.config.max_len
    lengths = np.array([len(r) for r in rows], np.int64)
    _check_lengths(lengths, max_len, " (with the start token)" if bos_id is not None else "")
    sums = np.zeros(len(rows), np.float64)
    counts = np.zeros(len(rows), np.int64)
    order = np.argsort(lengths, kind="stable")
    for idx, t in _batches(order, lengths, batch_size, max_len):
        ids = np.full((batch_size, t), pad_id, np.int32)
        seg = np.zeros((batch_size, t), np.int32)
        for r, i in enumerate(idx):
            ids[r, : lengths[i]] = rows[i]
            seg[r, : lengths[i]] = 1
        pos = np.broadcast_to(np.arange(t, dtype=np.int32), (batch_size, t))
        lp, n = jax.device_get(_clm_sums(model, params, ids, seg, pos))
        sums[idx], counts[idx] = lp[: len(idx)], n[: len(idx)]
    return Scores(log_probs=sums, num_tokens=counts)


# ----------------------------------------------------------------------------- masked LM (PLL)


@functools.partial(jax.jit, static_argnames="model")
def _masked_log_probs(model, params, ids_RT, segment_ids_RT, positions_RT, masked_R1, targets_R):
    """log p(target at the masked position) per masked copy, float32 [R]."""
    outputs = model.apply(
        {"params": params},
        ids_RT,
        jnp.zeros_like(ids_RT),
        segment_ids_RT,
        positions_RT,
        masked_R1,
        deterministic=True,
    )
    logp_RV = jax.nn.log_softmax(outputs["mlm_logits"][:, 0].astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp_RV, targets_R[:, None], axis=-1)[:, 0]


def pll_scores(
    model,
    params,
    sentences: Sequence[Sequence[int]],
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int = 0,
    batch_size: int = 64,
) -> Scores:
    """Pseudo-log-likelihoods of token-id sentences under a BertForPreTraining with its MLM head.

    batch_size counts masked copies (one per scored token) per forward pass.
    """
    max_len = model.config.max_len
    rows = [[cls_id, *s, sep_id] for s in sentences]
    _check_lengths([len(r) for r in rows], max_len, " with [CLS] and [SEP]")
    # One masked copy per token: (sentence, position of the masked token in its row).
    copy_sentence = np.array([i for i, s in enumerate(sentences) for _ in s], np.int64)
    copy_position = np.array([1 + t for s in sentences for t in range(len(s))], np.int64)
    copy_length = np.array([len(rows[i]) for i in copy_sentence], np.int64)
    pll = np.zeros(len(rows), np.float64)
    order = np.argsort(copy_length, kind="stable")
    for idx, t in _batches(order, copy_length, batch_size, max_len):
        ids = np.full((batch_size, t), pad_id, np.int32)
        seg = np.zeros((batch_size, t), np.int32)
        masked = np.zeros((batch_size, 1), np.int32)
        targets = np.zeros((batch_size,), np.int32)
        for r, c in enumerate(idx):
            row = rows[copy_sentence[c]]
            ids[r, : len(row)] = row
            seg[r, : len(row)] = 1
            targets[r] = row[copy_position[c]]
            ids[r, copy_position[c]] = mask_id
            masked[r, 0] = copy_position[c]
        pos = np.broadcast_to(np.arange(t, dtype=np.int32), (batch_size, t))
        lp = jax.device_get(_masked_log_probs(model, params, ids, seg, pos, masked, targets))
        np.add.at(pll, copy_sentence[idx], lp[: len(idx)])
    return Scores(log_probs=pll, num_tokens=np.array([len(s) for s in sentences], np.int64))


# ----------------------------------------------------------------------------- texts and files


def read_sentences(path: str) -> list[str]:
    """Sentences of a .txt file (one per non-blank line) or a .jsonl file (one {"text": ...} per line)."""
    if not path.endswith((".txt", ".jsonl")):
        raise ScoreError(f"--input={path}: expected a .txt (one sentence per line) or .jsonl file")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ScoreError(f"--input={path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ScoreError(
            f"--input={path}: not valid UTF-8 (offset {e.start}); re-encode it as UTF-8"
        ) from None
    sentences = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.endswith(".txt"):
            sentences.append(line.strip())
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ScoreError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ScoreError(f'{path}:{lineno}: each line needs a JSON object with a "text" string')
        sentences.append(record["text"])
    if not sentences:
        raise ScoreError(f"--input={path} holds no sentences")
    return sentences


def default_mode(arch: str) -> str:
    return "clm" if arch == "gpt" else "pll"


def score_texts(
    lm, texts: Sequence[str], mode: str | None = None, batch_size: int = 32
) -> list[dict[str, Any]]:
    """One record per text: text, tokens (scored), then log_prob and perplexity (CLM) or pll and
    pseudo_perplexity (PLL); the perplexity is None for a sentence with no token scored.

    lm: a flaxlm.lm.LM. mode: "clm" (decoders) or "pll" (encoders with an MLM head); None picks by arch.
    """
    mode = mode or default_mode(lm.arch)
    if mode not in FIELDS:
        raise ScoreError(f"--mode={mode!r}; choose clm (causal LM) or pll (masked LM pseudo-log-likelihood)")
    if mode == "clm" and lm.arch != "gpt":
        raise ScoreError(
            f"{lm.source} is an encoder (arch {lm.arch}): it has no left-to-right probabilities; "
            "score it with --mode=pll"
        )
    if mode == "pll" and lm.arch != "bert":
        raise ScoreError(f"{lm.source} is a decoder (arch {lm.arch}); score it with --mode=clm")
    if mode == "pll" and "mlm_transform" not in lm.params:
        raise ScoreError(
            f"{lm.source} has no MLM head (an encoder-only BERT); pseudo-log-likelihood needs one"
        )
    tok = lm.tokenizer
    ids = tok.encode_batch(list(texts))
    if mode == "clm":
        scores = clm_scores(
            lm.model, lm.params, ids, bos_id=lm.bos_id, pad_id=tok.pad_id, batch_size=batch_size
        )
    else:
        scores = pll_scores(
            lm.model,
            lm.params,
            ids,
            cls_id=tok.cls_id,
            sep_id=tok.sep_id,
            mask_id=tok.mask_id,
            pad_id=tok.pad_id,
            batch_size=2 * batch_size,
        )
    score_name, ppl_name = FIELDS[mode]
    records = []
    for text, lp, n in zip(texts, scores.log_probs, scores.num_tokens):
        n = int(n)
        records.append(
            {
                "text": text,
                "tokens": n,
                score_name: float(lp),
                ppl_name: math.exp(-lp / n) if n else None,
            }
        )
    return records


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """mode, sentences, tokens (scored), the mean per-sentence score, the score per token, and the
    corpus-level (pseudo-)perplexity exp(-sum of scores / sum of tokens)."""
    mode = "clm" if "log_prob" in records[0] else "pll"
    score_name, ppl_name = FIELDS[mode]
    total = sum(r[score_name] for r in records)
    tokens = sum(r["tokens"] for r in records)
    return {
        "mode": mode,
        "sentences": len(records),
        "tokens": tokens,
        f"mean_{score_name}": total / len(records),
        f"{score_name}_per_token": total / tokens if tokens else None,
        ppl_name: math.exp(-total / tokens) if tokens else None,
    }


def write_jsonl(path: str, records: Sequence[dict[str, Any]]) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    except OSError as e:
        raise ScoreError(
            f"--out={path}: cannot write it ({e.strerror or e}); choose a writable path"
        ) from None
