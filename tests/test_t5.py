"""T5 (flaxlm.models.t5): parameter count, parity with transformers on random weights, exact HF round
trips, the relative-position buckets, cached decoding; span corruption and its CLI run."""

import dataclasses
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import hf, models
from flaxlm.data import builders
from flaxlm.models import layers, t5

TOL = 1e-4  # max abs difference allowed between flaxlm and transformers logits (float32, CPU)

# A tiny T5 (2 + 3 layers: the decoder depth differs, as num_decoder_layers allows) and its
# T5.1.1-style sibling (gated GELU, untied lm_head).
TINY = dict(
    vocab_size=300, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=3,
    relative_attention_num_buckets=8, relative_attention_max_distance=20,
)  # fmt: skip
VARIANTS = {
    "t5": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "t5.1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def test_t5_small_has_60506624_parameters():
    """transformers' T5ForConditionalGeneration(T5Config()) has 60,506,624; counted without allocating."""
    model = models.get_model({"arch": "t5", **t5.T5_SWITCHES, **_small()})
    z = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *(z,) * 6, deterministic=True))
    assert set(shapes) == {"params"}
    assert sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes)) == 60_506_624


def test_t5_init_is_t5s_fan_in_scaled_normals_and_bert_keeps_0_02():
    """T5's init (Mesh TF T5, HF's _init_weights): shared embedding N(0, 1), query N(0, (D H)^-0.5), key,
    value and fc_in N(0, D^-0.5), out N(0, (N H)^-0.5), fc_out N(0, F^-0.5), relative bias N(0, D^-0.5),
    an untied lm_head N(0, D^-0.5). A BERT keeps N(0, 0.02) everywhere."""
    d, n, h, f, v = 64, 4, 32, 256, 4000
    fields = dict(vocab_size=v, hidden_size=d, num_layers=2, num_heads=n, head_dim=h, mlp_dim=f)
    model = models.get_model({"arch": "t5", **t5.T5_SWITCHES, **fields, "tie_embeddings": False})
    params = model.init(jax.random.key(0), *(jnp.zeros((1, 8), jnp.int32),) * 6, deterministic=True)
    flat = {
        "/".join(str(k.key) for k in path): x for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    want = {
        "shared/embedding": 1.0,
        "encoder/block_0/attention/query/kernel": (d * h) ** -0.5,
        "encoder/block_0/attention/key/kernel": d**-0.5,
        "decoder/block_1/cross_attention/value/kernel": d**-0.5,
        "decoder/block_0/attention/out/kernel": (n * h) ** -0.5,
        "encoder/block_1/mlp/fc_in/kernel": d**-0.5,
        "decoder/block_0/mlp/fc_out/kernel": f**-0.5,
        "lm_head/kernel": d**-0.5,
    }
    for suffix, std in want.items():
        (name,) = [k for k in flat if k.endswith(suffix)]
        assert np.std(np.asarray(flat[name])) == pytest.approx(std, rel=0.1), name
    (bias,) = [k for k in flat if "encoder" in k and "relative_position_bias" in k]
    assert np.std(np.asarray(flat[bias])) == pytest.approx(d**-0.5, rel=0.5)  # 32 x 4 draws only
    bert = models.get_model({"arch": "bert", **fields, "num_heads": 2, "head_dim": 0})
    z = jnp.zeros((1, 8), jnp.int32)
    bert_params = bert.init(jax.random.key(0), z, z, z, z, deterministic=True)
    for x in jax.tree.leaves(bert_params):
        if x.ndim == 2 and x.size > 1000:
            assert np.std(np.asarray(x)) == pytest.approx(0.02, rel=0.1)


def _small():
    c = t5.t5_config()
    return dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_layers,
        num_heads=c.num_heads,
        mlp_dim=c.mlp_dim,
        head_dim=c.head_dim,
    )


def test_relative_position_bucket_equals_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    bucket_hf = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    rel = np.arange(-400, 401)[:, None] + np.arange(0, 3)[None, :] * 137  # a grid past max_distance
    for bidirectional in (True, False):
        for num_buckets, max_distance in ((32, 128), (8, 20), (64, 256)):
            ours = layers.relative_position_bucket(
                jnp.asarray(rel, jnp.int32),
                bidirectional=bidirectional,
                num_buckets=num_buckets,
                max_distance=max_distance,
            )
            theirs = bucket_hf(
                torch.tensor(rel),
                bidirectional=bidirectional,
                num_buckets=num_buckets,
                max_distance=max_distance,
            )
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())


# ----------------------------------------------------------------------------- HF parity and round trips


def _random_hf_t5(variant: str, path, architecture: str = "T5ForConditionalGeneration"):
    """A random transformers T5 of the tiny shape, every tensor perturbed off its init, saved at `path`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(**TINY, **VARIANTS[variant], dropout_rate=0.0)
    model = getattr(transformers, architecture)(config).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(path)
    return model


def _batch(rng: np.random.Generator, vocab: int):
    """Two rows of ragged, right-padded encoder and decoder ids (ids, segment_ids, positions each)."""
    lengths = ((11, 7), (6, 9))
    s, t = max(a for a, _ in lengths), max(b for _, b in lengths)
    enc, dec = np.zeros((2, s), np.int32), np.zeros((2, t), np.int32)
    enc_seg, dec_seg = np.zeros_like(enc), np.zeros_like(dec)
    for i, (a, b) in enumerate(lengths):
        enc[i, :a] = rng.integers(2, vocab, a)
        dec[i, :b] = rng.integers(2, vocab, b)
        enc_seg[i, :a] = 1
        dec_seg[i, :b] = 1
    pos = lambda x: np.broadcast_to(np.arange(x.shape[1], dtype=np.int32), x.shape)
    return (enc, enc_seg, pos(enc)), (dec, dec_seg, pos(dec))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_random_hf_t5_logits_match_and_round_trip_exactly(variant, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_model = _random_hf_t5(variant, tmp_path / "hf")
    model_cfg, params, _ = hf.load_hf(str(tmp_path / "hf"))
    assert model_cfg["arch"] == "t5" and model_cfg["gated_mlp"] == (variant == "t5.1.1")
    assert ("lm_head" in params) == (variant == "t5.1.1")
    assert model_cfg["num_decoder_layers"] == 3 and model_cfg["head_dim"] == 16

    (enc, enc_seg, enc_pos), (dec, dec_seg, dec_pos) = _batch(np.random.default_rng(0), TINY["vocab_size"])
    model = models.get_model(model_cfg)
    logits = jax.jit(model.apply, static_argnames="deterministic")(
        {"params": params}, enc, enc_seg, enc_pos, dec, dec_seg, dec_pos, deterministic=True
    )
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(enc, dtype=torch.long),
            attention_mask=torch.tensor(enc_seg, dtype=torch.long),
            decoder_input_ids=torch.tensor(dec, dtype=torch.long),
            decoder_attention_mask=torch.tensor(dec_seg, dtype=torch.long),
        ).logits.numpy()
    real = dec_seg.astype(bool)  # padding queries attend to nothing in flaxlm, to the text in HF
    diff = float(np.abs(np.asarray(logits, np.float64) - out)[real].max())
    assert diff <= TOL, diff
    print(f"T5 {variant}: max abs logit difference vs transformers {diff:.2e}")

    # flaxlm -> HF -> flaxlm is bitwise, and transformers reads the export as the same model.
    hf.save_hf(str(tmp_path / "out"), model_cfg, params)
    cfg2, params2, _ = hf.load_hf(str(tmp_path / "out"))
    assert jax.tree.structure(params2) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert {k: cfg2[k] for k in model_cfg} == model_cfg
    reread = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "out")).eval()
    for name, tensor in hf_model.state_dict().items():
        assert torch.equal(reread.state_dict()[name], tensor), name


def test_hf_t5model_without_head_imports_the_stacks(tmp_path):
    """T5Model (no LM head): the untied T5.1.1 shape imports without lm_head, exports as T5Model."""
    pytest.importorskip("transformers")
    _random_hf_t5("t5.1.1", tmp_path / "hf", architecture="T5Model")
    model_cfg, params, _ = hf.load_hf(str(tmp_path / "hf"))
    assert "lm_head" not in params and hf.heads_of(model_cfg, params) == []
    hf.save_hf(str(tmp_path / "out"), model_cfg, params)
    _, params2, _ = hf.load_hf(str(tmp_path / "out"))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- cached decoding


def test_cached_decoding_equals_full_decoding():
    """Decoding one token at a time with the KV cache gives the logits of one full decoder pass."""
    cfg = t5.t5_config(
        vocab_size=50, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, head_dim=16, dropout_rate=0.0
    )
    model = t5.T5ForConditionalGeneration(cfg)
    rng = np.random.default_rng(0)
    enc = rng.integers(2, 50, (2, 9)).astype(np.int32)
    enc_seg = np.ones_like(enc)
    enc_seg[1, 6:] = 0
    enc_pos = np.broadcast_to(np.arange(9, dtype=np.int32), enc.shape)
    dec = rng.integers(2, 50, (2, 6)).astype(np.int32)
    dec_seg, dec_pos = np.ones_like(dec), np.broadcast_to(np.arange(6, dtype=np.int32), dec.shape)
    params = model.init(jax.random.key(0), enc, enc_seg, enc_pos, dec, dec_seg, dec_pos, deterministic=True)
    full = model.apply(params, enc, enc_seg, enc_pos, dec, dec_seg, dec_pos, deterministic=True)

    decoder = t5.T5ForConditionalGeneration(dataclasses.replace(cfg, decode=True))
    encoded = decoder.apply(params, enc, enc_seg, enc_pos, deterministic=True, method="encode")
    cache = decoder.init(jax.random.key(0), enc, enc_seg, enc_pos, dec, dec_seg, dec_pos, deterministic=True)[
        "cache"
    ]
    cache = jax.tree.map(jnp.zeros_like, cache)
    steps = []
    for i in range(dec.shape[1]):
        logits, mutated = decoder.apply(
            {**params, "cache": cache},
            encoded,
            enc_seg,
            dec[:, i : i + 1],
            dec_seg[:, i : i + 1],
            dec_pos[:, i : i + 1],
            deterministic=True,
            method="decode",
            mutable=["cache"],
        )
        cache = mutated["cache"]
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


# ----------------------------------------------------------------------------- span corruption


def test_random_spans_helper_is_t5s_arithmetic():
    assert builders.random_spans_helper(512) == (568, 114)  # T5's published lengths
    for inputs_length in (64, 128, 512):
        tokens, targets = builders.random_spans_helper(inputs_length)
        noise = round(tokens * 0.15)
        spans = round(noise / 3)
        assert tokens - noise + spans + 1 <= inputs_length and targets == noise + spans + 1


def test_noise_mask_fraction_and_mean_span_length():
    rng = np.random.default_rng(0)
    masks = [builders.random_spans_noise_mask(568, rng) for _ in range(300)]
    for m in masks:
        assert m.sum() == round(568 * 0.15) and not m[0]  # exact count; starts with non-noise
    runs = [int(r) for m in masks for r in np.diff(np.flatnonzero(np.diff(np.r_[0, m, 0].astype(int))))[::2]]
    assert abs(np.mean(runs) - 85 / 28) < 1e-9  # 85 noise tokens in round(85 / 3) = 28 spans
    assert max(runs) > 6  # span lengths vary (uniform segmentation), not all 3


def _merge(inputs: np.ndarray, targets: np.ndarray, eos: int, sentinels: np.ndarray) -> np.ndarray:
    """The original piece: each sentinel of the inputs replaced by what follows it in the targets."""
    spans, current = {}, None
    for tok in targets[:-1]:
        if tok in sentinels:
            current = int(tok)
            spans[current] = []
        else:
            spans[current].append(int(tok))
    out = [t for tok in inputs[:-1] for t in (spans[int(tok)] if tok in sentinels else [int(tok)])]
    return np.asarray(out)


def test_span_corruption_rows_reconstruct_documents_in_order():
    rng = np.random.default_rng(0)
    vocab, eos = 1000, 3
    sentinels = builders.sentinel_ids(vocab, 100)
    assert sentinels[0] == vocab - 1 and sentinels[1] == vocab - 2  # <extra_id_0> is the last id
    docs = [
        [rng.integers(10, 800, n).astype(np.int32) for n in lengths]
        for lengths in ((30, 40), (5,), (200, 90))
    ]
    rows = list(builders.span_corruption(docs, 64, rng, eos_id=eos, sentinels=sentinels))
    _, targets_length = builders.random_spans_helper(64)
    pieces = []
    for row in rows:
        assert row["input_ids"].shape == (64,) and row["targets"].shape == (targets_length,)
        assert row["segment_ids"].max() == row["decoder_segment_ids"].max()
        for k in range(1, row["segment_ids"].max() + 1):
            enc = row["input_ids"][row["segment_ids"] == k]
            dec = row["targets"][row["decoder_segment_ids"] == k]
            assert enc[-1] == eos and dec[-1] == eos
            used = [t for t in enc if t in sentinels]
            np.testing.assert_array_equal(
                used, sentinels[: len(used)]
            )  # sentinels in order, from <extra_id_0>
            np.testing.assert_array_equal(row["positions"][row["segment_ids"] == k], np.arange(len(enc)))
            dec_in = row["decoder_input_ids"][row["decoder_segment_ids"] == k]
            np.testing.assert_array_equal(dec_in, np.r_[0, dec[:-1]])  # teacher forcing within the piece
            pieces.append(_merge(enc, dec, eos, sentinels))
    # Pieces never cross documents: concatenated in order they are the documents, one after another.
    tokens_length, _ = builders.random_spans_helper(64)
    expected = [
        body[i : i + tokens_length]
        for d in docs
        for body in [np.concatenate(d)]
        for i in range(0, len(body), tokens_length)
    ]
    assert len(pieces) == len(expected)
    for got, want in zip(pieces, expected):
        np.testing.assert_array_equal(got, want)


def test_t5_tiny_trains_from_the_cli_and_resumes(tmp_path, data_dir):
    """configs/t5_tiny.py (shrunk) trains with a finite, decreasing loss, evaluates and resumes."""
    from test_cli import train_stop_resume

    # The loss fell 6.25 -> 5.75 when written.
    train_stop_resume(tmp_path, data_dir, "configs/t5_tiny.py", "--config.model.head_dim=32")


# ----------------------------------------------------------------------------- BERT-style i.i.d. denoising


def test_iid_denoising_corrupts_15_percent_90_10_and_targets_are_the_original():
    rng = np.random.default_rng(0)
    eos, mask = 3, builders.sentinel_ids(1000, 1)[0]  # T5's mask token: <extra_id_0>, the last id
    random_ids = np.arange(10, 900)
    docs = [
        [rng.integers(10, 800, n).astype(np.int32) for n in lengths]
        for lengths in rng.integers(1, 200, (60, 4))
    ]
    stats = builders.BuildStats()
    rows = list(
        builders.iid_denoising(docs, 64, rng, eos_id=eos, mask_id=mask, random_ids=random_ids, stats=stats)
    )
    assert builders.targets_length("iid_denoising", 64, 0.15, 3.0) == 64
    pieces, noise, randoms, tokens = [], 0, 0, 0
    for row in rows:
        assert row["input_ids"].shape == row["targets"].shape == (64,)
        np.testing.assert_array_equal(row["segment_ids"], row["decoder_segment_ids"])  # same packing
        for k in range(1, row["segment_ids"].max() + 1):
            enc = row["input_ids"][row["segment_ids"] == k]
            dec = row["targets"][row["decoder_segment_ids"] == k]
            assert len(enc) == len(dec) <= 64 and enc[-1] == dec[-1] == eos  # EOS is never noise
            dec_in = row["decoder_input_ids"][row["decoder_segment_ids"] == k]
            np.testing.assert_array_equal(dec_in, np.r_[0, dec[:-1]])
            changed = enc != dec
            is_mask = enc == mask
            # A noise token is the mask or a random id (a random id may equal the original: T5's too).
            assert np.all(np.isin(enc[changed & ~is_mask], random_ids))
            noise += int(is_mask.sum() + (changed & ~is_mask).sum())
            randoms += int((changed & ~is_mask).sum())
            tokens += len(dec) - 1
            pieces.append(dec[:-1])
    assert stats.noise_tokens == pytest.approx(noise, rel=0.01)  # a few random ids equal their original
    assert abs(stats.noise_tokens / tokens - 0.15) < 0.01
    assert abs(stats.random_tokens / stats.noise_tokens - 0.1) < 0.02
    assert abs(randoms / noise - 0.1) < 0.02
    # Pieces of seq_len - 1 tokens never cross documents: in order they are the documents.
    expected = [b[i : i + 63] for d in docs for b in [np.concatenate(d)] for i in range(0, len(b), 63)]
    assert len(pieces) == len(expected)
    for got, want in zip(pieces, expected):
        np.testing.assert_array_equal(got, want)


def test_t5_iid_denoising_trains_from_the_cli_and_resumes(tmp_path, data_dir):
    """t5_tiny as T5's BERT-style objective (shrunk) trains with a finite, decreasing loss and resumes.

    Every step is logged, so the 0.3-nat fall is counted from the first step's loss: this objective
    takes most of its 40 steps' fall in the first 10 (7.07 at step 1, 6.03 at step 10, 5.73 at step
    40 with the chunked data of prepare's FORMAT_VERSION 2), so from step 10 it fell 0.299 nats."""
    from test_cli import train_stop_resume

    _, evals = train_stop_resume(
        tmp_path,
        data_dir,
        "configs/t5_tiny.py",
        "--config.objective=iid_denoising",
        "--config.data.builder=iid_denoising",
        "--config.model.head_dim=32",
        log_every=1,
    )
    assert np.isfinite(evals[40]["eval_unigram_lm_loss"])
