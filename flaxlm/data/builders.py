"""Pretraining example builders (pure numpy; the data pipeline knows nothing of models).

A tokenized *document* is ``list[np.ndarray]``: its sentences in order, each an int32
array of token ids without special tokens. A *corpus* is a sequence of documents: a list, or a
`CleanDocuments` such as flaxlm.data.token_store's on-disk store, whose documents are read only
when a builder asks for them (NSP's NotNext draws index it at random), so that building examples
never holds the corpus.

Every encoder builder yields dicts of int32 numpy arrays of variable length
(``n <= seq_len``; ``seq_len`` counts the special tokens):

* ``tokens``         [n]  e.g. ``[CLS] A [SEP] B [SEP]``
* ``token_type_ids`` [n]  0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``
* ``pair_label``     []   only for pair objectives (NSP: 0=IsNext 1=NotNext;
                          SOP: 0=in order 1=swapped)

Recipes implemented (one builder each, see ``BUILDERS``):

* ``segment_pair``   Devlin et al. 2019, BERT ``create_pretraining_data.py``
                     (``create_instances_from_document`` + ``truncate_seq_pair``).
* ``sentence_pair``  Liu et al. 2019, RoBERTa §4.2 SENTENCE-PAIR.
* ``full_sentences`` RoBERTa §4.2 FULL-SENTENCES (crosses documents, extra separator).
* ``doc_sentences``  RoBERTa §4.2 DOC-SENTENCES (never crosses documents).
* ``sop``            Lan et al. 2019, ALBERT sentence-order prediction.

plus ``pack_causal`` (GPT-style causal-LM packing into fixed rows), ``prefix_lm`` (those
rows with each document piece split into a prefix and a continuation), ``span_corruption``
and ``iid_denoising`` (T5's encoder-decoder examples, packed into fixed rows) and
``pad_encoder_example`` (variable-length example -> fixed-shape arrays).

Randomness comes only from the ``np.random.Generator`` argument, so output is a
pure function of (corpus, options, seed). Documents are visited in corpus order, as
BERT does; the caller shuffles examples. Every builder accepts an optional
``BuildStats`` that it updates in place, so nothing is dropped or truncated
without a count.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
from typing import Callable, Iterator, Sequence

import numpy as np

from flaxlm.errors import DataError

Document = Sequence[np.ndarray]
Example = dict[str, np.ndarray]


class CleanDocuments(collections.abc.Sequence):
    """A corpus already as `_clean_corpus` leaves one, read lazily: ``[i]`` is document i's list of int32
    sentence arrays, none empty, and no document is empty. `sentence_counts` lets the builders count
    and index the documents without reading them."""

    def sentence_counts(self) -> np.ndarray:
        """[num_documents] int: the sentences of each document (all >= 1)."""
        raise NotImplementedError


__all__ = [
    "SpecialIds",
    "BuildStats",
    "truncate_seq_pair",
    "segment_pair",
    "sentence_pair",
    "full_sentences",
    "doc_sentences",
    "sop",
    "pack_causal",
    "prefix_lm",
    "span_corruption",
    "iid_denoising",
    "SEQ2SEQ_BUILDERS",
    "targets_length",
    "pad_encoder_example",
    "BUILDERS",
    "NSP_NEGATIVES",
    "build_examples",
    "CleanDocuments",
]


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    """Ids of the special tokens. Always passed in explicitly, never hard-coded.

    Our sentencepiece models: ``SpecialIds(pad=0, cls=2, sep=3, mask=4, unk=1)``;
    HF WordPiece (bert-base-uncased): ``SpecialIds(pad=0, cls=101, sep=102, mask=103, unk=100)``.
    ``extra`` holds any further reserved ids (bos/eos, ...) that masking must never
    select nor emit as a random replacement.
    """

    pad: int
    cls: int
    sep: int
    mask: int
    unk: int
    extra: tuple[int, ...] = ()

    def all_ids(self) -> tuple[int, ...]:
        """All special ids, sorted and de-duplicated."""
        return tuple(sorted({self.pad, self.cls, self.sep, self.mask, self.unk, *self.extra}))


@dataclasses.dataclass
class BuildStats:
    """Counters a builder updates in place (pass one in; the pipeline logs it)."""

    documents: int = 0  # documents visited (including skipped ones)
    examples: int = 0  # examples yielded
    skipped_empty_docs: int = 0  # documents with no non-empty sentence
    empty_sentences: int = 0  # zero-length sentences ignored
    single_sentence_docs: int = 0  # documents with exactly one non-empty sentence
    single_sentence_chunks: int = 0  # pair chunks holding one sentence (see builders)
    token_split_chunks: int = 0  # one-sentence chunks split mid-sentence into A|B
    dropped_chunks: int = 0  # chunks that could not form a pair (1 token), dropped
    dropped_sentences: int = 0  # sentences with no partner (sentence_pair, nsp=False)
    short_target_examples: int = 0  # segment_pair/sop chunks built with a short target
    not_next: int = 0  # NSP examples with a random B (pair_label 1)
    swapped: int = 0  # SOP examples with swapped segments (pair_label 1)
    truncated_examples: int = 0  # pair examples shortened by truncate_seq_pair
    truncated_sentences: int = 0  # single sentences cut because they did not fit
    truncated_tokens: int = 0  # tokens removed by any truncation above
    doc_separators: int = 0  # extra [SEP]s inserted between documents
    padding_tokens: int = 0  # pack_causal: pad tokens in the last row
    tokens: int = 0  # pack_causal: real tokens emitted (incl. eos)
    prefix_tokens: int = 0  # prefix_lm: tokens in the prefixes (inputs, not scored)
    noise_tokens: int = 0  # iid_denoising: tokens corrupted (a sentinel or a random token)
    random_tokens: int = 0  # iid_denoising: of those, replaced by a random token

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers


def _i32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int32)


def _randint(rng: np.random.Generator, low: int, high: int) -> int:
    """Uniform int in [low, high). ``Generator.integers`` costs several microseconds
    per scalar call; one ``random()`` is ~10x cheaper (bias < 2**-40, irrelevant here)."""
    return low + int(rng.random() * (high - low))


def _clean_corpus(docs: Sequence[Document], stats: BuildStats) -> Sequence[list[np.ndarray]]:
    """Drop empty sentences and count empty / single-sentence documents.

    Returns one entry per input document (possibly ``[]``) so indices stay aligned
    with the caller's corpus; a `CleanDocuments` is returned as it is (only counted).
    """
    if isinstance(docs, CleanDocuments):
        counts = docs.sentence_counts()
        stats.documents += len(counts)
        stats.single_sentence_docs += int(np.count_nonzero(counts == 1))
        return docs
    out = []
    for doc in docs:
        stats.documents += 1
        sents = []
        for s in doc:
            s = np.asarray(s, dtype=np.int32).reshape(-1)
            if s.size == 0:
                stats.empty_sentences += 1
            else:
                sents.append(s)
        if not sents:
            stats.skipped_empty_docs += 1
        elif len(sents) == 1:
            stats.single_sentence_docs += 1
        out.append(sents)
    return out


def _pair_lengths_after_truncation(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Final (len_a, len_b) of BERT's ``truncate_seq_pair`` loop, in closed form.

    The original removes one token at a time from the longer side (B on ties) until
    ``len_a + len_b <= max_tokens``; which side loses how many tokens does not depend
    on the rng, only front-vs-back does.
    """
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return len_a, len_b
    # First even out the longer side, then alternate (B first, since ties cut B).
    diff = abs(len_a - len_b)
    cut = min(diff, excess)
    if len_a > len_b:
        len_a -= cut
    else:
        len_b -= cut
    rest = excess - cut
    len_b -= (rest + 1) // 2
    len_a -= rest // 2
    return len_a, len_b


def truncate_seq_pair(
    tokens_a: np.ndarray, tokens_b: np.ndarray, max_tokens: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, int]:
    """BERT ``truncate_seq_pair``: trim the longer of A [la] / B [lb] until la+lb <= max_tokens.

    Each removed token comes from the front or the back with prob 0.5 ("to add more
    randomness and avoid biases", Devlin et al.). Vectorised: the number removed from
    each side is deterministic, the front/back split of it is Binomial(k, 0.5), which
    is the distribution of the original token-by-token coin flips.

    Returns (A', B', tokens_removed).
    """
    la, lb = _pair_lengths_after_truncation(len(tokens_a), len(tokens_b), max_tokens)
    removed = len(tokens_a) + len(tokens_b) - la - lb
    if removed == 0:
        return tokens_a, tokens_b, 0
    out = []
    for toks, keep in ((tokens_a, la), (tokens_b, lb)):
        k = len(toks) - keep
        if k:
            front = int(rng.binomial(k, 0.5))
            toks = toks[front : front + keep]
        out.append(toks)
    return out[0], out[1], removed


@functools.lru_cache(maxsize=16)
def _special_arrays(special: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    # Shared read-only [1] arrays; np.concatenate copies them into each example.
    cls, sep = np.array([special.cls], np.int32), np.array([special.sep], np.int32)
    cls.flags.writeable = sep.flags.writeable = False
    return cls, sep


def _encode_pair(a: np.ndarray, b: np.ndarray, special: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] A [SEP] B [SEP]`` and its token types (0 up to the first [SEP], then 1)."""
    cls, sep = _special_arrays(special)
    tokens = np.concatenate((cls, a, sep, b, sep))
    types = np.zeros(len(tokens), dtype=np.int32)
    types[len(a) + 2 :] = 1
    return tokens, types


def _encode_single(body: np.ndarray, special: SpecialIds) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] body [SEP]`` with all-zero token types."""
    cls, sep = _special_arrays(special)
    tokens = np.concatenate((cls, body, sep))
    return tokens, np.zeros(len(tokens), dtype=np.int32)


def _random_other_doc(rng: np.random.Generator, nonempty: np.ndarray, current: int) -> int:
    """Uniform random index from ``nonempty`` (sorted doc indices) other than ``current``.

    BERT retries 10 times and may still return the same document; drawing from the
    other documents directly guarantees NotNext B really comes from elsewhere.
    """
    pos = int(np.searchsorted(nonempty, current))
    has_current = pos < len(nonempty) and nonempty[pos] == current
    n_other = len(nonempty) - int(has_current)
    j = _randint(rng, 0, n_other)
    if has_current and j >= pos:
        j += 1
    return int(nonempty[j])


# Where an NSP NotNext segment comes from (``negatives=``). BERT draws any other document; with a
# corpus of several sources (e.g. the default's four kinds of text) "same_source" keeps the topic
# and genre of A, so NotNext must be told from coherence, and "other_source" makes it a topic test.
NSP_NEGATIVES = ("any", "same_source", "other_source")


def _negative_sampler(
    nonempty: np.ndarray, sources: Sequence[str] | None, negatives: str, name: str
) -> Callable[[np.random.Generator, int], int]:
    """``draw(rng, current)``: the document a NotNext segment of document ``current`` comes from.

    ``sources[i]`` names document i's source (``corpus.Document.source``). "any" draws exactly as
    BERT (and as flaxlm always has, so prepared data is unchanged); the others draw uniformly from
    the other documents of the same source, or from the documents of every other source.
    """
    if negatives == "any":
        return lambda rng, current: _random_other_doc(rng, nonempty, current)
    if negatives not in NSP_NEGATIVES:
        raise DataError(
            f"{name}: negatives={negatives!r} is unknown; choose one of {', '.join(NSP_NEGATIVES)}"
        )
    if sources is None:
        raise DataError(f"{name}: negatives={negatives!r} needs each document's source")
    codes = np.array([sources[i] for i in nonempty], dtype=object)
    pools = {}
    for source in sorted(set(codes)):
        same = nonempty[codes == source]
        pool = same if negatives == "same_source" else nonempty[codes != source]
        if len(pool) < (2 if negatives == "same_source" else 1):
            raise DataError(
                f"{name} with negatives={negatives!r}: source {source!r} has "
                + (f"{len(same)} document (need 2)" if negatives == "same_source" else "no other source")
                + "; use negatives='any' or a corpus with more documents per source"
            )
        pools[source] = pool
    if negatives == "same_source":
        return lambda rng, current: _random_other_doc(rng, pools[sources[current]], current)

    def from_other_source(rng: np.random.Generator, current: int) -> int:
        pool = pools[sources[current]]
        return int(pool[_randint(rng, 0, len(pool))])

    return from_other_source


def _nonempty_index(clean: Sequence[list[np.ndarray]], need_two: bool, name: str) -> np.ndarray:
    if isinstance(clean, CleanDocuments):  # none is empty: no need to read them
        nonempty = np.arange(len(clean), dtype=np.int64)
    else:
        nonempty = np.array([i for i, d in enumerate(clean) if d], dtype=np.int64)
    if need_two and len(nonempty) < 2:
        raise DataError(f"{name} with NSP needs at least 2 non-empty documents, got {len(nonempty)}")
    return nonempty


def _check_seq_len(seq_len: int, minimum: int, name: str) -> None:
    if seq_len < minimum:
        raise DataError(f"{name}: seq_len={seq_len} too small (need >= {minimum})")


# ---------------------------------------------------------------- segment pairs / SOP


def _chunk_end(document: list[np.ndarray], start: int, target: int) -> int:
    """End (exclusive) of the chunk that begins at sentence ``start``: whole sentences are added
    until they hold ``target`` tokens or the document ends (at least one sentence)."""
    end, length = start, 0
    while end < len(document) and length < target:
        length += len(document[end])
        end += 1
    return end


def _sentence_run(document: list[np.ndarray], start: int, min_tokens: int) -> np.ndarray:
    """Consecutive sentences of ``document`` from ``start`` until they hold ``min_tokens`` (or it ends)."""
    return np.concatenate(document[start : _chunk_end(document, start, min_tokens)])


def _segment_pairs(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    special: SpecialIds,
    short_seq_prob: float,
    stats: BuildStats | None,
    short_seq_per_document: bool,
    *,
    nsp: bool,
    sop: bool,
    negatives: str = "any",
    sources: Sequence[str] | None = None,
) -> Iterator[Example]:
    """Shared body of ``segment_pair`` and ``sop`` (BERT's create_instances_from_document).

    ``nsp``: B is, with prob 0.5, sentences of another document (label 1).
    ``sop``: A and B are swapped with prob 0.5 (label 1). With neither, B is always
    A's continuation and no ``pair_label`` is emitted.
    """
    name = "sop" if sop else "segment_pair"
    _check_seq_len(seq_len, 5, name)  # [CLS] a [SEP] b [SEP]: at least one token per side
    stats = stats if stats is not None else BuildStats()
    clean = _clean_corpus(docs, stats)
    nonempty = _nonempty_index(clean, nsp, name)
    other_doc = _negative_sampler(nonempty, sources, negatives, name) if nsp else None
    max_num_tokens = seq_len - 3

    def draw_target() -> tuple[int, bool]:
        # BERT: mostly fill the sequence, but sometimes use a shorter one to reduce the
        # pretrain/finetune length mismatch. The target is only a soft goal.
        if rng.random() < short_seq_prob:
            return _randint(rng, 2, max_num_tokens + 1), True
        return max_num_tokens, False

    def split_chunk(chunk, doc_index, target):
        """(A, B, label, sentences of the chunk used); A is None for a chunk that cannot make a pair."""
        if len(chunk) == 1:
            stats.single_sentence_chunks += 1
        a_end = _randint(rng, 1, len(chunk)) if len(chunk) >= 2 else 1  # A = chunk[:a_end]
        if nsp and (len(chunk) == 1 or rng.random() < 0.5):
            # NotNext (always for a one-sentence chunk, as in BERT): B is a run of sentences of
            # another document, and the chunk's sentences after A are put back, not wasted.
            tokens_a = np.concatenate(chunk[:a_end])
            other = clean[other_doc(rng, doc_index)]
            tokens_b = _sentence_run(other, _randint(rng, 0, len(other)), max(1, target - len(tokens_a)))
            return tokens_a, tokens_b, 1, a_end
        if len(chunk) == 1:
            # No sentence boundary to split at and no random B allowed (continuation / SOP):
            # split the sentence itself so B is still the true continuation of A. A 1-token
            # chunk cannot form a pair.
            sent = chunk[0]
            if len(sent) < 2:
                stats.dropped_chunks += 1
                return None, None, 0, 1
            stats.token_split_chunks += 1
            cut = _randint(rng, 1, len(sent))
            return sent[:cut], sent[cut:], 0, 1
        return np.concatenate(chunk[:a_end]), np.concatenate(chunk[a_end:]), 0, len(chunk)

    for doc_index, document in enumerate(clean):
        if not document:
            continue
        # BERT draws the target once per document; by default we redraw per chunk so
        # that short_seq_prob is the fraction of *examples* (see short_seq_per_document).
        target, is_short = draw_target()
        start = 0
        while start < len(document):
            chunk = document[start : _chunk_end(document, start, target)]
            tokens_a, tokens_b, label, used = split_chunk(chunk, doc_index, target)
            start += used
            if tokens_a is not None:
                tokens_a, tokens_b, removed = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                if removed:
                    stats.truncated_examples += 1
                    stats.truncated_tokens += removed
                if sop and rng.random() < 0.5:
                    # ALBERT: negatives are the same two consecutive segments, swapped.
                    tokens_a, tokens_b = tokens_b, tokens_a
                    label = 1
                    stats.swapped += 1
                if nsp:
                    stats.not_next += label
                tokens, types = _encode_pair(tokens_a, tokens_b, special)
                ex = {"tokens": tokens, "token_type_ids": types}
                if nsp or sop:
                    ex["pair_label"] = _i32(label)
                stats.examples += 1
                stats.short_target_examples += int(is_short)
                yield ex
            if not short_seq_per_document:
                target, is_short = draw_target()


def segment_pair(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    special: SpecialIds,
    short_seq_prob: float = 0.1,
    nsp: bool = True,
    stats: BuildStats | None = None,
    short_seq_per_document: bool = False,
    negatives: str = "any",
    sources: Sequence[str] | None = None,
) -> Iterator[Example]:
    """BERT SEGMENT-PAIR (+NSP): Devlin et al. 2019, ``create_instances_from_document``.

    Per document, sentences are accumulated into a chunk until it reaches the target
    length (``seq_len - 3``, or with prob ``short_seq_prob`` uniform in
    ``[2, seq_len - 3]``). The chunk is split at a random sentence boundary: A = the
    first part; B = the rest (IsNext, label 0) or, with prob 0.5, a run of sentences
    from a different random document (NotNext, label 1), in which case the unused
    sentences of the chunk are put back. The pair is then trimmed by
    ``truncate_seq_pair`` to ``seq_len - 3`` tokens.

    Quirks kept from the original: a one-sentence chunk (e.g. a single-sentence
    document) is always NotNext (counted in ``single_sentence_chunks``).

    ``nsp=False`` (the "SEGMENT-PAIR without NSP" ablation): B is always the true
    continuation and no ``pair_label`` is emitted; a one-sentence chunk is split
    mid-sentence (``token_split_chunks``) and a one-token chunk is dropped
    (``dropped_chunks``).

    ``short_seq_per_document=True`` reproduces the original exactly in drawing the
    short target once per document (so short targets cover more than
    ``short_seq_prob`` of examples); by default it is redrawn per example.

    ``negatives`` (with ``sources``, one name per document): where NotNext B comes from,
    "any" other document (BERT), one of the "same_source" or of an "other_source"
    (``NSP_NEGATIVES``).

    Yields ``tokens`` [n], ``token_type_ids`` [n] and (nsp) ``pair_label`` [], n <= seq_len.
    """
    return _segment_pairs(
        docs,
        seq_len,
        rng,
        special,
        short_seq_prob,
        stats,
        short_seq_per_document,
        nsp=nsp,
        sop=False,
        negatives=negatives,
        sources=sources,
    )


def sop(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    special: SpecialIds,
    short_seq_prob: float = 0.1,
    stats: BuildStats | None = None,
    short_seq_per_document: bool = False,
) -> Iterator[Example]:
    """ALBERT sentence-order prediction: Lan et al. 2019 (``random_next_sentence=False``).

    A and B are two *consecutive* segments of one document, built exactly like
    ``segment_pair``'s IsNext case; with prob 0.5 they are swapped and
    ``pair_label`` = 1 (0 = in order). No random documents are used. Unlike the
    ALBERT code (which still samples a random B for one-sentence chunks), a
    one-sentence chunk is split mid-sentence so both classes stay pure order signals.

    Yields ``tokens`` [n], ``token_type_ids`` [n], ``pair_label`` [].
    """
    return _segment_pairs(
        docs, seq_len, rng, special, short_seq_prob, stats, short_seq_per_document, nsp=False, sop=True
    )


# -------------------------------------------------------------------- sentence pairs


def sentence_pair(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    special: SpecialIds,
    nsp: bool = True,
    stats: BuildStats | None = None,
    negatives: str = "any",
    sources: Sequence[str] | None = None,
) -> Iterator[Example]:
    """RoBERTa SENTENCE-PAIR (Liu et al. 2019, §4.2): A and B are single natural sentences.

    Walking each document's sentences in order, A = sentence i. B = sentence i+1
    (IsNext, label 0; the next example starts at i+2) or, with NSP and prob 0.5, a
    random sentence of a different random document (NotNext, label 1; sentence i+1
    is put back and becomes the next A, as BERT does). A document's last unpaired
    sentence is NotNext with NSP (``single_sentence_chunks``) and dropped without
    (``dropped_sentences``). Pairs longer than ``seq_len - 3`` are trimmed by
    ``truncate_seq_pair`` (``truncated_sentences`` counts each cut sentence).

    ``negatives`` and ``sources``: where NotNext B comes from, as in ``segment_pair``.

    Yields ``tokens`` [n], ``token_type_ids`` [n] and (nsp) ``pair_label`` [].
    """
    _check_seq_len(seq_len, 5, "sentence_pair")
    stats = stats if stats is not None else BuildStats()
    clean = _clean_corpus(docs, stats)
    nonempty = _nonempty_index(clean, nsp, "sentence_pair")
    other_doc = _negative_sampler(nonempty, sources, negatives, "sentence_pair") if nsp else None
    max_num_tokens = seq_len - 3
    for doc_index, document in enumerate(clean):
        i = 0
        while i < len(document):
            tokens_a = document[i]
            last = i == len(document) - 1
            if not nsp and last:
                stats.dropped_sentences += 1
                break
            if nsp and (last or rng.random() < 0.5):
                if last:
                    stats.single_sentence_chunks += 1
                rand_doc = clean[other_doc(rng, doc_index)]
                tokens_b = rand_doc[_randint(rng, 0, len(rand_doc))]
                label, step = 1, 1
                stats.not_next += 1
            else:
                tokens_b = document[i + 1]
                label, step = 0, 2
            a, b, removed = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if removed:
                stats.truncated_examples += 1
                stats.truncated_tokens += removed
                stats.truncated_sentences += int(len(a) < len(tokens_a)) + int(len(b) < len(tokens_b))
            tokens, types = _encode_pair(a, b, special)
            ex = {"tokens": tokens, "token_type_ids": types}
            if nsp:
                ex["pair_label"] = _i32(label)
            stats.examples += 1
            yield ex
            i += step


# ------------------------------------------------------------- full / doc sentences


def _packed_sentences(
    docs: Sequence[Document],
    seq_len: int,
    special: SpecialIds,
    cross_documents: bool,
    stats: BuildStats | None,
    name: str,
) -> Iterator[Example]:
    """Pack whole sentences into ``[CLS] s1 s2 ... [SEP]`` single-segment examples."""
    _check_seq_len(seq_len, 3, name)
    stats = stats if stats is not None else BuildStats()
    budget = seq_len - 2  # room for the body between [CLS] and the final [SEP]
    sep = np.array([special.sep], dtype=np.int32)
    parts: list[np.ndarray] = []
    used = 0

    def flush() -> Example:
        nonlocal parts, used
        tokens, types = _encode_single(np.concatenate(parts), special)
        parts, used = [], 0
        stats.examples += 1
        return {"tokens": tokens, "token_type_ids": types}

    for document in _clean_corpus(docs, stats):
        if not document:
            continue
        # RoBERTa: "when we reach the end of one document, we begin sampling sentences
        # from the next document and add an extra separator token between documents".
        # The separator is only written once the next document's sentence is known to
        # fit, so an example never ends in a dangling "[SEP] [SEP]".
        need_sep = cross_documents and used > 0
        for sent in document:
            if len(sent) > budget:
                # Too long for any example: keep its head (truncate, don't drop).
                stats.truncated_sentences += 1
                stats.truncated_tokens += len(sent) - budget
                sent = sent[:budget]
            extra = 1 if need_sep else 0
            if used and used + extra + len(sent) > budget:
                yield flush()
                extra = 0
            if extra:
                parts.append(sep)
                stats.doc_separators += 1
            parts.append(sent)
            used += extra + len(sent)
            need_sep = False
        if not cross_documents and used:
            yield flush()  # DOC-SENTENCES: a document's last example may be short
    if used:
        yield flush()


def full_sentences(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator | None = None,
    special: SpecialIds | None = None,
    stats: BuildStats | None = None,
) -> Iterator[Example]:
    """RoBERTa FULL-SENTENCES (Liu et al. 2019, §4.2).

    Contiguous full sentences packed greedily into ``[CLS] s1 s2 ... [SEP]`` of at
    most ``seq_len`` tokens; may cross document boundaries, with an extra ``[SEP]``
    between documents. No pair label, token types all 0. ``rng`` is unused (the
    recipe is deterministic) and accepted for a uniform builder signature.

    Yields ``tokens`` [n], ``token_type_ids`` [n].
    """
    if special is None:
        raise TypeError("full_sentences: special ids are required")
    return _packed_sentences(docs, seq_len, special, True, stats, "full_sentences")


def doc_sentences(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator | None = None,
    special: SpecialIds | None = None,
    stats: BuildStats | None = None,
) -> Iterator[Example]:
    """RoBERTa DOC-SENTENCES (Liu et al. 2019, §4.2): like FULL-SENTENCES but an
    example never crosses a document boundary (a document's last one may be short).

    Yields ``tokens`` [n], ``token_type_ids`` [n].
    """
    if special is None:
        raise TypeError("doc_sentences: special ids are required")
    return _packed_sentences(docs, seq_len, special, False, stats, "doc_sentences")


# ------------------------------------------------------------------- causal packing


def _rows_from_stream(tok: np.ndarray, did: np.ndarray, seq_len: int) -> Iterator[Example]:
    """Cut a flat token stream [k * seq_len] (with doc ids) into packed rows."""
    rows = tok.reshape(-1, seq_len)
    docs = did.reshape(-1, seq_len)
    start = np.ones(rows.shape, dtype=bool)  # a new piece starts at each row start ...
    start[:, 1:] = docs[:, 1:] != docs[:, :-1]  # ... and wherever the document changes
    seg = np.cumsum(start, axis=1, dtype=np.int32)
    idx = np.arange(seq_len, dtype=np.int32)
    last_start = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    pos = (idx - last_start).astype(np.int32)
    pad = docs < 0
    seg[pad] = 0
    pos[pad] = 0
    for r in range(rows.shape[0]):
        yield {"input_ids": rows[r].copy(), "segment_ids": seg[r].copy(), "positions": pos[r].copy()}


def pack_causal(
    docs: Sequence[Document],
    seq_len: int,
    eos_id: int,
    pad_id: int = 0,
    stats: BuildStats | None = None,
    block_rows: int = 256,
) -> Iterator[Example]:
    """Causal-LM packing: documents (sentences concatenated, then ``eos_id``) laid end
    to end and cut into rows of exactly ``seq_len`` (GPT-2/3 style packing).

    Yields per row:
      * ``input_ids``   [seq_len] int32 (``pad_id`` only in the last row's tail)
      * ``segment_ids`` [seq_len] int32: 1, 2, 3, ... per document piece in the row,
        0 for the last row's padding (for a block-diagonal attention mask)
      * ``positions``   [seq_len] int32: position within the piece, restarting at 0
        at each document start and at each row start (a document split across rows
        restarts, so positions never exceed seq_len - 1).

    Deterministic (no rng); every input token (plus one eos per document) appears
    exactly once. Empty documents are skipped and counted. Streaming: at most
    ``block_rows`` rows of tokens are buffered.
    """
    _check_seq_len(seq_len, 1, "pack_causal")
    stats = stats if stats is not None else BuildStats()
    eos = np.array([eos_id], dtype=np.int32)
    buf_tok: list[np.ndarray] = []
    buf_doc: list[np.ndarray] = []
    buffered = 0
    block = seq_len * block_rows
    for d, document in enumerate(_clean_corpus(docs, stats)):
        if not document:
            continue
        body = np.concatenate([*document, eos])
        buf_tok.append(body)
        buf_doc.append(np.full(len(body), d, dtype=np.int64))
        buffered += len(body)
        stats.tokens += len(body)
        if buffered >= block:
            tok, did = np.concatenate(buf_tok), np.concatenate(buf_doc)
            n_full = (len(tok) // seq_len) * seq_len
            for ex in _rows_from_stream(tok[:n_full], did[:n_full], seq_len):
                stats.examples += 1
                yield ex
            buf_tok, buf_doc = [tok[n_full:]], [did[n_full:]]
            buffered = len(tok) - n_full
    if buffered:
        tok, did = np.concatenate(buf_tok), np.concatenate(buf_doc)
        n_pad = (-len(tok)) % seq_len
        stats.padding_tokens += n_pad
        tok = np.concatenate([tok, np.full(n_pad, pad_id, dtype=np.int32)])
        did = np.concatenate([did, np.full(n_pad, -1, dtype=np.int64)])
        for ex in _rows_from_stream(tok, did, seq_len):
            stats.examples += 1
            yield ex


def prefix_lm(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    *,
    eos_id: int,
    pad_id: int = 0,
    stats: BuildStats | None = None,
) -> Iterator[Example]:
    """Prefix-LM rows (Raffel et al. 2020, §3.2.1): ``pack_causal``'s rows, each document piece
    split at a random point into a prefix (attended bidirectionally, not scored) and a continuation
    (causal, scored).

    T5's ``random_prefix_noise_mask`` (noise_density 0.5) splits each example so its prefix has
    uniformly 1 .. n - 1 of its n tokens; here the examples are the pieces of a row (a document, or
    its part in this row), so the split never crosses a document and each piece keeps at least one
    scored target. A one-token piece has no prefix.

    Yields ``pack_causal``'s ``input_ids``, ``segment_ids``, ``positions`` [seq_len] and
    ``prefix_mask`` [seq_len] int32: 1 on each piece's prefix, 0 on its continuation and padding.
    """
    stats = stats if stats is not None else BuildStats()
    for row in pack_causal(docs, seq_len, eos_id, pad_id, stats):
        seg = row["segment_ids"]
        lengths = np.bincount(seg, minlength=2)[1:]
        # Uniform in [1, n - 1] (n >= 2); 0 for n == 1.
        prefix_lengths = np.where(lengths >= 2, 1 + (rng.random(len(lengths)) * (lengths - 1)).astype(int), 0)
        prefix = (seg != 0) & (row["positions"] < prefix_lengths[np.maximum(seg - 1, 0)])
        stats.prefix_tokens += int(prefix.sum())
        yield {**row, "prefix_mask": prefix.astype(np.int32)}


# ------------------------------------------------------------------- span corruption (T5)


def random_spans_helper(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(tokens_length, targets_length): the longest raw piece whose noised inputs fit inputs_length.

    T5's ``random_spans_helper``: a piece of tokens_length tokens becomes its non-noise tokens plus
    one sentinel per noise span plus EOS (<= inputs_length), and the targets are the noise tokens
    plus one sentinel per span plus EOS (targets_length). T5's 512 -> (568, 114).
    """

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise = int(round(tokens_length * noise_density))
        num_spans = int(round(num_noise / mean_noise_span_length))
        return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:  # T5's nudge to the round length
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (>= 1 each, summing to num_items) of a uniformly random cut into num_segments parts."""
    first = np.zeros(num_items, dtype=bool)
    first[1:] = rng.permutation(np.arange(num_items - 1) < num_segments - 1)
    segment = np.cumsum(first)
    return np.bincount(segment, minlength=num_segments)


def random_spans_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> np.ndarray:
    """[length] bool: T5's ``random_spans_noise_mask``, round(length * noise_density) noise tokens.

    They form round(num_noise / mean_noise_span_length) spans (at least 1), interleaved with as
    many non-noise spans; the mask starts with non-noise. Span lengths are uniformly random
    segmentations, so noise spans average mean_noise_span_length.
    """
    orig_length = length
    length = max(length, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    span_id = np.repeat(np.arange(2 * num_spans), interleaved)
    return (span_id % 2 == 1)[:orig_length]


def sentinel_ids(vocab_size: int, count: int) -> np.ndarray:
    """[count] int32: T5's sentinels <extra_id_0>, <extra_id_1>, ... = vocab_size - 1, vocab_size - 2, ...

    As in HF T5's tokenizer, the sentinels are the last ids of the model's vocabulary; flaxlm's
    trained sentencepiece models leave them free (see flaxlm.data.prepare: the tokenizer of a
    span-corruption run has vocab_size - num_sentinels pieces).
    """
    return (vocab_size - 1 - np.arange(count)).astype(np.int32)


def _noise_to_sentinels(tokens: np.ndarray, noise: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Each run of `noise` tokens replaced by the next sentinel (T5's noise_span_to_unique_sentinel)."""
    prev = np.concatenate([[False], noise[:-1]])
    first = noise & ~prev
    span = np.cumsum(first) - 1
    out = np.where(first, sentinels[np.maximum(span, 0)], tokens)
    return out[~(noise & prev)].astype(np.int32)


def corrupt_spans(
    tokens: np.ndarray,
    rng: np.random.Generator,
    *,
    eos_id: int,
    sentinels: np.ndarray,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one piece: noise spans -> sentinels in the inputs; the targets are each
    sentinel followed by the span it replaced; both end with eos_id.

    "The quick brown fox jumps" with noise on "quick brown" and "jumps":
    inputs "The <X> fox <Y> EOS", targets "<X> quick brown <Y> jumps EOS".
    """
    noise = random_spans_noise_mask(len(tokens), rng, noise_density, mean_noise_span_length)
    num_spans = int(np.sum(noise & ~np.concatenate([[False], noise[:-1]])))
    if num_spans > len(sentinels):
        raise DataError(
            f"a piece of {len(tokens)} tokens has {num_spans} noise spans but only {len(sentinels)} "
            "sentinels are reserved; raise config.data.num_sentinels"
        )
    eos = np.array([eos_id], np.int32)
    inputs = np.concatenate([_noise_to_sentinels(tokens, noise, sentinels), eos])
    targets = np.concatenate([_noise_to_sentinels(tokens, ~noise, sentinels), eos])
    return inputs, targets


def _pack_rows(pieces: list[tuple[np.ndarray, np.ndarray]], seq_len: int, targets_len: int) -> Example:
    """One packed row of (inputs, targets) pieces: segment k = piece k in both streams."""
    row = {}
    for side, length, (ids, seg, pos) in (
        ("", seq_len, ("input_ids", "segment_ids", "positions")),
        ("decoder_", targets_len, ("targets", "decoder_segment_ids", "decoder_positions")),
    ):
        parts = [p[0] if not side else p[1] for p in pieces]
        n = sum(map(len, parts))
        row[ids] = np.zeros(length, np.int32)
        row[ids][:n] = np.concatenate(parts)
        row[seg] = np.zeros(length, np.int32)
        row[seg][:n] = np.repeat(np.arange(1, len(parts) + 1), [len(x) for x in parts])
        row[pos] = np.zeros(length, np.int32)
        row[pos][:n] = np.concatenate([np.arange(len(x)) for x in parts])
    # Teacher forcing: each piece's targets shifted right, starting with 0 (T5's decoder start, the pad id).
    t, seg = row["targets"], row["decoder_segment_ids"]
    same = np.concatenate([[False], (seg[1:] == seg[:-1]) & (seg[1:] != 0)])
    row["decoder_input_ids"] = np.where(same, np.concatenate([[0], t[:-1]]), 0).astype(np.int32)
    return row


def span_corruption(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    *,
    eos_id: int,
    sentinels: np.ndarray,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    stats: BuildStats | None = None,
) -> Iterator[Example]:
    """T5's span corruption (Raffel et al. 2020, §3.1.4), packed: rows of encoder inputs and decoder targets.

    Each document (sentences concatenated) is cut into pieces of tokens_length tokens (the last
    one shorter), where (tokens_length, targets_length) = random_spans_helper(seq_len, ...), so a
    full piece's noised inputs fill seq_len and its targets targets_length. Pieces are noised
    (`corrupt_spans`) and packed greedily in order into rows while both their inputs and targets
    fit; a piece never spans two documents or two rows.

    Yields per row:
      * ``input_ids``, ``segment_ids``, ``positions``   [seq_len] int32: the encoder side
      * ``targets``, ``decoder_input_ids``, ``decoder_segment_ids``, ``decoder_positions``
        [targets_length] int32: the decoder side (decoder_input_ids = targets shifted right
        within each piece, 0 first)
    Segment k is the k-th piece of the row on both sides (0: padding); positions restart at 0
    at each piece.
    """
    _check_seq_len(seq_len, 4, "span_corruption")
    stats = stats if stats is not None else BuildStats()
    tokens_length, targets_length = random_spans_helper(seq_len, noise_density, mean_noise_span_length)
    pieces = (
        corrupt_spans(
            piece,
            rng,
            eos_id=eos_id,
            sentinels=sentinels,
            noise_density=noise_density,
            mean_noise_span_length=mean_noise_span_length,
        )
        for piece in _document_pieces(docs, tokens_length, stats)
    )
    return _packed_rows(pieces, seq_len, targets_length, stats)


def _document_pieces(docs: Sequence[Document], tokens_length: int, stats: BuildStats) -> Iterator[np.ndarray]:
    """Each document (sentences concatenated) cut into pieces of tokens_length tokens, the last shorter."""
    for document in _clean_corpus(docs, stats):
        if not document:
            continue
        body = np.concatenate(document).astype(np.int32)
        stats.tokens += len(body)
        for start in range(0, len(body), tokens_length):
            yield body[start : start + tokens_length]


def _packed_rows(
    pieces: Iterator[tuple[np.ndarray, np.ndarray]], seq_len: int, targets_length: int, stats: BuildStats
) -> Iterator[Example]:
    """(inputs, targets) pieces packed greedily in order into rows while both sides fit."""
    row: list[tuple[np.ndarray, np.ndarray]] = []
    used = [0, 0]
    for inputs, targets in pieces:
        if used[0] + len(inputs) > seq_len or used[1] + len(targets) > targets_length:
            stats.examples += 1
            stats.padding_tokens += seq_len - used[0]
            yield _pack_rows(row, seq_len, targets_length)
            row, used = [], [0, 0]
        row.append((inputs, targets))
        used = [used[0] + len(inputs), used[1] + len(targets)]
    if row:
        stats.examples += 1
        stats.padding_tokens += seq_len - used[0]
        yield _pack_rows(row, seq_len, targets_length)


def iid_denoising(
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    *,
    eos_id: int,
    mask_id: int,
    random_ids: np.ndarray,
    noise_density: float = 0.15,
    random_prob: float = 0.1,
    stats: BuildStats | None = None,
) -> Iterator[Example]:
    """T5's "BERT-style" objective (Raffel et al. 2020, §3.3.1 and Table 4), packed as span_corruption.

    T5's ``denoise`` with ``iid_noise_mask`` and ``noise_token_to_random_token_or_sentinel``, no
    targets_fn: each document is cut into pieces of seq_len - 1 tokens (room for EOS, as
    ``split_tokens_to_inputs_length``); each token is noise independently with probability
    noise_density; a noise token becomes a uniformly random id of random_ids with probability
    random_prob, else mask_id (T5: its single sentinel, the vocabulary's last id). Unlike BERT,
    no noise token is kept unchanged (T5 drops BERT's 10%). The inputs are the corrupted piece,
    the targets the original piece, both followed by eos_id, so both are seq_len long and a row's
    decoder side is packed exactly like its encoder side.

    T5 draws the random token from its whole vocabulary past 3 reserved ids (its sentinels
    included); random_ids is the caller's choice (flaxlm: the tokenizer's non-special ids).
    Yields span_corruption's fields, the decoder side [seq_len].
    """
    _check_seq_len(seq_len, 2, "iid_denoising")
    stats = stats if stats is not None else BuildStats()
    random_ids = np.asarray(random_ids, np.int32)
    eos = np.array([eos_id], np.int32)

    def corrupt(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        noise = rng.random(len(tokens)) < noise_density
        use_random = noise & (rng.random(len(tokens)) < random_prob)
        replacement = np.where(use_random, random_ids[rng.integers(0, len(random_ids), len(tokens))], mask_id)
        stats.noise_tokens += int(noise.sum())
        stats.random_tokens += int(use_random.sum())
        inputs = np.where(noise, replacement, tokens).astype(np.int32)
        return np.concatenate([inputs, eos]), np.concatenate([tokens, eos])

    pieces = (corrupt(piece) for piece in _document_pieces(docs, seq_len - 1, stats))
    return _packed_rows(pieces, seq_len, seq_len, stats)


# Builders of encoder-decoder rows: encoder inputs [seq_len], decoder targets [targets_length(...)].
SEQ2SEQ_BUILDERS = ("span_corruption", "iid_denoising")


def targets_length(builder: str, seq_len: int, noise_density: float, mean_noise_span_length: float) -> int:
    """The decoder side's length of a SEQ2SEQ_BUILDERS row whose inputs are seq_len long."""
    if builder == "span_corruption":
        return random_spans_helper(seq_len, noise_density, mean_noise_span_length)[1]
    if builder == "iid_denoising":
        return seq_len  # the original piece and EOS, as long as the inputs
    raise DataError(f"{builder!r} makes no decoder targets; expected one of {SEQ2SEQ_BUILDERS}")


# ------------------------------------------------------------------------- padding


def pad_encoder_example(ex: Example, seq_len: int, pad_id: int) -> Example:
    """Variable-length encoder example -> fixed-shape arrays (for batching).

    Returns ``input_ids`` [seq_len] (``pad_id`` beyond n), ``token_type_ids``
    [seq_len] (0 beyond n), ``segment_ids`` [seq_len] (1 real, 0 padding; doubles as
    the attention mask), ``positions`` [seq_len] (arange) and ``pair_label`` [] (0 if
    the example has none). Masking (``flaxlm.data.masking.apply_masking``) consumes
    this dict and adds the ``mlm_*`` fields.
    """
    tokens = ex["tokens"]
    n = len(tokens)
    if n > seq_len:
        raise DataError(f"example of length {n} exceeds seq_len={seq_len}")
    input_ids = np.full(seq_len, pad_id, dtype=np.int32)
    input_ids[:n] = tokens
    types = np.zeros(seq_len, dtype=np.int32)
    if "token_type_ids" in ex:
        types[:n] = ex["token_type_ids"]
    positions = np.arange(seq_len, dtype=np.int32)
    return {
        "input_ids": input_ids,
        "token_type_ids": types,
        "segment_ids": (positions < n).astype(np.int32),
        "positions": positions,
        "pair_label": _i32(ex.get("pair_label", 0)),
    }


# ------------------------------------------------------------------------ registry

BUILDERS: dict[str, Callable[..., Iterator[Example]]] = {
    "segment_pair": segment_pair,
    "sentence_pair": sentence_pair,
    "full_sentences": full_sentences,
    "doc_sentences": doc_sentences,
    "sop": sop,
}


def build_examples(
    name: str,
    docs: Sequence[Document],
    seq_len: int,
    rng: np.random.Generator,
    special: SpecialIds,
    **options,
) -> Iterator[Example]:
    """Dispatch to ``BUILDERS[name]`` (options, e.g. ``nsp=False`` or ``stats=``, pass through)."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise DataError(f"unknown example builder {name!r}; valid: {sorted(BUILDERS)}") from None
    return builder(docs, seq_len, rng, special, **options)
