"""Text corpora as streams of documents of paragraphs, plus sentence splitting and the held-out split.

A corpus is named by a *spec*:

* ``"default"`` -- the four embedded corpora together, in this order: four kinds of
  English text, as BERT's Wikipedia + BooksCorpus mixed kinds (flaxlm/data/corpora/LICENSES.md).
* ``"shakespeare"`` -- the plays, one document per scene, one paragraph per speech
  (tools/make_default_corpus.py); ``"austen"`` -- the six novels, one document per
  chapter; ``"bible"`` -- derived from the World English Bible, one document per
  chapter; ``"pydocs"`` -- the Python 3.11 documentation, one document per page
  (the last three from tools/extract_corpus.py, see tools/CORPORA.md).
* a path or glob (``"data/**/*.txt"``) or a list of them:
  ``*.txt`` -- one document per file, paragraphs separated by blank lines (a file of more than
  `TXT_DOCUMENT_CHARS` characters is cut into several: ``a.txt``, ``a.txt#1``, ...);
  ``*.jsonl`` / ``*.jsonl.gz`` -- one document per non-blank line, either
  ``{"text": "para 1\\n\\npara 2", "id": "optional"}`` or our own
  ``{"id": ..., "paragraphs": [...]}``; an optional ``"source"`` names the line's source.
* ``"tfds:NAME[:SPLIT][:FEATURE]"`` -- a TensorFlow Datasets dataset (default
  split ``train``, feature ``text``); needs TensorFlow (``pip install flaxlm[tf]``).
* several of these, as a list or one string joined by commas (``"austen,data/wiki/*.txt"``).

Each document records its *source*: the embedded corpus, the ``"source"`` of its JSON
line, or else the spec item it was read from (NSP can draw NotNext within or across
sources, ``data.nsp_negatives``).

`iter_corpus` streams the documents (a .jsonl file is read a line at a time, a .txt file a bounded
piece at a time, so memory holds one document, never the corpus); `read_corpus` is its list.
`HeldOutSplit` is `split_train_validation` for such a stream.

Paragraph text is whitespace-normalised (runs of whitespace, including the
line breaks inside a paragraph, become one space). Bad input raises a one-line
:class:`CorpusError` naming the file and the fix; documents that are empty after
cleaning are skipped and the count is logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import heapq
import gzip
import hashlib
import importlib.resources
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from flaxlm.errors import FlaxlmError

log = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
# The embedded corpora by name, in the order "default" concatenates them. Their document ids never
# collide: austen/..., web/..., pydocs/..., and Shakespeare's play/act/scene.
EMBEDDED = {
    "shakespeare": "shakespeare.jsonl.gz",
    "austen": "austen.jsonl.gz",
    "bible": "bible.jsonl.gz",
    "pydocs": "pydocs.jsonl.gz",
}
# Bump when parsing/cleaning rules change, so corpus_fingerprint invalidates caches.
_READER_VERSION = "1"
_SPLIT_SALT = "flaxlm-heldout-v1"
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")
_LAST_SPACE = re.compile(r"\s\S*\Z")  # the last whitespace character (str.split's) and what follows it
# A .txt file of more text than this (characters of cleaned paragraphs) is read as several documents
# (`_txt_pieces`), so that reading it holds about this much at a time however large the file is, and
# its sentences land in several documents for the example builders. No file of at most this many
# bytes is cut: its one document, and so every corpus of such files, reads exactly as it always did.
TXT_DOCUMENT_CHARS = 8 << 20
# Bytes read at a time from a corpus file (a line longer than this is read in pieces).
_READ_BYTES = 1 << 20


class CorpusError(FlaxlmError):
    """Unusable corpus input; the message is one line naming the source and what to do."""


@dataclasses.dataclass(frozen=True)
class Document:
    """One document: a stable id (used for the held-out split) and its cleaned paragraphs.

    ``source``: the corpus it came from, as `read_corpus` names it: the embedded corpus's name
    (the default spec counts as its four), its JSON line's "source", else the spec item (a path,
    glob or tfds spec).
    NSP can draw its NotNext segments from the same source or another (`data.nsp_negatives`).
    """

    id: str
    paragraphs: tuple[str, ...]
    source: str = ""


# ----------------------------------------------------------------------------- cleaning


def normalize_whitespace(text: str) -> str:
    """Collapse all whitespace runs to single spaces and strip the ends."""
    return " ".join(text.split())


def split_paragraphs(text: str) -> tuple[str, ...]:
    """Blank-line separated paragraphs of ``text``, whitespace-normalised, empties removed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = (normalize_whitespace(p) for p in _BLANK_LINE.split(text))
    return tuple(p for p in parts if p)


def _clean_paragraphs(paragraphs: Iterable[str]) -> tuple[str, ...]:
    return tuple(p for p in (normalize_whitespace(x) for x in paragraphs) if p)


# ----------------------------------------------------------------------------- file reading


def _utf8(data: bytes, source: str, fix: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(
            f"{source}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); {fix}"
        ) from None


def _open_binary(path: str):
    """``path`` opened for reading bytes; a file listed when the corpus was resolved but gone now is a
    CorpusError (files are listed, and fingerprinted, before any is read)."""
    try:
        return open(path, "rb")  # noqa: SIM115 (the caller closes it)
    except FileNotFoundError:
        raise _disappeared(path) from None


def _disappeared(path: str) -> CorpusError:
    return CorpusError(
        f"{path}: disappeared during preparation (it was listed when the corpus was fingerprinted); "
        "restore it or remove it from the corpus spec, then rerun"
    )


def _utf8_cut(data: bytes) -> int:
    """Where to cut ``data`` so that no UTF-8 character is split: its length, or the start of an
    incomplete multi-byte sequence at its end (invalid bytes are left to the decoder to report)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # an ASCII or a lead byte: the last character starts here
            length = next(n for n, lead in ((4, 0xF0), (3, 0xE0), (2, 0xC0), (1, 0)) if byte >= lead)
            return len(data) - back if length > back else len(data)
    return len(data)


def _byte_chunks(path: str, size: int) -> Iterator[bytes]:
    """The file's bytes, decompressed as read if .gz, in pieces of about ``size`` bytes, each ending where
    a UTF-8 character ends: each piece decodes as it would inside the whole file."""
    carry = b""
    with _binary_file(path) as f:
        while block := f.read(size):
            chunk = carry + block
            cut = _utf8_cut(chunk)
            chunk, carry = chunk[:cut], chunk[cut:]
            if chunk:
                yield chunk
    if carry:
        yield carry


@contextlib.contextmanager
def _binary_file(path: str) -> Iterator[BinaryIO]:
    """``path`` open for reading bytes, decompressed as read if .gz (a bad gzip file is a CorpusError)."""
    with _open_binary(path) as raw:
        if not path.endswith(".gz"):
            yield raw
            return
        try:
            with gzip.open(raw, "rb") as f:
                yield f
        except (OSError, EOFError) as e:  # BadGzipFile is an OSError
            raise CorpusError(f"{path}: cannot decompress gzip ({e}); re-create the file") from None


def _binary_lines(path: str) -> Iterator[bytes]:
    """The file's lines, each with its newline (but maybe the last), decompressed as read if .gz."""
    with _binary_file(path) as f:
        yield from f


def _check_text_file(path: str) -> None:
    """The checks of a text file, made a bounded piece at a time: the first NUL byte, else the first
    invalid UTF-8 byte, else a file of nothing but whitespace (a UTF-8 byte-order mark is not content)
    raises its CorpusError, before any of the file's documents is read."""
    offset, nul, bad_utf8, has_text = 0, None, None, False
    for i, chunk in enumerate(_byte_chunks(path, _READ_BYTES)):
        if nul is None and (at := chunk.find(b"\x00")) >= 0:
            nul = offset + at
        if nul is None and bad_utf8 is None:
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as e:  # chunks end between characters: as in the whole file
                bad_utf8 = (offset + e.start, chunk[e.start])
            else:
                has_text = has_text or bool((text.removeprefix("\ufeff") if i == 0 else text).strip())
        offset += len(chunk)
    if nul is not None:
        raise CorpusError(f"{path}: looks binary (NUL byte at offset {nul}); corpus files must be UTF-8 text")
    if bad_utf8 is not None:
        raise CorpusError(
            f"{path}: not valid UTF-8 (byte 0x{bad_utf8[1]:02x} at offset {bad_utf8[0]}); "
            "re-encode the file as UTF-8, e.g. iconv -t UTF-8"
        )
    if not has_text:
        raise CorpusError(f"{path}: file is empty; remove it from the corpus spec or add text")


def _text_lines(path: str) -> Iterator[str]:
    """The checked file's text (less a byte-order mark) ``.splitlines()``, read a line at a time (a
    newline byte ends a line of both)."""
    for i, line in enumerate(_binary_lines(path)):
        text = line.decode("utf-8")
        yield from (text.removeprefix("\ufeff") if i == 0 else text).splitlines()


def _txt_lines(path: str, long_line: int) -> Iterator[tuple[str, bool]]:
    """The lines of a checked .txt file as `split_paragraphs` sees them (\\r\\n, \\r and \\n end a line), as
    ``(text, ends_line)``, in memory bounded by ``long_line`` characters.

    A line longer than `_READ_BYTES` comes in parts (``ends_line`` False but for its last), each
    ending just after a whitespace, so that normalising the parts one by one gives the line's words;
    a run of more than ``long_line`` characters without whitespace is cut where it has got to.
    """
    pending = ""
    for i, chunk in enumerate(_byte_chunks(path, _READ_BYTES)):
        text = chunk.decode("utf-8")
        pending += text.removeprefix("\ufeff") if i == 0 else text
        held = "\r" if pending.endswith("\r") else ""  # maybe the first half of a \r\n
        lines = pending[: len(pending) - len(held)].replace("\r\n", "\n").replace("\r", "\n").split("\n")
        yield from ((line, True) for line in lines[:-1])
        pending = lines[-1]
        if len(pending) > _READ_BYTES:  # a long line: hand on what ends in whitespace
            space = _LAST_SPACE.search(pending)
            cut = space.start() + 1 if space else len(pending) if len(pending) > long_line else 0
            if cut:
                yield pending[:cut], False
                pending = pending[cut:]
        pending += held
    if pending:
        yield from ((line, True) for line in pending.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _is_blank_line(text: str) -> bool:
    """Is this (part of a) line made of nothing but the whitespace that `_BLANK_LINE` allows in one?"""
    return not text.strip(" \t\f\v")


def _read_txt(path: str, doc_id: str) -> Iterator[Document]:
    """A .txt file's documents: one, ``doc_id``, for a file of up to `TXT_DOCUMENT_CHARS` characters; a
    longer one is cut into several, ``doc_id``, ``doc_id#1``, ``doc_id#2``, ... (`_txt_pieces`)."""
    _check_text_file(path)
    pieces = cuts_in_paragraph = 0
    for paragraphs, in_paragraph in _txt_pieces(_txt_lines(path, TXT_DOCUMENT_CHARS), TXT_DOCUMENT_CHARS):
        yield Document(f"{doc_id}#{pieces}" if pieces else doc_id, paragraphs)
        pieces += 1
        cuts_in_paragraph += in_paragraph
    if pieces > 1:
        (log.warning if cuts_in_paragraph else log.info)(
            "%s: more than %d characters of text, read as %d documents (%d cuts inside a paragraph)",
            path,
            TXT_DOCUMENT_CHARS,
            pieces,
            cuts_in_paragraph,
        )


def _txt_pieces(lines: Iterable[tuple[str, bool]], limit: int) -> Iterator[tuple[tuple[str, ...], bool]]:
    """`split_paragraphs` of the text of ``lines`` (`_txt_lines`), in documents of about ``limit``
    characters: ``(paragraphs, cut_inside_a_paragraph)`` for each.

    A document ends at the first blank line after it holds more than ``limit`` characters. A paragraph
    of more than ``limit`` characters is cut at the first line end after that (or, inside a line of
    more than ``limit`` characters, after a whitespace), its rest starting the next document. Text of
    at most ``limit`` characters is one document, exactly ``split_paragraphs(text)``; the first piece
    is yielded even if empty, later ones only if they hold text.
    """
    doc: list[str] = []
    para: list[str] = []
    doc_chars = para_chars = line_chars = 0
    line_blank, first = True, True

    def take() -> tuple[str, ...]:
        nonlocal doc, doc_chars, first
        out, doc, doc_chars, first = tuple(doc), [], 0, False
        return out

    def close_paragraph() -> None:
        nonlocal para, para_chars, doc_chars
        if para:
            doc.append(" ".join(para))
            doc_chars += para_chars
        para, para_chars = [], 0

    for text, ends_line in lines:
        line_blank = line_blank and _is_blank_line(text)
        line_chars += len(text)
        if words := normalize_whitespace(text):
            para_chars += len(words) + bool(para)  # the paragraph's length, a space between its parts
            para.append(words)
        if ends_line and line_blank:
            close_paragraph()
            if doc_chars > limit:
                yield take(), False
        elif para_chars > limit and (ends_line or line_chars > limit):
            close_paragraph()
            yield take(), True
        if ends_line:
            line_blank, line_chars = True, 0
    close_paragraph()
    if doc or first:
        yield take(), False


def _jsonl_document(record: object, source: str, lineno: int, default_id: str) -> Document:
    where = f"{source}:{lineno}"
    if not isinstance(record, dict):
        raise CorpusError(f"{where}: expected a JSON object per line, got {type(record).__name__}")
    doc_id = record.get("id", default_id)
    if not isinstance(doc_id, (str, int)):
        raise CorpusError(f"{where}: 'id' must be a string or integer")
    origin = record.get("source", "")
    if not isinstance(origin, str):
        raise CorpusError(f"{where}: 'source' must be a string")
    if "text" in record:
        if not isinstance(record["text"], str):
            raise CorpusError(f"{where}: 'text' must be a string")
        return Document(str(doc_id), split_paragraphs(record["text"]), origin)
    if "paragraphs" in record:
        paras = record["paragraphs"]
        if not isinstance(paras, list) or not all(isinstance(p, str) for p in paras):
            raise CorpusError(f"{where}: 'paragraphs' must be a list of strings")
        return Document(str(doc_id), _clean_paragraphs(paras), origin)
    raise CorpusError(
        f"{where}: JSON line has no 'text' field (keys: {sorted(record)[:5]}); "
        'each line needs {"text": ...}'
    )


def _read_jsonl(path: str, id_prefix: str) -> Iterator[Document]:
    """The documents of a .jsonl(.gz) file, a line at a time (its whole text is checked first)."""
    _check_text_file(path)
    for lineno, line in enumerate(_text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield _jsonl_document(record, path, lineno, default_id=f"{id_prefix}:{lineno}")


def _read_file(path: str, rel_id: str) -> Iterator[Document]:
    """One matched file -> its documents (ids derived from ``rel_id`` when the file has none), read while
    the file stays as it was (`_unchanged`)."""
    if path.endswith(".txt"):
        return _unchanged(path, _read_txt(path, rel_id))
    if path.endswith(".jsonl") or path.endswith(".jsonl.gz"):
        return _unchanged(path, _read_jsonl(path, rel_id))
    raise CorpusError(
        f"{path}: unsupported file type; use .txt, .jsonl or .jsonl.gz (or 'default' / 'tfds:NAME')"
    )


def _stat(path: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``path``; None if it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def _unchanged(path: str, docs: Iterator[Document]) -> Iterator[Document]:
    """``docs``, read from ``path``, then a one-line CorpusError if the file's size or mtime changed while
    they were read (its checks and its text may then disagree, and the corpus fingerprint names a file
    that is no longer there): a file must stay as it is until preparation ends."""
    before = _stat(path)
    try:
        yield from docs
    except UnicodeDecodeError:  # its checks passed: its bytes changed since
        changed = True
    else:
        changed = _stat(path) != before
    if changed:
        if _stat(path) is None:
            raise _disappeared(path)
        raise CorpusError(
            f"{path}: changed while it was being read (size or modification time); "
            "let whatever writes it finish, then rerun"
        )


# ----------------------------------------------------------------------------- spec resolution


def _glob_base(pattern: str) -> str:
    """The directory part of ``pattern`` before its first glob character (ids are relative to it)."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or "."


def _match_files(pattern: str) -> list[tuple[str, str]]:
    """(path, id relative to the pattern's fixed base directory) for each file matching pattern."""
    pattern = os.path.expanduser(pattern)
    if glob.has_magic(pattern):
        paths = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not paths:
            raise CorpusError(f"{pattern}: glob matches no files; check the pattern and working directory")
    elif os.path.isdir(pattern):
        raise CorpusError(f"{pattern}: is a directory; give a glob such as {os.path.join(pattern, '*.txt')}")
    elif not os.path.exists(pattern):
        raise CorpusError(
            f"{pattern}: no such file; check the path, or name an embedded corpus: "
            f"{', '.join([DEFAULT_SPEC, *EMBEDDED])}"
        )
    else:
        paths = [pattern]
    base = _glob_base(pattern)
    return [(p, os.path.relpath(p, base).replace(os.sep, "/")) for p in paths]


def _as_spec_list(spec: str | Sequence[str]) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):  # "a,b": a list given as one string (a config field, a flag)
        return [item for item in os.fspath(spec).split(",") if item] or [os.fspath(spec)]
    specs = [os.fspath(s) for s in spec]
    if not specs:
        raise CorpusError("empty corpus spec list; pass 'default', a path/glob, or 'tfds:NAME'")
    return specs


def _parse_tfds_spec(spec: str) -> tuple[str, str, str]:
    """'tfds:NAME[:SPLIT][:FEATURE]' -> (name, split, feature)."""
    parts = spec.split(":")[1:]
    if not parts[0] or len(parts) > 3:
        raise CorpusError(f"{spec}: bad tfds spec; use tfds:NAME[:SPLIT][:FEATURE]")
    name, split, feature = (parts + ["train", "text"][len(parts) - 1 :])[:3]
    return name, split, feature


_TFDS_FIX = "use a text feature (tfds:NAME:SPLIT:FEATURE) or a UTF-8 copy of the data as .jsonl files"


def _read_tfds(spec: str) -> Iterator[Document]:
    name, split, feature = _parse_tfds_spec(spec)
    try:
        import tensorflow  # noqa: F401  (tfds.load needs it; fail with an actionable message)
    except ImportError:
        raise CorpusError(f"{spec}: tfds corpora need TensorFlow; pip install flaxlm[tf]") from None
    import tensorflow_datasets as tfds

    try:
        ds = tfds.load(name, split=split)
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
        raise CorpusError(
            f"{spec}: tfds.load failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    for i, example in enumerate(tfds.as_numpy(ds)):
        if feature not in example:
            raise CorpusError(
                f"{spec}: example has no feature {feature!r} (features: {sorted(example)}); "
                "name it as tfds:NAME:SPLIT:FEATURE"
            )
        value = example[feature]
        text = _utf8(value, f"{spec} example {i}", _TFDS_FIX) if isinstance(value, bytes) else str(value)
        yield Document(f"tfds:{name}:{split}:{i}", split_paragraphs(text))


def _embedded_names(item: str) -> list[str]:
    """The embedded corpora a spec item names ([] for a path, glob or tfds spec)."""
    if item == DEFAULT_SPEC:
        return list(EMBEDDED)
    return [item] if item in EMBEDDED else []


def _embedded_path(name: str):
    return importlib.resources.files("flaxlm.data").joinpath("corpora", EMBEDDED[name])


def iter_embedded(name: str) -> Iterator[Document]:
    """One embedded corpus (a key of EMBEDDED) as Documents, in its file's order, a line at a time."""
    with _embedded_path(name).open("rb") as f, gzip.open(f, "rt", encoding="utf-8") as lines:
        for r in map(json.loads, lines):
            yield Document(r["id"], tuple(r["paragraphs"]), name)


def load_embedded(name: str) -> list[Document]:
    """One embedded corpus (a key of EMBEDDED) as Documents, in its file's order."""
    return list(iter_embedded(name))


def _from(source: str, docs: Iterable[Document]) -> Iterator[Document]:
    """`docs` read from spec item `source`: their source, unless a JSON line named its own."""
    return (d if d.source else dataclasses.replace(d, source=source) for d in docs)


def load_default_corpus() -> list[Document]:
    """The default corpus: every embedded corpus, in EMBEDDED's order."""
    return [d for name in EMBEDDED for d in load_embedded(name)]


def _drop_empty(docs: Iterable[Document], source: str) -> Iterator[Document]:
    skipped = 0
    for d in docs:
        if d.paragraphs:
            yield d
        else:
            skipped += 1
    if skipped:
        log.warning("skipped %d empty documents in %s", skipped, source)


@dataclasses.dataclass(frozen=True)
class Unit:
    """A piece of a spec read on its own: an embedded corpus, a tfds spec, or one matched file.

    A parallel preparation reads the units side by side (one task each); their documents, in unit
    order, are the spec's. kind: "embedded" (name = its key), "tfds" (item = the spec), or "file"
    (path, rel_id = its id; item = the spec item that matched it, the documents' default source).
    """

    kind: str
    item: str
    path: str = ""
    rel_id: str = ""


def spec_units(spec: str | Sequence[str]) -> list[Unit]:
    """The units of ``spec`` in reading order (globs resolved now: a missing file raises here)."""
    units = []
    for item in _as_spec_list(spec):
        if _embedded_names(item):
            units += [Unit("embedded", name) for name in _embedded_names(item)]
        elif item.startswith("tfds:"):
            units.append(Unit("tfds", item))
        else:
            units += [Unit("file", item, path, rel_id) for path, rel_id in _match_files(item)]
    return units


def unit_documents(unit: Unit) -> Iterator[Document]:
    """The non-empty documents of one unit, in order, unchecked for duplicate ids across units."""
    if unit.kind == "embedded":
        return iter_embedded(unit.item)
    if unit.kind == "tfds":
        return _from(unit.item, _drop_empty(_read_tfds(unit.item), unit.item))
    return _from(unit.item, _drop_empty(_read_file(unit.path, unit.rel_id), unit.path))


def _spec_documents(spec: str | Sequence[str]) -> Iterator[Document]:
    """Every non-empty document of ``spec``, unchecked for duplicate ids, in spec then sorted-path order."""
    for item in _as_spec_list(spec):  # per item, so that a later item's missing file raises when reached
        for unit in spec_units([item]):
            yield from unit_documents(unit)


def iter_corpus(spec: str | Sequence[str]) -> Iterator[Document]:
    """The documents named by ``spec`` (see module docstring), in spec then sorted-path order, one at a time.

    Memory holds one file's line (or one .txt document, of a few `TXT_DOCUMENT_CHARS` at most, or one
    tfds example) and the ids seen so far, never the corpus's text. The checks of the whole corpus
    (duplicate ids, no documents at all) raise when the stream ends, after its documents; a file's own
    checks (empty, binary, non-UTF-8) raise before its first document.

    Raises:
      CorpusError: missing path, glob matching nothing, empty / binary / non-UTF-8 file,
        malformed JSON line, duplicate document ids, no documents at all, or a file that disappears
        or changes while it is read.
    """
    seen: dict[str, None] = {}  # insertion-ordered: duplicates are named in order of first use
    dupes: set[str] = set()
    for doc in _spec_documents(spec):
        if doc.id in seen:
            dupes.add(doc.id)
        else:
            seen[doc.id] = None
        yield doc
    if not seen:
        raise CorpusError(f"{spec}: no non-empty documents; check the corpus files")
    if dupes:
        raise CorpusError(
            f"{spec}: duplicate document ids {[i for i in seen if i in dupes][:3]}; ids must be unique "
            "(give jsonl lines distinct 'id's or avoid listing a file twice)"
        )


def read_corpus(spec: str | Sequence[str]) -> list[Document]:
    """All documents named by ``spec``, as a list: ``list(iter_corpus(spec))`` (see there)."""
    return list(iter_corpus(spec))


# ----------------------------------------------------------------------------- sentences

# Tokens ending in "." that do not end a sentence. Lower-cased, with the dot.
_ABBREVIATIONS = frozenset(
    "mr. mrs. ms. dr. st. sr. jr. prof. rev. gen. col. capt. lt. sgt. mt. ft. vs. cf. e.g. i.e. "
    "no. vol. fig. approx. dept. est. inc. ltd. co. jan. feb. mar. apr. jun. jul. aug. sep. sept. "
    "oct. nov. dec.".split()
)
_CLOSERS = "\"')]}\u2019\u201d"
_OPENERS = "\"'([{\u2018\u201c"
_INITIAL = re.compile(r"^[A-HJ-Z]\.$")  # "J." in "J. R. Smith"; "I." is usually the pronoun


def _ends_sentence(word: str) -> bool:
    """Does ``word`` (a whitespace-free token) end with sentence-final punctuation?"""
    core = word.rstrip(_CLOSERS)
    if not core or core[-1] not in ".!?":
        return False
    if core[-1] == "." and (
        core.lower().lstrip(_OPENERS) in _ABBREVIATIONS or _INITIAL.match(core.lstrip(_OPENERS))
    ):
        return False
    return True


def _starts_sentence(word: str) -> bool:
    """Does ``word`` begin like a sentence: an uppercase letter or digit, possibly after opening quotes?"""
    core = word.lstrip(_OPENERS)
    return bool(core) and (core[0].isupper() or core[0].isdigit())


def split_sentences(paragraph: str) -> list[str]:
    """Rule-based English sentence splitting of one paragraph.

    Splits after ``.``, ``!`` or ``?`` (optionally followed by closing quotes or
    brackets) when the next word starts with an uppercase letter or digit
    (optionally after an opening quote), except after common abbreviations
    ("Mr.", "St.", "Dr.", ...) and single-letter initials. Only whitespace is
    ever removed: ``" ".join(split_sentences(p)) == normalize_whitespace(p)``.

    Returns:
      list[str] of sentences; [] for an all-whitespace paragraph.
    """
    words = paragraph.split()
    sentences, start = [], 0
    for i in range(len(words) - 1):
        if _ends_sentence(words[i]) and _starts_sentence(words[i + 1]):
            sentences.append(" ".join(words[start : i + 1]))
            start = i + 1
    if start < len(words):
        sentences.append(" ".join(words[start:]))
    return sentences


def document_sentences(doc: Document) -> list[str]:
    """All sentences of ``doc`` in order; paragraph ends are always sentence ends."""
    return [s for p in doc.paragraphs for s in split_sentences(p)]


# ----------------------------------------------------------------------------- held-out split


def _id_score(doc_id: str, salt: str) -> float:
    """Stable pseudo-uniform number in [0, 1) for a document id (sha1, independent of order)."""
    digest = hashlib.sha1(f"{salt}\x00{doc_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_train_validation(
    docs: Sequence[Document], validation_fraction: float = 0.02, salt: str = _SPLIT_SALT
) -> tuple[list[Document], list[Document]]:
    """Fixed held-out split BY DOCUMENT: ``doc`` is validation iff sha1(salt, id) < fraction.

    A document's side depends only on its id, so the split never changes with
    document order and adding documents never moves existing ones. If hashing
    leaves a side empty, the document with the lowest (resp. highest) score is
    moved there, so with >= 2 documents both sides are non-empty.

    Returns:
      (train, validation) lists, each in input order.
    Raises:
      CorpusError: fewer than 2 documents. ValueError: fraction outside (0, 1).
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    if len(docs) < 2:
        raise CorpusError(
            f"need at least 2 documents for a train/validation split, got {len(docs)}; "
            "add documents or split a long text file into several"
        )
    scores = [_id_score(d.id, salt) for d in docs]
    is_val = [s < validation_fraction for s in scores]
    if not any(is_val):
        is_val[min(range(len(docs)), key=scores.__getitem__)] = True
    if all(is_val):
        is_val[max(range(len(docs)), key=scores.__getitem__)] = False
    train = [d for d, v in zip(docs, is_val) if not v]
    validation = [d for d, v in zip(docs, is_val) if v]
    return train, validation


def validation_fraction_for(docs: Sequence[Document], n: int, salt: str = _SPLIT_SALT) -> float:
    """The smallest validation_fraction, in hundredths, that puts at least ``n`` of ``docs`` in the
    validation split of ``split_train_validation`` (1.0, which no split accepts, if none does)."""
    return _fraction_for(heapq.nsmallest(n, (_id_score(d.id, salt) for d in docs)), n)


def _fraction_for(lowest_scores: list[float], n: int) -> float:
    """`validation_fraction_for` from the ``n`` lowest id scores of the documents, ascending."""
    if len(lowest_scores) < n:
        return 1.0
    return min(math.floor(lowest_scores[n - 1] * 100 + 1) / 100, 1.0)


class HeldOutSplit:
    """`split_train_validation` for a stream of documents seen one at a time, in one or two passes.

    ``is_validation(doc)`` decides by the id's hash alone and tallies what the whole-list split
    also needs: if a pass leaves a side empty, `moved()` names the document that
    split_train_validation moves (the lowest score to validation, or the highest to train), and a
    second pass with ``HeldOutSplit(fraction, moved=that id)`` puts it there. Each side then holds
    exactly the documents of split_train_validation's, in stream order.
    """

    def __init__(self, validation_fraction: float, moved: str | None = None, salt: str = _SPLIT_SALT):
        if not 0.0 < validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
        self.fraction, self._moved, self._salt = validation_fraction, moved, salt
        self.documents = self.validation_by_hash = 0
        self._lowest: tuple[float, str] | None = None  # (score, id), the first of equal scores
        self._highest: tuple[float, str] | None = None
        self._two_lowest: list[float] = []  # for validation_fraction_for(documents, 2)

    def is_validation(self, doc: Document) -> bool:
        score = _id_score(doc.id, self._salt)
        self.documents += 1
        by_hash = score < self.fraction
        self.validation_by_hash += by_hash
        if self._lowest is None or score < self._lowest[0]:
            self._lowest = (score, doc.id)
        if self._highest is None or score > self._highest[0]:
            self._highest = (score, doc.id)
        self._two_lowest = sorted([*self._two_lowest, score])[:2]
        return by_hash != (doc.id == self._moved)

    def moved(self) -> str | None:
        """After a pass: the id split_train_validation moves to the other side (None: none moves).

        Raises CorpusError for fewer than 2 documents, as split_train_validation does.
        """
        if self.documents < 2:
            raise CorpusError(
                f"need at least 2 documents for a train/validation split, got {self.documents}; "
                "add documents or split a long text file into several"
            )
        if self.validation_by_hash == 0:
            return self._lowest[1]
        if self.validation_by_hash == self.documents:
            return self._highest[1]
        return None

    def fraction_for_two(self) -> float:
        """``validation_fraction_for(documents seen, 2)``."""
        return _fraction_for(self._two_lowest, 2)

    def tally(self) -> dict:
        """What this pass has seen, as JSON-able values, for `merged` (a parallel pass has one per unit)."""
        return {
            "documents": self.documents,
            "validation_by_hash": self.validation_by_hash,
            "lowest": self._lowest,
            "highest": self._highest,
            "two_lowest": self._two_lowest,
        }

    @classmethod
    def merged(
        cls, validation_fraction: float, tallies: Sequence[dict], salt: str = _SPLIT_SALT
    ) -> HeldOutSplit:
        """The split after one pass over the concatenated streams whose `tally`s are ``tallies`` (in
        stream order): its `moved` and `fraction_for_two` are those of a single pass over them all."""
        out = cls(validation_fraction, salt=salt)
        for t in tallies:
            out.documents += t["documents"]
            out.validation_by_hash += t["validation_by_hash"]
            for name, better in (("_lowest", float.__lt__), ("_highest", float.__gt__)):
                seen, mine = t[name[1:]], getattr(out, name)
                if seen is not None and (mine is None or better(float(seen[0]), mine[0])):
                    setattr(out, name, (float(seen[0]), str(seen[1])))
            out._two_lowest = sorted([*out._two_lowest, *t["two_lowest"]])[:2]
        return out


def held_out_split(documents: Iterable[Document], validation_fraction: float) -> HeldOutSplit:
    """A `HeldOutSplit` whose ``is_validation`` gives `split_train_validation`'s sides in one more pass
    over ``documents`` (this one reads them: only their ids matter)."""
    tally = HeldOutSplit(validation_fraction)
    for doc in documents:
        tally.is_validation(doc)
    return HeldOutSplit(validation_fraction, moved=tally.moved())


# ----------------------------------------------------------------------------- fingerprint


def corpus_fingerprint(spec: str | Sequence[str]) -> str:
    """Short (16 hex chars) hash identifying the corpus content, for cache invalidation.

    Embedded corpus: hash of its bytes. Files: their absolute paths, sizes and
    mtimes (cheap; touching a file rebuilds), and for a .txt file large enough to be cut into several
    documents, the size of those (files read as before hash as before). tfds: the spec string itself.
    Raises CorpusError for paths/globs that match nothing, like read_corpus.
    """
    h = hashlib.sha256(f"reader-v{_READER_VERSION}".encode())
    for item in _as_spec_list(spec):
        h.update(b"\x00spec\x00" + item.encode("utf-8"))
        if _embedded_names(item):
            for name in _embedded_names(item):
                h.update(_embedded_path(name).read_bytes())
        elif item.startswith("tfds:"):
            continue
        else:
            for path, _ in _match_files(item):
                try:
                    st = os.stat(path)
                except FileNotFoundError:  # listed by the glob a moment ago
                    raise _disappeared(path) from None
                h.update(f"\x00{os.path.abspath(path)}\x00{st.st_size}\x00{st.st_mtime_ns}".encode("utf-8"))
                if path.endswith(".txt") and st.st_size > TXT_DOCUMENT_CHARS:  # read as several documents
                    h.update(f"\x00txt-documents-of\x00{TXT_DOCUMENT_CHARS}".encode("utf-8"))
    return h.hexdigest()[:16]
