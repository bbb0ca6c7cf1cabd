"""Tests for flaxlm.data.masking, checked statistically on real text (Shakespeare)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_builders import HF, SP, binom_ok, load_real_text  # noqa: E402  (shared real-text fixture)

from flaxlm.data import builders, masking  # noqa: E402
from flaxlm.data.masking import MaskingConfig  # noqa: E402

SEQ = 128


@pytest.fixture(scope="module")
def real():
    return load_real_text()


@pytest.fixture(scope="module")
def padded(real):
    """~2.5k padded segment_pair examples of real text, plus per-token word starts."""
    exs = [
        builders.pad_encoder_example(e, SEQ, SP.pad)
        for e in builders.segment_pair(real.docs, SEQ, np.random.default_rng(0), SP)
    ]
    return exs


def _budget(ids, special, mask_prob, max_predictions, vocab_size):
    specials = np.array(special.all_ids())
    n_real = int((ids != special.pad).sum())
    n_cand = int((~np.isin(ids, specials)).sum())
    return min(max_predictions, max(1, round(n_real * mask_prob)), n_cand), n_cand


def _check_common(ex, out, special, vocab_size, max_predictions):
    """Invariants every masking mode must satisfy; returns (positions, targets, masked ids)."""
    ids = ex["input_ids"]
    w = out["mlm_weights"]
    assert out["mlm_positions"].shape == out["mlm_targets"].shape == w.shape == (max_predictions,)
    assert out["mlm_positions"].dtype == out["mlm_targets"].dtype == out["input_ids"].dtype == np.int32
    assert w.dtype == np.float32
    n = int(w.sum())
    assert (w[:n] == 1).all() and (w[n:] == 0).all()
    pos, tgt = out["mlm_positions"][:n], out["mlm_targets"][:n]
    assert (out["mlm_positions"][n:] == 0).all() and (out["mlm_targets"][n:] == 0).all()
    assert (np.diff(pos) > 0).all(), "positions ascending and unique"
    np.testing.assert_array_equal(tgt, ids[pos])  # targets are the ORIGINAL ids
    assert not np.isin(tgt, special.all_ids()).any(), "specials never selected"
    assert (ex["segment_ids"][pos] == 1).all(), "padding never selected"
    new = out["input_ids"]
    unselected = np.ones(len(ids), bool)
    unselected[pos] = False
    np.testing.assert_array_equal(new[unselected], ids[unselected])
    changed = new[pos]
    assert ((changed == special.mask) | ~np.isin(changed, special.all_ids())).all()
    assert (changed < vocab_size).all() and (changed >= 0).all()
    return pos, tgt, changed


def _replacement_fractions(tgts, news, special):
    tgts, news = np.concatenate(tgts), np.concatenate(news)
    n = len(tgts)
    masked = news == special.mask
    kept = news == tgts
    rand = ~masked & ~kept
    return n, masked.sum(), kept.sum(), rand.sum()


# ------------------------------------------------------------------------ plain BERT


def test_plain_bert_masking_rates(real, padded):
    cfg = MaskingConfig(max_predictions=20)
    rng = np.random.default_rng(1)
    tgts, news, n_sel, n_cand_total = [], [], 0, 0
    for ex in padded:
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size)
        for k in ("token_type_ids", "segment_ids", "positions", "pair_label"):
            assert out[k] is ex[k]  # other fields pass through
        pos, tgt, new = _check_common(ex, out, SP, real.vocab_size, 20)
        k, n_cand = _budget(ex["input_ids"], SP, 0.15, 20, real.vocab_size)
        assert len(pos) == k  # BERT: exactly min(max_pred, max(1, round(n * p)))
        n_sel += len(pos)
        n_cand_total += n_cand
        tgts.append(tgt)
        news.append(new)
    # ~15% of non-special tokens (BERT's n counts [CLS]/[SEP], so slightly above 15%;
    # the max_predictions=20 cap at 128 tokens trims a few).
    assert 0.14 < n_sel / n_cand_total < 0.16
    n, n_mask, n_keep, n_rand = _replacement_fractions(tgts, news, SP)
    assert n > 30_000
    assert binom_ok(n_mask, n, 0.8)
    assert binom_ok(n_rand, n, 0.1 * (1 - 1 / real.vocab_size), z=5)
    assert binom_ok(n_keep, n, 0.1 + 0.1 / real.vocab_size, z=5)


def test_random_replacements_are_uniform_non_special(real):
    # All-random replacement on a long sequence: ids cover the non-special vocab.
    ids = np.r_[SP.cls, np.full(2000, 40), SP.sep].astype(np.int32)
    out = masking.mask_tokens(
        ids,
        np.random.default_rng(0),
        SP,
        50,
        mask_prob=1.0,
        max_predictions=2000,
        mask_token_prob=0.0,
        random_token_prob=1.0,
    )
    new = out["input_ids"][1:-1]
    assert not np.isin(new, SP.all_ids()).any()
    counts = np.bincount(new, minlength=50)
    assert (counts[5:] > 0).all() and counts[:5].sum() == 0
    assert counts[5:].max() < 3 * counts[5:].mean()


def test_hf_special_ids_never_hardcoded(real):
    docs = [[s + 200 for s in d] for d in real.docs[:30]]
    vocab = real.vocab_size + 200
    cfg = MaskingConfig(max_predictions=20)
    rng = np.random.default_rng(0)
    news = []
    for e in builders.segment_pair(docs, SEQ, rng, HF):
        ex = builders.pad_encoder_example(e, SEQ, HF.pad)
        out = masking.apply_masking(ex, rng, cfg, HF, vocab)
        _, _, new = _check_common(ex, out, HF, vocab, 20)
        news.append(new)
        assert (out["input_ids"][ex["input_ids"] == HF.cls] == HF.cls).all()
    news = np.concatenate(news)
    assert (news == HF.mask).mean() > 0.7 and not (news == SP.mask).any()


@pytest.mark.parametrize("mode", ["plain", "whole_word", "span", "ngram"])
def test_max_predictions_respected(real, padded, mode):
    cfg = MaskingConfig(
        max_predictions=5, whole_word=mode == "whole_word", span=mode == "span", ngram=mode == "ngram"
    )
    rng = np.random.default_rng(2)
    for ex in padded[:300]:
        ws = real.word_start[ex["input_ids"]]
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size, word_starts=ws)
        n = int(out["mlm_weights"].sum())
        k, _ = _budget(ex["input_ids"], SP, 0.15, 5, real.vocab_size)
        assert n <= k <= 5
        if mode == "plain":
            assert n == k


def test_edge_cases(real):
    only_specials = np.array([SP.cls, SP.sep, SP.sep, SP.pad, SP.pad], np.int32)
    for kw in ({}, {"whole_word": True}, {"span": True}, {"ngram": True}):
        out = masking.mask_tokens(
            only_specials, np.random.default_rng(0), SP, real.vocab_size, max_predictions=4, **kw
        )
        assert out["mlm_weights"].sum() == 0
        np.testing.assert_array_equal(out["input_ids"], only_specials)
    one = np.array([SP.cls, 77, SP.sep, SP.pad], np.int32)
    out = masking.mask_tokens(one, np.random.default_rng(0), SP, real.vocab_size, max_predictions=4)
    assert out["mlm_weights"].sum() == 1 and out["mlm_positions"][0] == 1 and out["mlm_targets"][0] == 77
    with pytest.raises(ValueError):
        MaskingConfig(whole_word=True, span=True)
    with pytest.raises(ValueError):
        MaskingConfig(span=True, ngram=True)
    with pytest.raises(ValueError):
        MaskingConfig(mask_token_prob=0.9, random_token_prob=0.2)


def test_determinism(real, padded):
    cfg = MaskingConfig(max_predictions=20)

    def run(seed, mode):
        rng = np.random.default_rng(seed)
        c = MaskingConfig(
            max_predictions=20, whole_word=mode == "wwm", span=mode == "span", ngram=mode == "ngram"
        )
        return [
            masking.apply_masking(
                ex, rng, c, SP, real.vocab_size, word_starts=real.word_start[ex["input_ids"]]
            )
            for ex in padded[:100]
        ]

    for mode in ("plain", "wwm", "span", "ngram"):
        a, b, c = run(0, mode), run(0, mode), run(1, mode)
        assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)
        assert any(not np.array_equal(x["mlm_positions"], y["mlm_positions"]) for x, y in zip(a, c))
    del cfg


# ------------------------------------------------------------------- whole word


def _word_ids(ids, word_start, special):
    """Word index per token (specials are their own word), as masking defines words."""
    is_sp = np.isin(ids, special.all_ids())
    starts = word_start[ids].copy()
    starts[0] = True
    starts[1:] |= is_sp[:-1]
    starts |= is_sp
    return np.cumsum(starts) - 1


def test_whole_word_masking(real, padded):
    cfg = MaskingConfig(max_predictions=20, whole_word=True)
    rng = np.random.default_rng(3)
    n_sel = n_cand_total = multi_piece_words = 0
    tgts, news = [], []
    for ex in padded:
        ids = ex["input_ids"]
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size, word_starts=real.word_start[ids])
        pos, tgt, new = _check_common(ex, out, SP, real.vocab_size, 20)
        k, n_cand = _budget(ids, SP, 0.15, 20, real.vocab_size)
        assert len(pos) <= k
        wid = _word_ids(ids, real.word_start, SP)
        sel_words = np.unique(wid[pos])
        # every piece of every selected word is selected, and nothing else
        np.testing.assert_array_equal(np.flatnonzero(np.isin(wid, sel_words)), pos)
        multi_piece_words += int((np.bincount(wid[pos]) > 1).sum())
        n_sel += len(pos)
        n_cand_total += n_cand
        tgts.append(tgt)
        news.append(new)
    assert multi_piece_words > 500, "real subword text: many selected words have several pieces"
    assert 0.13 < n_sel / n_cand_total < 0.16
    n, n_mask, n_keep, n_rand = _replacement_fractions(tgts, news, SP)
    assert binom_ok(n_mask, n, 0.8)  # BERT WWM still decides per token
    assert binom_ok(n_rand, n, 0.1, z=5) and binom_ok(n_keep, n, 0.1, z=5)


# ------------------------------------------------------------------------- spans


def test_span_length_distribution():
    pmf = masking.span_length_distribution(0.2, 10)
    assert pmf.shape == (10,) and abs(pmf.sum() - 1) < 1e-12 and (np.diff(pmf) < 0).all()
    assert abs((pmf * np.arange(1, 11)).sum() - 3.8) < 0.01  # SpanBERT's reported mean


def _replay(rng: np.random.Generator) -> np.random.Generator:
    """A generator in `rng`'s current state: it draws what `rng` is about to draw."""
    replay = np.random.Generator(type(rng.bit_generator)())
    replay.bit_generator.state = rng.bit_generator.state
    return replay


def test_span_masking(real, padded):
    seed = 4
    cfg = MaskingConfig(max_predictions=20, span=True)
    rng = np.random.default_rng(seed)
    span_words, span_all_mask, span_mixed = [], 0, 0
    n_sel = n_cand_total = 0
    for ex in padded:
        ids = ex["input_ids"]
        ws = real.word_start[ids]
        replay = _replay(rng)  # the span selection again, from the same state, to know the spans
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size, word_starts=ws)
        pos, tgt, new = _check_common(ex, out, SP, real.vocab_size, 20)
        k, n_cand = _budget(ids, SP, 0.15, 20, real.vocab_size)
        assert len(pos) <= k
        is_cand = ~np.isin(ids, SP.all_ids())
        w_start, w_len = masking._words(is_cand, ws)
        spans = masking._select_spans(replay, w_start, w_len, k, cfg.span_p, cfg.max_span)
        np.testing.assert_array_equal(np.sort(np.concatenate([np.arange(s, e) for s, e, _ in spans])), pos)
        wid = _word_ids(ids, real.word_start, SP)
        sel = np.zeros(len(ids), bool)
        sel[pos] = True
        for s, e, nw in spans:
            assert 1 <= nw <= cfg.max_span
            assert len(np.unique(wid[s:e])) == nw
            # whole words: the span starts at a word start and ends at a word end
            assert (wid[s] != wid[s - 1]) and (e == len(ids) or wid[e] != wid[e - 1])
            masked = out["input_ids"][s:e] == SP.mask
            span_all_mask += bool(masked.all())
            span_mixed += bool(masked.any() and not masked.all())
            span_words.append(nw)
        n_sel += len(pos)
        n_cand_total += n_cand
    # One 80/10/10 decision per span: never partly [MASK].
    assert span_mixed == 0
    assert binom_ok(span_all_mask, len(span_words), 0.8)
    assert np.bincount(span_words)[1] > np.bincount(span_words)[2]  # geometric: 1 is the mode
    assert len(span_words) > 5000 and max(span_words) <= cfg.max_span
    assert 0.12 < n_sel / n_cand_total < 0.16


def _check_sbo(out, n_tokens):
    """Span-boundary targets: the positions predicted with boundaries (l, r) are exactly l+1 .. r-1
    with offsets 0 .. r-l-2, and l, r lie outside that span; padding of P is 0. Returns the spans."""
    w = out["mlm_weights"] > 0
    for k in ("sbo_left", "sbo_right", "sbo_offset"):
        assert out[k].dtype == np.int32 and out[k].shape == w.shape and (out[k][~w] == 0).all()
    pos, left, right, off = (out[k][w] for k in ("mlm_positions", "sbo_left", "sbo_right", "sbo_offset"))
    np.testing.assert_array_equal(left, pos - off - 1)  # each position's own span start, minus one
    spans = sorted(set(zip(left.tolist(), right.tolist())))
    for l, r in spans:
        assert 0 <= l < r - 1 < n_tokens - 1
        in_span = (left == l) & (right == r)
        np.testing.assert_array_equal(pos[in_span], np.arange(l + 1, r))
        np.testing.assert_array_equal(off[in_span], np.arange(r - l - 1))
    return spans


def test_span_boundary_targets(real, padded):
    cfg, sbo_cfg = (
        MaskingConfig(max_predictions=20, span=True),
        MaskingConfig(max_predictions=20, span=True, sbo=True),
    )
    n_spans = n_special_boundaries = 0
    for i, ex in enumerate(padded[:500]):
        ids = ex["input_ids"]
        ws = real.word_start[ids]
        out = masking.apply_masking(
            ex, np.random.default_rng(i), sbo_cfg, SP, real.vocab_size, word_starts=ws
        )
        plain = masking.apply_masking(ex, np.random.default_rng(i), cfg, SP, real.vocab_size, word_starts=ws)
        assert set(out) == set(plain) | {"sbo_left", "sbo_right", "sbo_offset"}
        for k in plain:  # the same masks: the targets only describe them
            np.testing.assert_array_equal(out[k], plain[k], err_msg=k)
        # The spans are those _select_spans draws, each boundary just outside one.
        replay = np.random.default_rng(i)
        is_cand = ~np.isin(ids, SP.all_ids())
        w_start, w_len = masking._words(is_cand, ws)
        k, _ = _budget(ids, SP, 0.15, 20, real.vocab_size)
        drawn = masking._select_spans(replay, w_start, w_len, k, cfg.span_p, cfg.max_span)
        assert _check_sbo(out, len(ids)) == sorted((s - 1, e) for s, e, _ in drawn)
        bounds = np.concatenate([out["sbo_left"], out["sbo_right"]])[np.tile(out["mlm_weights"] > 0, 2)]
        n_special_boundaries += int(np.isin(ids[bounds], [SP.cls, SP.sep]).sum())
        n_spans += len(drawn)
    assert n_spans > 1000 and n_special_boundaries > 0  # [CLS] / [SEP] may bound a span, as in SpanBERT


def test_span_boundary_targets_need_span_masking():
    with pytest.raises(ValueError, match="sbo .* needs span=True"):
        MaskingConfig(sbo=True)
    with pytest.raises(ValueError, match="sbo .* needs span=True"):
        masking.mask_tokens(np.arange(5, 15), np.random.default_rng(0), SP, 100, max_predictions=3, sbo=True)


def test_span_lengths_follow_truncated_geometric(real):
    pmf = masking.span_length_distribution(0.2, 10)
    expected_mean = float((pmf * np.arange(1, 11)).sum())  # 3.8 words
    # (a) In isolation: a long sequence of one-token words with a small budget, so
    # spans are almost never cut short by the budget or by running into another span.
    rng = np.random.default_rng(7)
    lens = []
    for _ in range(4):
        ids = np.r_[SP.cls, np.full(40_000, 77), SP.sep].astype(np.int32)
        is_cand = ~np.isin(ids, SP.all_ids())
        w_start, w_len = masking._words(is_cand, None)
        lens += [nw for *_, nw in masking._select_spans(rng, w_start, w_len, 800, 0.2, 10)]
    lens = np.array(lens)
    assert len(lens) > 600 and lens.max() <= 10
    assert abs(lens.mean() - expected_mean) < 0.35, lens.mean()
    # (b) On real subword text at BERT's 512 tokens (budget 77): spans cut short by the
    # budget, a [SEP] or an earlier span pull the mean down somewhat, as in SpanBERT.
    cfg = MaskingConfig(max_predictions=80, span=True)
    words = []
    for e in builders.segment_pair(real.docs[:60], 512, np.random.default_rng(8), SP, short_seq_prob=0.0):
        ids = builders.pad_encoder_example(e, 512, SP.pad)["input_ids"]
        is_cand = ~np.isin(ids, SP.all_ids())
        k, _ = _budget(ids, SP, cfg.mask_prob, cfg.max_predictions, real.vocab_size)
        w_start, w_len = masking._words(is_cand, real.word_start[ids])
        words += [nw for *_, nw in masking._select_spans(rng, w_start, w_len, k, cfg.span_p, cfg.max_span)]
    mean = float(np.mean(words))
    assert len(words) > 1000
    assert 0.8 * expected_mean < mean < 1.02 * expected_mean, (mean, expected_mean)


def test_span_masking_without_word_starts_uses_tokens(real, padded):
    cfg = MaskingConfig(max_predictions=20, span=True)
    rng = np.random.default_rng(5)
    runs = []
    for ex in padded[:500]:
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size)
        pos, _, _ = _check_common(ex, out, SP, real.vocab_size, 20)
        breaks = np.flatnonzero(np.diff(pos) > 1)
        runs.extend(np.diff(np.r_[0, breaks + 1, len(pos)]))
    assert np.mean(runs) > 2.5  # contiguous runs, not isolated tokens


# ------------------------------------------------------------------------ n-grams


def test_ngram_distribution():
    np.testing.assert_allclose(masking.ngram_distribution(3), [6 / 11, 3 / 11, 2 / 11], rtol=1e-12)
    assert masking.ngram_distribution(1).tolist() == [1.0]


def test_ngram_masking(real, padded):
    """ALBERT n-grams on real text: whole words, n <= 3 with p(n) ∝ 1/n, one 80/10/10 decision each,
    never over the budget; the masked tokens are the n-grams' tokens and nothing else."""
    cfg = MaskingConfig(max_predictions=20, ngram=True)
    rng = np.random.default_rng(6)
    ngram_words, all_mask, mixed = [], 0, 0
    n_sel = n_cand_total = multi_word = 0
    for ex in padded:
        ids = ex["input_ids"]
        ws = real.word_start[ids]
        replay = _replay(rng)
        out = masking.apply_masking(ex, rng, cfg, SP, real.vocab_size, word_starts=ws)
        pos, _, _ = _check_common(ex, out, SP, real.vocab_size, 20)
        k, n_cand = _budget(ids, SP, 0.15, 20, real.vocab_size)
        assert len(pos) <= k
        is_cand = ~np.isin(ids, SP.all_ids())
        w_start, w_len = masking._words(is_cand, ws)
        ngrams = masking._select_ngrams(replay, w_start, w_len, k, cfg.max_ngram)
        assert ngrams, "a prediction in every sequence"
        np.testing.assert_array_equal(np.sort(np.concatenate([np.arange(s, e) for s, e, _ in ngrams])), pos)
        wid = _word_ids(ids, real.word_start, SP)
        for s, e, nw in ngrams:
            assert 1 <= nw <= 3 and len(np.unique(wid[s:e])) == nw
            assert is_cand[s:e].all()  # consecutive words: no special token inside
            assert (wid[s] != wid[s - 1]) and (e == len(ids) or wid[e] != wid[e - 1])  # whole words
            masked = out["input_ids"][s:e] == SP.mask
            all_mask += bool(masked.all())
            mixed += bool(masked.any() and not masked.all())
            multi_word += nw > 1
            ngram_words.append(nw)
        n_sel += len(pos)
        n_cand_total += n_cand
    assert mixed == 0  # one decision per n-gram
    assert binom_ok(all_mask, len(ngram_words), 0.8)
    assert len(ngram_words) > 10_000 and multi_word > 2000
    # p(n) ∝ 1/n: 6/11, 3/11, 2/11. The n-gram drawn when the budget is nearly spent is more often too
    # long to fit (and ends the sequence), so short ones gain a little (measured .568, .268, .165).
    freq = np.bincount(ngram_words, minlength=4)[1:] / len(ngram_words)
    np.testing.assert_allclose(freq, [6 / 11, 3 / 11, 2 / 11], atol=0.03)
    assert 0.13 < n_sel / n_cand_total < 0.16


def test_ngram_lengths_follow_one_over_n_in_isolation():
    """Far from the budget and other n-grams (one-token words, a small budget), n ~ 1/n exactly."""
    rng = np.random.default_rng(9)
    ids = np.r_[SP.cls, np.full(20_000, 77), SP.sep].astype(np.int32)
    w_start, w_len = masking._words(~np.isin(ids, SP.all_ids()), None)
    lens = []
    for _ in range(20):
        lens += [nw for *_, nw in masking._select_ngrams(rng, w_start, w_len, 400, 3)]
    counts = np.bincount(lens, minlength=4)[1:]
    for n, p in zip(range(3), (6 / 11, 3 / 11, 2 / 11)):
        assert binom_ok(counts[n], len(lens), p), (counts, len(lens))
