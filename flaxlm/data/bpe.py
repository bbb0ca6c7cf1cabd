"""GPT-2's (and RoBERTa's) byte-level BPE behind flaxlm's Tokenizer interface.

Reads the vocabulary and merge list from any of the three layouts GPT-2 BPE
files come in:

  * OpenAI's ``encoder.json`` + ``vocab.bpe`` (pass either file),
  * Hugging Face's ``vocab.json`` + ``merges.txt`` (pass either file),
  * a Hugging Face ``tokenizer.json`` whose model is byte-level BPE.

Encoding runs in the ``tokenizers`` package (Rust; installed with
``pip install 'flaxlm[hf]'``): GPT-2's regex splits the text, every byte maps
to one of 256 printable characters, and merges apply in rank order. No
special tokens are matched inside text, as with our other tokenizers: the
string "<|endoftext|>" encodes as ordinary text, never to its id.

GPT-2 has one special token, <|endoftext|>. flaxlm's [PAD] [UNK] [CLS] [SEP]
[MASK] all map to its id: the causal builder ends each document with [SEP]
(so with <|endoftext|>, as GPT-2 was trained), padding is marked by segment
id 0 whatever token it holds, and byte-level BPE never needs [UNK].

RoBERTa's vocabulary (GPT-2's merges, its own vocab.json) has <s> <pad> </s>
<unk> <mask>; when all five are in the vocabulary they are flaxlm's [CLS]
[PAD] [SEP] [UNK] [MASK] (`roberta` is then True), so the encoder builders
write <s> A </s> as RoBERTa's FULL-SENTENCES inputs (a pair is <s> A </s> B
</s>, one </s> fewer between the segments than transformers' RobertaTokenizer).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence

from flaxlm.data.tokenizer import CLS, MASK, PAD, SEP, SPECIAL_PIECES, UNK, Tokenizer, TokenizerError

END_OF_TEXT = "<|endoftext|>"
BYTE_SPACE = "\u0120"  # "Ġ": the printable stand-in for the space byte, prefixes word-initial pieces
MERGES_HEADER = "#version: 0.2"
# RoBERTa's piece for each of flaxlm's special pieces.
ROBERTA_PIECES = {PAD: "<pad>", UNK: "<unk>", CLS: "<s>", SEP: "</s>", MASK: "<mask>"}
# transformers' RobertaTokenizer arguments (tokenizer_config.json) naming them: bos_token, ...
ROBERTA_SPECIALS = {
    "bos": "<s>",
    "eos": "</s>",
    "cls": "<s>",
    "sep": "</s>",
    "unk": "<unk>",
    "pad": "<pad>",
    "mask": "<mask>",
}

# Companion file of each file name a user may pass.
_PAIRS = {
    "encoder.json": "vocab.bpe",
    "vocab.bpe": "encoder.json",
    "vocab.json": "merges.txt",
    "merges.txt": "vocab.json",
}


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise TokenizerError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: not a JSON file ({e})") from None


def _parse_merges(lines: Iterable[str], path: str) -> list[tuple[str, str]]:
    merges = []
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line or (lineno == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"{path}:{lineno}: a merge line must be two pieces separated by one space")
        merges.append((parts[0], parts[1]))
    return merges


def read_bpe_files(path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab piece -> id, merges in rank order) from any of the layouts in the module docstring."""
    path = os.fspath(path)
    name = os.path.basename(path)
    if name in _PAIRS:
        other = os.path.join(os.path.dirname(path), _PAIRS[name])
        vocab_path, merges_path = (path, other) if name.endswith(".json") else (other, path)
        vocab = _read_json(vocab_path)
        try:
            with open(merges_path, encoding="utf-8") as f:
                merges = _parse_merges(f, merges_path)
        except FileNotFoundError:
            raise TokenizerError(
                f"{merges_path}: no such file; {os.path.basename(vocab_path)} needs its merge list beside it"
            ) from None
    else:  # tokenizer.json (any name)
        data = _read_json(path)
        model = data.get("model") if isinstance(data, dict) else None
        pre = (data.get("pre_tokenizer") or {}) if isinstance(data, dict) else {}
        pre_types = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers", [])}
        if not isinstance(model, dict) or model.get("type") != "BPE" or "ByteLevel" not in pre_types:
            raise TokenizerError(
                f"{path}: not a byte-level BPE tokenizer.json (GPT-2 style); "
                "pass GPT-2's tokenizer.json, vocab.json + merges.txt or encoder.json + vocab.bpe"
            )
        vocab = model["vocab"]
        raw = model.get("merges", [])
        # tokenizers < 0.20 writes "a b" strings, later versions [a, b] pairs.
        merges = _parse_merges(raw, path) if raw and isinstance(raw[0], str) else [tuple(m) for m in raw]
    if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
        raise TokenizerError(f"{path}: the vocabulary must map pieces to the ids 0..N-1, each once")
    return vocab, merges


class ByteLevelBPETokenizer(Tokenizer):
    """Byte-level BPE; [PAD] [UNK] [CLS] [SEP] [MASK] map to RoBERTa's pieces if present, else to
    GPT-2's <|endoftext|>."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], source: str = "<memory>"):
        try:
            from tokenizers import Tokenizer as RustTokenizer
            from tokenizers import decoders, models, pre_tokenizers
        except ImportError:
            raise TokenizerError(
                f"{source}: GPT-2 BPE tokenization needs the 'tokenizers' package; pip install 'flaxlm[hf]'"
            ) from None
        self.roberta = all(piece in vocab for piece in ROBERTA_PIECES.values())
        if not self.roberta and END_OF_TEXT not in vocab:
            raise TokenizerError(
                f"{source}: the BPE vocabulary has neither GPT-2's {END_OF_TEXT} nor RoBERTa's "
                f"{' '.join(ROBERTA_PIECES.values())}; is it GPT-2's or RoBERTa's?"
            )
        self.source = self.path = source
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self._pieces = [""] * len(self.vocab)
        for piece, i in self.vocab.items():
            self._pieces[i] = piece
        if self.roberta:
            self._special = {piece: self.vocab[ROBERTA_PIECES[piece]] for piece in SPECIAL_PIECES}
        else:
            self._special = {piece: self.vocab[END_OF_TEXT] for piece in SPECIAL_PIECES}
        self._rust = RustTokenizer(models.BPE(self.vocab, self.merges))
        self._rust.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        self._rust.decoder = decoders.ByteLevel()
        # Hash of the content, not of the files: the same BPE read from any layout fingerprints alike.
        h = hashlib.sha256(json.dumps(self.vocab, sort_keys=True, ensure_ascii=False).encode())
        h.update("\n".join(f"{a} {b}" for a, b in self.merges).encode())
        self.fingerprint = h.hexdigest()[:16]

    @classmethod
    def from_path(cls, path: str) -> "ByteLevelBPETokenizer":
        """From encoder.json / vocab.bpe / vocab.json / merges.txt (with its companion) or tokenizer.json."""
        vocab, merges = read_bpe_files(path)
        return cls(vocab, merges, source=os.fspath(path))

    @property
    def vocab_size(self) -> int:
        return len(self._pieces)

    @property
    def eot_id(self) -> int:
        """id of <|endoftext|>."""
        return self.vocab[END_OF_TEXT]

    def encode(self, text: str) -> list[int]:
        return self._rust.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._rust.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        specials = self.special_ids
        return self._rust.decode([int(i) for i in ids if int(i) not in specials], skip_special_tokens=False)

    def id_to_piece(self, i: int) -> str:
        return self._pieces[int(i)]

    def _is_word_start_piece(self, piece: str) -> bool:
        # Pieces after a space carry "Ġ"; punctuation and newlines start words too. A word at the very
        # start of a text has no "Ġ" and is not recognised (BPE pieces alone cannot tell).
        return piece.startswith(BYTE_SPACE) or not piece[:1].isalnum()

    def save(self, directory: str) -> list[str]:
        """Writes Hugging Face's vocab.json + merges.txt into ``directory``; returns their paths."""
        os.makedirs(directory, exist_ok=True)
        vocab_path = os.path.join(directory, "vocab.json")
        merges_path = os.path.join(directory, "merges.txt")
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(self.vocab, f, ensure_ascii=False)
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write(MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in self.merges))
        return [vocab_path, merges_path]
