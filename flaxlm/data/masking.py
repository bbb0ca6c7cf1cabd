"""Masked-language-model masking (pure numpy; no model or jax imports).

Implements
  * BERT token masking (Devlin et al. 2019, ``create_masked_lm_predictions``):
    ``round(n * mask_prob)`` positions, 80% -> [MASK], 10% -> random token, 10% kept;
  * BERT whole-word masking (WWM, the 2019 ``do_whole_word_mask`` update);
  * SpanBERT span masking (Joshi et al. 2020): geometric span lengths in words,
    one 80/10/10 decision per span;
  * ALBERT n-gram masking (Lan et al. 2020): n-grams of n <= 3 whole words with
    p(n) ∝ 1/n, one 80/10/10 decision per n-gram;
  * with span masking, SpanBERT's span-boundary targets (``sbo=True``): for each
    predicted token, the positions of the tokens just outside its span and its
    offset in the span (what the span-boundary objective reads).

``mask_tokens`` works on one unpadded or padded sequence; ``apply_masking`` takes a
``pad_encoder_example`` dict and adds the fixed-shape ``mlm_*`` fields. Dynamic
masking (RoBERTa) = call ``apply_masking`` at load time with a fresh rng per
(epoch, example); static masking (BERT) = call it once when preparing data.
"""

from __future__ import annotations

import dataclasses
import functools
import numpy as np

from flaxlm.data.builders import SpecialIds

__all__ = [
    "MaskingConfig",
    "mask_tokens",
    "apply_masking",
    "span_length_distribution",
    "ngram_distribution",
]


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Options of ``mask_tokens`` (see there). BERT-base defaults at seq_len 128."""

    max_predictions: int = 20
    mask_prob: float = 0.15
    whole_word: bool = False
    span: bool = False
    span_p: float = 0.2
    max_span: int = 10
    ngram: bool = False
    max_ngram: int = 3
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    sbo: bool = False

    def __post_init__(self):
        if self.whole_word + self.span + self.ngram > 1:
            raise ValueError(
                "whole_word, span and ngram masking are mutually exclusive (all mask whole words)"
            )
        if self.sbo and not self.span:
            raise ValueError("sbo (span-boundary targets) needs span=True masking")
        if self.max_ngram < 1:
            raise ValueError("max_ngram must be >= 1")
        if not 0.0 <= self.mask_token_prob + self.random_token_prob <= 1.0:
            raise ValueError("mask_token_prob + random_token_prob must be in [0, 1]")
        if self.max_predictions < 1:
            raise ValueError("max_predictions must be >= 1")


def span_length_distribution(span_p: float, max_span: int) -> np.ndarray:
    """SpanBERT span-length pmf over lengths 1..max_span [max_span].

    Geo(p) truncated at ``max_span`` and renormalised, as in the SpanBERT code
    (``len_distrib``); for p=0.2, max 10 its mean is 3.8 words, the figure in the paper.
    """
    lengths = np.arange(1, max_span + 1)
    pmf = span_p * (1.0 - span_p) ** (lengths - 1)
    return pmf / pmf.sum()


def ngram_distribution(max_ngram: int) -> np.ndarray:
    """ALBERT's n-gram length pmf over n = 1..max_ngram [max_ngram]: p(n) ∝ 1/n (6/11, 3/11, 2/11 for 3)."""
    pmf = 1.0 / np.arange(1, max_ngram + 1)
    return pmf / pmf.sum()


# ------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=64)
def _vocab_tables(special: SpecialIds, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(is_special [vocab] bool, non_special_ids [vocab - #specials] int32), cached.

    Lookup tables keep the per-example cost to a gather (np.isin sorts every call).
    """
    is_special = np.zeros(vocab_size, dtype=bool)
    ids = np.asarray(special.all_ids(), dtype=np.int64)
    is_special[ids[(ids >= 0) & (ids < vocab_size)]] = True
    non_special = np.flatnonzero(~is_special).astype(np.int32)
    if len(non_special) == 0:
        raise ValueError("vocabulary has no non-special ids")
    return is_special, non_special


def _num_to_predict(n_real: int, n_candidates: int, mask_prob: float, max_predictions: int) -> int:
    # BERT: min(max_predictions, max(1, round(len(tokens) * p))) with len(tokens)
    # counting [CLS]/[SEP] (but not padding, which BERT adds later).
    # Python's round() is round-half-even, as BERT's (Python 3) int(round(...)).
    k = min(max_predictions, max(1, round(n_real * mask_prob)))
    return min(k, n_candidates)


def _words(is_cand: np.ndarray, word_starts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate words as (start [W], length [W]) over token indices.

    A special token (non-candidate) always ends a word, and the token after it
    starts one, so words never contain specials (e.g. a piece left dangling by
    front truncation becomes its own word).
    """
    n = len(is_cand)
    if word_starts is None:
        starts = np.ones(n, dtype=bool)
    else:
        starts = np.asarray(word_starts, dtype=bool).copy()
        if len(starts) != n:
            raise ValueError(f"word_starts has length {len(starts)}, tokens {n}")
    starts[0] = True
    starts[1:] |= ~is_cand[:-1]
    starts |= ~is_cand
    start_idx = np.flatnonzero(starts)
    lengths = np.diff(np.append(start_idx, n))
    keep = is_cand[start_idx]
    return start_idx[keep], lengths[keep]


def _select_whole_words(rng, w_start: np.ndarray, w_len: np.ndarray, k: int) -> np.ndarray:
    """BERT WWM: shuffle words, take each whole word while the total stays <= k.

    As in the original, a word that would overshoot is skipped (not split) and later,
    shorter words may still fill the budget. Same result as that sequential loop, but
    the prefix of words that fit is found with one cumsum; only the few words that top
    up the remaining budget are scanned one at a time.
    """
    if k <= 0 or len(w_start) == 0:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(w_start))
    lens = w_len[order]
    csum = np.cumsum(lens)
    n_prefix = int(np.searchsorted(csum, k, side="right"))  # words 0..n_prefix-1 fit
    picked = [order[:n_prefix]]
    budget = k - (int(csum[n_prefix - 1]) if n_prefix else 0)
    rest, rest_lens = order[n_prefix + 1 :], lens[n_prefix + 1 :]
    while budget > 0 and len(rest):
        fits = np.flatnonzero(rest_lens <= budget)
        if not len(fits):
            break
        j = fits[0]
        picked.append(rest[j : j + 1])
        budget -= int(rest_lens[j])
        rest, rest_lens = rest[j + 1 :], rest_lens[j + 1 :]
    words = np.sort(np.concatenate(picked))
    lengths = w_len[words]
    # Expand (start, length) pairs to token positions without a Python loop.
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(w_start[words], lengths) + offsets


def _select_spans(
    rng, w_start: np.ndarray, w_len: np.ndarray, k: int, span_p: float, max_span: int
) -> list[tuple[int, int, int]]:
    """SpanBERT span selection. Returns spans as (first_token, end_token, n_words).

    Repeatedly: draw a length L (in words) from ``span_length_distribution``, pick a
    random not-yet-masked word as anchor, and extend over up to L consecutive words
    (stopping at a special token, an already-masked word, or when the next whole word
    would exceed the budget k) until k tokens are masked. Unlike the SpanBERT code we
    never cut a word at the budget, so spans are whole words and never exceed k.
    """
    n_words = len(w_start)
    if n_words == 0 or k <= 0:
        return []
    pmf = span_length_distribution(span_p, max_span)
    # Adjacent words are contiguous in tokens iff this word's end is the next's start
    # (a special token in between breaks the run).
    contiguous = np.zeros(n_words, dtype=bool)
    contiguous[:-1] = (w_start[:-1] + w_len[:-1]) == w_start[1:]
    masked = np.zeros(n_words, dtype=bool)
    spans: list[tuple[int, int, int]] = []
    total = 0
    failures = 0
    # Draw in batches to amortise rng call overhead.
    batch = max(8, k)
    lens = rng.choice(np.arange(1, max_span + 1), size=batch, p=pmf)
    anchors = rng.integers(0, n_words, size=batch)
    b = 0
    while total < k and failures < 4 * batch:
        if b == batch:
            lens = rng.choice(np.arange(1, max_span + 1), size=batch, p=pmf)
            anchors = rng.integers(0, n_words, size=batch)
            b = 0
        length, w = int(lens[b]), int(anchors[b])
        b += 1
        if masked[w] or total + w_len[w] > k:
            failures += 1
            continue
        first, count = w, 0
        while True:
            masked[w] = True
            total += int(w_len[w])
            count += 1
            if count == length or not contiguous[w] or masked[w + 1] or total + w_len[w + 1] > k:
                break
            w += 1
        spans.append((int(w_start[first]), int(w_start[w] + w_len[w]), count))
    return spans


def _ngram_starts(n: int, masked_before: np.ndarray, tokens: np.ndarray, budget: int) -> np.ndarray:
    """The words where an n-gram fits: none of its n words masked, its tokens within `budget`."""
    n_words = tokens.shape[1]
    free = masked_before[n:] - masked_before[: n_words - n + 1] == 0
    return np.flatnonzero(free & (tokens[n - 1, : n_words - n + 1] <= budget))


def _select_ngrams(
    rng, w_start: np.ndarray, w_len: np.ndarray, k: int, max_ngram: int
) -> list[tuple[int, int, int]]:
    """ALBERT n-gram selection. Returns n-grams as (first_token, end_token, n_words), like `_select_spans`.

    Repeatedly: draw n from ``ngram_distribution`` and mask n consecutive words (no special token
    between them) at a start drawn uniformly among those where the n-gram fits: none of its words
    masked yet and its tokens within what is left of the budget k. Stops at k tokens or at the first
    n-gram that fits nowhere (only a sequence's first n-gram is shortened until it fits, so that it
    gets a prediction whenever BERT's would). ALBERT's code instead shortens every such n-gram and
    skips one that meets a masked word, which on real text turns p(n) = 6/11, 3/11, 2/11 into about
    .64, .24, .12; here n-grams keep their drawn length (.57, .27, .16 at seq 128, k 20), and the
    budget is left short by less than one n-gram (98% of it used at seq 128).
    """
    n_words = len(w_start)
    if n_words == 0 or k <= 0:
        return []
    w_end = w_start + w_len
    # tokens[n - 1, w]: the tokens of words w .. w+n-1, or k + 1 (never fits) if they are not consecutive.
    contiguous = w_end[:-1] == w_start[1:]
    tokens = np.full((max_ngram, n_words), k + 1, dtype=np.int64)
    joined = np.ones(n_words, dtype=bool)
    for n in range(1, max_ngram + 1):
        last = np.arange(n_words) + n - 1
        if n > 1:
            joined[: n_words - n + 1] &= contiguous[n - 2 :]
            joined[n_words - n + 1 :] = False
        ok = joined & (last < n_words)
        tokens[n - 1, ok] = w_end[last[ok]] - w_start[ok]
    cdf = np.cumsum(ngram_distribution(max_ngram))
    draws = rng.random((k, 2))  # at most k n-grams: (length, start) uniforms for each
    masked_before = np.zeros(n_words + 1, dtype=np.int64)  # masked words among 0 .. w-1
    masked = np.zeros(n_words, dtype=bool)
    ngrams: list[tuple[int, int, int]] = []
    total = 0
    for u_len, u_start in draws:
        n = min(int(np.searchsorted(cdf, u_len, side="right")) + 1, max_ngram, n_words)
        starts = _ngram_starts(n, masked_before, tokens, k - total)
        while not len(starts) and not ngrams and n > 1:  # the first n-gram: shorter ones, so that
            n -= 1  # a sequence gets a prediction whenever one word fits (BERT's at least 1)
            starts = _ngram_starts(n, masked_before, tokens, k - total)
        if not len(starts):
            break
        w = int(starts[int(u_start * len(starts))])
        masked[w : w + n] = True
        masked_before[1:] = np.cumsum(masked)
        total += int(tokens[n - 1, w])
        ngrams.append((int(w_start[w]), int(w_end[w + n - 1]), n))
        if total >= k:
            break
    return ngrams


# ---------------------------------------------------------------------------- API


def mask_tokens(
    tokens: np.ndarray,
    rng: np.random.Generator,
    special: SpecialIds,
    vocab_size: int,
    *,
    mask_prob: float = 0.15,
    max_predictions: int,
    word_starts: np.ndarray | None = None,
    whole_word: bool = False,
    span: bool = False,
    span_p: float = 0.2,
    max_span: int = 10,
    ngram: bool = False,
    max_ngram: int = 3,
    mask_token_prob: float = 0.8,
    random_token_prob: float = 0.1,
    sbo: bool = False,
) -> dict[str, np.ndarray]:
    """Mask one sequence for MLM.

    Args:
      tokens: [n] int ids (may include specials and trailing padding).
      special: special ids; every id in ``special.all_ids()`` ([CLS], [SEP], [PAD],
        [MASK], [UNK], extras) is never selected and never a random replacement.
      vocab_size: random replacements are uniform over non-special ids in [0, vocab_size).
      max_predictions: hard cap on predicted positions (the output width).
      word_starts: [n] bool, True where a token starts a word (WWM / span units);
        None = every token is a word.
      whole_word: BERT whole-word masking (all pieces of a chosen word together).
      span: SpanBERT span masking, lengths in words ~ Geo(span_p) truncated at max_span.
      ngram: ALBERT n-gram masking, n <= max_ngram whole words with p(n) ∝ 1/n.
      sbo: also return SpanBERT's span-boundary targets (needs ``span``).

    Budget: ``min(max_predictions, max(1, round(n_real * mask_prob)))`` tokens, with
    n_real the non-padding length (BERT counts [CLS]/[SEP]). Of the chosen tokens
    ``mask_token_prob`` -> [MASK], ``random_token_prob`` -> random id, rest unchanged;
    decided per token (BERT, WWM) or per span (SpanBERT) or n-gram (ALBERT).

    Returns:
      input_ids    [n] int32  masked tokens
      mlm_positions [max_predictions] int32  ascending, padded with 0
      mlm_targets   [max_predictions] int32  original ids, padded with 0
      mlm_weights   [max_predictions] float32  1 real / 0 padding
    and with ``sbo``, aligned with mlm_positions and 0 where the weight is 0:
      sbo_left   [max_predictions] int32  position of the token just before the span (s - 1)
      sbo_right  [max_predictions] int32  position of the token just after it (e + 1)
      sbo_offset [max_predictions] int32  the position's offset in its span, 0 .. len - 1
    Spans never hold a special token, so the boundaries are real tokens or [CLS] / [SEP]
    (as in the SpanBERT code, where they may be the sentence's ends); they are clipped
    to the sequence, which only matters for a sequence without specials at its ends.
    """
    if whole_word + span + ngram > 1:
        raise ValueError("whole_word, span and ngram masking are mutually exclusive")
    if sbo and not span:
        raise ValueError("sbo (span-boundary targets) needs span=True masking")
    tokens = np.asarray(tokens)
    n = len(tokens)
    is_special, non_special = _vocab_tables(special, int(vocab_size))
    # (Ids >= vocab_size raise IndexError here; ids are assumed non-negative.)
    is_cand = ~is_special[tokens]
    n_cand = int(np.count_nonzero(is_cand))
    n_real = n - int(np.count_nonzero(tokens == special.pad))
    k = _num_to_predict(n_real, n_cand, mask_prob, max_predictions)

    if whole_word or span or ngram:
        w_start, w_len = _words(is_cand, word_starts)
        if whole_word:
            positions = _select_whole_words(rng, w_start, w_len, k)
            n_pred = len(positions)
            u = rng.random(2 * n_pred)  # BERT WWM still decides 80/10/10 per token
        else:
            if span:
                spans = _select_spans(rng, w_start, w_len, k, span_p, max_span)
            else:
                spans = _select_ngrams(rng, w_start, w_len, k, max_ngram)
            positions = np.zeros(0, np.int64)
            u = np.zeros(0)
            left = right = offset = np.zeros(0, np.int64)
            if spans:
                starts = np.array([sp[0] for sp in spans])
                lens = np.array([sp[1] - sp[0] for sp in spans])
                order = np.argsort(starts)  # spans never overlap: sorting starts sorts tokens
                starts, lens = starts[order], lens[order]
                group = np.repeat(np.arange(len(spans)), lens)
                offset = np.arange(len(group)) - np.repeat(np.cumsum(lens) - lens, lens)
                positions = starts[group] + offset
                left = np.maximum(starts[group] - 1, 0)
                right = np.minimum(starts[group] + lens[group], n - 1)
                # One decision per span (SpanBERT) or n-gram (ALBERT), a random id per token.
                u = np.concatenate([rng.random(len(spans))[group], rng.random(len(positions))])
            n_pred = len(positions)
    elif k > 0:
        # Plain BERT path, loop-free: one rng call gives the selection keys [n], the
        # 80/10/10 uniforms [k] and the random-id uniforms [k]. The k smallest keys
        # among candidates are a uniform k-subset; thresholding at the k-th smallest
        # returns them already in ascending position order.
        r = rng.random(n + 2 * k)
        keys = np.where(is_cand, r[:n], 2.0)
        kth = np.partition(keys, k - 1)[k - 1]
        positions = np.flatnonzero(keys <= kth)
        n_pred = len(positions)
        u = r[n:]
    else:
        positions, n_pred, u = np.zeros(0, np.int64), 0, np.zeros(0)

    input_ids = tokens.astype(np.int32, copy=True)
    mlm_positions = np.zeros(max_predictions, dtype=np.int32)
    mlm_targets = np.zeros(max_predictions, dtype=np.int32)
    mlm_weights = np.zeros(max_predictions, dtype=np.float32)
    if n_pred:
        targets = input_ids[positions]
        decide, pick = u[:n_pred], u[n_pred : 2 * n_pred]
        random_ids = non_special[(pick * len(non_special)).astype(np.intp)]
        replacement = np.where(decide < mask_token_prob + random_token_prob, random_ids, targets)
        replacement[decide < mask_token_prob] = special.mask
        input_ids[positions] = replacement
        mlm_positions[:n_pred] = positions
        mlm_targets[:n_pred] = targets
        mlm_weights[:n_pred] = 1.0
    out = {
        "input_ids": input_ids,
        "mlm_positions": mlm_positions,
        "mlm_targets": mlm_targets,
        "mlm_weights": mlm_weights,
    }
    if sbo:
        for name, values in (("sbo_left", left), ("sbo_right", right), ("sbo_offset", offset)):
            out[name] = np.zeros(max_predictions, dtype=np.int32)
            out[name][:n_pred] = values
    return out


def apply_masking(
    example_padded: dict[str, np.ndarray],
    rng: np.random.Generator,
    cfg: MaskingConfig,
    special: SpecialIds,
    vocab_size: int,
    word_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Mask a ``pad_encoder_example`` dict: returns a new dict with ``input_ids``
    replaced by the masked ids and ``mlm_positions`` / ``mlm_targets`` [max_predictions]
    int32 and ``mlm_weights`` [max_predictions] float32 added (and, with ``cfg.sbo``,
    ``sbo_left`` / ``sbo_right`` / ``sbo_offset``). Padding is never selected.
    """
    out = mask_tokens(
        example_padded["input_ids"],
        rng,
        special,
        vocab_size,
        mask_prob=cfg.mask_prob,
        max_predictions=cfg.max_predictions,
        word_starts=word_starts,
        whole_word=cfg.whole_word,
        span=cfg.span,
        span_p=cfg.span_p,
        max_span=cfg.max_span,
        ngram=cfg.ngram,
        max_ngram=cfg.max_ngram,
        mask_token_prob=cfg.mask_token_prob,
        random_token_prob=cfg.random_token_prob,
        sbo=cfg.sbo,
    )
    result = dict(example_padded)
    result.update(out)
    return result


# ------------------------------------------------------------------ batched masking
