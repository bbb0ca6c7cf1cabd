"""Tests for flaxlm.models: parameter counts, masking, packing, options."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from flaxlm import models
from flaxlm.models import BertEncoder, BertForPreTraining, GPTDecoder, TransformerConfig
from flaxlm.models import layers

TINY = TransformerConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64, max_len=32)
TINY_GPT = dataclasses.replace(TINY, pre_ln=True, layer_norm_eps=1e-5, activation="gelu_tanh")
BF16 = dict(dtype=jnp.bfloat16, param_dtype=jnp.float32)


def _num_params(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _abstract_params(model, *args):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *args, deterministic=True))


def _ids(rows) -> np.ndarray:
    return np.asarray(rows, np.int32)


def _bert_inputs(ids, type_ids=None, seg=None, pos=None):
    """int32 (ids, type_ids, segment_ids, positions); default one doc per row."""
    ids = _ids(ids)
    seg = np.ones_like(ids) if seg is None else _ids(seg)
    type_ids = np.zeros_like(ids) if type_ids is None else _ids(type_ids)
    pos = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).astype(np.int32) if pos is None else _ids(pos)
    return ids, type_ids, seg, pos


def _gpt_inputs(ids, seg=None, pos=None):
    ids, _, seg, pos = _bert_inputs(ids, None, seg, pos)
    return ids, seg, pos


# Models are cached per config: eager init reuses compiled primitives across
# configs with equal parameter shapes, and jitting apply avoids op-by-op
# compilation for every new input shape (each costs seconds on a small CPU).
@functools.lru_cache(maxsize=None)
def _bert(cfg: TransformerConfig):
    """(jitted apply, params) of BertForPreTraining(cfg)."""
    model = BertForPreTraining(cfg)
    params = model.init(jax.random.key(0), *_bert_inputs(np.ones((1, 8))), deterministic=True)
    return jax.jit(model.apply, static_argnames="deterministic"), params


@functools.lru_cache(maxsize=None)
def _gpt(cfg: TransformerConfig):
    """(jitted apply, params) of GPTDecoder(cfg)."""
    model = GPTDecoder(cfg)
    params = model.init(jax.random.key(0), *_gpt_inputs(np.ones((1, 8))), deterministic=True)
    return jax.jit(model.apply, static_argnames="deterministic"), params


def _assert_finite(tree):
    for x in jax.tree.leaves(tree):
        assert np.all(np.isfinite(np.asarray(x, np.float32)))


# --- Parameter counts (eval_shape: nothing is materialised) -----------------


def test_param_counts_match_reference_models():
    ids = jnp.zeros((1, 8), jnp.int32)
    bert = TransformerConfig()
    assert _num_params(_abstract_params(BertEncoder(bert), ids, ids, ids, ids)) == 109_482_240
    full = _num_params(_abstract_params(BertForPreTraining(bert), ids, ids, ids, ids))
    assert full == 110_106_428
    no_pair = _abstract_params(
        BertForPreTraining(dataclasses.replace(bert, pair_head=False)), ids, ids, ids, ids
    )
    assert "pair_head" not in no_pair["params"]
    assert full - _num_params(no_pair) == 768 * 2 + 2

    gpt2 = TransformerConfig(
        vocab_size=50257, max_len=1024, pre_ln=True, layer_norm_eps=1e-5, activation="gelu_tanh"
    )
    assert _num_params(_abstract_params(GPTDecoder(gpt2), ids, ids, ids)) == 124_439_808


def test_param_paths_are_addressable():
    ids = jnp.zeros((1, 4), jnp.int32)
    params = _abstract_params(BertForPreTraining(TINY), ids, ids, ids, ids)["params"]
    block = params["encoder"]["block_0"]
    assert set(block["attention"]) == {"query", "key", "value", "out"}
    assert set(block["mlp"]) == {"fc_in", "fc_out"}
    assert params["encoder"]["position_embeddings"]["embedding"].shape == (32, 32)
    assert params["mlm_bias"].shape == (64,)
    # GPT: no token types, and the LM head is the word embedding (no params).
    gpt = _abstract_params(GPTDecoder(TINY_GPT), ids, ids, ids)["params"]
    assert set(gpt) == {"word_embeddings", "position_embeddings", "final_norm", "block_0", "block_1"}


# --- Attention mask ----------------------------------------------------------


def test_make_attention_mask():
    seg = jnp.array([[1, 1, 2, 0]])
    want = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(layers.make_attention_mask(seg, causal=False)[0, 0], want)
    np.testing.assert_array_equal(
        layers.make_attention_mask(seg, causal=True)[0, 0], want & np.tri(4, dtype=bool)
    )


# --- BERT --------------------------------------------------------------------


def test_bert_padding_invariance():
    apply, params = _bert(TINY)
    real = np.random.default_rng(0).integers(1, 64, size=(2, 6))
    type_ids = _ids([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    mlm_pos = _ids([[1, 4], [0, 5]])
    base = apply(params, *_bert_inputs(real, type_ids), mlm_pos, deterministic=True)

    # Pad to 9 with different pad ids (and pad token types) per row.
    pad = _ids([[0, 0, 0], [33, 7, 1]])
    padded = _bert_inputs(
        np.concatenate([real, pad], axis=1),
        np.concatenate([type_ids, pad % 2], axis=1),
        np.concatenate([np.ones((2, 6)), np.zeros((2, 3))], axis=1),
    )
    out = apply(params, *padded, mlm_pos, deterministic=True)
    _assert_finite(out)
    np.testing.assert_allclose(out["hidden"][:, :6], base["hidden"], atol=1e-5)
    for key in ("pooled", "mlm_logits", "pair_logits"):
        np.testing.assert_allclose(out[key], base[key], atol=1e-5)


def test_bert_encoder_packed_rows_do_not_interact():
    _, params = _bert(TINY)
    # The encoder alone reads its subtree of BertForPreTraining's params.
    encoder = BertEncoder(TINY)
    enc_params = {"params": params["params"]["encoder"]}
    apply = jax.jit(encoder.apply, static_argnames="deterministic")
    a, b = [5, 6, 7, 8], [9, 10, 11]
    # Row 0 packs both documents; rows 1 and 2 hold each alone, padded (padding
    # invariance is tested above).
    hidden, _ = apply(
        enc_params,
        *_bert_inputs(
            [a + b, a + [0] * 3, b + [0] * 4],
            seg=[[1] * 4 + [2] * 3, [1] * 4 + [0] * 3, [1] * 3 + [0] * 4],
            pos=[[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 0, 0, 0], [0, 1, 2] + [0] * 4],
        ),
        deterministic=True,
    )
    np.testing.assert_allclose(hidden[0, :4], hidden[1, :4], atol=1e-5)
    np.testing.assert_allclose(hidden[0, 4:], hidden[2, :3], atol=1e-5)


def test_bert_mlm_positions_gather_before_head():
    apply, params = _bert(TINY)
    inputs = _bert_inputs(np.arange(1, 13).reshape(2, 6))
    mlm_pos = _ids([[0, 3], [2, 5]])
    gathered = apply(params, *inputs, mlm_pos, deterministic=True)
    ids, type_ids, seg, pos = inputs
    # Keyword names are part of the API (the train step calls by name).
    full = apply(
        params,
        input_ids=ids,
        token_type_ids=type_ids,
        segment_ids=seg,
        positions=pos,
        mlm_positions=None,
        deterministic=True,
    )
    assert gathered["mlm_logits"].shape == (2, 2, 64)
    assert full["mlm_logits"].shape == (2, 6, 64)
    assert full["pair_logits"].shape == (2, 2)
    assert full["pooled"].shape == (2, 32)
    np.testing.assert_allclose(
        gathered["mlm_logits"],
        np.take_along_axis(np.asarray(full["mlm_logits"]), mlm_pos[..., None], axis=1),
        atol=1e-5,
    )


def test_bert_mlm_head_is_tied_to_word_embeddings():
    apply, params = _bert(TINY)
    p = params["params"]
    zeroed = {
        "params": {**p, "encoder": {**p["encoder"], "word_embeddings": {"embedding": jnp.zeros((64, 32))}}}
    }
    ids, type_ids, seg, pos = _bert_inputs(np.arange(1, 13).reshape(2, 6))
    out = apply(
        zeroed,
        input_ids=ids,
        token_type_ids=type_ids,
        segment_ids=seg,
        positions=pos,
        mlm_positions=None,
        deterministic=True,
    )
    # With a zero embedding table the logits are exactly the output bias.
    np.testing.assert_array_equal(out["mlm_logits"], np.broadcast_to(p["mlm_bias"], (2, 6, 64)))


def test_bert_options_sinusoidal_pre_ln_remat_dropout():
    # One layer: dropout and remat compile slowly on CPU.
    cfg = dataclasses.replace(
        TINY, position_embedding="sinusoidal", pre_ln=True, remat=True, pair_head=False, num_layers=1
    )
    # remat does not change the params; initialising without it is faster.
    params = _bert(dataclasses.replace(cfg, remat=False))[1]
    apply = jax.jit(BertForPreTraining(cfg).apply, static_argnames="deterministic")
    inputs = _bert_inputs(np.arange(1, 13).reshape(2, 6))
    assert "position_embeddings" not in params["params"]["encoder"]
    assert "final_norm" in params["params"]["encoder"]
    assert "pair_head" not in params["params"]
    eval_out = apply(params, *inputs, deterministic=True)
    assert "pair_logits" not in eval_out
    train_out = apply(params, *inputs, deterministic=False, rngs={"dropout": jax.random.key(1)})
    _assert_finite(train_out)
    assert not np.allclose(train_out["mlm_logits"], eval_out["mlm_logits"])

    # remat only changes the backward pass: check it traces and is finite.
    loss = lambda p: jnp.mean(apply(p, *inputs, deterministic=True)["mlm_logits"] ** 2)
    grads = jax.jit(jax.grad(loss))(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    _assert_finite(grads)


def test_position_offset_reads_the_table_that_many_rows_down():
    """RoBERTa's layout: position p at row p + offset; the rows above are never read."""
    cfg = dataclasses.replace(TINY, num_layers=1)
    params = _bert(cfg)[1]
    shifted = dataclasses.replace(cfg, position_offset=2)
    table = params["params"]["encoder"]["position_embeddings"]["embedding"]
    expected = _abstract_params(BertForPreTraining(shifted), *_bert_inputs(np.ones((1, 4))))
    assert expected["params"]["encoder"]["position_embeddings"]["embedding"].shape == (34, 32)
    shifted_params = jax.tree.map(lambda x: x, params)
    unused = jnp.full((2, 32), 1e3, table.dtype)  # would dominate every output if it were read
    shifted_params["params"]["encoder"]["position_embeddings"]["embedding"] = jnp.concatenate([unused, table])
    inputs = _bert_inputs(np.arange(1, 13).reshape(2, 6))
    out = BertForPreTraining(cfg).apply(params, *inputs, deterministic=True)
    out_shifted = BertForPreTraining(shifted).apply(shifted_params, *inputs, deterministic=True)
    for key in out:
        np.testing.assert_array_equal(out[key], out_shifted[key])
    with pytest.raises(ValueError, match="position_offset=-1 must be >= 0"):
        dataclasses.replace(TINY, position_offset=-1)


def test_sinusoidal_table():
    table = layers.sinusoidal_table(16, 8)
    assert table.shape == (16, 8)
    np.testing.assert_allclose(table[0], [0, 1] * 4)
    np.testing.assert_allclose(table[3, 0], np.sin(3.0), rtol=1e-6)
    np.testing.assert_allclose(table[3, 3], np.cos(3.0 / 10000 ** (2 / 8)), rtol=1e-6)


# --- GPT ---------------------------------------------------------------------


def test_gpt_causality():
    apply, params = _gpt(TINY_GPT)
    ids = np.random.default_rng(0).integers(0, 64, size=(3, 8)).astype(np.int32)
    changed = ids.copy()
    ks = [0, 3, 7]  # Row r changes the token at position ks[r].
    for r, k in enumerate(ks):
        changed[r, k] = (changed[r, k] + 1) % 64
    base = apply(params, *_gpt_inputs(ids), deterministic=True)
    out = apply(params, *_gpt_inputs(changed), deterministic=True)
    assert base.shape == (3, 8, 64)
    for r, k in enumerate(ks):
        np.testing.assert_allclose(out[r, :k], base[r, :k], atol=1e-6)
        assert not np.allclose(out[r, k], base[r, k])


def test_gpt_padding_invariance_and_finite_pad_rows():
    apply, params = _gpt(TINY_GPT)
    ids = _ids(
        [[3, 4, 5, 6, 7, 0, 0, 0, 0], [3, 4, 5, 6, 7, 50, 50, 1, 2], [0] * 9]
    )  # Entirely padding: must stay finite.
    seg = _ids([[1] * 5 + [0] * 4, [1] * 5 + [0] * 4, [0] * 9])
    pos = _ids([list(range(5)) + [0] * 4] * 2 + [[0] * 9])
    out = apply(params, ids, seg, pos, deterministic=True)
    _assert_finite(out)
    base = apply(params, *_gpt_inputs(ids[:1, :5]), deterministic=True)
    np.testing.assert_allclose(out[0, :5], base[0], atol=1e-5)
    np.testing.assert_allclose(out[1, :5], base[0], atol=1e-5)


def test_gpt_packing_matches_separate_documents():
    apply, params = _gpt(TINY_GPT)
    a, b = [10, 11, 12], [20, 21]
    # Row 0 packs both documents; rows 1 and 2 hold each alone, padded.
    logits = apply(
        params,
        input_ids=_ids([a + b, a + [0, 0], b + [0, 0, 0]]),
        segment_ids=_ids([[1, 1, 1, 2, 2], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]),
        positions=_ids([[0, 1, 2, 0, 1], [0, 1, 2, 0, 0], [0, 1, 0, 0, 0]]),
        deterministic=True,
    )
    np.testing.assert_allclose(logits[0, :3], logits[1, :3], atol=1e-5)
    np.testing.assert_allclose(logits[0, 3:], logits[2, :2], atol=1e-5)


def test_bf16_compute_with_f32_params():
    bf16_bert = BertForPreTraining(dataclasses.replace(TINY, **BF16))
    params = _bert(TINY)[1]  # Same f32 params; saves a slow eager init.
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(
        jnp.shape, _abstract_params(bf16_bert, *_bert_inputs([[1, 2]]))
    )
    out = jax.jit(bf16_bert.apply, static_argnames="deterministic")(
        params, *_bert_inputs([[1, 2, 3, 4, 0, 0]], seg=[[1, 1, 1, 1, 0, 0]]), deterministic=True
    )
    assert out["mlm_logits"].dtype == jnp.bfloat16
    _assert_finite(out)

    bf16_gpt = GPTDecoder(dataclasses.replace(TINY_GPT, **BF16))
    params = _gpt(TINY_GPT)[1]
    logits = jax.jit(bf16_gpt.apply, static_argnames="deterministic")(
        params, *_gpt_inputs([[1, 2, 3, 0]], seg=[[1, 1, 1, 0]]), deterministic=True
    )
    assert logits.dtype == jnp.bfloat16
    _assert_finite(logits)


# --- get_model -----------------------------------------------------------------


def test_get_model_builds_from_config_dict():
    cfg = ml_collections.ConfigDict(
        dict(
            arch="gpt",
            vocab_size=64,
            hidden_size=32,
            num_layers=1,
            num_heads=4,
            mlp_dim=64,
            dtype="bfloat16",
            param_dtype="float32",
        )
    )
    model = models.get_model(cfg)
    assert isinstance(model, GPTDecoder)
    assert model.config.dtype == jnp.bfloat16
    assert model.config.param_dtype == jnp.float32
    hash(model.config)  # Static jit arguments must be hashable.
    cfg.arch = "bert"
    assert isinstance(models.get_model(cfg), BertForPreTraining)


def test_get_model_errors():
    with pytest.raises(ValueError, match="'t6'.*bert.*gpt.*t5"):
        models.get_model(ml_collections.ConfigDict(dict(arch="t6")))
    with pytest.raises(ValueError, match="hiden_size"):
        models.get_model(ml_collections.ConfigDict(dict(arch="bert", hiden_size=8)))
    with pytest.raises(ValueError, match="float8"):
        models.get_model(ml_collections.ConfigDict(dict(arch="bert", dtype="float8")))


# --- ALBERT: factorised embeddings and cross-layer sharing --------------------

ALBERT_TINY = dataclasses.replace(TINY, num_layers=3, embedding_size=16, share_layers="all")


def test_albert_factorised_embeddings_are_e_wide_and_projected():
    ids = jnp.zeros((1, 4), jnp.int32)
    params = _abstract_params(BertForPreTraining(ALBERT_TINY), ids, ids, ids, ids)["params"]
    enc = params["encoder"]
    for name, rows in (("word_embeddings", 64), ("position_embeddings", 32), ("token_type_embeddings", 2)):
        assert enc[name]["embedding"].shape == (rows, 16), name
    assert enc["embeddings_norm"]["scale"].shape == (16,)
    assert enc["embedding_projection"]["kernel"].shape == (16, 32)  # E -> D
    assert params["mlm_transform"]["kernel"].shape == (32, 16)  # D -> E, then the tied E -> V
    assert params["mlm_norm"]["scale"].shape == (16,) and params["mlm_bias"].shape == (64,)
    # share_layers="all": one block, whatever num_layers says.
    assert not any(k.startswith("block_") for k in enc) and "attention" in enc["shared_block"]
    block = 4 * 32 * 32 + 4 * 32 + 2 * 32 * 64 + 64 + 32 + 2 * 2 * 32
    unshared = _abstract_params(
        BertForPreTraining(dataclasses.replace(ALBERT_TINY, share_layers="none")), ids, ids, ids, ids
    )
    assert _num_params(unshared) - _num_params(params) == 2 * block
    # embedding_size == D still has the projection (HF Albert has one whatever E is); 0 has none.
    same = _abstract_params(
        BertForPreTraining(dataclasses.replace(ALBERT_TINY, embedding_size=32)), ids, ids, ids, ids
    )
    assert "embedding_projection" in same["params"]["encoder"]
    bert = _abstract_params(BertForPreTraining(TINY), ids, ids, ids, ids)["params"]["encoder"]
    assert "embedding_projection" not in bert and "shared_block" not in bert


def _unshared_copy(params: dict, share: str, num_layers: int) -> dict:
    """The share_layers="none" params that hold the shared weights in every block_i."""
    enc = dict(params["encoder"])
    if share == "all":
        shared = enc.pop("shared_block")
        blocks = [shared] * num_layers
    else:
        sub = "attention" if share == "attention" else "mlp"
        shared = {sub: enc.pop(f"shared_{sub}"), f"{sub}_norm": enc.pop(f"shared_{sub}_norm")}
        blocks = [{**enc.pop(f"block_{i}"), **shared} for i in range(num_layers)]
    enc.update({f"block_{i}": b for i, b in enumerate(blocks)})
    return {**params, "encoder": enc}


@pytest.mark.parametrize("share", ["all", "attention", "ffn"])
def test_shared_weights_get_the_sum_of_the_per_layer_gradients(share):
    """A shared model computes what an unshared one with equal copies in every layer computes, and the
    gradient of a shared weight is the sum of the copies' gradients (one weight, used L times)."""
    cfg = dataclasses.replace(ALBERT_TINY, share_layers=share)
    inputs = _bert_inputs(np.arange(1, 13).reshape(2, 6))
    shared_model = BertForPreTraining(cfg)
    unshared_model = BertForPreTraining(dataclasses.replace(cfg, share_layers="none"))
    params = shared_model.init(jax.random.key(0), *inputs, deterministic=True)["params"]
    # Perturb LayerNorms and biases away from their 1/0 init, so their gradients are not trivial.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )
    copies = _unshared_copy(params, share, cfg.num_layers)

    def loss(model, p):
        out = model.apply({"params": p}, *inputs, deterministic=True)
        return jnp.mean(out["mlm_logits"] ** 2) + jnp.mean(out["pair_logits"] ** 2)

    l_shared, g_shared = jax.value_and_grad(functools.partial(loss, shared_model))(params)
    l_copies, g_copies = jax.value_and_grad(functools.partial(loss, unshared_model))(copies)
    np.testing.assert_allclose(l_shared, l_copies, rtol=1e-6)
    enc_shared, enc_copies = g_shared["encoder"], g_copies["encoder"]
    if share == "all":
        pairs = [(enc_shared["shared_block"], [enc_copies[f"block_{i}"] for i in range(3)])]
    else:
        sub = "attention" if share == "attention" else "mlp"
        pairs = [
            (enc_shared[f"shared_{name}"], [enc_copies[f"block_{i}"][name] for i in range(3)])
            for name in (sub, f"{sub}_norm")
        ]
        for i in range(3):  # the blocks' own sublayer is per layer in both models
            own = "mlp" if share == "attention" else "attention"
            for a, b in zip(
                jax.tree.leaves(enc_shared[f"block_{i}"]), jax.tree.leaves(enc_copies[f"block_{i}"][own])
            ):
                np.testing.assert_allclose(a, b, atol=1e-6)
    for shared_grad, per_layer in pairs:
        summed = jax.tree.map(lambda *g: sum(g), *per_layer)
        for a, b in zip(jax.tree.leaves(shared_grad), jax.tree.leaves(summed)):
            np.testing.assert_allclose(a, b, atol=1e-5)
        # A real gradient (not zeros on both sides), and not one layer's alone: layers contribute differently.
        largest = int(np.argmax([float(jnp.max(jnp.abs(b))) for b in jax.tree.leaves(summed)]))
        assert float(jnp.max(jnp.abs(jax.tree.leaves(summed)[largest]))) > 1e-3
        first_layer = jax.tree.leaves(per_layer[0])[largest]
        assert not np.allclose(first_layer, jax.tree.leaves(shared_grad)[largest], atol=1e-5)


def test_albert_options_refused_where_they_do_not_apply():
    with pytest.raises(ValueError, match="share_layers='some'; expected one of"):
        dataclasses.replace(TINY, share_layers="some")
    with pytest.raises(ValueError, match="embedding_size=-1 must be >= 0"):
        dataclasses.replace(TINY, embedding_size=-1)
    ids = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="are BERT options; GPTDecoder has neither"):
        _abstract_params(GPTDecoder(dataclasses.replace(TINY_GPT, share_layers="all")), ids, ids, ids)
