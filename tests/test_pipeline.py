"""The prepared-data pipeline: every builder through tfds/ArrayRecord + grain, masking modes,
resumable iterators and per-host sharding (simulated and with 2 real jax.distributed processes)."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, load_config, write_scenes
from flaxlm import train as train_lib
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import pipeline
from flaxlm.data import prepare as prepare_lib
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.errors import DataError

SEQ, BATCH = 64, 8
VOCAB = REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """A user corpus in JSON lines: the first 120 scenes of the embedded Shakespeare."""
    return write_scenes(tmp_path_factory.mktemp("corpus") / "scenes.jsonl.gz", 120)


def config_for(builder, data_dir, corpus, **data):
    c = load_config("gpt_tiny" if builder == "causal" else "bert_tiny")
    c.objective = {
        "causal": "clm",
        "sop": "mlm_sop",
        "segment_pair": "mlm_nsp",
        "sentence_pair": "mlm_nsp",
    }.get(builder, "mlm")
    c.model.update(vocab_size=1000, max_len=SEQ)
    c.data.update(
        builder=builder,
        corpus=corpus,
        data_dir=data_dir,
        seq_len=SEQ,
        max_predictions=10,
        mask_prob=0.15,
        **data,
    )
    c.data.validation_fraction = 0.1
    return c


@pytest.mark.parametrize(
    "builder", ["segment_pair", "sentence_pair", "full_sentences", "doc_sentences", "sop", "causal"]
)
def test_every_builder_prepares_and_streams(builder, data_dir, small_corpus):
    c = config_for(builder, data_dir, small_corpus)
    data = train_lib.prepare_data(c)
    assert len(data.train) > 10 * BATCH and len(data.validation) >= BATCH
    batch = next(pipeline.train_iterator(data, global_batch=BATCH, seed=0))
    tok = data.tokenizer
    ids, seg = batch["input_ids"], batch["segment_ids"]
    assert ids.shape == (BATCH, SEQ) and ids.dtype == np.int32
    if builder == "causal":
        assert set(batch) == {"input_ids", "segment_ids", "positions"}
        assert (seg > 0).mean() > 0.9  # packed rows are (nearly) full
        starts = (batch["positions"] == 0) & (seg > 0)
        assert np.all(
            seg[:, 1:][~starts[:, 1:] & (seg[:, 1:] > 0)] == seg[:, :-1][~starts[:, 1:] & (seg[:, 1:] > 0)]
        )
        return
    assert np.all(ids[:, 0] == tok.cls_id)
    real = seg > 0
    assert np.all(ids[~real] == tok.pad_id)
    # Every sequence ends in [SEP]; pair builders have exactly two, with types 0 then 1.
    last = real.sum(1) - 1
    assert np.all(ids[np.arange(BATCH), last] == tok.sep_id)
    n_sep = ((ids == tok.sep_id) & real).sum(1)
    if builder in ("segment_pair", "sentence_pair", "sop"):
        assert np.all(n_sep == 2) and np.all(batch["token_type_ids"][np.arange(BATCH), last] == 1)
        assert set(np.unique(batch["pair_label"])) <= {0, 1}
    else:
        assert np.all(batch["token_type_ids"] == 0)
    # Dynamic masking: positions are real non-special tokens, targets the original ids.
    w = batch["mlm_weights"] > 0
    pos = batch["mlm_positions"][w]
    rows = np.nonzero(w)[0]
    assert np.all(real[rows, pos])
    assert not np.isin(batch["mlm_targets"][w], list(tok.special_ids)).any()


def _unmask(batch):
    ids = batch["input_ids"].copy()
    for r in range(len(ids)):
        w = batch["mlm_weights"][r] > 0
        ids[r, batch["mlm_positions"][r][w]] = batch["mlm_targets"][r][w]
    return ids


def _masks_by_example(data, epochs):
    """{unmasked example bytes: [masked positions per time seen]} over `epochs` passes."""
    it = pipeline.train_iterator(data, global_batch=BATCH, seed=3)
    seen = {}
    for _ in range(epochs * (len(data.train) // BATCH)):
        b = next(it)
        for r, row in enumerate(_unmask(b)):
            seen.setdefault(row.tobytes(), []).append(tuple(b["mlm_positions"][r][b["mlm_weights"][r] > 0]))
    return seen


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_dynamic_masks_change_each_epoch_static_masks_do_not(masking, data_dir, small_corpus):
    c = config_for("doc_sentences", data_dir, small_corpus, masking=masking, dupe_factor=1)
    seen = _masks_by_example(train_lib.prepare_data(c), epochs=2)
    repeated = [m for m in seen.values() if len(m) >= 2]
    assert len(repeated) > 50
    changed = np.mean([m[0] != m[1] for m in repeated])
    assert changed > 0.9 if masking == "dynamic" else changed == 0.0


@pytest.mark.parametrize("masking", ["dynamic", "static"])
def test_span_boundary_targets_reach_the_batches(masking, data_dir, small_corpus):
    """objective mlm_sbo: batches carry sbo_left / sbo_right / sbo_offset, each prediction's span
    boundaries just outside its span and its offset in it; span masking without SBO has none."""
    c = config_for("doc_sentences", data_dir, small_corpus, masking=masking, span=True)
    plain = train_lib.prepare_data(c)
    c.objective = "mlm_sbo"
    data = train_lib.prepare_data(c)
    # A dataset of its own: the cache key holds sbo only when it is on (so SBO off keeps the old keys).
    assert data.path != plain.path
    assert not {"sbo_left", "sbo_right", "sbo_offset"} & set(
        next(pipeline.train_iterator(plain, global_batch=BATCH, seed=0))
    )
    tok = data.tokenizer
    n_spans = 0
    for batch in pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=0), 3):
        for r in range(BATCH):
            w = batch["mlm_weights"][r] > 0
            pos, left, right, off = (
                batch[k][r][w] for k in ("mlm_positions", "sbo_left", "sbo_right", "sbo_offset")
            )
            assert all((batch[k][r][~w] == 0).all() for k in ("sbo_left", "sbo_right", "sbo_offset"))
            np.testing.assert_array_equal(left, pos - off - 1)
            for lr in set(zip(left.tolist(), right.tolist())):
                in_span = (left == lr[0]) & (right == lr[1])
                np.testing.assert_array_equal(pos[in_span], np.arange(lr[0] + 1, lr[1]))
                np.testing.assert_array_equal(off[in_span], np.arange(lr[1] - lr[0] - 1))
                n_spans += 1
            ids = batch["input_ids"][r]
            ends = ids[[left.min(), right.max()]] if w.any() else []
            assert tok.pad_id not in list(ends)  # boundaries are real tokens, [CLS] or [SEP]
    assert n_spans > 3 * BATCH


def test_static_masking_dupe_factor_makes_distinct_copies(data_dir, small_corpus):
    one = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus, masking="static"))
    three = train_lib.prepare_data(
        config_for("segment_pair", data_dir, small_corpus, masking="static", dupe_factor=3)
    )
    assert len(three.train) == pytest.approx(3 * len(one.train), rel=0.05)
    rows = {three.train[i]["input_ids"].tobytes() for i in range(len(three.train))}
    assert len(rows) > 0.99 * len(three.train)  # each copy has its own pairs and masks
    assert len(three.validation) == len(one.validation)  # only the training split is copied


def test_nsp_with_one_validation_document_names_the_split_and_the_fraction(tmp_path):
    """8 scenes: the 2% held out is one scene, and NSP needs a second document to draw NotNext from."""
    scenes = corpus_lib.load_embedded("shakespeare")[:8]
    _, validation = corpus_lib.split_train_validation(scenes, 0.02)
    assert len(validation) == 1
    path = tmp_path / "scenes.jsonl"
    path.write_text(
        "".join(json.dumps({"id": d.id, "text": "\n\n".join(d.paragraphs)}) + "\n" for d in scenes)
    )
    c = config_for("segment_pair", str(tmp_path / "data"), str(path), tokenizer=str(VOCAB))
    c.data.validation_fraction = 0.02
    with pytest.raises(DataError) as e:
        prepare_lib.prepare(c.data, pair_labels=True, vocab_size=30522)
    msg = str(e.value)
    assert msg.startswith("the validation split has 1 of the corpus's 8 documents, but segment_pair with NSP")
    fraction = float(msg.split("--config.data.validation_fraction=")[1].split(" ")[0])
    c.data.validation_fraction = fraction  # the fix it names works
    data = prepare_lib.prepare(c.data, pair_labels=True, vocab_size=30522)
    assert len(corpus_lib.split_train_validation(scenes, fraction)[1]) == 2 and len(data.validation) > 0


def test_a_document_that_tokenizes_to_nothing_keeps_the_sources_aligned():
    """A scene, a document of only zero-width spaces (it survives reading, but WordPiece drops every
    character), a chapter: two documents are kept, each with its own source."""
    tok = tokenizer_lib.load_tokenizer(str(VOCAB))
    scene = corpus_lib.load_embedded("shakespeare")[0]
    chapter = corpus_lib.load_embedded("austen")[0]
    blank = corpus_lib.Document("blank", corpus_lib.split_paragraphs("\u200b \u200b"), "blanks")
    assert blank.paragraphs  # not empty to the corpus reader
    tok_docs, sources, stats = prepare_lib.tokenize_documents([scene, blank, chapter], tok)
    assert sources == ["shakespeare", "austen"] and len(tok_docs) == 2
    assert stats["documents"] == 2 and stats["empty_documents"] == 1


def test_nsp_negatives_prepare_data_of_their_own_and_need_two_sources(tmp_path):
    """A corpus of two sources (plays and novels, two items of the spec): NotNext drawn within or across
    them are datasets of their own; a one-source corpus cannot draw across sources and says so."""
    plays = write_scenes(tmp_path / "plays.jsonl.gz", 40)
    novels = tmp_path / "novels.jsonl"
    novels.write_text(
        "".join(
            json.dumps({"id": d.id, "text": "\n\n".join(d.paragraphs)}) + "\n"
            for d in corpus_lib.load_embedded("austen")[:40]
        )
    )
    data_dir = str(tmp_path / "data")
    paths = {}
    for negatives in ("any", "same_source", "other_source"):
        c = config_for("segment_pair", data_dir, f"{plays},{novels}", tokenizer=str(VOCAB))
        c.data.nsp_negatives = negatives
        data = prepare_lib.prepare(c.data, pair_labels=True, vocab_size=30522)
        paths[negatives] = data.path
        assert len(data.validation) > 0 and 0.3 < np.mean([x["pair_label"] for x in data.train]) < 0.7
    assert len(set(paths.values())) == 3
    c = config_for("segment_pair", data_dir, plays, tokenizer=str(VOCAB))
    c.data.nsp_negatives = "other_source"
    with pytest.raises(DataError) as e:
        prepare_lib.prepare(c.data, pair_labels=True, vocab_size=30522)
    assert str(e.value).startswith(f"the training split has one source ({plays!r}), but data.nsp_negatives=")
    assert "\n" not in str(e.value)


def test_preparation_is_cached_and_keyed_by_settings(data_dir, small_corpus):
    a = train_lib.prepare_data(config_for("full_sentences", data_dir, small_corpus))
    b = train_lib.prepare_data(config_for("full_sentences", data_dir, small_corpus))
    c = train_lib.prepare_data(
        config_for("full_sentences", data_dir, small_corpus, short_seq_prob=0.2, masking="static")
    )
    assert a.path == b.path != c.path
    assert os.path.getmtime(a.path) == os.path.getmtime(b.path)
    # N-gram masks drawn at preparation are a dataset of their own.
    d = train_lib.prepare_data(
        config_for("full_sentences", data_dir, small_corpus, short_seq_prob=0.2, masking="static", ngram=True)
    )
    assert d.path != c.path


def test_two_runs_preparing_one_dataset_at_once_both_get_it(tmp_path, small_corpus):
    """A study's seeds or a launcher's processes may start together on one data dir: without the lock
    the second to finish failed renaming its incomplete folder onto the first's. Both get the same
    records; no incomplete folder is left behind."""
    import concurrent.futures

    c = config_for("doc_sentences", str(tmp_path / "data"), small_corpus, tokenizer=str(VOCAB))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(prepare_lib.prepare, c.data, pair_labels=False, vocab_size=30522) for _ in "ab"
        ]
        a, b = (f.result() for f in futures)
    assert a.path == b.path and len(a.train) == len(b.train) > 0
    assert a.train[0]["input_ids"].tobytes() == b.train[0]["input_ids"].tobytes()
    left = [p for p in (tmp_path / "data").rglob("incomplete*")]
    assert not left, left

    # A preparation killed mid-write (kill -9, a lost VM) leaves its incomplete folder, never read; the
    # next preparation of that dataset, holding the lock, deletes it and prepares afresh.
    dataset_dir = os.path.dirname(a.path)
    for p in os.listdir(dataset_dir):
        shutil.rmtree(os.path.join(dataset_dir, p))
    stale = os.path.join(dataset_dir, "incomplete.AB12CD_1.0.0")
    os.makedirs(os.path.join(stale, "flaxlm_pretraining-train.array_record-00000-of-00001.partial"))
    c = prepare_lib.prepare(c.data, pair_labels=False, vocab_size=30522)
    assert os.listdir(dataset_dir) == [os.path.basename(c.path)]
    assert c.train[0]["input_ids"].tobytes() == a.train[0]["input_ids"].tobytes()


@pytest.mark.parametrize("where", ["token stores", "records"])
def test_a_full_disk_is_one_line_and_leaves_nothing_to_reuse(where, tmp_path, small_corpus, monkeypatch):
    """No space left while the token stores are written (an OSError) or the records (array_record's
    RuntimeError, half a file written): a one-line DataError naming the data dir and the fix, no dataset
    or incomplete folder left, and the next preparation, with room, makes the whole dataset."""
    from tensorflow_datasets.core import file_adapters

    from flaxlm.data import token_store

    def no_space_in_store(self, sentences, source):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(self.folder, "tokens.int32"))

    def no_space_in_records(cls, path, iterator):
        with open(path, "wb") as f:
            f.write(b"half a record")
        raise RuntimeError(f"write() failed: No space left on device; writing {path}; at byte 13")

    data_dir = tmp_path / "data"
    c = config_for("doc_sentences", str(data_dir), small_corpus, tokenizer=str(VOCAB))
    with monkeypatch.context() as m:
        if where == "token stores":
            m.setattr(token_store.TokenStoreWriter, "add", no_space_in_store)
        else:
            adapter = file_adapters.ArrayRecordFileAdapter
            m.setattr(adapter, "write_examples", classmethod(no_space_in_records))
        with pytest.raises(DataError) as e:
            prepare_lib.prepare(c.data, pair_labels=False, vocab_size=30522)
    assert str(e.value) == (
        f"cannot prepare data in {data_dir}: No space left on device; free space there, or set "
        "--config.data.data_dir (or $FLAXLM_DATA_DIR) to a folder on a disk with room, then rerun"
    )
    left = [p for p in data_dir.rglob("*") if p.name.startswith("incomplete") or p.name == "1.0.0"]
    assert left == [] and not list(data_dir.rglob("*.array_record*")), left  # no dataset, whole or half
    data = prepare_lib.prepare(c.data, pair_labels=False, vocab_size=30522)
    assert len(data.train) > 0 and len(data.validation) > 0


def test_a_corpus_that_changes_while_it_is_prepared_leaves_no_dataset(tmp_path, small_corpus, monkeypatch):
    """A corpus file touched after the cache key was made and its documents read (another process
    preparing the dataset held the lock, a writer finished late): the records are deleted, not left to be
    reused under a key that does not describe them, and the error is one line."""
    corpus_file = tmp_path / "scenes.jsonl.gz"
    shutil.copy(small_corpus, corpus_file)
    tokenize_to_stores = prepare_lib.tokenize_to_stores

    def then_touch(*args, **kwargs):
        split = tokenize_to_stores(*args, **kwargs)
        os.utime(corpus_file, ns=(1, 1))
        return split

    monkeypatch.setattr(prepare_lib, "tokenize_to_stores", then_touch)
    data_dir = tmp_path / "data"
    c = config_for("doc_sentences", str(data_dir), str(corpus_file), tokenizer=str(VOCAB))
    with pytest.raises(DataError) as e:
        prepare_lib.prepare(c.data, pair_labels=False, vocab_size=30522)
    msg = str(e.value)
    assert msg.startswith(f"the corpus {corpus_file} changed while it was prepared") and "\n" not in msg
    assert not [p for p in data_dir.rglob("*") if p.name.startswith("incomplete") or p.name == "1.0.0"]
    monkeypatch.undo()
    data = prepare_lib.prepare(c.data, pair_labels=False, vocab_size=30522)  # the corpus as it is now
    assert len(data.train) > 0


def test_the_tokenizer_sample_is_in_the_cache_key_and_the_metadata(data_dir, small_corpus):
    """A trained tokenizer is keyed by its sample size and seed, and the prepared data records them."""
    key = prepare_lib.tokenizer_cache_key
    legacy = key(small_corpus, 0.1)  # the models cached before the sample was a setting keep their name
    assert (
        len(
            {
                legacy,
                key(small_corpus, 0.1, 100, 0),
                key(small_corpus, 0.1, 100, 1),
                key(small_corpus, 0.1, 0),
            }
        )
        == 4
    )
    data = train_lib.prepare_data(config_for("full_sentences", data_dir, small_corpus))
    sampled = train_lib.prepare_data(
        config_for("full_sentences", data_dir, small_corpus, tokenizer_sample_sentences=1500)
    )
    assert os.path.basename(data.tokenizer.path).endswith(f"-{key(small_corpus, 0.1, 10_000_000, 0)}.model")
    assert sampled.tokenizer.fingerprint != data.tokenizer.fingerprint and sampled.path != data.path
    with open(os.path.join(sampled.path, "metadata.json")) as f:
        recorded = json.load(f)["tokenizer"]
    assert recorded == {
        "fingerprint": sampled.tokenizer.fingerprint,
        "trained_on": {"validation_fraction": 0.1, "sample_sentences": 1500, "seed": 0},
    }
    # The sample follows data.tokenizer_seed, not data.seed: a study's seeds share one vocabulary.
    other_data_seed = config_for("full_sentences", data_dir, small_corpus, tokenizer_sample_sentences=1500)
    other_data_seed.data.seed = 1
    assert prepare_lib.get_tokenizer(other_data_seed.data, 1000, data_dir).path == sampled.tokenizer.path
    other_sample = config_for(
        "full_sentences", data_dir, small_corpus, tokenizer_sample_sentences=1500, tokenizer_seed=1
    )
    assert (
        prepare_lib.get_tokenizer(other_sample.data, 1000, data_dir).fingerprint
        != sampled.tokenizer.fingerprint
    )


def test_a_saved_config_finds_the_tokenizer_its_run_trained_before_and_after_the_sample_setting(
    data_dir, small_corpus, tmp_path
):
    """Export of a workdir without a tokenizer pin rebuilds the cache key from its config.json."""
    import shutil

    from flaxlm import hf

    config = config_for("full_sentences", data_dir, small_corpus)
    tok = train_lib.prepare_data(config).tokenizer
    saved = config.to_dict()
    assert hf.workdir_tokenizer(saved).fingerprint == tok.fingerprint
    # A config from before the setting names its model by the old key.
    del saved["data"]["tokenizer_sample_sentences"]
    saved["data"]["data_dir"] = str(tmp_path)
    assert hf.workdir_tokenizer(saved) is None
    old = (
        tmp_path
        / "tokenizers"
        / f"spm-unigram-1000-{prepare_lib.tokenizer_cache_key(small_corpus, 0.1)}.model"
    )
    old.parent.mkdir()
    shutil.copyfile(tok.path, old)
    assert hf.workdir_tokenizer(saved).path == str(old)


def test_iterator_state_resumes_with_the_very_next_batch(data_dir, small_corpus):
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    it = pipeline.train_iterator(data, global_batch=BATCH, seed=5)
    pipeline.take(it, 7)
    state = it.get_state()
    expected = pipeline.take(it, 3)
    resumed = pipeline.train_iterator(data, global_batch=BATCH, seed=5)
    resumed.set_state(state)
    for want, got in zip(expected, pipeline.take(resumed, 3)):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _assert_same_batches(want, got):
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(b[k], a[k], err_msg=k)


def test_the_batches_are_the_same_whatever_the_number_of_reader_threads_and_workers(data_dir, small_corpus):
    """Worker w of n makes batches w, w + n, ... of the one stream; the iterator takes them in turn."""
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    want = pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=3, num_threads=0), 7)
    _assert_same_batches(want, pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=3), 7))
    for workers in (1, 2):
        it = pipeline.train_iterator(data, global_batch=BATCH, seed=3, num_workers=workers)
        _assert_same_batches(want, pipeline.take(it, 7))
        it.close()


def test_a_checkpointed_position_resumes_with_another_number_of_workers(data_dir, small_corpus, tmp_path):
    """The Orbax checkpoint keeps the position as batches taken, so 2 workers resume a 1-process run and
    vice versa, with the very next batch."""
    from flaxlm import checkpoint as ckpt

    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    stream = pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=4), 9)
    state = {"x": np.zeros(2, np.float32)}
    mngr = ckpt.manager(str(tmp_path), keep=2, async_save=False)
    workers = pipeline.train_iterator(data, global_batch=BATCH, seed=4, num_workers=2)
    pipeline.take(workers, 5)
    ckpt.save(mngr, 5, state, workers, {})
    workers.close()
    plain = pipeline.train_iterator(data, global_batch=BATCH, seed=4)
    ckpt.restore(mngr, 5, state, plain)
    _assert_same_batches(stream[5:7], pipeline.take(plain, 2))
    ckpt.save(mngr, 7, state, plain, {})
    resumed = pipeline.train_iterator(data, global_batch=BATCH, seed=4, num_workers=2)
    ckpt.restore(mngr, 7, state, resumed)
    _assert_same_batches(stream[7:9], pipeline.take(resumed, 2))
    resumed.close()
    mngr.close()


def _assert_hosts_split_the_stream(global_batches, host_batches):
    """Per step, the hosts' examples are disjoint and, in host order, are the 1-host global batch row
    for row (so a mesh places every example where the 1-host run does)."""
    for step, glob in enumerate(global_batches):
        rows = [b["input_ids"] for b in (h[step] for h in host_batches)]
        np.testing.assert_array_equal(np.concatenate(rows), glob["input_ids"])
        assert not set(map(bytes, rows[0])) & set(map(bytes, rows[1]))


def test_hosts_read_disjoint_shards_of_the_same_stream(data_dir, small_corpus):
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    glob = pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=1), 4)
    hosts = [
        pipeline.take(
            pipeline.train_iterator(data, global_batch=BATCH, seed=1, process_index=i, process_count=2), 4
        )
        for i in range(2)
    ]
    assert all(h[0]["input_ids"].shape == (BATCH // 2, SEQ) for h in hosts)
    _assert_hosts_split_the_stream(glob, hosts)


WORKER = textwrap.dedent("""
    import sys, numpy as np, jax
    port, pid, data_dir, corpus, out = sys.argv[1:]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    sys.path.insert(0, "tests")
    from test_pipeline import config_for, BATCH
    from flaxlm import train as train_lib
    from flaxlm.data import pipeline
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, corpus))
    it = pipeline.train_iterator(data, global_batch=BATCH, seed=1, process_index=jax.process_index(),
                                 process_count=jax.process_count())
    np.save(out, np.stack([b["input_ids"] for b in pipeline.take(it, 4)]))
    jax.distributed.shutdown()
""")


def test_two_jax_processes_read_disjoint_halves(tmp_path, data_dir, small_corpus):
    """The processes prepare their own data dir (process 0 first), then each reads its half."""
    data = train_lib.prepare_data(config_for("segment_pair", data_dir, small_corpus))
    glob = pipeline.take(pipeline.train_iterator(data, global_batch=BATCH, seed=1), 4)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER,
                str(port),
                str(i),
                str(tmp_path / "data"),
                small_corpus,
                str(tmp_path / f"host{i}.npy"),
            ],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    hosts = [[{"input_ids": x} for x in np.load(tmp_path / f"host{i}.npy")] for i in range(2)]
    _assert_hosts_split_the_stream(glob, hosts)
