"""Preparation on Apache Beam (issue 16): Beam's local runner, in worker processes, writes the records
of the in-process path, in the same order, whatever the number of workers; the held-out split, its
fallback for a side left empty, the duplicate-id check and NSP's chunks behave as in process."""

import collections
import dataclasses
import json

import numpy as np
import pytest
from tensorflow_datasets.core import writer as writer_lib

from conftest import REPO, load_config
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import prepare as prepare_lib
from flaxlm.errors import DataError

VOCAB = str(REPO / "tests" / "testdata" / "bert_uncased_vocab.txt")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """Six .jsonl files (three sources, two files each) of real scenes, chapters and pages."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, n in (("shakespeare", 60), ("austen", 24), ("pydocs", 40)):
        docs = corpus_lib.load_embedded(name)[:n]
        for part in range(2):
            lines = (json.dumps({"id": d.id, "paragraphs": list(d.paragraphs)}) for d in docs[part::2])
            (folder / f"{name}{part}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(folder / "*.jsonl")


def prepared(spec, data_dir, workers: int, builder="segment_pair", objective="mlm_nsp", **data):
    c = load_config("t5_tiny" if builder == "span_corruption" else "bert_tiny")
    c.data.update(
        **{
            "corpus": spec,
            "builder": builder,
            "seq_len": 64,
            "max_predictions": 10,
            "validation_fraction": 0.1,
            "tokenizer": VOCAB,
            "data_dir": str(data_dir),
            "prepare_workers": workers,
            **data,
        }
    )
    vocab = 30522 + (c.data.num_sentinels if builder == "span_corruption" else 0)
    return prepare_lib.prepare(c.data, pair_labels=objective.endswith("_nsp"), vocab_size=vocab)


def assert_same_examples(a, b):
    for split in ("train", "validation"):
        x, y = getattr(a, split), getattr(b, split)
        assert len(x) == len(y) > 0, split
        for i in range(len(x)):
            ex, ey = x[i], y[i]
            assert ex.keys() == ey.keys(), (split, i)
            for k in ex:
                np.testing.assert_array_equal(ex[k], ey[k], err_msg=f"{split} example {i} {k}")


@pytest.mark.parametrize(
    "builder,objective,data",
    [
        ("segment_pair", "mlm_nsp", dict(masking="static")),  # NSP's draws across documents, static masks
        ("causal", "clm", {}),  # rows packed across documents
        ("span_corruption", "span_corruption", {}),  # T5's noise
    ],
)
def test_beam_local_runner_writes_the_in_process_records(corpus, tmp_path, builder, objective, data):
    in_process = prepared(corpus, tmp_path / "in_process", 0, builder, objective, **data)
    beam = prepared(corpus, tmp_path / "beam", 2, builder, objective, **data)
    assert in_process.path.rsplit("/", 2)[-2] == beam.path.rsplit("/", 2)[-2]  # one dataset, one name
    assert_same_examples(in_process, beam)


def test_one_and_two_beam_workers_write_the_same_records(corpus, tmp_path):
    assert_same_examples(prepared(corpus, tmp_path / "one", 1), prepared(corpus, tmp_path / "two", 2))


_WRITE_SHARD = writer_lib.BeamWriter._write_final_shard


def _write_all_but_one(self, shardid_examples, non_empty_shard_ids):
    """tfds's BeamWriter._write_final_shard, dropping the shard's last example (module-level: Beam
    pickles it)."""
    shard, examples = shardid_examples
    return _WRITE_SHARD(self, (shard, list(examples)[:-1]), non_empty_shard_ids)


def test_examples_lost_by_beam_stop_the_preparation(corpus, tmp_path, monkeypatch):
    """Beam's local multi-process runner was seen to drop part of a split, between the build and
    tfds's shard writer, with no error (2 workers, 10 copies of the default corpus). Here tfds's
    shard writer drops one example of each shard (Beam's in-process runner, so the patch reaches
    it): the preparation stops with one line and leaves no dataset behind; a preparation after it
    writes every example."""
    monkeypatch.setattr(writer_lib.BeamWriter, "_write_final_shard", _write_all_but_one)
    data_dir = tmp_path / "data"
    with pytest.raises(
        DataError, match=r"^Apache Beam wrote \d+ of the \d+ examples built for the train split"
    ):
        prepared(corpus, data_dir, 0, beam_options="--runner=DirectRunner")
    assert not list(data_dir.rglob("dataset_info.json"))  # nothing was kept as prepared
    monkeypatch.undo()
    beam = prepared(corpus, data_dir, 0, beam_options="--runner=DirectRunner")
    assert_same_examples(prepared(corpus, tmp_path / "in_process", 0), beam)


def test_beam_moves_a_document_when_hashing_leaves_validation_empty(tmp_path):
    """Three documents at validation_fraction 0.01: hashing holds none out, so the split moves the
    lowest-scoring one across, on Beam (from the units' merged tallies) as in process."""
    docs = corpus_lib.load_embedded("austen")[:3]
    for i, d in enumerate(docs):
        (tmp_path / f"chapter{i}.jsonl").write_text(
            json.dumps({"id": d.id, "paragraphs": list(d.paragraphs)}) + "\n", encoding="utf-8"
        )
    spec = str(tmp_path / "chapter*.jsonl")
    args = dict(builder="causal", objective="clm", validation_fraction=0.01)
    in_process, beam = prepared(spec, tmp_path / "a", 0, **args), prepared(spec, tmp_path / "b", 2, **args)
    assert_same_examples(in_process, beam)


def test_merged_tallies_equal_one_pass():
    docs = corpus_lib.load_embedded("bible")[:200]
    whole = corpus_lib.HeldOutSplit(0.05)
    parts = [corpus_lib.HeldOutSplit(0.05) for _ in range(3)]
    for i, d in enumerate(docs):
        assert whole.is_validation(d) == parts[i * 3 // len(docs)].is_validation(d)
    merged = corpus_lib.HeldOutSplit.merged(0.05, [p.tally() for p in parts])
    assert merged.tally() == whole.tally() and merged.fraction_for_two() == whole.fraction_for_two()
    none_held_out = corpus_lib.HeldOutSplit.merged(1e-9, [_tally(docs[:50], 1e-9), _tally(docs[50:], 1e-9)])
    assert none_held_out.moved() == corpus_lib.held_out_split(docs, 1e-9)._moved


def _tally(docs, fraction):
    split = corpus_lib.HeldOutSplit(fraction)
    for d in docs:
        split.is_validation(d)
    return split.tally()


def test_beam_finds_duplicate_ids_across_files(tmp_path):
    d = corpus_lib.load_embedded("austen")[0]
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps({"id": "chapter-1", "paragraphs": list(d.paragraphs)}) + "\n", encoding="utf-8"
        )
    with pytest.raises(corpus_lib.CorpusError, match=r"^duplicate document ids \['chapter-1'\]; ids must be"):
        prepared(str(tmp_path / "*.jsonl"), tmp_path / "data", 2, builder="causal", objective="clm")


def test_nsp_chunks_hold_what_negatives_need():
    """Chunk c of k holds documents c, c+k, ...; k (about documents / CHUNK_DOCUMENTS) shrinks until each
    chunk has 2 documents (any), 2 of each of its sources (same_source) or 2 sources (other_source)."""
    nsp = prepare_lib.settings_from_config(load_config("bert_tiny").data, pair_labels=True)
    sources = ["big"] * (4 * prepare_lib.CHUNK_DOCUMENTS) + ["small"] * 6  # "small": the last 6
    expected = {"any": 5, "same_source": 3, "other_source": 5}  # 5 chunks would give "small" 1 in four
    for negatives, k in expected.items():
        assert prepare_lib.num_chunks(dataclasses.replace(nsp, nsp_negatives=negatives), sources) == k
        for c in range(k):
            _, chunk_sources = prepare_lib.chunk_documents(sources, sources, c, k)
            counts = collections.Counter(chunk_sources)
            if negatives == "same_source":
                assert min(counts.values()) >= 2
            if negatives == "other_source":
                assert len(counts) == 2
    assert prepare_lib.num_chunks(nsp, ["one"] * 3) == 1  # NSP needs 2 documents in each chunk
    no_pairs = dataclasses.replace(nsp, pair_labels=False)
    assert prepare_lib.num_chunks(no_pairs, ["one"] * (prepare_lib.CHUNK_DOCUMENTS + 1)) == 2


def test_beam_without_apache_beam_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_beam(name, *args, **kwargs):
        if name.startswith("apache_beam"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_beam)
    c = load_config("bert_tiny")
    c.data.prepare_workers = 2
    with pytest.raises(DataError, match=r"^data.prepare_workers=2 prepares with Apache Beam, which is not"):
        prepare_lib.beam_options(c.data)


@pytest.mark.parametrize(
    "flags,message",
    [
        ("--runner=Nope", r"--runner=Nope is not a runner Beam can start here \(Unexpected pipeline runner"),
        ("--direct_num_workerz=2", r"Apache Beam has no option --direct_num_workerz \(Beam would drop it"),
        ("--job_name='a b", r"does not split into flags \(No closing quotation\)"),
    ],
)
def test_bad_beam_options_are_one_line(flags, message):
    """Beam would fail deep inside tfds (a runner), or warn and run without a misspelt flag."""
    c = load_config("bert_tiny")
    c.data.beam_options = flags
    with pytest.raises(DataError, match=r"^data.beam_options=.*" + message) as e:
        prepare_lib.beam_options(c.data)
    assert "\n" not in str(e.value)
    c.data.beam_options = (
        "--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing"
    )
    options = prepare_lib.beam_options(c.data).get_all_options()
    assert options["runner"] == "DirectRunner" and options["direct_num_workers"] == 2
