"""Tests for flaxlm.data.builders on real text (Shakespeare).

Two views of the same corpus are used:
  * ``real``:   the tokenized text itself (token ids of real words);
  * ``tagged``: the same documents/sentences with every token replaced by a unique
    id (its global position + offset). Sentence and document lengths are the real
    ones, but each output token then tells exactly where it came from, so
    provenance ("B is the true continuation", "never crosses a document") can be
    checked exactly rather than by substring search.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import NamedTuple

import numpy as np
import pytest

from flaxlm.data import builders
from flaxlm.data import tokenizer as tok_lib
from flaxlm.data.builders import BuildStats, SpecialIds
from flaxlm.data.corpus import document_sentences, load_embedded

SP = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
HF = SpecialIds(pad=0, unk=100, cls=101, sep=102, mask=103)

# --------------------------------------------------------------------- real text


class RealText(NamedTuple):
    docs: list  # list[list[np.ndarray int32]]
    vocab_size: int
    word_start: np.ndarray  # [vocab] bool
    special: SpecialIds


@functools.lru_cache(maxsize=None)
def load_real_text() -> RealText:
    """Every 5th scene of the embedded Shakespeare (spread over all plays, fast), as sentences of
    token ids from a 2000-piece sentencepiece model trained on them."""
    sents = [list(document_sentences(d)) for d in load_embedded("shakespeare")[::5]]
    with tempfile.TemporaryDirectory(prefix="flaxlm-test-spm-") as tmp:
        path = tok_lib.train_sentencepiece((s for d in sents for s in d), os.path.join(tmp, "spm"), 2000)
        tok = tok_lib.SentencePieceTokenizer(path)
    special = SpecialIds(pad=tok.pad_id, cls=tok.cls_id, sep=tok.sep_id, mask=tok.mask_id, unk=tok.unk_id)
    assert special == SP
    docs = [[np.asarray(x, np.int32) for x in tok.encode_batch(d)] for d in sents]
    docs = [[s for s in d if s.size] for d in docs]
    word_start = np.asarray(tok.word_start_mask(np.arange(tok.vocab_size)), dtype=bool)
    return RealText([d for d in docs if d], tok.vocab_size, word_start, SP)


TAG0 = 1000  # tagged ids start here, far above every special id used in these tests


class Tagged(NamedTuple):
    docs: list
    doc_of: np.ndarray  # [n_tokens] document of each tagged token
    sent_start: np.ndarray  # [n_tokens] bool: token starts a sentence
    sent_end: np.ndarray  # [n_tokens] bool: token ends a sentence
    doc_start: np.ndarray  # [n_tokens] bool
    doc_end: np.ndarray  # [n_tokens] bool
    sent_pos: np.ndarray  # [n_tokens] position within its sentence

    def ends_sentence(self, tok, budget):
        """Token ``tok`` is the last of its sentence, or of the sentence's first
        ``budget`` tokens (builders keep the head of a too-long sentence)."""
        i = tok - TAG0
        return bool(self.sent_end[i] or self.sent_pos[i] == budget - 1)

    def stream(self, budget=None):
        """All tagged tokens in corpus order, each sentence cut to ``budget``."""
        return np.concatenate([s[:budget] for d in self.docs for s in d])


def tag(docs) -> Tagged:
    out, doc_of, ss, se, ds, de, sp = [], [], [], [], [], [], []
    pos = TAG0
    for d, doc in enumerate(docs):
        new = []
        for j, s in enumerate(doc):
            n = len(s)
            new.append(np.arange(pos, pos + n, dtype=np.int32))
            pos += n
            doc_of.append(np.full(n, d))
            flags = np.zeros((4, n), dtype=bool)
            flags[0, 0] = flags[1, -1] = True
            flags[2, 0] = j == 0
            flags[3, -1] = j == len(doc) - 1
            ss.append(flags[0]), se.append(flags[1]), ds.append(flags[2]), de.append(flags[3])
            sp.append(np.arange(n))
        out.append(new)
    c = np.concatenate
    return Tagged(out, c(doc_of), c(ss), c(se), c(ds), c(de), c(sp))


@pytest.fixture(scope="module")
def real() -> RealText:
    return load_real_text()


@pytest.fixture(scope="module")
def tagged(real) -> Tagged:
    return tag(real.docs)


def split_pair(ex, special=SP):
    """``[CLS] A [SEP] B [SEP]`` -> (A, B), checking the layout and token types."""
    t, ty = ex["tokens"], ex["token_type_ids"]
    assert t.dtype == np.int32 and ty.dtype == np.int32 and t.shape == ty.shape
    assert t[0] == special.cls and t[-1] == special.sep
    seps = np.flatnonzero(t == special.sep)
    assert len(seps) == 2, "exactly two [SEP]s"
    a, b = t[1 : seps[0]], t[seps[0] + 1 : -1]
    assert len(a) >= 1 and len(b) >= 1
    expect = np.r_[np.zeros(len(a) + 2, np.int32), np.ones(len(b) + 1, np.int32)]
    np.testing.assert_array_equal(ty, expect)
    return a, b


def contiguous(x) -> bool:
    return len(x) > 0 and bool(np.all(np.diff(x) == 1))


def binom_ok(k, n, p, z=4.5) -> bool:
    return abs(k - n * p) <= z * np.sqrt(n * p * (1 - p)) + 1


# --------------------------------------------------------------------- the corpus


def test_real_corpus_loaded(real):
    assert len(real.docs) >= 20
    n_tokens = sum(len(s) for d in real.docs for s in d)
    assert n_tokens > 20_000
    # Text never encodes to the control tokens (UNK may legitimately occur).
    ids = np.unique(np.concatenate([np.concatenate(d) for d in real.docs]))
    assert not {SP.pad, SP.cls, SP.sep, SP.mask} & set(ids.tolist())


# ------------------------------------------------------------ truncate_seq_pair


def _reference_truncate(la, lb, m):
    while la + lb > m:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def test_truncate_seq_pair_matches_reference_loop():
    rng = np.random.default_rng(0)
    for _ in range(500):
        la, lb, m = (int(x) for x in rng.integers(1, 60, size=3))
        m = max(m, 2)
        a = np.arange(la, dtype=np.int32)
        b = np.arange(100, 100 + lb, dtype=np.int32)
        a2, b2, removed = builders.truncate_seq_pair(a, b, m, rng)
        assert (len(a2), len(b2)) == _reference_truncate(la, lb, m)
        assert removed == la + lb - len(a2) - len(b2)
        for orig, new in ((a, a2), (b, b2)):  # still a contiguous slice of the original
            assert len(new) == 0 or contiguous(new) and new[0] >= orig[0] and new[-1] <= orig[-1]


def test_truncate_front_and_back_are_both_used():
    rng = np.random.default_rng(1)
    fronts = backs = 0
    for _ in range(200):
        a2, _, _ = builders.truncate_seq_pair(np.arange(50), np.arange(5), 20, rng)
        fronts += a2[0] > 0
        backs += a2[-1] < 49
    assert fronts > 150 and backs > 150  # 45 tokens removed: both ends almost surely cut


# ------------------------------------------------------------------ segment_pair


def test_segment_pair_format_and_provenance(real, tagged):
    seq_len = 64
    stats = BuildStats()
    exs = list(builders.segment_pair(tagged.docs, seq_len, np.random.default_rng(0), SP, stats=stats))
    assert stats.examples == len(exs) > 300
    n_next = 0
    for ex in exs:
        assert len(ex["tokens"]) <= seq_len
        assert ex["pair_label"].shape == () and ex["pair_label"].dtype == np.int32
        a, b = split_pair(ex)
        assert contiguous(a) and contiguous(b)
        da, db = tagged.doc_of[a[0] - TAG0], tagged.doc_of[b[0] - TAG0]
        assert tagged.doc_of[a[-1] - TAG0] == da and tagged.doc_of[b[-1] - TAG0] == db
        if ex["pair_label"] == 0:  # IsNext: B is the actual continuation of A
            n_next += 1
            assert db == da and b[0] > a[-1]
            if len(ex["tokens"]) < seq_len:  # not truncated: exactly adjacent, sentence-aligned
                assert b[0] == a[-1] + 1
                assert tagged.sent_start[a[0] - TAG0] and tagged.sent_end[a[-1] - TAG0]
                assert tagged.sent_end[b[-1] - TAG0]
        else:  # NotNext: B is from a different document
            assert db != da
            if len(ex["tokens"]) < seq_len:
                assert tagged.sent_start[b[0] - TAG0]
    assert n_next + stats.not_next == len(exs)


def test_segment_pair_nsp_rate_is_half(tagged):
    stats = BuildStats()
    for seed in range(3):
        for _ in builders.segment_pair(tagged.docs, 128, np.random.default_rng(seed), SP, stats=stats):
            pass
    # One-sentence chunks are NotNext by construction (as in BERT); the rest are 50/50.
    free = stats.examples - stats.single_sentence_chunks
    assert free > 1000
    assert binom_ok(stats.not_next - stats.single_sentence_chunks, free, 0.5)
    assert 0.45 < stats.not_next / stats.examples < 0.6


def test_segment_pair_uses_whole_corpus_once_per_pass(tagged):
    """IsNext consumes its chunk; NotNext puts unused sentences back: every sentence's
    tokens appear as (part of) A, or as IsNext B, in document order."""
    stats = BuildStats()
    exs = list(builders.segment_pair(tagged.docs, 128, np.random.default_rng(3), SP, stats=stats))
    seen = np.zeros(len(tagged.doc_of), dtype=bool)
    for ex in exs:
        a, b = split_pair(ex)
        seen[a - TAG0] = True
        if ex["pair_label"] == 0:
            seen[b - TAG0] = True
    # Only tokens removed by truncation may be missing.
    assert (~seen).sum() <= stats.truncated_tokens


def test_segment_pair_short_seq_fraction(tagged):
    lengths = {}
    for p in (0.0, 0.1, 1.0):
        stats = BuildStats()
        exs = list(
            builders.segment_pair(
                tagged.docs, 128, np.random.default_rng(5), SP, short_seq_prob=p, stats=stats
            )
        )
        lengths[p] = np.array([len(e["tokens"]) for e in exs])
        if p == 0.0:
            assert stats.short_target_examples == 0
        if p == 0.1:
            assert binom_ok(stats.short_target_examples, stats.examples, 0.1)
        if p == 1.0:
            assert stats.short_target_examples == stats.examples
    # Short targets really produce shorter sequences.
    assert lengths[1.0].mean() < 0.75 * lengths[0.0].mean()
    assert lengths[0.0].mean() > lengths[0.1].mean() > lengths[1.0].mean()


def test_segment_pair_short_seq_per_document_mode(tagged):
    stats = BuildStats()
    list(
        builders.segment_pair(
            tagged.docs, 128, np.random.default_rng(5), SP, short_seq_per_document=True, stats=stats
        )
    )
    assert 0 < stats.short_target_examples < stats.examples


def test_segment_pair_truncates_long_sentences(tagged):
    long_doc = [np.arange(50_000, 50_300, dtype=np.int32), np.arange(60_000, 60_010, dtype=np.int32)]
    docs = tagged.docs[:5] + [long_doc] + tagged.docs[5:10]
    stats = BuildStats()
    exs = list(builders.segment_pair(docs, 32, np.random.default_rng(0), SP, stats=stats))
    assert stats.truncated_examples > 0 and stats.truncated_tokens >= 300 - 29
    hit = [e for e in exs if np.any((e["tokens"] >= 50_000) & (e["tokens"] < 50_300))]
    assert hit, "the long sentence is truncated, not dropped"
    for e in exs:
        assert len(e["tokens"]) <= 32
        a, b = split_pair(e)
        assert contiguous(a) and contiguous(b)


def test_segment_pair_single_sentence_docs_counted(tagged):
    singles = [[np.arange(70_000 + 10 * i, 70_000 + 10 * i + 6, dtype=np.int32)] for i in range(5)]
    docs = [[]] + singles + tagged.docs[:6] + [[np.zeros(0, np.int32)]]
    stats = BuildStats()
    exs = list(builders.segment_pair(docs, 64, np.random.default_rng(0), SP, stats=stats))
    assert stats.single_sentence_docs == 5
    assert stats.skipped_empty_docs == 2 and stats.empty_sentences == 1
    from_singles = [e for e in exs if 70_000 <= split_pair(e)[0][0] < 70_050]
    assert len(from_singles) == 5 and all(e["pair_label"] == 1 for e in from_singles)
    # Without NSP a single-sentence doc is split mid-sentence, B = true continuation.
    stats = BuildStats()
    exs = list(builders.segment_pair(docs, 64, np.random.default_rng(0), SP, nsp=False, stats=stats))
    assert all("pair_label" not in e for e in exs)
    assert stats.token_split_chunks >= 5
    for e in exs:
        a, b = split_pair(e)
        assert b[0] > a[-1] and (len(e["tokens"]) == 64 or b[0] == a[-1] + 1)


def test_segment_pair_needs_two_docs_for_nsp(tagged):
    with pytest.raises(ValueError):
        list(builders.segment_pair(tagged.docs[:1], 64, np.random.default_rng(0), SP))
    assert list(builders.segment_pair(tagged.docs[:1], 64, np.random.default_rng(0), SP, nsp=False))


def _three_sources(n: int) -> list[str]:
    """Three sources over n documents, each a run of documents, as three corpora listed in a spec."""
    return [("plays", "novels", "manuals")[3 * d // n] for d in range(n)]


@pytest.mark.parametrize("builder", ["segment_pair", "sentence_pair"])
@pytest.mark.parametrize("negatives", ["same_source", "other_source"])
def test_nsp_negatives_come_from_the_chosen_source(tagged, builder, negatives):
    sources = _three_sources(len(tagged.docs))
    stats = BuildStats()
    exs = builders.build_examples(
        builder,
        tagged.docs,
        64,
        np.random.default_rng(0),
        SP,
        stats=stats,
        negatives=negatives,
        sources=sources,
    )
    from_sources = set()
    for ex in exs:
        a, b = split_pair(ex)
        da, db = tagged.doc_of[a[0] - TAG0], tagged.doc_of[b[0] - TAG0]
        if ex["pair_label"] == 0:
            assert db == da
            continue
        assert db != da and (sources[db] == sources[da]) == (negatives == "same_source")
        from_sources.add(sources[da])
    assert stats.not_next > 300 and from_sources == set(sources)


def test_nsp_negatives_any_is_berts_draw(tagged):
    """The default, "any", draws as BERT whatever the sources: data prepared before it is unchanged."""
    sources = _three_sources(len(tagged.docs))
    plain = list(builders.segment_pair(tagged.docs, 64, np.random.default_rng(0), SP))
    given = list(builders.segment_pair(tagged.docs, 64, np.random.default_rng(0), SP, sources=sources))
    assert len(plain) == len(given)
    for x, y in zip(plain, given):
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    # ... so its negatives cross sources about as often as the other sources hold documents (2/3 here).
    cross = [
        sources[tagged.doc_of[a[0] - TAG0]] != sources[tagged.doc_of[b[0] - TAG0]]
        for a, b in (split_pair(ex) for ex in plain if ex["pair_label"] == 1)
    ]
    assert 0.55 < np.mean(cross) < 0.78


def test_nsp_negatives_need_documents_to_draw_from(tagged):
    docs = tagged.docs[:3]
    with pytest.raises(builders.DataError, match="source 'b' has 1 document \\(need 2\\)"):
        list(
            builders.segment_pair(
                docs, 64, np.random.default_rng(0), SP, negatives="same_source", sources="aab"
            )
        )
    with pytest.raises(builders.DataError, match="source 'a' has no other source"):
        list(
            builders.segment_pair(
                docs, 64, np.random.default_rng(0), SP, negatives="other_source", sources="aaa"
            )
        )
    with pytest.raises(builders.DataError, match="needs each document's source"):
        list(builders.sentence_pair(docs, 64, np.random.default_rng(0), SP, negatives="same_source"))


def test_segment_pair_without_nsp_is_always_continuation(tagged):
    for ex in builders.segment_pair(tagged.docs, 64, np.random.default_rng(2), SP, nsp=False):
        assert "pair_label" not in ex
        a, b = split_pair(ex)
        assert tagged.doc_of[a[0] - TAG0] == tagged.doc_of[b[0] - TAG0] and b[0] > a[-1]


def test_segment_pair_hf_special_ids(real):
    docs = [[s + 200 for s in d] for d in real.docs[:20]]
    for ex in builders.segment_pair(docs, 48, np.random.default_rng(0), HF):
        a, b = split_pair(ex, HF)
        assert not np.isin(np.r_[a, b], HF.all_ids()).any()


# ----------------------------------------------------------------- sentence_pair


def test_sentence_pair(tagged):
    seq_len = 128
    stats = BuildStats()
    exs = list(builders.sentence_pair(tagged.docs, seq_len, np.random.default_rng(0), SP, stats=stats))
    n_not = 0
    for ex in exs:
        assert len(ex["tokens"]) <= seq_len
        a, b = split_pair(ex)
        assert contiguous(a) and contiguous(b)
        if len(ex["tokens"]) < seq_len:  # untruncated: A and B are each ONE whole sentence
            for s in (a, b):
                assert tagged.sent_start[s[0] - TAG0] and tagged.sent_end[s[-1] - TAG0]
                assert not tagged.sent_end[s[:-1] - TAG0].any()
        same_doc = tagged.doc_of[a[0] - TAG0] == tagged.doc_of[b[0] - TAG0]
        if ex["pair_label"] == 0:
            assert same_doc and (b[0] == a[-1] + 1 or len(ex["tokens"]) == seq_len)
        else:
            n_not += 1
            assert not same_doc
    assert n_not == stats.not_next
    free = stats.examples - stats.single_sentence_chunks
    assert binom_ok(stats.not_next - stats.single_sentence_chunks, free, 0.5)


def test_sentence_pair_without_nsp_and_truncation(tagged):
    stats = BuildStats()
    exs = list(builders.sentence_pair(tagged.docs, 12, np.random.default_rng(0), SP, nsp=False, stats=stats))
    assert stats.truncated_sentences > 0 and stats.dropped_sentences > 0
    for ex in exs:
        assert "pair_label" not in ex and len(ex["tokens"]) <= 12
        a, b = split_pair(ex)
        assert b[0] > a[-1]
        assert tagged.doc_of[a[0] - TAG0] == tagged.doc_of[b[0] - TAG0]


# --------------------------------------------------------- full / doc sentences


def _single_body(ex, special=SP):
    t = ex["tokens"]
    assert t[0] == special.cls and t[-1] == special.sep
    assert ex["token_type_ids"].dtype == np.int32 and not ex["token_type_ids"].any()
    assert "pair_label" not in ex
    return t[1:-1]


def test_full_sentences_crosses_documents_with_extra_sep(tagged):
    seq_len = 128
    stats = BuildStats()
    exs = list(builders.full_sentences(tagged.docs, seq_len, np.random.default_rng(0), SP, stats=stats))
    stream = []
    crossings = 0
    for ex in exs:
        assert len(ex["tokens"]) <= seq_len
        body = _single_body(ex)
        pieces = np.split(body, np.flatnonzero(body == SP.sep))
        pieces = [pieces[0]] + [p[1:] for p in pieces[1:]]  # drop the separators
        for k, p in enumerate(pieces):
            assert contiguous(p), "sentences are contiguous full sentences"
            assert tagged.sent_start[p[0] - TAG0] and tagged.ends_sentence(p[-1], seq_len - 2)
            assert len(np.unique(tagged.doc_of[p - TAG0])) == 1
            if k > 0:  # an extra [SEP] separates the end of one document from the next
                crossings += 1
                prev = pieces[k - 1][-1] - TAG0
                assert tagged.doc_of[prev] == tagged.doc_of[p[0] - TAG0] - 1 and tagged.doc_start[p[0] - TAG0]
            stream.append(p)
    assert crossings > 10 and crossings == stats.doc_separators
    # Nothing lost (beyond counted truncation), nothing repeated, order kept.
    np.testing.assert_array_equal(np.concatenate(stream), tagged.stream(seq_len - 2))
    assert stats.truncated_tokens == len(tagged.doc_of) - len(tagged.stream(seq_len - 2))
    # Packed: all but a few examples are nearly full.
    lens = np.array([len(e["tokens"]) for e in exs])
    assert np.median(lens) > 0.8 * seq_len


def test_doc_sentences_never_crosses(tagged):
    seq_len = 128
    stats = BuildStats()
    exs = list(builders.doc_sentences(tagged.docs, seq_len, np.random.default_rng(0), SP, stats=stats))
    bodies = []
    for ex in exs:
        assert len(ex["tokens"]) <= seq_len
        body = _single_body(ex)
        assert contiguous(body), "a contiguous slice of one document"
        assert len(np.unique(tagged.doc_of[body - TAG0])) == 1
        assert tagged.sent_start[body[0] - TAG0] and tagged.ends_sentence(body[-1], seq_len - 2)
        bodies.append(body)
    assert stats.doc_separators == 0
    np.testing.assert_array_equal(np.concatenate(bodies), tagged.stream(seq_len - 2))
    # A new document always starts a new example.
    doc_of_first = [tagged.doc_of[b[0] - TAG0] for b in bodies]
    for d in range(len(tagged.docs)):
        assert d in doc_of_first and tagged.doc_start[bodies[doc_of_first.index(d)][0] - TAG0]


def test_packed_sentences_truncate_long_sentence(tagged):
    long_doc = [np.arange(50_000, 50_100, dtype=np.int32)]
    docs = tagged.docs[:2] + [long_doc] + tagged.docs[2:4]
    for fn in (builders.full_sentences, builders.doc_sentences):
        stats = BuildStats()
        exs = list(fn(docs, 40, None, SP, stats=stats))
        assert stats.truncated_sentences >= 1 and stats.truncated_tokens >= 62
        kept = [e for e in exs if np.any(e["tokens"] >= 50_000)]
        assert len(kept) == 1
        np.testing.assert_array_equal(_single_body(kept[0]), np.arange(50_000, 50_038))
        assert all(len(e["tokens"]) <= 40 for e in exs)


# ---------------------------------------------------------------------------- sop


def test_sop(tagged):
    seq_len = 64
    stats = BuildStats()
    exs = list(builders.sop(tagged.docs, seq_len, np.random.default_rng(0), SP, stats=stats))
    swapped = 0
    for ex in exs:
        assert len(ex["tokens"]) <= seq_len
        a, b = split_pair(ex)
        assert contiguous(a) and contiguous(b)
        assert tagged.doc_of[a[0] - TAG0] == tagged.doc_of[b[0] - TAG0], "same document"
        exact = len(ex["tokens"]) < seq_len
        if ex["pair_label"] == 0:  # in order: consecutive text
            assert b[0] > a[-1] and (not exact or b[0] == a[-1] + 1)
        else:  # swapped: B precedes A
            swapped += 1
            assert a[0] > b[-1] and (not exact or a[0] == b[-1] + 1)
    assert swapped == stats.swapped and binom_ok(swapped, len(exs), 0.5)


# -------------------------------------------------------------------- pack_causal


@pytest.mark.parametrize("seq_len", [7, 64, 300])
def test_pack_causal(tagged, seq_len):
    eos = 5
    n = 4 if seq_len < 10 else 30
    docs = tagged.docs[: n // 2] + [[]] + tagged.docs[n // 2 : n]
    stats = BuildStats()
    rows = list(builders.pack_causal(docs, seq_len, eos_id=eos, stats=stats, block_rows=3))
    assert stats.skipped_empty_docs == 1 and stats.examples == len(rows)
    ids = np.stack([r["input_ids"] for r in rows])
    seg = np.stack([r["segment_ids"] for r in rows])
    pos = np.stack([r["positions"] for r in rows])
    assert ids.shape == seg.shape == pos.shape == (len(rows), seq_len)
    assert ids.dtype == seg.dtype == pos.dtype == np.int32
    # Token conservation: every token (plus one eos per doc) exactly once, in order.
    expect = np.concatenate([np.r_[np.concatenate(d), eos] for d in docs if d])
    np.testing.assert_array_equal(ids[seg > 0], expect)
    assert stats.tokens == len(expect)
    # Padding only at the tail of the last row.
    assert (seg[:-1] > 0).all()
    n_pad = int((seg[-1] == 0).sum())
    assert n_pad == stats.padding_tokens < seq_len
    assert (seg[-1, seq_len - n_pad :] == 0).all() and (ids[-1, seq_len - n_pad :] == 0).all()
    assert (pos[-1, seq_len - n_pad :] == 0).all()
    assert pos.max() <= seq_len - 1
    for r in range(len(rows)):
        real_ = seg[r] > 0
        s, p, t = seg[r][real_], pos[r][real_], ids[r][real_]
        assert s[0] == 1 and p[0] == 0
        new = np.r_[True, s[1:] != s[:-1]]
        assert (np.diff(s) >= 0).all() and (np.diff(s) <= 1).all()
        np.testing.assert_array_equal(p[new], 0)  # positions restart at each piece
        np.testing.assert_array_equal(p[~new], p[np.r_[False, ~new[1:]].nonzero()[0] - 1] + 1)
        # a new piece (other than at the row start) begins right after an eos
        starts = np.flatnonzero(new)[1:]
        assert (t[starts - 1] == eos).all()
        # tagged tokens of one piece come from one document
        for k in np.unique(s):
            piece = t[(s == k) & (t >= TAG0)]
            assert len(np.unique(tagged.doc_of[piece - TAG0])) <= 1


def test_pack_causal_is_deterministic(tagged):
    a = list(builders.pack_causal(tagged.docs[:10], 50, eos_id=5))
    b = list(builders.pack_causal(tagged.docs[:10], 50, eos_id=5))
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


# ------------------------------------------------------------ determinism, registry


@pytest.mark.parametrize("name", ["segment_pair", "sentence_pair", "sop"])
def test_determinism(real, name):
    def run(seed):
        return list(builders.build_examples(name, real.docs[:20], 64, np.random.default_rng(seed), SP))

    a, b, c = run(0), run(0), run(1)
    assert len(a) == len(b)
    assert all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))
    differs = len(a) != len(c) or any(
        not np.array_equal(x["tokens"], y["tokens"]) or x.get("pair_label") != y.get("pair_label")
        for x, y in zip(a, c)
    )
    assert differs


@pytest.mark.parametrize("name", ["full_sentences", "doc_sentences"])
def test_packed_builders_deterministic(real, name):
    a = list(builders.build_examples(name, real.docs[:20], 64, np.random.default_rng(0), SP))
    b = list(builders.build_examples(name, real.docs[:20], 64, np.random.default_rng(1), SP))
    assert all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, b)) and len(a) == len(b)


def test_build_examples_registry(real):
    assert set(builders.BUILDERS) == {
        "segment_pair",
        "sentence_pair",
        "full_sentences",
        "doc_sentences",
        "sop",
    }
    with pytest.raises(ValueError, match="segment_pair"):
        builders.build_examples("nope", real.docs, 64, np.random.default_rng(0), SP)
    stats = BuildStats()
    exs = list(
        builders.build_examples(
            "segment_pair", real.docs[:10], 64, np.random.default_rng(0), SP, nsp=False, stats=stats
        )
    )
    assert stats.examples == len(exs) > 0 and "pair_label" not in exs[0]


# ------------------------------------------------------------------------ padding


def test_pad_encoder_example(real):
    seq_len = 64
    for ex in builders.segment_pair(real.docs[:10], seq_len, np.random.default_rng(0), SP):
        n = len(ex["tokens"])
        p = builders.pad_encoder_example(ex, seq_len, SP.pad)
        for k in ("input_ids", "token_type_ids", "segment_ids", "positions"):
            assert p[k].shape == (seq_len,) and p[k].dtype == np.int32
        np.testing.assert_array_equal(p["input_ids"][:n], ex["tokens"])
        assert (p["input_ids"][n:] == SP.pad).all()
        np.testing.assert_array_equal(p["token_type_ids"][:n], ex["token_type_ids"])
        assert (p["token_type_ids"][n:] == 0).all()
        np.testing.assert_array_equal(p["segment_ids"], (np.arange(seq_len) < n).astype(np.int32))
        np.testing.assert_array_equal(p["positions"], np.arange(seq_len))
        assert p["pair_label"].shape == () and p["pair_label"] == ex["pair_label"]
    ex = next(builders.full_sentences(real.docs[:3], seq_len, None, SP))
    assert builders.pad_encoder_example(ex, seq_len, SP.pad)["pair_label"] == 0
    with pytest.raises(ValueError):
        builders.pad_encoder_example(ex, len(ex["tokens"]) - 1, SP.pad)
