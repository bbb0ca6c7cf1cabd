"""Tests for flaxlm.data.tokenizer: SentencePiece trained on real Shakespeare text, and BERT WordPiece."""

import os
import pathlib
import unicodedata

import numpy as np
import pytest

from flaxlm.data import corpus
from flaxlm.data import tokenizer as tok_lib
from flaxlm.data.tokenizer import TokenizerError

VOCAB = str(pathlib.Path(__file__).parent / "testdata" / "bert_uncased_vocab.txt")


@pytest.fixture(scope="module")
def sentences():
    """~8k real sentences: every 10th scene of the embedded corpus."""
    docs = corpus.load_embedded("shakespeare")[::10]
    return [s for d in docs for s in corpus.document_sentences(d)]


@pytest.fixture(scope="module")
def spm_path(sentences, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("spm") / "shakespeare")
    return tok_lib.train_sentencepiece(sentences, prefix, vocab_size=1000)


@pytest.fixture(scope="module")
def spm(spm_path):
    return tok_lib.SentencePieceTokenizer(spm_path)


@pytest.fixture(scope="module")
def wordpiece():
    return tok_lib.WordPieceTokenizer(VOCAB)


# ----------------------------------------------------------------------------- SentencePiece


def test_spm_special_ids_fixed(spm):
    assert (spm.pad_id, spm.unk_id, spm.cls_id, spm.sep_id, spm.mask_id) == (0, 1, 2, 3, 4)
    assert [spm.id_to_piece(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert spm.special_ids == frozenset(range(5))
    assert spm.vocab_size == 1000
    # Control symbols: literal "[MASK]" text never encodes to the mask id.
    assert not set(spm.encode("[CLS] a [MASK] b [SEP]")) & {2, 3, 4}


def _spm_normalize(text: str) -> str:
    """What sentencepiece's default nmt_nfkc normaliser keeps: NFKC with whitespace runs collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def test_spm_round_trip_on_real_sentences(spm, sentences):
    batch = spm.encode_batch(sentences)
    assert batch[:50] == [spm.encode(s) for s in sentences[:50]]
    with_unk = 0
    for s, ids in zip(sentences, batch):
        assert ids and not set(ids) & {0, 2, 3, 4}
        if spm.unk_id in ids:
            with_unk += 1
            continue
        assert spm.decode(ids) == _spm_normalize(s)
    assert with_unk <= 0.01 * len(sentences)
    # Specials are skipped when decoding.
    ids = spm.encode(sentences[0])
    assert spm.decode([spm.cls_id] + ids + [spm.sep_id, spm.pad_id]) == spm.decode(ids)


def test_spm_word_start_mask_counts_words(spm, sentences):
    for s in sentences[:500]:
        ids = spm.encode(s)
        mask = spm.word_start_mask(ids)
        assert mask.dtype == np.bool_ and mask.shape == (len(ids),)
        assert mask[0] and int(mask.sum()) == len(s.split())
    assert spm.word_start_mask([spm.cls_id, spm.mask_id, spm.sep_id, spm.pad_id]).all()
    assert spm.word_start_mask(np.zeros((2, 3), np.int32)).shape == (2, 3)


def test_spm_training_is_deterministic(sentences, spm_path, tmp_path):
    again = tok_lib.train_sentencepiece(sentences, str(tmp_path / "again"), vocab_size=1000)
    assert pathlib.Path(again).read_bytes() == pathlib.Path(spm_path).read_bytes()
    assert (
        tok_lib.SentencePieceTokenizer(again).fingerprint
        == tok_lib.SentencePieceTokenizer(spm_path).fingerprint
    )
    bpe = tok_lib.train_sentencepiece(
        sentences[:2000], str(tmp_path / "bpe"), vocab_size=500, model_type="bpe"
    )
    bpe_tok = tok_lib.load_tokenizer(bpe)
    assert (bpe_tok.pad_id, bpe_tok.unk_id, bpe_tok.cls_id, bpe_tok.sep_id, bpe_tok.mask_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    assert bpe_tok.fingerprint != tok_lib.SentencePieceTokenizer(spm_path).fingerprint


def test_spm_subsampling_is_seeded_and_ordered(sentences):
    a = tok_lib.sample_sentences(sentences, 100, seed=0)
    assert (
        a
        == tok_lib.sample_sentences(sentences, 100, seed=0)
        != tok_lib.sample_sentences(sentences, 100, seed=1)
    )
    numbered = [f"{i} {s}" for i, s in enumerate(sentences)]  # the corpus repeats some sentences
    positions = [int(s.split()[0]) for s in tok_lib.sample_sentences(numbered, 100, seed=0)]
    assert len(a) == 100 and len(positions) == 100 and positions == sorted(positions)


def test_a_sample_larger_than_the_input_is_the_input_whatever_the_seed(sentences):
    kept = [s for s in sentences if s.strip()]
    assert tok_lib.sample_sentences(iter(sentences), len(kept), seed=3) == kept
    assert tok_lib.sample_sentences(iter(sentences), 10**9, seed=4) == kept
    assert tok_lib.sample_sentences(iter(sentences), 0, seed=5) == kept  # 0: all
    with pytest.raises(TokenizerError, match="max_sentences=-1 must be >= 0"):
        tok_lib.sample_sentences(sentences, -1, seed=0)


def test_the_sample_streams_across_chunks_and_is_uniform(sentences, monkeypatch):
    """Draws made chunk by chunk (a chunk of 64 here): every position is about equally likely."""
    monkeypatch.setattr(tok_lib, "_SAMPLE_CHUNK", 64)
    items = [f"s{i}" for i in range(1000)]
    counts = np.zeros(len(items))
    for seed in range(200):
        picked = tok_lib.sample_sentences(iter(items), 50, seed=seed)
        assert len(set(picked)) == 50 and picked == sorted(picked, key=lambda x: int(x[1:]))
        counts[[int(x[1:]) for x in picked]] += 1
    # 200 samples of 50 of 1000: each position is picked 10 times on average, in either tenth alike.
    assert abs(counts[:100].mean() - 10) < 1.5 and abs(counts[-100:].mean() - 10) < 1.5


def test_a_sampled_tokenizer_is_the_same_bytes_for_the_same_seed(sentences, tmp_path):
    def train(name, seed):
        path = tok_lib.train_sentencepiece(
            iter(sentences), str(tmp_path / name), vocab_size=600, max_sentences=2000, seed=seed
        )
        return pathlib.Path(path).read_bytes()

    a = train("a", seed=1)
    assert train("b", seed=1) == a != train("c", seed=2)


def test_get_or_train_tokenizer_caches(sentences, tmp_path):
    calls = []

    def sentences_fn():
        calls.append(1)
        return iter(sentences[:3000])

    tok = tok_lib.get_or_train_tokenizer(sentences_fn, str(tmp_path), 600, "unigram", "abc123")
    path = tmp_path / "spm-unigram-600-abc123.model"
    assert path.is_file() and tok.model_path == str(path) and calls == [1]
    mtime = path.stat().st_mtime_ns

    def must_not_train():
        raise AssertionError("retrained although the model was cached")

    again = tok_lib.get_or_train_tokenizer(must_not_train, str(tmp_path), 600, "unigram", "abc123")
    assert again.fingerprint == tok.fingerprint and path.stat().st_mtime_ns == mtime
    # No temp files are left behind by the atomic write.
    assert sorted(os.listdir(tmp_path)) == ["spm-unigram-600-abc123.model"]


def test_spm_training_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no non-empty sentences"):
        tok_lib.train_sentencepiece(["", "  "], str(tmp_path / "x"), 100)
    with pytest.raises(TokenizerError, match="model_type"):
        tok_lib.train_sentencepiece(["a"], str(tmp_path / "x"), 100, model_type="wordpiece")
    with pytest.raises(TokenizerError, match="training failed"):
        tok_lib.train_sentencepiece(["To be, or not to be."], str(tmp_path / "x"), 5000)
    assert not list(tmp_path.iterdir())


def test_spm_model_without_special_pieces_rejected(sentences, tmp_path):
    import sentencepiece

    prefix = str(tmp_path / "plain")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences[:2000]), model_prefix=prefix, vocab_size=300, minloglevel=2
    )
    with pytest.raises(TokenizerError) as info:
        tok_lib.load_tokenizer(prefix + ".model")
    message = str(info.value)
    assert "plain.model" in message and "[PAD]" in message and "[MASK]" in message and "\n" not in message


# ----------------------------------------------------------------------------- WordPiece

# Expected outputs produced by HF `tokenizers` (BertTokenizer, uncased) with the same vocab.
WORDPIECE_CASES = [
    ("unaffable", ["una", "##ffa", "##ble"]),
    ("Hello, world!", ["hello", ",", "world", "!"]),
    ("Héllo wörld — naïve café", ["hello", "world", "—", "naive", "cafe"]),
    ("I can't believe it's 3.14!", ["i", "can", "'", "t", "believe", "it", "'", "s", "3", ".", "14", "!"]),
    ("東京は日本", ["東", "京", "は", "日", "本"]),
    (
        "Tush! never tell me; I take it much unkindly",
        ["tu", "##sh", "!", "never", "tell", "me", ";", "i", "take", "it", "much", "un", "##kind", "##ly"],
    ),
    (
        "'Sblood, but you will not hear me:",
        ["'", "sb", "##lo", "##od", ",", "but", "you", "will", "not", "hear", "me", ":"],
    ),
    (
        "Off-capp'd to him: and, by the faith of man,",
        [
            "off",
            "-",
            "cap",
            "##p",
            "'",
            "d",
            "to",
            "him",
            ":",
            "and",
            ",",
            "by",
            "the",
            "faith",
            "of",
            "man",
            ",",
        ],
    ),
    (
        "Antidisestablishmentarianism",
        ["anti", "##dis", "##est", "##ab", "##lish", "##ment", "##arian", "##ism"],
    ),
    ("x" * 101, ["[UNK]"]),
]


@pytest.mark.parametrize("text,pieces", WORDPIECE_CASES)
def test_wordpiece_matches_hf_bert(wordpiece, text, pieces):
    assert wordpiece.tokenize(text) == pieces


def test_wordpiece_ids_and_specials(wordpiece):
    assert wordpiece.vocab_size == 30522
    assert (wordpiece.pad_id, wordpiece.unk_id, wordpiece.cls_id, wordpiece.sep_id, wordpiece.mask_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert wordpiece.encode("To be, or not to be: that is the question:") == [
        2000,
        2022,
        1010,
        2030,
        2025,
        2000,
        2022,
        1024,
        2008,
        2003,
        1996,
        3160,
        1024,
    ]
    assert wordpiece.word_start_mask(wordpiece.encode("unaffable kindly")).tolist() == [
        True,
        False,
        False,
        True,
    ]
    assert wordpiece.encode_batch(["a b", "c"]) == [wordpiece.encode("a b"), wordpiece.encode("c")]


def test_wordpiece_decode_round_trip(wordpiece):
    docs = corpus.load_embedded("shakespeare")[::40]
    for s in [s for d in docs for s in corpus.document_sentences(d)][:300]:
        ids = wordpiece.encode(s)
        text = wordpiece.decode(ids)
        assert wordpiece.encode(text) == ids
        assert text == " ".join(tok_lib.basic_tokenize(s)) or wordpiece.unk_id in ids
    assert wordpiece.decode(wordpiece.encode("to be or not to be")) == "to be or not to be"
    assert wordpiece.decode([101] + wordpiece.encode("unaffable") + [102, 0]) == "unaffable"


def test_wordpiece_missing_special_token(tmp_path):
    lines = pathlib.Path(VOCAB).read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "vocab.txt"
    bad.write_text("\n".join(l for l in lines if l not in ("[MASK]", "[SEP]")) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError) as info:
        tok_lib.load_tokenizer(str(bad))
    message = str(info.value)
    assert str(bad) in message and "[SEP]" in message and "[MASK]" in message and "\n" not in message


def test_load_tokenizer_dispatch(wordpiece, spm_path):
    assert isinstance(tok_lib.load_tokenizer(VOCAB), tok_lib.WordPieceTokenizer)
    assert isinstance(tok_lib.load_tokenizer(spm_path), tok_lib.SentencePieceTokenizer)
    assert tok_lib.load_tokenizer(VOCAB).fingerprint == wordpiece.fingerprint
    with pytest.raises(TokenizerError, match="unknown tokenizer file type"):
        tok_lib.load_tokenizer("model.bin")
    with pytest.raises(TokenizerError, match="no such"):
        tok_lib.load_tokenizer("/nonexistent/x.model")
