"""Tokenizers: our own SentencePiece models and HF-BERT-compatible WordPiece, behind one interface.

Our SentencePiece models have fixed special-token ids::

    [PAD]=0  [UNK]=1  [CLS]=2  [SEP]=3  [MASK]=4

([CLS]/[SEP]/[MASK] are *control* symbols: text never encodes to them, so raw
text containing "[MASK]" cannot inject a mask). WordPiece vocabularies (HF
``vocab.txt``) keep their own ids, e.g. [MASK]=103 in bert-base-uncased.

``encode`` never adds special tokens; example builders add [CLS]/[SEP] themselves.
"""

from __future__ import annotations

import abc
import hashlib
import io
import os
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from flaxlm import files
from flaxlm.errors import FlaxlmError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_PIECES = (PAD, UNK, CLS, SEP, MASK)
# Ids our trained SentencePiece models use (PAD/UNK are SP's pad/unk, the rest control symbols).
SPM_SPECIAL_IDS = {PAD: 0, UNK: 1, CLS: 2, SEP: 3, MASK: 4}
SPM_WORD_START = "\u2581"  # "▁": SentencePiece's whitespace marker, prefixes word-initial pieces
MODEL_TYPES = ("unigram", "bpe")


class TokenizerError(FlaxlmError):
    """Unusable tokenizer model/vocab or training input; one-line message naming the file."""


def _copy_into(src: str, directory: str, name: str) -> str:
    """``src`` copied to ``directory/name`` (created if needed; nothing to do if it is that file)."""
    os.makedirs(directory, exist_ok=True)
    dest = os.path.join(directory, name)
    if os.path.abspath(src) != os.path.abspath(dest):
        shutil.copyfile(src, dest)
    return dest


def _file_fingerprint(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


class Tokenizer(abc.ABC):
    """Common interface. Subclasses set ``_special`` (piece -> id) and implement the abstract methods."""

    _special: dict[str, int]
    fingerprint: str  # 16 hex chars: hash of the model/vocab file bytes
    path: str  # the file (or folder) it was read from

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (embedding rows needed)."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; no special tokens added."""

    @abc.abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, skipping special tokens."""

    @abc.abstractmethod
    def id_to_piece(self, i: int) -> str:
        """The vocabulary string of id ``i``."""

    @abc.abstractmethod
    def _is_word_start_piece(self, piece: str) -> bool:
        """Does a (non-special) piece begin a new whitespace/punctuation-delimited word?"""

    pad_id = property(lambda self: self._special[PAD], doc="id of [PAD]")
    unk_id = property(lambda self: self._special[UNK], doc="id of [UNK]")
    cls_id = property(lambda self: self._special[CLS], doc="id of [CLS]")
    sep_id = property(lambda self: self._special[SEP], doc="id of [SEP]")
    mask_id = property(lambda self: self._special[MASK], doc="id of [MASK]")

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids of [PAD] [UNK] [CLS] [SEP] [MASK]."""
        return frozenset(self._special.values())

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``."""
        return [self.encode(t) for t in texts]

    def _word_start_table(self) -> np.ndarray:
        # Built once per tokenizer: a vocab-sized bool lookup keeps word_start_mask vectorised.
        table = getattr(self, "_word_start_cache", None)
        if table is None:
            table = np.array(
                [self._is_word_start_piece(self.id_to_piece(i)) for i in range(self.vocab_size)], dtype=bool
            )
            # [CLS]/[SEP]/[PAD]/[MASK] stand alone, so each is its own "word".
            for piece in (PAD, CLS, SEP, MASK):
                table[self._special[piece]] = True
            self._word_start_cache = table
        return table

    def word_start_mask(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """bool array, same shape as ``ids``: True where the token starts a new word.

        SentencePiece: piece starts with "▁". WordPiece: piece does not start with
        "##". [CLS]/[SEP]/[PAD]/[MASK] are True. Used for whole-word masking.
        """
        return self._word_start_table()[np.asarray(ids, dtype=np.int64)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, fingerprint={self.fingerprint!r})"


# ----------------------------------------------------------------------------- SentencePiece


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model`` containing [PAD] [UNK] [CLS] [SEP] [MASK] pieces."""

    def __init__(self, model_path: str):
        import sentencepiece as spm

        self.model_path = self.path = os.fspath(model_path)
        if not os.path.isfile(self.model_path):
            raise TokenizerError(f"{self.model_path}: no such SentencePiece model file")
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(self.model_path)
        except (OSError, RuntimeError) as e:
            raise TokenizerError(f"{self.model_path}: not a SentencePiece model ({e})") from None
        self._special = {}
        missing = []
        for piece in SPECIAL_PIECES:
            i = self._sp.piece_to_id(piece)
            # piece_to_id maps absent pieces to unk_id, so check the piece round-trips.
            if self._sp.id_to_piece(i) != piece:
                missing.append(piece)
            self._special[piece] = i
        if missing:
            raise TokenizerError(
                f"{self.model_path}: SentencePiece model lacks special pieces {missing}; "
                "retrain it with flaxlm.data.tokenizer.train_sentencepiece"
            )
        self.fingerprint = _file_fingerprint(self.model_path)

    def save(self, directory: str) -> list[str]:
        """Copies the model to ``directory``/spiece.model (the name transformers reads); returns [it]."""
        return [_copy_into(self.model_path, directory, "spiece.model")]

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        specials = self.special_ids
        return self._sp.decode([int(i) for i in ids if int(i) not in specials])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def _is_word_start_piece(self, piece: str) -> bool:
        return piece.startswith(SPM_WORD_START)


# Sentences scored per numpy draw when sampling (fixed: the chunking decides the draws, hence the sample).
_SAMPLE_CHUNK = 65_536


def sample_sentences(sentences: Iterable[str], max_sentences: int, seed: int) -> list[str]:
    """The non-empty sentences, or a seeded uniform sample of ``max_sentences`` of them, in input order.

    Streams: memory holds the sample, never the whole input. Reservoir sampling (Vitter's algorithm
    R) with numpy's Generator seeded by ``seed``; the replacement draws are made for chunks of
    sentences at once, so a sample of 10M from 1G sentences costs a few numpy calls per 64k
    sentences. Input with at most ``max_sentences`` sentences is returned whole whatever the seed,
    as is any input when ``max_sentences`` is 0.

    (We sample here rather than with sentencepiece's ``input_sentence_size`` /
    ``shuffle_input_sentence``: sentencepiece 0.2.3 draws the same sample whatever
    ``set_random_generator_seed`` says, so its sample cannot follow ``data.tokenizer_seed``.)
    """
    if max_sentences < 0:
        raise TokenizerError(f"max_sentences={max_sentences} must be >= 0 (0: all sentences)")
    rng = np.random.default_rng(seed)
    sample: list[str] = []
    where = None  # input position of each sample slot, once the sample is full
    pending: list[str] = []
    seen = 0  # sentences before `pending`

    def replace_from(chunk: list[str]) -> None:
        nonlocal where
        if where is None:
            where = np.arange(max_sentences, dtype=np.int64)
        positions = np.arange(seen, seen + len(chunk), dtype=np.int64)
        slots = rng.integers(0, positions + 1)  # sentence i replaces slot j ~ U[0, i] if j is a slot
        for i in np.flatnonzero(slots < max_sentences):
            sample[slots[i]] = chunk[i]
            where[slots[i]] = positions[i]

    for s in sentences:
        s = s.strip()
        if not s:
            continue
        if not max_sentences or len(sample) < max_sentences:
            sample.append(s)
            seen += 1
            continue
        pending.append(s)
        if len(pending) == _SAMPLE_CHUNK:
            replace_from(pending)
            seen += len(pending)
            pending = []
    if pending:
        replace_from(pending)
    if where is None:  # nothing was replaced: the input, in order
        return sample
    return [sample[i] for i in np.argsort(where, kind="stable")]


def auto_character_coverage(sentences: Sequence[str], vocab_size: int) -> float:
    """1.0 when the text uses at most ``vocab_size // 4`` distinct characters, else 0.9995.

    SentencePiece's usual 0.9995 drops the rarest 0.05% of character occurrences,
    which on English text means capitals like "K", "V", "Q" ("King" -> [UNK] "ing").
    A small alphabet is cheap to cover fully; a large one (CJK, noisy web text)
    keeps 0.9995 so the vocabulary is not spent on rare characters.
    """
    alphabet = set()
    for s in sentences:
        alphabet.update(s)
    return 1.0 if len(alphabet) <= vocab_size // 4 else 0.9995


def train_sentencepiece(
    sentences: Iterable[str],
    model_path_prefix: str,
    vocab_size: int,
    model_type: str = "unigram",
    max_sentences: int = 10_000_000,
    seed: int = 0,
    character_coverage: float | None = None,
    num_threads: int = 2,
) -> str:
    """Train a SentencePiece model with our fixed special ids; return the ``.model`` path.

    Deterministic: the same sentences and arguments give a byte-identical model
    (no trainer-side shuffling; above ``max_sentences`` it trains on
    ``sample_sentences(sentences, max_sentences, seed)``). The model is written
    atomically to ``model_path_prefix + ".model"``.

    Args:
      sentences: training sentences (one per item; sentencepiece skips ones > 4192 bytes).
      vocab_size: total pieces including the 5 specials.
      model_type: "unigram" or "bpe".
      max_sentences: train on a seeded sample of this many sentences when there are more (0: all).
      seed: of that sample.
      character_coverage: fraction of character occurrences the model must cover; rarer
        characters become [UNK]. None = ``auto_character_coverage(...)``.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise TokenizerError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    data = sample_sentences(sentences, max_sentences, seed)
    if not data:
        raise TokenizerError(f"{model_path_prefix}: no non-empty sentences to train SentencePiece on")
    if character_coverage is None:
        character_coverage = auto_character_coverage(data, vocab_size)
    spm.set_random_generator_seed(seed)
    proto = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(data),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=SPM_SPECIAL_IDS[PAD],
            unk_id=SPM_SPECIAL_IDS[UNK],
            bos_id=-1,
            eos_id=-1,
            pad_piece=PAD,
            unk_piece=UNK,
            control_symbols=[CLS, SEP, MASK],
            character_coverage=character_coverage,
            num_threads=num_threads,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            split_digits=True,
            minloglevel=2,
        )
    except RuntimeError as e:  # e.g. "Vocabulary size too high" for a tiny corpus
        raise TokenizerError(
            f"{model_path_prefix}: SentencePiece training failed: {str(e).splitlines()[0]}"
        ) from None
    model_bytes = proto.getvalue()
    _check_spm_ids(model_bytes, model_path_prefix)
    model_path = model_path_prefix + ".model"
    files.write_atomic(model_path, model_bytes)
    return model_path


def _check_spm_ids(model_bytes: bytes, where: str) -> None:
    """Assert the trained model put every special piece at its fixed id."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    got = {p: sp.piece_to_id(p) for p in SPECIAL_PIECES}
    if got != SPM_SPECIAL_IDS:
        raise TokenizerError(f"{where}: trained special ids {got} != expected {SPM_SPECIAL_IDS}")


def spm_cache_path(cache_dir: str, vocab_size: int, model_type: str, corpus_fingerprint: str) -> str:
    """``cache_dir/spm-<type>-<vocab>-<fingerprint>.model``."""
    return os.path.join(cache_dir, f"spm-{model_type}-{vocab_size}-{corpus_fingerprint}.model")


def get_or_train_tokenizer(
    sentences_fn: Callable[[], Iterable[str]],
    cache_dir: str,
    vocab_size: int,
    model_type: str,
    corpus_fingerprint: str,
    **train_kwargs,
) -> SentencePieceTokenizer:
    """The cached SentencePiece tokenizer for this corpus/vocab/type, training it on a cache miss.

    ``sentences_fn`` is only called on a miss (reading the corpus can be slow).
    Concurrent trainers are harmless: training is deterministic and the final
    rename is atomic, so every process ends up loading identical bytes.
    """
    path = spm_cache_path(cache_dir, vocab_size, model_type, corpus_fingerprint)
    if not os.path.exists(path):
        train_sentencepiece(sentences_fn(), path[: -len(".model")], vocab_size, model_type, **train_kwargs)
    return SentencePieceTokenizer(path)


# ----------------------------------------------------------------------------- WordPiece


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    # Like BERT: all non-alphanumeric ASCII ("^", "$", "`" are not Unicode P*) plus Unicode P*.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    # CJK Unified Ideographs blocks (not Hangul/Kana, which are space-separated), as in BERT.
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _split_on_punctuation(word: str) -> list[str]:
    out: list[str] = []
    start_new = True
    for ch in word:
        if _is_punctuation(ch):
            out.append(ch)
            start_new = True
        else:
            if start_new:
                out.append("")
            out[-1] += ch
            start_new = False
    return out


def basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """BERT's BasicTokenizer: clean, isolate CJK chars, (lowercase + strip accents), split on punctuation."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    tokens = []
    # HF normalises to NFC after cleaning/CJK isolation; same order here for identical output.
    for word in unicodedata.normalize("NFC", "".join(chars)).split():
        if lowercase:
            word = "".join(
                c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn"
            )
        tokens.extend(_split_on_punctuation(word))
    return tokens


class WordPieceTokenizer(Tokenizer):
    """HF BERT ``vocab.txt`` WordPiece: BasicTokenizer + greedy longest-match-first, "##" continuations."""

    max_chars_per_word = 100  # longer words become [UNK], as in BERT

    def __init__(self, vocab_path: str, lowercase: bool = True):
        self.vocab_path = self.path = os.fspath(vocab_path)
        self.lowercase = lowercase
        try:
            with open(self.vocab_path, encoding="utf-8") as f:
                pieces = [line.rstrip("\n").rstrip("\r") for line in f]
        except FileNotFoundError:
            raise TokenizerError(f"{self.vocab_path}: no such vocab file") from None
        except UnicodeDecodeError as e:
            raise TokenizerError(f"{self.vocab_path}: vocab is not UTF-8 (offset {e.start})") from None
        self._pieces = pieces
        self._vocab = {p: i for i, p in enumerate(pieces)}  # later duplicates win, as in HF
        missing = [p for p in SPECIAL_PIECES if p not in self._vocab]
        if missing:
            raise TokenizerError(
                f"{self.vocab_path}: vocab lacks required special tokens {missing}; "
                "add them as lines of the vocab file"
            )
        self._special = {p: self._vocab[p] for p in SPECIAL_PIECES}
        self.fingerprint = _file_fingerprint(self.vocab_path)

    def save(self, directory: str) -> list[str]:
        """Copies the vocab to ``directory``/vocab.txt; returns [it]."""
        return [_copy_into(self.vocab_path, directory, "vocab.txt")]

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self._vocab:
                    ids.append(self._vocab[piece])
                    break
                end -= 1
            else:  # no prefix matched: the whole word is unknown
                return [self.unk_id]
            start = end
        return ids

    def tokenize(self, text: str) -> list[str]:
        """WordPiece strings of ``text`` (debugging aid; ``encode`` returns ids)."""
        return [self._pieces[i] for i in self.encode(text)]

    def encode(self, text: str) -> list[int]:
        return [i for word in basic_tokenize(text, self.lowercase) for i in self._wordpiece(word)]

    def decode(self, ids: Iterable[int]) -> str:
        """Pieces joined by spaces with "##" continuations glued on (BERT-style, no punctuation clean-up).

        ``encode(decode(ids)) == ids`` for ids produced by ``encode``.
        """
        specials = self.special_ids
        text = " ".join(self._pieces[int(i)] for i in ids if int(i) not in specials)
        return text.replace(" ##", "").removeprefix("##").strip()

    def id_to_piece(self, i: int) -> str:
        return self._pieces[int(i)]

    def _is_word_start_piece(self, piece: str) -> bool:
        return not piece.startswith("##")


# ----------------------------------------------------------------------------- loading


def load_tokenizer(path: str, lowercase: bool = True) -> Tokenizer:
    """``*.model`` -> SentencePieceTokenizer; ``*.txt`` -> WordPieceTokenizer (``lowercase`` applies);
    GPT-2 BPE files (``vocab.json``/``merges.txt``, ``encoder.json``/``vocab.bpe``, ``tokenizer.json``)
    -> ``flaxlm.data.bpe.ByteLevelBPETokenizer``."""
    path = os.fspath(path)
    if path.endswith(".model"):
        return SentencePieceTokenizer(path)
    if path.endswith((".json", ".bpe")) or os.path.basename(path) == "merges.txt":
        from flaxlm.data.bpe import ByteLevelBPETokenizer

        return ByteLevelBPETokenizer.from_path(path)
    if path.endswith(".txt"):
        return WordPieceTokenizer(path, lowercase=lowercase)
    raise TokenizerError(
        f"{path}: unknown tokenizer file type; expected a SentencePiece .model, a WordPiece vocab .txt "
        "or GPT-2 BPE files (vocab.json, encoder.json, tokenizer.json)"
    )
