"""Streamed preparation (issue 16): the token stores give the builders the very documents of the old
in-memory path, so every builder's examples, and the written records, are the same bytes."""

import json
import os

import numpy as np
import pytest

from conftest import REPO, load_config
from flaxlm.data import builders
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import prepare as prepare_lib
from flaxlm.data import token_store
from flaxlm.data import tokenizer as tokenizer_lib

VOCAB = REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"
SEQ = 64


@pytest.fixture(scope="module")
def tok():
    return tokenizer_lib.load_tokenizer(str(VOCAB))


@pytest.fixture(scope="module")
def two_source_corpus(tmp_path_factory):
    """60 scenes and 30 chapters (two sources, two spec items), real text from the embedded corpora."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = []
    for name, n in (("shakespeare", 60), ("austen", 30)):
        path = folder / f"{name}.jsonl"
        path.write_text(
            "".join(
                json.dumps({"id": d.id, "paragraphs": list(d.paragraphs)}) + "\n"
                for d in corpus_lib.load_embedded(name)[:n]
            ),
            encoding="utf-8",
        )
        paths.append(str(path))
    return ",".join(paths)


def settings_for(builder: str, objective: str, **data):
    c = load_config("bert_tiny")
    c.data.update(builder=builder, seq_len=SEQ, max_predictions=10, validation_fraction=0.1, **data)
    spans = builder in builders.SEQ2SEQ_BUILDERS
    return prepare_lib.settings_from_config(
        c.data,
        pair_labels=objective.endswith(("_nsp", "_sop")),
        sbo=False,
        model_vocab_size=30522 + 100 * spans,
    )


def examples_of(settings, tok, spec, tmp_path, streamed: bool) -> dict[str, list[tuple[int, dict]]]:
    """Each split's (key, example) list: through the token stores (streamed) or today's lists."""
    builder = prepare_lib.FlaxlmPretraining(
        corpus_spec=spec, tok=tok, settings=settings, fingerprint="equivalence", data_dir=str(tmp_path)
    )
    out = {}
    if streamed:
        split = prepare_lib.tokenize_to_stores(
            lambda: corpus_lib.iter_corpus(spec), tok, settings.validation_fraction, str(tmp_path / "stores")
        )
        for name, store in split.stores.items():
            out[name] = list(builder._generate_examples(store, store.sources, split.tokenized[name], name))
        return out
    sides = corpus_lib.split_train_validation(corpus_lib.read_corpus(spec), settings.validation_fraction)
    for name, docs in zip(("train", "validation"), sides):
        tok_docs, sources, stats = prepare_lib.tokenize_documents(docs, tok)
        out[name] = list(builder._generate_examples(tok_docs, sources, stats, name))
    return out


def assert_same_examples(a, b):
    assert a.keys() == b.keys()
    for split in a:
        assert len(a[split]) == len(b[split]) > 0, split
        for (key_a, ex_a), (key_b, ex_b) in zip(a[split], b[split]):
            assert key_a == key_b and ex_a.keys() == ex_b.keys()
            for k in ex_a:
                x, y = np.asarray(ex_a[k]), np.asarray(ex_b[k])
                assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (
                    split,
                    key_a,
                    k,
                )


@pytest.mark.parametrize(
    "builder, objective, data",
    [
        (
            "segment_pair",
            "mlm_nsp",
            {"masking": "static", "dupe_factor": 2},
        ),  # BERT: NSP negatives, static masks
        ("segment_pair", "mlm_nsp", {"nsp_negatives": "same_source"}),
        ("sentence_pair", "mlm_nsp", {"nsp_negatives": "other_source"}),
        ("full_sentences", "mlm", {}),
        ("causal", "clm", {}),
        ("prefix_lm", "prefix_lm", {}),
        ("span_corruption", "span_corruption", {}),
    ],
)
def test_streamed_examples_equal_the_in_memory_ones(
    builder, objective, data, tok, two_source_corpus, tmp_path
):
    settings = settings_for(builder, objective, **data)
    old = examples_of(settings, tok, two_source_corpus, tmp_path / "old", streamed=False)
    new = examples_of(settings, tok, two_source_corpus, tmp_path / "new", streamed=True)
    assert_same_examples(old, new)


def test_token_store_reads_back_what_was_written(tok, tmp_path):
    docs = corpus_lib.load_embedded("shakespeare")[:12]
    tok_docs, sources, _ = prepare_lib.tokenize_documents(docs, tok)
    writer = token_store.TokenStoreWriter(str(tmp_path / "store"))
    for d, source in zip(tok_docs, sources):
        writer.add(d, source)
    store = writer.close()
    assert isinstance(store, builders.CleanDocuments) and len(store) == len(tok_docs)
    assert list(store.sources) == sources and store.sources[-1] == sources[-1]
    for i in (0, 5, len(store) - 1, -1):
        assert [s.tolist() for s in store[i]] == [s.tolist() for s in tok_docs[i]]
        assert all(s.dtype == np.int32 for s in store[i])
    assert [len(d) for d in store[2:4]] == [len(d) for d in tok_docs[2:4]]
    assert store.sentence_counts().tolist() == [len(d) for d in tok_docs]
    with pytest.raises(IndexError):
        store[len(store)]
    with pytest.raises(ValueError):
        writer = token_store.TokenStoreWriter(str(tmp_path / "bad"))
        writer.add([np.zeros(0, np.int32)], "x")


def test_records_are_the_same_bytes_when_tfds_sorts_on_disk(tmp_path, two_source_corpus, monkeypatch):
    """tfds sorts the examples in memory up to prepare.SHUFFLE_BUFFER_BYTES, then in bucket files: the
    record files are the same bytes either way, and no token store is left in the dataset folder."""
    c = load_config("bert_tiny")
    c.data.update(
        builder="segment_pair",
        seq_len=SEQ,
        max_predictions=10,
        corpus=two_source_corpus,
        tokenizer=str(VOCAB),
    )
    c.data.validation_fraction = 0.1
    record_bytes = []
    for buffer in (prepare_lib.SHUFFLE_BUFFER_BYTES, 1):
        monkeypatch.setattr(prepare_lib, "SHUFFLE_BUFFER_BYTES", buffer)
        c.data.data_dir = str(tmp_path / f"data_{buffer}")
        data = prepare_lib.prepare(c.data, pair_labels=True, vocab_size=30522)
        files = sorted(f for f in os.listdir(data.path) if ".array_record" in f)
        assert files and not any("token_stores" in f for f in os.listdir(data.path))
        record_bytes.append({f: open(os.path.join(data.path, f), "rb").read() for f in files})
    assert record_bytes[0] == record_bytes[1]
