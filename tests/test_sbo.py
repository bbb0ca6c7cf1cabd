"""SpanBERT's span-boundary objective (objective "mlm_sbo"): the head against a numpy re-implementation
of the paper's formula, what it reads (gradients), its loss term, and a tiny CLI run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_same_loss_metrics_and_grads
from flaxlm import objectives
from flaxlm import train_step as step_lib
from flaxlm.models import get_model
from flaxlm.models.bert import SpanBoundaryHead

B, T, P, D, V = 2, 12, 5, 16, 50
MODEL = dict(arch="bert", vocab_size=V, hidden_size=D, num_layers=1, num_heads=2, mlp_dim=32, max_len=T)
MODEL.update(pair_head=False, dropout_rate=0.0, attention_dropout_rate=0.0)
# Row 0: spans 2..4 (boundaries 1, 5) and 8..8 (7, 9); row 1: one span 1..3 (0, 4), then padding of P.
MLM_POSITIONS = np.array([[2, 3, 4, 8, 0], [1, 2, 3, 0, 0]], np.int32)
SBO_LEFT = np.array([[1, 1, 1, 7, 0], [0, 0, 0, 0, 0]], np.int32)
SBO_RIGHT = np.array([[5, 5, 5, 9, 0], [4, 4, 4, 0, 0]], np.int32)
SBO_OFFSET = np.array([[0, 1, 2, 0, 0], [0, 1, 2, 0, 0]], np.int32)
WEIGHTS = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], np.float32)


def _inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, V, (B, T)).astype(np.int32)
    ids[np.arange(B)[:, None], MLM_POSITIONS] = 4  # [MASK]
    return (
        jnp.asarray(ids),
        jnp.zeros((B, T), jnp.int32),
        jnp.ones((B, T), jnp.int32),
        jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T)),
    )


def _init(model):
    """`model`'s params, initialised on the hand-built batch with its span-boundary fields."""
    return model.init(
        jax.random.key(0), *_inputs(), MLM_POSITIONS, SBO_LEFT, SBO_RIGHT, SBO_OFFSET, deterministic=True
    )["params"]


def _model_and_params(**fields):
    model = get_model(dict(MODEL, sbo_positions=P, **fields))
    params = _init(model)
    # Away from the init (zero biases, unit LayerNorm scales), so every parameter shows in the output.
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape, x.dtype), params)
    return model, params


def _np_layer_norm(x, p, eps=1e-12):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _np_sbo_logits(hidden, params):
    """The paper's formula, token by token: h0 = [x_{s-1}; x_{e+1}; p_{i-s+1}], h1 = LN(GeLU(W1 h0)),
    y = LN(GeLU(W2 h1)), then the tied vocabulary projection (word embeddings) plus the SBO bias."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    head, words = p["sbo_head"], p["encoder"]["word_embeddings"]["embedding"]
    out = np.zeros((B, P, V))
    for b in range(B):
        for j in range(P):
            h0 = np.concatenate(
                [
                    hidden[b, SBO_LEFT[b, j]],
                    hidden[b, SBO_RIGHT[b, j]],
                    head["sbo_position_embeddings"]["embedding"][SBO_OFFSET[b, j]],
                ]
            )
            h1 = _np_layer_norm(
                _np_gelu(h0 @ head["sbo_dense_1"]["kernel"] + head["sbo_dense_1"]["bias"]), head["sbo_norm_1"]
            )
            y = _np_layer_norm(
                _np_gelu(h1 @ head["sbo_dense_2"]["kernel"] + head["sbo_dense_2"]["bias"]), head["sbo_norm_2"]
            )
            out[b, j] = words @ y + p["sbo_bias"]
    return out


def test_sbo_head_is_the_papers_formula():
    model, params = _model_and_params()
    assert set(params["sbo_head"]) == {
        "sbo_position_embeddings",
        "sbo_dense_1",
        "sbo_norm_1",
        "sbo_dense_2",
        "sbo_norm_2",
    }
    assert params["sbo_head"]["sbo_dense_1"]["kernel"].shape == (3 * D, D)
    assert params["sbo_head"]["sbo_position_embeddings"]["embedding"].shape == (P, D)
    out = model.apply(
        {"params": params}, *_inputs(), MLM_POSITIONS, SBO_LEFT, SBO_RIGHT, SBO_OFFSET, deterministic=True
    )
    assert out["sbo_logits"].shape == out["mlm_logits"].shape == (B, P, V)
    want = _np_sbo_logits(np.asarray(out["hidden"], np.float64), params)
    np.testing.assert_allclose(np.asarray(out["sbo_logits"]), want, atol=1e-5, rtol=1e-5)
    # Without the SBO inputs (inference, scoring) the model gives what it gives without the head.
    no_sbo = model.apply({"params": params}, *_inputs(), MLM_POSITIONS, deterministic=True)
    assert "sbo_logits" not in no_sbo
    np.testing.assert_array_equal(no_sbo["mlm_logits"], out["mlm_logits"])


def test_no_sbo_head_without_sbo_positions():
    params = _init(get_model(MODEL))
    assert not [k for k in params if "sbo" in k]


def test_sbo_loss_reads_the_boundaries_not_the_span():
    """d(SBO loss)/d(encoder output) is nonzero at every span boundary and zero everywhere else,
    masked tokens included: the head predicts a span from what is just outside it."""
    model, params = _model_and_params()
    out = model.apply(
        {"params": params}, *_inputs(), MLM_POSITIONS, SBO_LEFT, SBO_RIGHT, SBO_OFFSET, deterministic=True
    )
    targets = jnp.asarray(np.random.default_rng(2).integers(5, V, (B, P)), jnp.int32)
    words = params["encoder"]["word_embeddings"]["embedding"]

    def sbo_loss(hidden_BTD):
        y_BPE = SpanBoundaryHead(model.config).apply(
            {"params": params["sbo_head"]}, hidden_BTD, SBO_LEFT, SBO_RIGHT, SBO_OFFSET
        )
        return objectives.mlm_loss(y_BPE @ words.T + params["sbo_bias"], targets, WEIGHTS, name="sbo")[0]

    hidden = out["hidden"]
    np.testing.assert_allclose(  # the same head as the model's
        sbo_loss(hidden), objectives.mlm_loss(out["sbo_logits"], targets, WEIGHTS)[0], rtol=1e-5
    )
    grad_norm_BT = np.linalg.norm(np.asarray(jax.grad(sbo_loss)(hidden)), axis=-1)
    boundary = np.zeros((B, T), bool)
    boundary[0, [1, 5, 7, 9]] = boundary[1, [0, 4]] = True
    assert (grad_norm_BT[boundary] > 1e-6).all()
    assert (grad_norm_BT[~boundary] == 0).all()  # e.g. masked row 0 / 3, and row 0 / 11 (neither)


def test_mlm_sbo_loss_is_mlm_plus_sbo_on_the_same_targets():
    rng = np.random.default_rng(3)
    outputs = {
        "mlm_logits": jnp.asarray(rng.normal(size=(B, P, V)), jnp.float32),
        "sbo_logits": jnp.asarray(rng.normal(size=(B, P, V)), jnp.float32),
    }
    batch = {"mlm_targets": jnp.asarray(rng.integers(5, V, (B, P)), jnp.int32), "mlm_weights": WEIGHTS}
    terms = objectives.loss_terms(outputs, batch, objective="mlm_sbo")
    assert [t.name for t in terms] == ["mlm", "sbo"] and float(terms[1].count) == WEIGHTS.sum()
    mlm, _ = objectives.mlm_loss(outputs["mlm_logits"], batch["mlm_targets"], WEIGHTS)
    sbo, _ = objectives.mlm_loss(outputs["sbo_logits"], batch["mlm_targets"], WEIGHTS)
    loss, m = objectives.pretraining_loss(outputs, batch, objective="mlm_sbo", pair_weight=0.3)
    np.testing.assert_allclose(loss, mlm + sbo, rtol=1e-6)  # summed as in the paper; pair_weight is NSP/SOP's
    assert {"sbo_loss", "sbo_accuracy", "mlm_loss"} <= set(m)
    assert objectives.has_sbo_head("mlm_sbo") and not objectives.has_pair_head("mlm_sbo")
    assert not any(objectives.has_sbo_head(o) for o in objectives.OBJECTIVES if o != "mlm_sbo")


def test_train_and_eval_steps_report_sbo_metrics():
    model, params = _model_and_params()
    batch = _batch(*_inputs())
    metrics, totals = jax.jit(step_lib.make_eval_step(model, objective="mlm_sbo"))(params, batch)
    assert float(totals["sbo"]) == float(totals["mlm"]) == WEIGHTS.sum()
    np.testing.assert_allclose(metrics["loss"], metrics["mlm_loss"] + metrics["sbo_loss"], rtol=1e-6)
    acc = step_lib.EvalAccumulator()
    acc.add(metrics, totals)
    result = acc.result()
    assert result["loss"] == pytest.approx(result["mlm_loss"] + result["sbo_loss"], rel=1e-6)
    assert 0.0 <= result["sbo_accuracy"] <= 1.0


def _batch(ids, types, seg, pos):
    targets = np.asarray(ids)[np.arange(B)[:, None], MLM_POSITIONS]
    return dict(
        input_ids=ids,
        token_type_ids=types,
        segment_ids=seg,
        positions=pos,
        mlm_positions=MLM_POSITIONS,
        mlm_targets=jnp.asarray(targets),
        mlm_weights=WEIGHTS,
        sbo_left=SBO_LEFT,
        sbo_right=SBO_RIGHT,
        sbo_offset=SBO_OFFSET,
    )


def test_chunked_mlm_and_sbo_losses_match_the_full_logits():
    """train.loss_chunk_size with the SBO head, on ALBERT's factorised embeddings (E 8 < D 16; BERT's
    E = D is tests/test_performance.py's): the same loss, metrics and gradients (both output biases
    included) as the full logits, with chunks that divide P and one that does not; the model returns
    no logits when chunked."""
    embedding_size = 8
    model, params = _model_and_params(embedding_size=embedding_size)
    batch = _batch(*_inputs())
    totals = step_lib.batch_totals(batch, "mlm_sbo")

    def loss(chunk_size):
        f = lambda p: step_lib.shard_loss(  # noqa: E731
            p,
            batch,
            None,
            totals,
            model=model,
            objective="mlm_sbo",
            pair_weight=1.0,
            train=False,
            loss_chunk_size=chunk_size,
        )
        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    want = loss(0)
    assert float(want[0][1]["sbo_loss"]) > 0 and np.abs(want[1]["sbo_bias"]).max() > 1e-4
    for chunk_size in (2, 5):
        assert_same_loss_metrics_and_grads(loss(chunk_size), want)
    out = step_lib.apply_model(model, params, batch, objective="mlm_sbo", train=False, loss_chunk_size=2)
    assert not {"mlm_logits", "sbo_logits"} & set(out)
    assert out["mlm_hidden"].shape == out["sbo_hidden"].shape == (B, P, embedding_size)


def test_hf_export_leaves_the_span_boundary_head_out(tmp_path):
    """HF BERT has no SBO head: the export is the encoder and its MLM head (BertForMaskedLM), as SpanBERT's
    releases; a re-import gives back exactly those params."""
    from flaxlm import hf

    _, params = _model_and_params()
    cfg = dict(MODEL, sbo_positions=P, pooler=True)
    hf.save_hf(str(tmp_path), cfg, params)
    cfg_back, params_back, _ = hf.load_hf(str(tmp_path))
    assert "sbo_head" not in params_back and "sbo_bias" not in params_back and not cfg_back["pair_head"]
    kept = {k: v for k, v in params.items() if k not in ("sbo_head", "sbo_bias")}
    assert jax.tree.structure(kept) == jax.tree.structure(params_back)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, kept, params_back)))
