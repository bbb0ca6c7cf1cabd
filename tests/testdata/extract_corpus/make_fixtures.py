"""Regenerate the extract_corpus test fixtures from the real Debian packages (run by hand, not by tests).

    python tests/testdata/extract_corpus/make_fixtures.py r-cran-janeaustenr_1.0.0-1_all.deb \
        sword-text-web_426.0-1_all.deb python3.11-doc_3.11.2-6+deb12u9_all.deb

* persuasion.rdb / persuasion.rdx -- a lazy-load database holding one object,
  ``persuasion``: the REAL serialized R character vector of Persuasion from
  janeaustenr's data/Rdata.rdb, cut to its first lines (the serialized strings
  are kept byte for byte; only the vector length field is rewritten). The .rdb
  entry is framed as R frames it (4-byte big-endian length + zlib); the .rdx
  index is written with rdata.write_rds, since the real index points into the
  full 1.6 MB database.
* web.bzs / web.bzv / web.bzz -- a zText module whose verse slots are the REAL
  slots (OSIS markup included) of Psalm 134 and of the book of Jude (its
  introduction slot and chapter 1) from sword-text-web's modules; cutting the
  original blocks is impractical (one block is a whole testament section), so
  the slots are re-packed: one zlib block for the psalm, one for Jude.
* bisect.rst.txt, interpreter.rst.txt -- two whole, unmodified pages of the
  python3.11-doc reStructuredText sources (PSF licence).
"""

import pathlib
import struct
import sys
import zlib

import numpy as np
import rdata

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "tools"))
import extract_corpus as ec  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
AUSTEN_LINES = 300  # Persuasion's title page, chapter 1 and the start of chapter 2


def truncate_strsxp(serialized: bytes, n: int) -> bytes:
    """An XDR-serialized R character vector (no attributes) cut to its first n strings."""
    assert serialized[:2] == b"X\n"
    pos = 2 + 12  # format version, writer R version, minimal R version
    (nelen,) = struct.unpack_from(">i", serialized, pos)
    pos += 4 + nelen  # native encoding (format version 3)
    flags, length = struct.unpack_from(">ii", serialized, pos)
    assert flags & 0xFF == 16 and not flags & (1 << 9), "expected a STRSXP without attributes"
    head_end, pos = pos + 8, pos + 8
    for _ in range(n):
        (size,) = struct.unpack_from(">i", serialized, pos + 4)
        pos += 8 + max(size, 0)
    return serialized[: head_end - 4] + struct.pack(">i", n) + serialized[head_end:pos]


def make_austen(deb: pathlib.Path) -> None:
    files = ec.read_deb_files(deb, lambda p: p.startswith(ec.AUSTEN_DATA))
    index = rdata.conversion.convert(
        rdata.parser.parse_data(files[ec.AUSTEN_DATA + ".rdx"], extension=".rds")
    )
    offset, length = (int(x) for x in index["variables"]["persuasion"])
    entry = files[ec.AUSTEN_DATA + ".rdb"][offset : offset + length]
    serialized = truncate_strsxp(ec.decode_lazyload_entry(entry), AUSTEN_LINES)
    rdb = struct.pack(">I", len(serialized)) + zlib.compress(serialized, 9)
    (HERE / "persuasion.rdb").write_bytes(rdb)
    rdx = {
        "variables": {"persuasion": np.array([0, len(rdb)], dtype=np.int32)},
        "references": {},
        "compressed": np.array([True]),
    }
    rdata.write_rds(HERE / "persuasion.rdx", rdx)


def make_bible(deb: pathlib.Path) -> None:
    files = ec.read_deb_files(deb, lambda p: p.startswith(ec.WEB_MODULE))
    slots = {
        t: ec.read_ztext(*(files[f"{ec.WEB_MODULE}{t}.{e}"] for e in ("bzs", "bzv", "bzz")))
        for t in ("ot", "nt")
    }
    psalm = _chapter_slots(slots["ot"], "Ps.134", with_intro=False)
    jude = _chapter_slots(slots["nt"], "Jude.1", with_intro=True)
    bzs, bzv, bzz = b"", b"", b""
    for block, verses in enumerate((psalm, jude)):
        raw = b"".join(v.encode("utf-8") for v in verses)
        packed = zlib.compress(raw, 9)
        bzs += struct.pack("<III", len(bzz), len(packed), len(raw))
        bzz += packed
        start = 0
        for v in verses:
            size = len(v.encode("utf-8"))
            bzv += struct.pack("<IIH", block, start, size)
            start += size
    for ext, data in (("bzs", bzs), ("bzv", bzv), ("bzz", bzz)):
        (HERE / f"web.{ext}").write_bytes(data)


def _chapter_slots(verses: list[str], osis_id: str, with_intro: bool) -> list[str]:
    """The slots from the one holding <chapter sID=osis_id> (or the book intro before it) to its end."""
    first = next(i for i, v in enumerate(verses) if f'sID="{osis_id}"' in v)
    if with_intro:
        first -= 1  # the book's introduction slot precedes its first chapter heading
    last = next(i for i in range(first, len(verses)) if f'<chapter eID="{osis_id}"/>' in verses[i])
    return verses[first : last + 1]


def make_pydocs(deb: pathlib.Path) -> None:
    pages = ("library/bisect", "tutorial/interpreter")
    files = ec.read_deb_files(deb, lambda p: p in {f"{ec.PYDOCS_SOURCES}{n}.rst.txt" for n in pages})
    for name in pages:
        (HERE / f"{name.split('/')[-1]}.rst.txt").write_bytes(files[f"{ec.PYDOCS_SOURCES}{name}.rst.txt"])


if __name__ == "__main__":
    austen, bible, pydocs = map(pathlib.Path, sys.argv[1:4])
    make_austen(austen)
    make_bible(bible)
    make_pydocs(pydocs)
