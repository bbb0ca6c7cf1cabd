"""Tests for flaxlm.data.corpus on the embedded corpora and small files cut from them."""

import gzip
import hashlib
import json
import logging
import os
import pathlib
import sys
import types

import pytest

from flaxlm.data import corpus
from flaxlm.data.corpus import CorpusError, Document


@pytest.fixture(scope="module")
def docs():
    return corpus.load_embedded("shakespeare")


# ----------------------------------------------------------------------------- embedded corpora


def test_default_is_the_four_embedded_corpora_in_order(docs):
    default = corpus.load_default_corpus()
    assert corpus.read_corpus("default") == default and default[: len(docs)] == docs
    sizes = {name: len(corpus.load_embedded(name)) for name in corpus.EMBEDDED}
    # tools/CORPORA.md: 269 Austen chapters, 1,402 Bible chapters, 495 Python documentation pages.
    assert sizes == {"shakespeare": len(docs), "austen": 269, "bible": 1402, "pydocs": 495}
    assert len({d.id for d in default}) == len(default) == sum(sizes.values())
    words = {n: sum(len(p.split()) for d in corpus.load_embedded(n) for p in d.paragraphs) for n in sizes}
    assert all(600_000 < w < 1_200_000 for w in words.values()), words  # four kinds, in like amounts
    assert corpus.read_corpus("bible")[0].id == "web/Gen/1" and corpus.read_corpus(["austen", "pydocs"])
    fps = {corpus.corpus_fingerprint(n) for n in [*sizes, "default"]}
    assert len(fps) == 5  # each name prepares its own data
    # Each document knows its source: NSP can draw its NotNext segments from the same kind of text.
    assert [d.source for d in default] == [n for n in sizes for _ in range(sizes[n])]


def test_shakespeare_counts_and_ids(docs):
    paragraphs = [p for d in docs for p in d.paragraphs]
    words = sum(len(p.split()) for p in paragraphs)
    assert 700 <= len(docs) <= 900  # one document per scene of 38 plays
    assert 30_000 <= len(paragraphs) <= 33_000
    assert 750_000 <= words <= 900_000
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.paragraphs and all(p == corpus.normalize_whitespace(p) for p in d.paragraphs) for d in docs)
    assert len({d.id.split("/")[0] for d in docs}) == 38


def test_shakespeare_content(docs):
    by_id = {d.id: d for d in docs}
    othello = by_id["othello/act-1/scene-1"]
    assert othello.paragraphs[0].startswith("Tush! never tell me; I take it much unkindly That thou, Iago,")
    hamlet = " ".join(by_id["hamlet/act-3/scene-1"].paragraphs)
    assert "To be, or not to be: that is the question:" in hamlet
    # Speaker labels and stage directions are dropped; no markdown survives.
    assert not any(p.startswith("**") or "_Enter" in p or "\\" in p for d in docs for p in d.paragraphs)


def test_read_corpus_by_name_equals_loader(docs):
    assert corpus.read_corpus("shakespeare") == docs
    assert isinstance(docs[0], Document) and isinstance(docs[0].paragraphs, tuple)


# ----------------------------------------------------------------------------- held-out split


def test_split_disjoint_stable_and_about_two_percent(docs):
    train, val = corpus.split_train_validation(docs, 0.02)
    train_ids, val_ids = {d.id for d in train}, {d.id for d in val}
    assert not train_ids & val_ids and len(train_ids | val_ids) == len(docs)
    assert 0.01 <= len(val) / len(docs) <= 0.035
    # Order-independent, and adding/removing documents never moves the others.
    train2, val2 = corpus.split_train_validation(docs[::-1], 0.02)
    assert {d.id for d in val2} == val_ids and {d.id for d in train2} == train_ids
    subset = docs[: len(docs) // 2] + [d for d in docs if d.id in val_ids]
    _, val3 = corpus.split_train_validation(subset, 0.02)
    assert {d.id for d in val3} == val_ids
    # Output keeps input order.
    assert [d.id for d in val] == [d.id for d in docs if d.id in val_ids]


def test_split_guarantees_both_sides(docs):
    train, val = corpus.split_train_validation(docs[:2], 0.02)
    assert len(train) == 1 and len(val) == 1
    train, val = corpus.split_train_validation(docs[:3], 0.999)
    assert len(train) >= 1 and len(val) >= 1
    with pytest.raises(CorpusError, match="at least 2 documents"):
        corpus.split_train_validation(docs[:1])
    with pytest.raises(ValueError):
        corpus.split_train_validation(docs, 0.0)


def test_held_out_split_of_a_stream_is_split_train_validation(docs):
    """HeldOutSplit (preparation's streamed split) puts each document on split_train_validation's side,
    including the cases where hashing leaves a side empty and one document is moved (a second pass)."""
    for subset, fraction in (
        (docs, 0.02),
        (docs[:2], 0.02),
        (docs[:3], 0.999),
        (docs[:8], 0.02),
        (docs[:8], 0.3),
    ):
        train, val = corpus.split_train_validation(subset, fraction)
        held_out = corpus.held_out_split(iter(subset), fraction)
        sides = [held_out.is_validation(d) for d in subset]
        assert [d for d, v in zip(subset, sides) if not v] == train and [
            d for d, v in zip(subset, sides) if v
        ] == val
        assert held_out.fraction_for_two() == corpus.validation_fraction_for(subset, 2)
    with pytest.raises(CorpusError, match="at least 2 documents"):
        corpus.held_out_split(iter(docs[:1]), 0.02)
    with pytest.raises(ValueError):
        corpus.HeldOutSplit(1.0)


def test_iter_corpus_streams_and_checks_ids_at_the_end(tmp_path, docs):
    """Documents come one at a time (the first before a later line is even parsed); duplicate ids raise
    when the stream ends, as read_corpus always raised."""
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "x", "text": "One."}\n{"id": "y", "text": "Two."}\n{"id": "x", "text": "Three."}\n'
    )
    stream = corpus.iter_corpus(str(path))
    assert next(stream).paragraphs == ("One.",) and next(stream).id == "y" and next(stream).id == "x"
    with pytest.raises(CorpusError, match=r"duplicate document ids \['x'\]"):
        next(stream)
    assert list(corpus.iter_corpus("shakespeare")) == docs


# ----------------------------------------------------------------------------- file formats


def _scene_text(doc: Document) -> str:
    """A document as a .txt file: paragraphs wrapped over lines, blank lines between them."""
    out = []
    for p in doc.paragraphs:
        words = p.split()
        out.append("\n".join(" ".join(words[i : i + 8]) for i in range(0, len(words), 8)))
    return "\n\n \n".join(out) + "\n"


def test_read_txt_glob(tmp_path, docs):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text(_scene_text(docs[0]), encoding="utf-8")
    (tmp_path / "sub" / "b.txt").write_text(_scene_text(docs[1]), encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not matched", encoding="utf-8")
    got = corpus.read_corpus(str(tmp_path / "**" / "*.txt"))
    assert [d.id for d in got] == ["a.txt", "sub/b.txt"]
    assert got[0].paragraphs == docs[0].paragraphs and got[1].paragraphs == docs[1].paragraphs
    # A plain path and a list of specs work too.
    both = corpus.read_corpus([str(tmp_path / "a.txt"), "shakespeare"])
    assert both[0].paragraphs == docs[0].paragraphs and len(both) == 1 + len(docs) and both[0].id == "a.txt"
    # A document's source is the spec item it was read from; a list may be one string joined by commas.
    assert {d.source for d in got} == {str(tmp_path / "**" / "*.txt")}
    assert both[0].source == str(tmp_path / "a.txt") and {d.source for d in both[1:]} == {"shakespeare"}
    assert corpus.read_corpus(f"{tmp_path / 'a.txt'},shakespeare") == both
    assert corpus.corpus_fingerprint(f"{tmp_path / 'a.txt'},shakespeare") == corpus.corpus_fingerprint(
        [str(tmp_path / "a.txt"), "shakespeare"]
    )


def test_read_jsonl_and_gz(tmp_path, docs):
    lines = [
        json.dumps({"text": "\n\n".join(docs[0].paragraphs)}),
        "",
        json.dumps({"id": "mine", "paragraphs": list(docs[1].paragraphs), "source": "plays"}),
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": 7, "text": docs[2].paragraphs[0]}) + "\n")
    got = corpus.read_corpus(str(tmp_path / "*.jsonl*"))
    assert [d.id for d in got] == ["c.jsonl:1", "mine", "7"]
    assert [d.paragraphs for d in got] == [docs[0].paragraphs, docs[1].paragraphs, docs[2].paragraphs[:1]]
    # A line's own "source" wins over the spec item it was read from.
    assert [d.source for d in got] == [str(tmp_path / "*.jsonl*"), "plays", str(tmp_path / "*.jsonl*")]


def test_empty_documents_skipped_and_logged(tmp_path, docs, caplog):
    path = tmp_path / "e.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": t}) for t in [docs[0].paragraphs[0], "  \n\n ", ""]) + "\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="flaxlm.data.corpus"):
        got = corpus.read_corpus(str(path))
    assert len(got) == 1
    assert f"skipped 2 empty documents in {path}" in caplog.text


def _bad_input_cases(tmp_path):
    """(spec, expected message fragment) for each kind of bad input."""
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"  \n\n\t\n")
    (tmp_path / "latin1.txt").write_bytes("To be, or not to be.\nCaf\u00e9".encode("latin-1"))
    (tmp_path / "binary.txt").write_bytes(b"ELF\x00\x01\x02 text")
    (tmp_path / "notext.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding="utf-8")
    (tmp_path / "badjson.jsonl").write_text('{"text": "fine"}\n\n{"text": \n', encoding="utf-8")
    (tmp_path / "list.jsonl").write_text('["a list"]\n', encoding="utf-8")
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    return [
        (str(tmp_path / "missing.txt"), "missing.txt: no such file"),
        (
            "shakespear",
            "shakespear: no such file; check the path, or name an embedded corpus: default, shakespeare",
        ),
        (str(tmp_path / "nothing" / "*.txt"), "glob matches no files"),
        (str(tmp_path / "empty.txt"), "empty.txt: file is empty"),
        (str(tmp_path / "blank.txt"), "blank.txt: file is empty"),
        (str(tmp_path / "latin1.txt"), "latin1.txt: not valid UTF-8 (byte 0xe9 at offset 24)"),
        (str(tmp_path / "binary.txt"), "binary.txt: looks binary (NUL byte at offset 3)"),
        (str(tmp_path / "notext.jsonl"), "notext.jsonl:2: JSON line has no 'text' field"),
        (str(tmp_path / "badjson.jsonl"), "badjson.jsonl:3: invalid JSON"),
        (str(tmp_path / "list.jsonl"), "list.jsonl:1: expected a JSON object"),
        (str(tmp_path / "doc.pdf"), "doc.pdf: unsupported file type"),
        (str(tmp_path / "bad.jsonl.gz"), "bad.jsonl.gz: cannot decompress gzip"),
        (str(tmp_path), "is a directory"),
    ]


def test_bad_inputs_raise_one_line_errors(tmp_path):
    for spec, fragment in _bad_input_cases(tmp_path):
        with pytest.raises(CorpusError) as info:
            corpus.read_corpus(spec)
        message = str(info.value)
        assert fragment in message, (spec, message)
        assert "\n" not in message


def test_duplicate_ids_rejected(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text('{"id": "x", "text": "One."}\n{"id": "x", "text": "Two."}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="duplicate document ids"):
        corpus.read_corpus(str(path))


def test_tfds_spec_parsing_and_missing_tensorflow():
    assert corpus._parse_tfds_spec("tfds:wiki40b/en") == ("wiki40b/en", "train", "text")
    assert corpus._parse_tfds_spec("tfds:imdb_reviews:test") == ("imdb_reviews", "test", "text")
    assert corpus._parse_tfds_spec("tfds:x:validation:body") == ("x", "validation", "body")
    with pytest.raises(CorpusError, match="bad tfds spec"):
        corpus.read_corpus("tfds:")
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(CorpusError, match=r"pip install flaxlm\[tf\]"):
            corpus.read_corpus("tfds:imdb_reviews")


def test_a_non_utf8_tfds_corpus_is_one_line(monkeypatch):
    """A tfds text feature holding Latin-1 bytes (tests/testdata/latin1.txt) is a CorpusError, not a
    raw UnicodeDecodeError. tfds itself is replaced: no dataset is downloaded."""
    import tensorflow_datasets as tfds

    latin1 = (pathlib.Path(__file__).parent / "testdata" / "latin1.txt").read_bytes()
    monkeypatch.setitem(sys.modules, "tensorflow", types.ModuleType("tensorflow"))
    monkeypatch.setattr(tfds, "load", lambda name, split: (name, split))
    monkeypatch.setattr(tfds, "as_numpy", lambda ds: iter([{"text": b"Fine words."}, {"text": latin1}]))
    with pytest.raises(CorpusError) as e:
        corpus.read_corpus("tfds:my_reviews")
    msg = str(e.value)
    assert msg.startswith("tfds:my_reviews example 1: not valid UTF-8 (byte 0x") and "\n" not in msg, msg


# ----------------------------------------------------------------------------- sentences


def test_split_sentences_reconstructs_every_real_paragraph(docs):
    n_sentences = 0
    for d in docs:
        for p in d.paragraphs:
            sentences = corpus.split_sentences(p)
            assert " ".join(sentences) == p
            assert all(s and s == s.strip() for s in sentences)
            n_sentences += len(sentences)
    assert n_sentences > 1.3 * sum(len(d.paragraphs) for d in docs)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Tush! never tell me; I take it much unkindly.", ["Tush! never tell me; I take it much unkindly."]),
        (
            "Is this a dagger which I see before me? Come, let me clutch thee.",
            ["Is this a dagger which I see before me?", "Come, let me clutch thee."],
        ),
        (
            "Mr. Smith met Dr. Jones at St. Paul's. They talked.",
            ["Mr. Smith met Dr. Jones at St. Paul's.", "They talked."],
        ),
        ("He cried 'Away!' Then he left.", ["He cried 'Away!'", "Then he left."]),
        ("It cost 3.50 dollars. 12 men came.", ["It cost 3.50 dollars.", "12 men came."]),
        ("J. R. R. Tolkien wrote it. Not I. Go now.", ["J. R. R. Tolkien wrote it.", "Not I.", "Go now."]),
        ("What, ho! 'Tis I.  \n  Open.", ["What, ho!", "'Tis I.", "Open."]),
        ("   ", []),
    ],
)
def test_split_sentences_hand_cases(text, expected):
    assert corpus.split_sentences(text) == expected


def test_document_sentences_respects_paragraphs():
    doc = Document("d", ("Stay, the king has thus. and so", "Go! Now."))
    assert corpus.document_sentences(doc) == ["Stay, the king has thus. and so", "Go!", "Now."]


# ----------------------------------------------------------------------------- fingerprint


def test_corpus_fingerprint(tmp_path):
    fp = corpus.corpus_fingerprint("default")
    assert fp == corpus.corpus_fingerprint("default") and len(fp) == 16
    path = tmp_path / "a.txt"
    path.write_text("To be, or not to be.\n", encoding="utf-8")
    first = corpus.corpus_fingerprint(str(tmp_path / "*.txt"))
    # A file read as it always was hashes as it always did: its prepared data is reused.
    st, spec = path.stat(), str(tmp_path / "*.txt")
    v1 = f"reader-v1\x00spec\x00{spec}\x00{path}\x00{st.st_size}\x00{st.st_mtime_ns}"
    assert first == hashlib.sha256(v1.encode()).hexdigest()[:16]
    assert first == corpus.corpus_fingerprint(str(tmp_path / "*.txt")) != fp
    path.write_text("To be, or not to be: that is the question.\n", encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert corpus.corpus_fingerprint(str(tmp_path / "*.txt")) != first
    with pytest.raises(CorpusError):
        corpus.corpus_fingerprint(str(tmp_path / "none" / "*.txt"))


# ----------------------------------------------------------------------------- long and changing files


def _wrapped(paragraphs, width: int = 12, newline: str = "\n") -> str:
    """Paragraphs as a text file: each wrapped over lines of ``width`` words, blank lines between."""

    def lines(words):
        return newline.join(" ".join(words[i : i + width]) for i in range(0, len(words), width))

    return (newline * 2).join(lines(p.split()) for p in paragraphs) + newline


def test_a_txt_file_below_the_limit_reads_as_it_always_did(tmp_path, monkeypatch):
    """Read in pieces of 64 bytes (lines longer than that come in parts), a file of up to
    TXT_DOCUMENT_CHARS bytes is still one document, its id the file's name, its paragraphs
    split_paragraphs of its whole text: every corpus of such files reads (and splits) as before."""
    monkeypatch.setattr(corpus, "_READ_BYTES", 64)
    chapters = corpus.load_embedded("austen")[:3]
    texts = {
        "crlf.txt": "\ufeff" + _wrapped(chapters[0].paragraphs, newline="\r\n"),
        "long_lines.txt": "\n \t\n".join(chapters[1].paragraphs),  # one line per paragraph
        "bible.txt": _wrapped(corpus.load_embedded("bible")[0].paragraphs, width=5, newline="\r"),
        "latin1.txt": (pathlib.Path(__file__).parent / "testdata" / "latin1.txt")
        .read_bytes()
        .decode("latin-1"),
    }
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
    got = corpus.read_corpus(str(tmp_path / "*.txt"))
    assert [d.id for d in got] == sorted(texts)
    assert [d.paragraphs for d in got] == [
        corpus.split_paragraphs(texts[n].lstrip("\ufeff")) for n in sorted(texts)
    ]
    by_id = {d.id: d for d in got}
    assert by_id["crlf.txt"].paragraphs == chapters[0].paragraphs
    assert by_id["long_lines.txt"].paragraphs == chapters[1].paragraphs


def test_a_long_txt_file_is_cut_into_documents_losing_no_text(tmp_path, monkeypatch, caplog):
    """With a limit of 3000 characters: a file of chapters is cut at the first blank line after each
    3000 (its paragraphs as they were), a paragraph longer than that at a line end, a line longer than
    that after a space; the first piece keeps the file's id, the others are id#1, id#2, ..."""
    monkeypatch.setattr(corpus, "TXT_DOCUMENT_CHARS", 3000)
    monkeypatch.setattr(corpus, "_READ_BYTES", 256)
    paragraphs = [p for d in corpus.load_embedded("austen")[:2] for p in d.paragraphs]
    (tmp_path / "novel.txt").write_text(_wrapped(paragraphs), encoding="utf-8")
    before = corpus.corpus_fingerprint(str(tmp_path / "novel.txt"))
    with caplog.at_level(logging.INFO, logger="flaxlm.data.corpus"):
        docs = corpus.read_corpus(str(tmp_path / "novel.txt"))
    assert [d.id for d in docs] == ["novel.txt"] + [f"novel.txt#{k}" for k in range(1, len(docs))]
    assert len(docs) > 5 and [p for d in docs for p in d.paragraphs] == paragraphs
    assert all(sum(map(len, d.paragraphs)) > 3000 for d in docs[:-1])
    assert f"read as {len(docs)} documents (0 cuts inside a paragraph)" in caplog.text
    # The limit is in the fingerprint of a file above it, so a dataset cut with another is not reused.
    monkeypatch.setattr(corpus, "TXT_DOCUMENT_CHARS", 4000)
    assert corpus.corpus_fingerprint(str(tmp_path / "novel.txt")) != before
    monkeypatch.setattr(corpus, "TXT_DOCUMENT_CHARS", 3000)

    words = " ".join(paragraphs).split()
    for name, text in {
        "one_paragraph.txt": _wrapped([" ".join(paragraphs)]),
        "one_line.txt": " ".join(words),
    }.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        docs = corpus.read_corpus(str(tmp_path / name))
        assert [w for d in docs for p in d.paragraphs for w in p.split()] == words  # none lost or repeated
        assert len(docs) > 5 and all(len(d.paragraphs) == 1 for d in docs), name
        assert docs[0].id == name and all(3000 < len(d.paragraphs[0]) < 3000 + 400 for d in docs[:-1]), name
    assert "cuts inside a paragraph" in caplog.text


def test_a_file_that_disappears_or_changes_while_it_is_read_is_one_line(tmp_path):
    """The corpus is listed (and fingerprinted) before it is read: a file deleted before its turn, or
    one that grows while it is read, is a one-line CorpusError naming it, not a traceback."""
    scenes = corpus.load_embedded("shakespeare")[:3]
    for name, scene in zip("abc", scenes):
        (tmp_path / f"{name}.txt").write_text(_wrapped(scene.paragraphs), encoding="utf-8")
    stream = corpus.iter_corpus(str(tmp_path / "*.txt"))
    assert next(stream).paragraphs == scenes[0].paragraphs
    (tmp_path / "b.txt").unlink()
    with pytest.raises(CorpusError) as e:
        next(stream)
    assert str(e.value) == (
        f"{tmp_path / 'b.txt'}: disappeared during preparation (it was listed when the corpus was "
        "fingerprinted); restore it or remove it from the corpus spec, then rerun"
    )

    path = tmp_path / "scenes.jsonl"
    path.write_text("".join(json.dumps({"text": "\n\n".join(d.paragraphs)}) + "\n" for d in scenes))
    stream = corpus.iter_corpus(str(path))
    next(stream)
    with path.open("a") as f:
        f.write(json.dumps({"text": "A line written while the file was read."}) + "\n")
    with pytest.raises(CorpusError, match=r"scenes.jsonl: changed while it was being read") as e:
        list(stream)
    assert "\n" not in str(e.value)
