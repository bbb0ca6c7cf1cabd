"""Scoring: causal-LM log-probabilities and masked-LM pseudo-log-likelihoods, on real sentences."""

import functools
import json
import math
import random

import jax
import numpy as np
import pytest
from flax import serialization

from flaxlm import lm as lm_lib
from flaxlm import score
from flaxlm.data import corpus
from flaxlm.errors import FlaxlmError
from flaxlm.models import BertForPreTraining, TransformerConfig
from test_cli import flaxlm

# Real sentences (Twelfth Night, Hamlet) of 3 to 30 tokens: several length buckets.
SENTENCES = [
    "If music be the food of love, play on.",
    "Give me excess of it, that, surfeiting, the appetite may sicken, and so die.",
    "Who's there?",
    "Nay, answer me: stand, and unfold yourself.",
    "Long live the king!",
    "You come most carefully upon your hour.",
    "'Tis now struck twelve; get thee to bed, Francisco.",
]


@pytest.fixture(scope="module")
def trained(tiny_gpt_workdir):
    return lm_lib.load(tiny_gpt_workdir)


@functools.lru_cache(maxsize=None)
def _random_bert(vocab_size: int):
    cfg = TransformerConfig(
        vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=64
    )
    model = BertForPreTraining(cfg)
    z = np.zeros((1, 8), np.int32)
    return model, model.init(jax.random.key(1), z, z, z, z, deterministic=True)["params"]


def _padded(row, length=64):
    """int32 (ids, segment_ids, positions) [1, length] of one sequence padded at the end: one jit shape.

    Padding has segment 0, outside every real token's attention, so the real positions' logits are
    those of the unpadded sequence.
    """
    ids = np.zeros((1, length), np.int32)
    ids[0, : len(row)] = row
    seg = (np.arange(length) < len(row)).astype(np.int32)[None]
    return ids, seg, np.arange(length, dtype=np.int32)[None]


def _log_softmax(x):
    x = np.asarray(x, np.float64) - np.max(x)
    return x - np.log(np.sum(np.exp(x)))


def test_clm_scores_equal_a_direct_computation(trained):
    ids = trained.tokenizer.encode_batch(SENTENCES)
    assert min(map(len, ids)) <= 5 and max(map(len, ids)) > 16  # several length buckets
    apply = jax.jit(functools.partial(trained.model.apply, {"params": trained.params}, deterministic=True))
    for bos in (None, trained.tokenizer.sep_id):
        got = score.clm_scores(trained.model, trained.params, ids, bos_id=bos, batch_size=3)
        for i, sentence in enumerate(ids):
            row = ([bos] if bos is not None else []) + sentence
            logits = apply(*_padded(row))[0]
            expected = sum(_log_softmax(logits[t])[row[t + 1]] for t in range(len(row) - 1))
            assert got.num_tokens[i] == len(row) - 1 == len(sentence) - (bos is None)
            np.testing.assert_allclose(got.log_probs[i], expected, atol=1e-4, rtol=1e-6)
    # Nothing to score: no tokens, or one token without a start token.
    empty = score.clm_scores(trained.model, trained.params, [[], ids[0][:1]])
    assert empty.num_tokens.tolist() == [0, 0] and empty.log_probs.tolist() == [0.0, 0.0]


def test_pll_equals_a_per_token_loop(trained):
    tok = trained.tokenizer
    model, params = _random_bert(tok.vocab_size)
    ids = tok.encode_batch(SENTENCES)
    got = score.pll_scores(
        model, params, ids, cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id, batch_size=5
    )
    apply = jax.jit(
        lambda x, seg, pos: model.apply({"params": params}, x, 0 * x, seg, pos, deterministic=True)[
            "mlm_logits"
        ]
    )
    for i, sentence in enumerate(ids):
        row = [tok.cls_id, *sentence, tok.sep_id]
        expected = 0.0
        for t in range(1, len(row) - 1):  # mask one token at a time, score it from the full logits
            masked = list(row)
            masked[t] = tok.mask_id
            expected += _log_softmax(apply(*_padded(masked))[0, t])[row[t]]
        assert got.num_tokens[i] == len(sentence)
        np.testing.assert_allclose(got.log_probs[i], expected, atol=1e-4, rtol=1e-6)


def _heldout_sentences(n: int) -> list[str]:
    """n sentences of 6-16 words from the embedded corpus's held-out scenes (never trained on)."""
    _, validation = corpus.split_train_validation(corpus.read_corpus("shakespeare"), 0.02)
    sentences = [s for d in validation for s in corpus.document_sentences(d) if 6 <= len(s.split()) <= 16]
    return sentences[:: len(sentences) // n][:n]


def test_real_sentences_outscore_their_word_shuffles(trained):
    """A paired comparison on 200 held-out sentences: each against the same words in a random order.

    Shuffling keeps the words (and so nearly the same tokens), so the log-probabilities differ only
    by word order. The claim is on the mean difference: more than 4 standard errors above zero
    (measured: +1.03 nats, 6.5 standard errors; real wins 66% of the pairs).
    """
    rng = random.Random(0)
    real = _heldout_sentences(200)
    shuffled = []
    for s in real:
        words = s.split()
        while (order := rng.sample(words, len(words))) == words:
            pass
        shuffled.append(" ".join(order))
    a, b = score.score_texts(trained, real), score.score_texts(trained, shuffled)
    d = np.array([x["log_prob"] - y["log_prob"] for x, y in zip(a, b)])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    print(f"real - shuffled: mean {d.mean():.3f} nats, t = {t:.1f}, real wins {np.mean(d > 0):.2f}")
    assert t > 4 and np.mean(d > 0) > 0.55


def _write_bert_export(folder, tok, data=None):
    model, params = _random_bert(tok.vocab_size)
    folder.mkdir()
    (folder / "params.msgpack").write_bytes(serialization.msgpack_serialize(jax.device_get(params)))
    cfg = {
        f: getattr(model.config, f)
        for f in ("vocab_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")
    }
    meta = {"model": dict(cfg, arch="bert", max_len=64), "objective": "mlm_nsp", "step": 0}
    if data is not None:
        meta["data"] = data
    (folder / "model_config.json").write_text(json.dumps(meta))
    return model, params


def test_export_loads_with_its_tokenizer_and_scores_pll(trained, tiny_gpt_workdir, tmp_path):
    tok_path = trained.tokenizer.model_path
    model, params = _write_bert_export(tmp_path / "given", trained.tokenizer)
    bert = lm_lib.load(str(tmp_path / "given"), tokenizer=tok_path)
    assert bert.arch == "bert" and bert.source.startswith("flaxlm export")
    records = score.score_texts(bert, SENTENCES[:3])
    expected = score.pll_scores(
        model, params, trained.tokenizer.encode_batch(SENTENCES[:3]), cls_id=2, sep_id=3, mask_id=4
    )
    np.testing.assert_allclose([r["pll"] for r in records], expected.log_probs, atol=1e-5)
    r = records[0]
    assert r["pseudo_perplexity"] == pytest.approx(math.exp(-r["pll"] / r["tokens"]))
    summary = score.summarize(records)
    assert summary["mode"] == "pll" and summary["tokens"] == sum(expected.num_tokens)
    assert summary["mean_pll"] == pytest.approx(np.mean(expected.log_probs), abs=1e-5)

    # An export that records its data config finds the tokenizer like a workdir does.
    with open(f"{tiny_gpt_workdir}/config.json") as f:
        data = json.load(f)["data"]
    _write_bert_export(tmp_path / "recorded", trained.tokenizer, data=data)
    assert lm_lib.load(str(tmp_path / "recorded")).tokenizer.fingerprint == trained.tokenizer.fingerprint
    with pytest.raises(FlaxlmError, match="records no data config to find its tokenizer; pass --tokenizer"):
        lm_lib.load(str(tmp_path / "given"))

    with pytest.raises(score.ScoreError, match="is an encoder .* score it with --mode=pll"):
        score.score_texts(bert, SENTENCES, mode="clm")
    with pytest.raises(score.ScoreError, match="is a decoder .* score it with --mode=clm"):
        score.score_texts(trained, SENTENCES, mode="pll")
    with pytest.raises(score.ScoreError, match="sentence 2 has .* tokens, more than the model's max_len=64"):
        score.score_texts(trained, ["Who's there?", "word " * 70])


def test_read_sentences(tmp_path):
    (tmp_path / "a.txt").write_text("Who's there?\n\n  Long live the king!  \n")
    assert score.read_sentences(str(tmp_path / "a.txt")) == ["Who's there?", "Long live the king!"]
    (tmp_path / "b.jsonl").write_text('{"text": "Who\'s there?"}\n{"txt": "x"}\n')
    with pytest.raises(
        score.ScoreError, match=r'b.jsonl:2: each line needs a JSON object with a "text" string'
    ):
        score.read_sentences(str(tmp_path / "b.jsonl"))
    (tmp_path / "c.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(score.ScoreError, match="not valid UTF-8"):
        score.read_sentences(str(tmp_path / "c.txt"))
    with pytest.raises(score.ScoreError, match="expected a .txt"):
        score.read_sentences(str(tmp_path / "d.csv"))


def test_score_cli(trained, tiny_gpt_workdir, data_dir, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out" / "scores.jsonl"
    inp.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES))
    proc = flaxlm("score", f"--model={tiny_gpt_workdir}", f"--input={inp}", f"--out={out}", data_dir=data_dir)
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "log_prob\ttokens\tperplexity\ttext" and len(lines) == len(SENTENCES) + 2
    records = [json.loads(line) for line in out.read_text().splitlines()]
    expected = score.score_texts(trained, SENTENCES)
    assert [r["text"] for r in records] == SENTENCES
    assert [r["tokens"] for r in records] == [r["tokens"] for r in expected]
    np.testing.assert_allclose([r["log_prob"] for r in records], [r["log_prob"] for r in expected], atol=1e-4)
    total = sum(r["log_prob"] for r in records) / sum(r["tokens"] for r in records)
    assert f"perplexity={math.exp(-total):.4f}" in lines[-1] and lines[-1].startswith(
        "summary: mode=clm, sentences=7,"
    )


def test_hf_bert_pll_matches_transformers(tmp_path):
    """PLL of a Hugging Face BertForMaskedLM dir (random weights, a real uncased vocab) equals the
    masked-copy loop run with transformers itself."""
    pytest.importorskip("flaxlm.hf", reason="needs flaxlm.hf (Hugging Face import)", exc_type=ImportError)
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import pathlib
    import shutil

    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(tmp_path)
    shutil.copy(pathlib.Path(__file__).parent / "testdata" / "bert_uncased_vocab.txt", tmp_path / "vocab.txt")

    model = lm_lib.load(str(tmp_path))
    tok = model.tokenizer
    records = score.score_texts(model, SENTENCES[:4])
    for record, text in zip(records, SENTENCES[:4]):
        row = [tok.cls_id, *tok.encode(text), tok.sep_id]
        n = len(row) - 2
        copies = torch.tensor([row] * n)
        copies[torch.arange(n), torch.arange(1, n + 1)] = tok.mask_id
        with torch.no_grad():
            logp = torch.log_softmax(hf(copies).logits.double(), -1)
        expected = sum(logp[i, i + 1, row[i + 1]].item() for i in range(n))
        assert record["tokens"] == n
        assert record["pll"] == pytest.approx(expected, abs=1e-3)
