"""Tests for flaxlm.objectives against hand computations in numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import objectives

# Jitted: one compile per test instead of one per primitive, and it checks
# that the losses trace.
mlm_loss = jax.jit(objectives.mlm_loss)
pair_loss = jax.jit(objectives.pair_loss, static_argnames="name")
causal_lm_loss = jax.jit(objectives.causal_lm_loss)
pretraining_loss = jax.jit(objectives.pretraining_loss, static_argnames=("objective", "pair_weight"))


def _np_ce(logits, target):
    logits = np.asarray(logits, np.float64)
    return np.log(np.sum(np.exp(logits))) - logits[target]


def test_mlm_loss_weighted_mean_over_masked_positions():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
    targets = np.array([[1, 4, 0], [2, -1, 3]], np.int32)  # -1: ignored slot.
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    loss, m = mlm_loss(logits, targets, weights)
    ces = [_np_ce(logits[0, 0], 1), _np_ce(logits[0, 1], 4), _np_ce(logits[1, 0], 2)]
    np.testing.assert_allclose(loss, np.mean(ces), rtol=1e-5)
    np.testing.assert_allclose(m["mlm_loss"], loss)
    correct = [logits[0, 0].argmax() == 1, logits[0, 1].argmax() == 4, logits[1, 0].argmax() == 2]
    np.testing.assert_allclose(m["mlm_accuracy"], np.mean(correct), rtol=1e-6)
    assert m["mlm_count"] == 3


def test_mlm_loss_no_targets_and_bf16_logits():
    logits = jnp.zeros((1, 2, 4), jnp.bfloat16)
    loss, m = mlm_loss(logits, jnp.zeros((1, 2), jnp.int32), jnp.zeros((1, 2)))
    assert loss == 0.0 and m["mlm_count"] == 0
    loss, _ = mlm_loss(logits, jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2)))
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, np.log(4), rtol=1e-6)


def test_pair_loss_names_and_values():
    logits = np.array([[2.0, -1.0], [0.5, 0.25], [-3.0, 1.0]], np.float32)
    labels = np.array([0, 1, 1], np.int32)
    loss, m = pair_loss(logits, labels)
    want = np.mean([_np_ce(l, y) for l, y in zip(logits, labels)])
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert set(m) == {"nsp_loss", "nsp_accuracy"}
    np.testing.assert_allclose(m["nsp_accuracy"], 2 / 3, rtol=1e-6)

    loss, m = pair_loss(logits, labels, np.array([1.0, 0.0, 1.0]), name="sop")
    assert set(m) == {"sop_loss", "sop_accuracy"}
    np.testing.assert_allclose(loss, (_np_ce(logits[0], 0) + _np_ce(logits[2], 1)) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["sop_accuracy"], 1.0)


def test_causal_lm_loss_respects_boundaries_and_padding():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 6, 7)).astype(np.float32)
    ids = np.array([[1, 2, 3, 4, 5, 0]], np.int32)
    seg = np.array([[1, 1, 1, 2, 2, 0]], np.int32)
    loss, m = causal_lm_loss(logits, ids, seg)
    # Valid: 0->1 (id 2), 1->2 (id 3), 3->4 (id 5). Not 2->3 (new document),
    # not 4->5 (padding), not 5 (padding, last).
    pairs = [(0, 2), (1, 3), (3, 5)]
    want = np.mean([_np_ce(logits[0, t], y) for t, y in pairs])
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    assert m["lm_tokens"] == 3
    np.testing.assert_allclose(m["perplexity"], np.exp(want), rtol=1e-5)
    acc = np.mean([logits[0, t].argmax() == y for t, y in pairs])
    np.testing.assert_allclose(m["lm_accuracy"], acc, rtol=1e-6)


def test_argmax_is_jnp_argmax_with_ties_nan_and_inf():
    """The accuracies' argmax (a max and a min reduction) picks what jnp.argmax picks: the first of
    tied maxima, the first NaN, the first of all -inf; float32 rounding of bfloat16 logits ties often."""
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(8, 37)).astype(np.float32)
    rows[1, [3, 20]] = rows[1].max() + 1.0  # a tie at the maximum: the first wins
    rows[2, :] = 0.0  # all equal (a zero-initialised head)
    rows[3, [5, 9]] = np.nan  # the first NaN
    rows[4, :] = -np.inf
    rows[5, [0, 36]] = np.inf
    rows[6, 36] = rows[6].max() + 1.0  # the last class
    bf16 = jnp.asarray(rng.normal(size=(64, 1000)), jnp.bfloat16).astype(jnp.float32)
    for logits in (jnp.asarray(rows), jnp.asarray(rows).reshape(2, 4, 37), bf16):
        want = jnp.argmax(logits, axis=-1)
        np.testing.assert_array_equal(jax.jit(objectives._argmax)(logits), want)
    assert int(jnp.sum(jnp.sum(bf16 == jnp.max(bf16, -1, keepdims=True), -1) > 1)) > 0  # ties were tested


@pytest.mark.parametrize("prefix", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 4, 13, 20])
def test_chunked_causal_lm_loss_matches_full_logits(chunk_size, prefix):
    """Same loss, metrics and gradients (hidden states and the tied embedding) as causal_lm_loss on
    hidden @ embedding.T, for chunks that divide T = 13, that do not (padding) and one past T; rows
    with a document boundary and with padding."""
    rng = np.random.default_rng(3)
    B, T, D, V = 2, 13, 8, 37
    hidden = jnp.asarray(rng.normal(size=(B, T, D)), jnp.float32)
    emb = jnp.asarray(rng.normal(size=(V, D)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
    seg = jnp.asarray([[1] * 7 + [2] * 6, [1] * 10 + [0] * 3], jnp.int32)
    # prefix LM: the first 3 tokens of each document are its prefix, not scored.
    prefix_mask = jnp.asarray([[1] * 3 + [0] * 4 + [1] * 3 + [0] * 3, [1] * 3 + [0] * 10], jnp.int32)
    prefix_mask = prefix_mask if prefix else None

    def full(h, e):
        return objectives.causal_lm_loss(jnp.dot(h, e.T), ids, seg, prefix_mask)

    def chunked(h, e):
        return objectives.chunked_causal_lm_loss(h, e, ids, seg, prefix_mask, chunk_size=chunk_size)

    want, got = full(hidden, emb), jax.jit(chunked)(hidden, emb)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    assert set(got[1]) == set(want[1])
    for k in want[1]:
        np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-6, err_msg=k)
    # Scaled, as the train step scales each shard's loss: the cotangent reaches both gradients.
    grad = lambda f: jax.jit(jax.grad(lambda h, e: 3.0 * f(h, e)[0], argnums=(0, 1)))  # noqa: E731
    for g_want, g_got in zip(grad(full)(hidden, emb), grad(chunked)(hidden, emb)):
        np.testing.assert_allclose(g_got, g_want, atol=1e-6, rtol=0)


def _bert_outputs_and_batch():
    rng = np.random.default_rng(2)
    outputs = dict(
        mlm_logits=rng.normal(size=(2, 2, 5)).astype(np.float32),
        pair_logits=rng.normal(size=(2, 2)).astype(np.float32),
    )
    batch = dict(
        mlm_targets=np.array([[1, 2], [3, 0]], np.int32),
        mlm_weights=np.array([[1, 1], [1, 0]], np.float32),
        pair_label=np.array([0, 1], np.int32),
    )
    return outputs, batch


@pytest.mark.parametrize("objective", ["mlm", "mlm_nsp", "mlm_sop"])
def test_pretraining_loss_bert_objectives(objective):
    outputs, batch = _bert_outputs_and_batch()
    loss, m = pretraining_loss(outputs, batch, objective=objective, pair_weight=0.5)
    mlm, _ = mlm_loss(outputs["mlm_logits"], batch["mlm_targets"], batch["mlm_weights"])
    want = mlm
    if objective != "mlm":
        pair, _ = pair_loss(outputs["pair_logits"], batch["pair_label"])
        want = mlm + 0.5 * pair
        assert f"{objective[4:]}_loss" in m
    else:
        assert not any(k.startswith(("nsp", "sop")) for k in m)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_allclose(m["loss"], loss)
    assert "mlm_accuracy" in m


def test_pretraining_loss_clm_and_errors():
    logits = np.zeros((1, 4, 3), np.float32)
    batch = dict(input_ids=np.array([[0, 1, 2, 0]], np.int32), segment_ids=np.array([[1, 1, 1, 0]], np.int32))
    loss, m = pretraining_loss(logits, batch, objective="clm")
    np.testing.assert_allclose(loss, np.log(3), rtol=1e-6)
    assert m["loss"] == loss and m["lm_tokens"] == 2
    with pytest.raises(ValueError, match="'span'.*mlm_nsp"):
        pretraining_loss(logits, batch, objective="span")
