"""Turn public-domain text shipped in Debian packages into optional flaxlm corpus files.

Each subcommand reads one Debian package and writes a ``.jsonl.gz`` corpus in
the same format as the embedded Shakespeare corpus (tools/make_default_corpus.py):
one JSON object per line, one line per DOCUMENT::

    {"id": "austen/emma/volume-1/chapter-1", "title": "Emma, Volume I, Chapter 1",
     "paragraphs": ["Emma Woodhouse, handsome, clever, and rich, ...", ...]}

* ``austen`` -- r-cran-janeaustenr: Jane Austen's six novels (Project Gutenberg
  texts, public domain), stored as R character vectors (one element per printed
  line) in R's lazy-load database ``data/Rdata.rdb`` + ``Rdata.rdx``. A document
  is a chapter; a paragraph is a run of non-blank lines. Title pages, the
  "THE END"/"FINIS" trailer and Northanger Abbey's modern "A NOTE ON THE TEXT"
  are dropped, as are the ``_underscores_`` Gutenberg uses for italics.
* ``bible`` -- sword-text-web: the World English Bible (public domain) as a
  SWORD zText module with OSIS markup. A document is a book chapter; a
  paragraph is one OSIS prose paragraph (``<div type="x-p">``, ``<lb type="x-p">``)
  or one poetry stanza (``<lg>``), its verses joined by spaces, because the
  module marks paragraphs throughout and verse-per-paragraph would cut most
  sentences in half. Footnotes, cross references, section headings and Song of
  Songs speaker labels are dropped (editorial, not text); titles the module
  marks canonical -- psalm superscriptions ("A Psalm by David.") and Psalm
  119's acrostic letters -- are kept, each as its own paragraph, because they
  are part of the translated text. The translators' preface, book introductions and
  glossary lie outside every chapter and are dropped.
* ``pydocs`` -- python3.11-doc: the reStructuredText sources of the Python
  documentation (``html/_sources/**/*.rst.txt``; PSF licence, NOT public
  domain). A document is a page; a paragraph is a blank-line separated block of
  prose. Section titles, comments, tables, code (literal blocks after ``::``,
  ``>>>`` sessions, code-like directives) are dropped; the bodies of
  descriptive directives (``.. function::``, ``.. note::``, ...) are kept
  because they hold most of the library reference's prose. Inline markup is
  reduced to its text (``:func:`len``` -> ``len``).

Input is ``--deb PATH`` (an already downloaded .deb) or, without it,
``apt-get download PACKAGE`` into a temporary directory. The .deb's files are
read in memory through ``dpkg-deb --fsys-tarfile`` (or, where dpkg-deb is
missing, by parsing the ar archive in Python), so nothing is installed or
unpacked and no root is needed.

Output is deterministic: documents in a fixed order (novels, pages: sorted by
name; chapters and bible books: in reading order), sorted JSON keys, gzip
mtime 0, so rerunning on the same .deb gives byte-identical output.
Austen needs the ``rdata`` package: ``pip install flaxlm[corpora]``.

Usage::

    python tools/extract_corpus.py austen --out corpora/austen.jsonl.gz
    python tools/extract_corpus.py bible --deb sword-text-web_426.0-1_all.deb --out corpora/web.jsonl.gz
    python tools/extract_corpus.py pydocs --out corpora/pydocs.jsonl.gz

See tools/CORPORA.md for the measured sizes and licences.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import html
import io
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable

# The sibling script that builds the default corpus writes the same format; share its helpers.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_default_corpus import split_blocks, write_jsonl_gz  # noqa: E402

PACKAGES = {"austen": "r-cran-janeaustenr", "bible": "sword-text-web", "pydocs": "python3.11-doc"}

# ----------------------------------------------------------------------------- .deb access


def _ar_members(data: bytes) -> dict[str, bytes]:
    """Members of an ar archive (the .deb container): name -> bytes."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive (a .deb starts with '!<arch>')")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)  # members are 2-byte aligned
    return members


def deb_data_tar(deb: pathlib.Path) -> bytes:
    """The uncompressed data.tar of a .deb: via dpkg-deb when present, else parsed in Python."""
    if shutil.which("dpkg-deb"):
        return subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, stdout=subprocess.PIPE
        ).stdout
    members = _ar_members(deb.read_bytes())
    name = next((n for n in sorted(members) if n.startswith("data.tar")), None)
    if name is None:
        raise ValueError(f"{deb}: no data.tar member in the .deb")
    if name.endswith(".zst"):
        raise SystemExit(f"{deb}: data.tar.zst needs dpkg-deb (Python's tarfile has no zstd)")
    with tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*") as tar:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as plain:
            for member in tar:
                plain.addfile(member, tar.extractfile(member) if member.isfile() else None)
        return out.getvalue()


def read_deb_files(deb: pathlib.Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Regular files of a .deb whose path (without the leading './') satisfies ``wanted``."""
    files = {}
    with tarfile.open(fileobj=io.BytesIO(deb_data_tar(deb)), mode="r:") as tar:
        for member in tar:
            path = member.name.removeprefix("./")
            if member.isfile() and wanted(path):
                files[path] = tar.extractfile(member).read()
    return files


def download_deb(package: str, dest: str) -> pathlib.Path:
    """``apt-get download package`` into dest; the .deb's path."""
    if shutil.which("apt-get") is None:
        raise SystemExit(
            f"apt-get is not available here: download {package}'s .deb on a Debian/Ubuntu machine "
            f"('apt-get download {package}') and pass it with --deb PATH"
        )
    subprocess.run(["apt-get", "download", package], cwd=dest, check=True)
    debs = sorted(pathlib.Path(dest).glob(f"{package}_*.deb"))
    if len(debs) != 1:
        raise SystemExit(f"apt-get download {package} left {len(debs)} .deb files in {dest}")
    return debs[0]


# ----------------------------------------------------------------------------- output


def corpus_counts(docs: list[dict]) -> dict[str, int]:
    """Documents, paragraphs and whitespace-separated words of a corpus."""
    paragraphs = [p for d in docs for p in d["paragraphs"]]
    return {
        "documents": len(docs),
        "paragraphs": len(paragraphs),
        "words": sum(len(p.split()) for p in paragraphs),
    }


def check_unique_ids(docs: list[dict]) -> None:
    """read_corpus rejects duplicate ids; fail here, naming them, instead."""
    dupes = sorted(i for i, n in collections.Counter(d["id"] for d in docs).items() if n > 1)
    if dupes:
        raise SystemExit(f"duplicate document ids: {dupes[:5]}")


# ----------------------------------------------------------------------------- austen

AUSTEN_DATA = "usr/lib/R/site-library/janeaustenr/data/Rdata"
NOVEL_TITLES = {
    "emma": "Emma",
    "mansfieldpark": "Mansfield Park",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
    "prideprejudice": "Pride and Prejudice",
    "sensesensibility": "Sense and Sensibility",
}
_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\.?\s*$", re.IGNORECASE)
_VOLUME = re.compile(r"^\s*volume\s+([ivxlc]+|\d+)\.?\s*$", re.IGNORECASE)
# Everything from one of these lines on is not the novel: Gutenberg's end mark or
# the Signet edition's modern editorial note after Northanger Abbey.
_NOVEL_END = re.compile(r"^\s*(the end|finis|a note on the text)\s*$", re.IGNORECASE)
# Gutenberg marks italics as _word_; the underscores are not text.
_HAS_WORD = re.compile(r"\w")
_ITALICS = re.compile(r"(?<!\w)_([^_\s](?:[^_]*?[^_\s])?)_(?!\w)")


def parse_number(token: str) -> int:
    """'12' -> 12, 'XIV' -> 14 (chapter and volume numbers)."""
    if token.isdigit():
        return int(token)
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
    digits = [values[c] for c in token.upper()]
    return sum(-v if v < nxt else v for v, nxt in zip(digits, digits[1:] + [0]))


def int_to_roman(n: int) -> str:
    """4 -> 'IV'."""
    out = ""
    for value, numeral in ((100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX")):
        while n >= value:
            out, n = out + numeral, n - value
    for value, numeral in ((5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + numeral, n - value
    return out


def decode_lazyload_entry(entry: bytes) -> bytes:
    """One .rdb entry -> the serialized R object.

    R's lazy-load databases (written by makeLazyLoadDB with compress=TRUE, as
    R CMD INSTALL does for data) store each object as a 4-byte big-endian
    uncompressed length followed by a zlib stream. Other compress settings add
    a type byte (bzip2/xz); no package we read uses them, so they are refused
    with a clear message rather than guessed at.
    """
    expected = struct.unpack(">I", entry[:4])[0]
    try:
        raw = zlib.decompress(entry[4:])
    except zlib.error as e:
        raise ValueError(
            f"lazy-load entry is not zlib-compressed ({e}); bzip2/xz databases unsupported"
        ) from None
    if len(raw) != expected:
        raise ValueError(f"lazy-load entry: {len(raw)} bytes after zlib, header says {expected}")
    return raw


def read_lazyload_db(rdx: bytes, rdb: bytes) -> dict[str, object]:
    """An R lazy-load database (.rdx index + .rdb data) -> {variable name: Python value}.

    The .rdx is an ordinary gzip-compressed RDS file holding
    ``list(variables = list(name = c(offset, length), ...), references = ..., compressed = ...)``;
    each (offset, length) slice of the .rdb is one serialized object (see
    decode_lazyload_entry). ``rdata`` parses the R serialization format.
    """
    import rdata  # optional dependency: pip install flaxlm[corpora]

    def parse(serialized: bytes):
        return rdata.conversion.convert(rdata.parser.parse_data(serialized, extension=".rds"))

    index = parse(rdx)
    compressed = [bool(x) for x in index["compressed"]]
    if compressed != [True]:
        raise ValueError(f"lazy-load database compress={compressed}; only zlib (TRUE) is supported")
    values = {}
    for name, (offset, length) in index["variables"].items():
        values[str(name)] = parse(decode_lazyload_entry(rdb[int(offset) : int(offset) + int(length)]))
    return values


def austen_paragraph(lines: list[str]) -> str:
    """A run of printed lines -> one paragraph, italics underscores removed."""
    return _ITALICS.sub(r"\1", " ".join(" ".join(lines).split()))


def split_novel(slug: str, title: str, lines: list[str]) -> list[dict]:
    """A novel's printed lines -> one document per chapter.

    Chapter numbers restart in each volume of Emma, so a novel with VOLUME
    headings gets volume-qualified ids. Text before the first chapter (title
    page, Northanger Abbey's "Advertisement") and from the end mark on is dropped.
    """
    has_volumes = any(_VOLUME.match(line) for line in lines)
    docs: list[dict] = []
    volume, chapter_lines = None, None
    for line in lines:
        if _NOVEL_END.match(line):
            break
        if m := _VOLUME.match(line):
            volume = parse_number(m.group(1))
            continue
        if m := _CHAPTER.match(line):
            number = parse_number(m.group(1))
            key, label = f"chapter-{number}", f"Chapter {number}"
            if has_volumes:
                key, label = f"volume-{volume}/{key}", f"Volume {int_to_roman(volume)}, {label}"
            chapter_lines = []
            docs.append({"id": f"austen/{slug}/{key}", "title": f"{title}, {label}", "lines": chapter_lines})
            continue
        if chapter_lines is not None:
            chapter_lines.append(line)
    for d in docs:
        paragraphs = (austen_paragraph(b) for b in split_blocks(d.pop("lines")))
        # A paragraph without a letter or digit is a section ornament such as "***".
        d["paragraphs"] = [p for p in paragraphs if _HAS_WORD.search(p)]
    return docs


def build_austen(deb: pathlib.Path) -> list[dict]:
    files = read_deb_files(deb, lambda p: p in (AUSTEN_DATA + ".rdx", AUSTEN_DATA + ".rdb"))
    if len(files) != 2:
        raise SystemExit(f"{deb}: no {AUSTEN_DATA}.rdb/.rdx; is this r-cran-janeaustenr?")
    novels = read_lazyload_db(files[AUSTEN_DATA + ".rdx"], files[AUSTEN_DATA + ".rdb"])
    docs = []
    for slug in sorted(novels):
        docs.extend(split_novel(slug, NOVEL_TITLES.get(slug, slug), [str(x) for x in novels[slug]]))
    return docs


# ----------------------------------------------------------------------------- bible

WEB_MODULE = "usr/share/sword/modules/texts/ztext/engWEB2015eb/"
_TAG = re.compile(r"<(/?)(\w+)([^<>]*)>")
# A tag cut short before the next one starts (the module has one: "<d" ending Greek Daniel 14).
_BROKEN_TAG = re.compile(r"<[^<>]*(?=<)")
_ATTR = re.compile(r'(\w+)="([^"]*)"')
# Dropped with their content: editorial apparatus, not the translated text.
# A following punctuation mark is captured so that "me<note>..</note>;" becomes "me;", not "me ;",
# while "God<note>..</note><w>created" still gets its space.
_DROPPED_ELEMENTS = re.compile(r"<(note|speaker)\b[^>]*>.*?</\1>([,;:.!?]?)", re.DOTALL)
# Titles the module marks canonical (psalm superscriptions, Psalm 119's acrostic letters) are kept.
_EDITORIAL_TITLE = re.compile(r'<title\b(?![^>]*canonical="true")[^>]*>.*?</title>', re.DOTALL)


def _true_slot_sizes(slots: list[tuple[int, int, int]], block_sizes: list[int]) -> list[int]:
    """Verse sizes with u16 overflow undone.

    The .bzv size field is 16 bits, so a slot of 65,536 bytes or more is stored modulo 65,536
    (sword-text-web's Greek Daniel: 125,566 bytes stored as 60,030). Slots are laid out
    back to back in their block, so where the next slot (or the block's end) lies exactly a
    multiple of 65,536 bytes beyond the stored end, that is the true end.
    """
    sizes = [size for _, _, size in slots]
    for i, (block, start, size) in enumerate(slots):
        if size == 0:
            continue
        following = (s for b, s, n in slots[i + 1 :] if n and b == block)
        end = next(following, block_sizes[block])
        gap = end - (start + size)
        if gap > 0 and gap % 65536 == 0:
            sizes[i] = end - start
    return sizes


def read_ztext(bzs: bytes, bzv: bytes, bzz: bytes) -> list[str]:
    """One testament of a SWORD zText module -> the text of every verse slot, in index order.

    ``.bzs``: 12-byte little-endian (offset, compressed size, uncompressed size) per block of
    ``.bzz`` (zlib streams); ``.bzv``: 10-byte little-endian (block u32, offset in the
    uncompressed block u32, size u16) per verse slot. Slots of the versification that
    the text lacks have size 0 and give "". Sizes that overflowed 16 bits are restored.
    """
    if len(bzs) % 12 or len(bzv) % 10:
        raise ValueError(
            f"zText index sizes {len(bzs)} (.bzs) / {len(bzv)} (.bzv) are not multiples of 12 / 10"
        )
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    slots = [struct.unpack_from("<IIH", bzv, i) for i in range(0, len(bzv), 10)]
    sizes = _true_slot_sizes(slots, [usize for _, _, usize in blocks])
    cache: dict[int, bytes] = {}
    verses = []
    for (block, start, _), size in zip(slots, sizes):
        if size == 0:
            verses.append("")
            continue
        if block not in cache:
            offset, csize, usize = blocks[block]
            cache[block] = zlib.decompress(bzz[offset : offset + csize])
            if len(cache[block]) != usize:
                raise ValueError(f"zText block {block}: {len(cache[block])} bytes, index says {usize}")
        verses.append(cache[block][start : start + size].decode("utf-8"))
    return verses


def _is_paragraph_break(name: str, attrs: dict[str, str]) -> bool:
    """OSIS milestones that end a prose paragraph or a poetry stanza."""
    if name in ("div", "lb"):
        return attrs.get("type") == "x-p"
    return name in ("lg", "list", "item", "title")  # a kept title stands alone


def parse_osis(verses: Iterable[str], prefix: str = "web") -> tuple[list[dict], collections.Counter]:
    """OSIS verse texts in reading order -> one document per chapter, plus counters.

    Chapters are found by their ``<chapter sID/eID>`` milestones (osis2mod keeps
    them), book names by the ``x-usfm-h`` milestone after each ``<div type="book">``,
    so no versification table is needed. A book whose introduction is missing is
    titled by its OSIS code. Text outside any chapter is counted as ``dropped_chars``;
    a chapter started before the previous one ended as ``unclosed_chapters``.
    """
    text = " ".join(verses)  # slots are whole verses: a space between them never splits a word
    text = _DROPPED_ELEMENTS.sub(lambda m: m.group(2) or " ", text)
    text = _EDITORIAL_TITLE.sub(" ", text)
    stats: collections.Counter = collections.Counter()
    text, stats["broken_tags"] = _BROKEN_TAG.subn(" ", text)
    docs: list[dict] = []
    book_names: dict[str, str] = {}
    intro_book = None  # OSIS code of the book whose introduction we are in
    current: dict | None = None
    pieces: list[str] = []

    def flush() -> None:
        paragraph = " ".join(html.unescape("".join(pieces)).split())
        pieces.clear()
        if paragraph and current is not None:
            current["paragraphs"].append(paragraph)

    pos = 0
    for m in _TAG.finditer(text):
        between = text[pos : m.start()]
        pos = m.end()
        if current is not None:
            pieces.append(between)
        else:
            stats["dropped_chars"] += len(between.strip())
        name, attrs = m.group(2), dict(_ATTR.findall(m.group(3)))
        if name == "div" and attrs.get("type") == "book" and "sID" in attrs:
            intro_book = attrs.get("osisID")
        elif name == "milestone" and attrs.get("type") == "x-usfm-h" and intro_book:
            book_names[intro_book] = attrs.get("n", intro_book)
        elif name == "chapter" and "sID" in attrs:
            flush()
            stats["unclosed_chapters"] += current is not None
            book, number = attrs["osisID"].split(".")
            current = {
                "id": f"{prefix}/{book}/{number}",
                "title": f"{book_names.get(book, book)} {number}",
                "paragraphs": [],
            }
            docs.append(current)
        elif name == "chapter" and "eID" in attrs:
            flush()
            current = None
        elif _is_paragraph_break(name, attrs):
            flush()
    stats["dropped_chars"] += len(text[pos:].strip())
    kept = [d for d in docs if d["paragraphs"]]
    stats["empty_chapters"] = len(docs) - len(kept)
    return kept, stats


def build_bible(deb: pathlib.Path) -> list[dict]:
    files = read_deb_files(deb, lambda p: p.startswith(WEB_MODULE))
    docs: list[dict] = []
    for testament in ("ot", "nt"):
        parts = [files.get(f"{WEB_MODULE}{testament}.{ext}") for ext in ("bzs", "bzv", "bzz")]
        if None in parts:
            raise SystemExit(f"{deb}: no {WEB_MODULE}{testament}.bz[svz]; is this sword-text-web?")
        testament_docs, stats = parse_osis(read_ztext(*parts))
        print(f"{testament}: {len(testament_docs)} chapters; dropped: {dict(sorted(stats.items()))}")
        docs.extend(testament_docs)
    return docs


# ----------------------------------------------------------------------------- pydocs

PYDOCS_SOURCES = "usr/share/doc/python3.11/html/_sources/"
# Directives whose whole block (arguments, options, body) is not prose.
_SKIPPED_DIRECTIVES = frozenset(
    "code-block sourcecode code literalinclude doctest testcode testoutput testsetup testcleanup "
    "productionlist toctree index module currentmodule moduleauthor sectionauthor highlight raw "
    "image figure include csv-table list-table table tabularcolumns only rubric contents".split()
)
# Object descriptions: their argument lines (up to the first blank line) are signatures, not prose,
# but their indented body is the description we keep.
_SIGNATURE_DIRECTIVES = frozenset(
    "function method class attribute data exception decorator decoratormethod classmethod staticmethod "
    "coroutinefunction coroutinemethod abstractmethod awaitablefunction awaitablemethod describe opcode "
    "cmdoption option envvar program pdbcommand member macro type var struct enum enumerator union "
    "cvar 2to3fixer monitoring-event".split()
)
# Admonitions whose argument (text on the directive line) is already prose.
_PROSE_ARGUMENT = frozenset(
    "note warning seealso important tip caution attention danger hint impl-detail".split()
)
# Version notes: the argument starts with one or two version numbers, any rest is prose.
_VERSION_DIRECTIVES = frozenset("versionadded versionchanged deprecated deprecated-removed".split())
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")  # comments, targets (.. _x:), footnotes (.. [1])
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1{2,}\s*$")
_TABLE_BORDER = re.compile(r"^\s*(\+[-=+]+\+|=+( +=+)+)\s*$")
_BULLET = re.compile(r"^(\s*)([-*+•]|#\.|\d+\.)\s+")
_ROLE = re.compile(r":[\w:+-]+:`([^`]*)`")
_TITLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$", re.DOTALL)
_LINK = re.compile(r"`([^`<]*?)(?:\s*<[^<>]*>)?`__?")
_FOOTNOTE_REF = re.compile(r"\s*\[(#[\w-]*|\*|\d+)\]_")
_EMPHASIS = re.compile(r"(?<![\w*])\*\*?([^*\s](?:[^*]*?[^*\s])?)\*\*?(?![\w*])")
_FIELD = re.compile(r"^\s*:[\w -]+:(\s|$)")  # ":orphan:", ":Author: ..." page metadata
_VERSIONS = re.compile(r"^(\d+(\.\d+)*,?\s*)+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _role_text(m: re.Match) -> str:
    """:func:`title <target>` -> title; :meth:`~a.b.c` -> c; :mod:`!x` -> x."""
    content = m.group(1)
    if t := _TITLE_TARGET.match(content):
        return t.group(1)
    content = content.lstrip("!")
    return content[1:].rsplit(".", 1)[-1] if content.startswith("~") else content


def rst_inline_text(text: str) -> str:
    """Inline reStructuredText markup -> its visible text, whitespace normalised."""
    text = _ROLE.sub(_role_text, text)
    text = text.replace("``", "")  # inline literals keep their content
    text = _FOOTNOTE_REF.sub("", text)
    text = _LINK.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    text = re.sub(r"(?<=\w)_(?=[\s.,;:)]|$)", "", text)  # reference_ -> reference
    text = text.replace("\\ ", "").replace("\\", "")
    return " ".join(text.split())


def _directive_prose(name: str, argument: str) -> str:
    """The part of a kept directive's argument that is prose ('' for most directives)."""
    if name in _PROSE_ARGUMENT:
        return argument
    if name in _VERSION_DIRECTIVES:
        return _VERSIONS.sub("", argument)
    return ""


def rst_prose_lines(lines: list[str]) -> tuple[str | None, list[str]]:
    """The page title and the lines of prose of an .rst page ("" separates paragraphs).

    A small line-based reading of reStructuredText, enough for the CPython docs.
    Skipped blocks (comments, code-like directives, literal blocks after "::")
    run until the next non-blank line indented no deeper than where they
    started; tables, ``>>>`` sessions, field lists and object signatures run
    until the next blank line. Section titles are dropped (the first one is returned as the
    page title).
    """
    title = None
    out: list[str] = []
    skip_deeper_than = None  # skipping non-blank lines indented deeper than this
    until_blank = None  # skip "all" lines, or only ":option:" lines, up to the next blank line
    para_indent = None  # indent of the current paragraph's first line; None between paragraphs
    literal_after_blank = None  # a "::" paragraph's indent: its literal block starts after the blank line
    for i, raw in enumerate(lines):
        line = raw.rstrip()
        if not line.strip():
            out.append("")
            until_blank, para_indent = None, None
            if literal_after_blank is not None:
                skip_deeper_than, literal_after_blank = literal_after_blank, None
            continue
        indent, stripped = _indent(line), line.strip()
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if until_blank == "all" or (until_blank == "options" and stripped.startswith(":")):
            continue
        until_blank = None
        nxt = lines[i + 1].rstrip() if i + 1 < len(lines) else ""
        if para_indent is None and _UNDERLINE.match(line):
            continue  # an overline or a transition
        if para_indent is None and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(stripped):
            title = title or rst_inline_text(stripped)
            out.append("")  # the underline below is then skipped as a transition
            continue
        if d := _DIRECTIVE.match(line):
            name = d.group(2).split(":")[-1]  # "py:function" -> "function", "c:macro" -> "macro"
            out.append("")
            if name in _SKIPPED_DIRECTIVES:
                skip_deeper_than = indent
            elif name in _SIGNATURE_DIRECTIVES:
                until_blank = "all"
            else:
                until_blank = "options"
                if prose := _directive_prose(name, d.group(3)):
                    out.append(prose)
                    para_indent = indent
            continue
        bullet = _BULLET.match(line)
        if _COMMENT.match(line) or (bullet and _COMMENT.match(line[bullet.end() :])):
            skip_deeper_than = indent
            out.append("")
            continue
        if _TABLE_BORDER.match(line) or (
            para_indent is None and (stripped.startswith(">>>") or _FIELD.match(line))
        ):
            until_blank = "all"
            out.append("")
            continue
        if para_indent is None:
            para_indent = indent
        elif bullet and len(bullet.group(1)) == para_indent:
            out.append("")  # each list item is its own paragraph
        text = line[bullet.end() :] if bullet else line
        if stripped.endswith("::"):
            # "text::" reads "text:" and "::" alone vanishes; the literal block after it is code.
            text = text.rstrip()[:-2].rstrip()
            text = text + ":" if text.strip() else ""
            literal_after_blank = para_indent
        out.append(text)
    return title, out


def parse_rst_page(doc_id: str, text: str) -> dict:
    """One .rst page -> a document {"id", "title", "paragraphs"}; the title falls back to the id."""
    title, lines = rst_prose_lines(text.splitlines())
    paragraphs = [rst_inline_text(" ".join(b)) for b in split_blocks(lines)]
    return {"id": doc_id, "title": title or doc_id, "paragraphs": [p for p in paragraphs if p.strip(":")]}


def build_pydocs(deb: pathlib.Path) -> list[dict]:
    files = read_deb_files(deb, lambda p: p.startswith(PYDOCS_SOURCES) and p.endswith(".rst.txt"))
    if not files:
        raise SystemExit(f"{deb}: no {PYDOCS_SOURCES}*.rst.txt; is this python3.11-doc?")
    docs = []
    for path in sorted(files):
        doc_id = "pydocs/" + path[len(PYDOCS_SOURCES) : -len(".rst.txt")]
        doc = parse_rst_page(doc_id, files[path].decode("utf-8"))
        if doc["paragraphs"]:
            docs.append(doc)
    return docs


# ----------------------------------------------------------------------------- main

BUILDERS = {"austen": build_austen, "bible": build_bible, "pydocs": build_pydocs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="corpus", required=True)
    for name, package in PACKAGES.items():
        p = sub.add_parser(name, help=f"from Debian package {package}")
        p.add_argument(
            "--deb", type=pathlib.Path, help=f"a downloaded {package} .deb (else apt-get download)"
        )
        p.add_argument("--out", type=pathlib.Path, required=True, help="output .jsonl.gz")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb or download_deb(PACKAGES[args.corpus], tmp)
        digest = hashlib.sha256(deb.read_bytes()).hexdigest()
        docs = BUILDERS[args.corpus](deb)
    check_unique_ids(docs)
    write_jsonl_gz(docs, args.out)
    counts = corpus_counts(docs)
    print(
        f"wrote {args.out} from {deb.name} (sha256 {digest[:16]}...): {counts['documents']} documents, "
        f"{counts['paragraphs']} paragraphs, {counts['words']} words, {args.out.stat().st_size} bytes"
    )


if __name__ == "__main__":
    sys.exit(main())
