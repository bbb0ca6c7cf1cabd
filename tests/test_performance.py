"""The speed features keep the numbers: attention implementations, bf16 mixed precision, donation,
and the MLM head on masked positions only. Real batches of the embedded corpus, tiny models."""

import warnings

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from flaxlm import models, objectives
from flaxlm.models import layers
from flaxlm import optimizer as optimizer_lib
from flaxlm import train as train_lib
from flaxlm import train_step as step_lib
from flaxlm.data import pipeline
from conftest import assert_same_loss_metrics_and_grads, load_config
from test_train import tiny


@pytest.fixture(scope="module", params=["bert_tiny", "gpt_tiny"])
def real(request, data_dir):
    """(config, 3 real batches of 8) of a tiny recipe, dropout off. The first batch has padding
    (BERT) or a document boundary inside a row (GPT), the cases attention masks exist for."""
    config = tiny(request.param, data_dir, batch_size=8)
    config.train.loss_chunk_size = 0  # the full logits: what the chunked loss is compared with
    data = train_lib.prepare_data(config)
    batches = pipeline.take(pipeline.train_iterator(data, global_batch=8, seed=0, num_threads=0), 40)
    seg = lambda b: b["segment_ids"]  # noqa: E731
    masked = [b for b in batches if (seg(b).max() > 1 if config.objective == "clm" else (seg(b) == 0).any())]
    return config, [masked[0]] + [b for b in batches if b is not masked[0]][:2]


def test_dot_product_attention_refuses_attention_dropout():
    from flaxlm import config as config_lib

    c = config_lib.base_config()
    c.model.attention = "dot_product"
    with pytest.raises(config_lib.ConfigError, match="attention_dropout_rate=0"):
        config_lib.validate(c)
    with pytest.raises(ValueError, match="attention_dropout_rate=0"):
        models.TransformerConfig(attention="dot_product")


def run(config, batches):
    """Per-step losses, the final state and the warnings of the product train step on one device."""
    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    runner = train_lib.Runner(
        config, model, tx, optimizer_lib.learning_rate_schedule(config.train), devices=jax.devices()[:1]
    )
    state = runner.init(model, tx, jax.random.key(0))
    donated = jax.tree.leaves(state)
    losses = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in batches:
            state, metrics = runner.train_step(state, batch, jax.random.key(1))
            losses.append(float(metrics["loss"]))
    return np.array(losses), state, donated, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def f32_run(real):
    return run(*real)


def test_dot_product_attention_matches_xla(real, f32_run):
    """attention="dot_product" (jax.nn.dot_product_attention) trains like the einsum attention,
    on real rows with padding (BERT) and packed documents (GPT): same losses, same parameters."""
    config, batches = real
    fused = config.copy_and_resolve_references()
    fused.model.attention = "dot_product"
    losses, state, _, _ = run(fused, batches)
    np.testing.assert_allclose(losses, f32_run[0], rtol=1e-6)
    expected = jax.tree.leaves(f32_run[1].params)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(state.params), expected):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))


def test_train_step_donates_the_state(f32_run):
    """The first step's input state is consumed (its buffers reused), without XLA's warning that
    donated buffers were not usable."""
    _, _, donated, caught = f32_run
    assert not [w for w in caught if "donat" in w], caught
    assert all(x.is_deleted() for x in donated)


def test_bf16_mixed_precision_is_finite_and_close_to_f32(real, f32_run):
    """bf16 compute keeps float32 parameters and optimizer state, and losses near float32's."""
    config, batches = real
    bf16 = config.copy_and_resolve_references()
    bf16.model.dtype = "bfloat16"
    losses, state, _, _ = run(bf16, batches)
    assert np.isfinite(losses).all()
    # bf16 keeps 8 bits of mantissa (~0.4% per rounding); the losses (~7) agree to ~1%.
    np.testing.assert_allclose(losses, f32_run[0], rtol=0.02)
    assert losses[-1] < losses[0]  # and it trains
    for tree in (state.params, state.opt_state):
        dtypes = {x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}
        assert dtypes == {jnp.dtype(jnp.float32)}


def test_mlm_head_runs_on_masked_positions_only(real):
    """No [B, T, V] array exists anywhere in BERT's train step: the vocabulary projection sees
    [B, P, V] (P = max_predictions), GPT's sees every position."""
    config, batches = real
    B, T, V = 8, config.data.seq_len, config.model.vocab_size
    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    state = train_lib.init_state(model, tx, config, jax.random.key(0))
    step = step_lib.make_train_step(
        model, tx, optimizer_lib.learning_rate_schedule(config.train), objective=config.objective
    )
    jaxpr = jax.make_jaxpr(step)(state, batches[0], jax.random.key(1))
    shapes = set()

    def collect(jaxpr):
        for eqn in jaxpr.eqns:
            shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                collect(sub)

    collect(jaxpr.jaxpr)
    if config.objective == "clm":
        assert (B, T, V) in shapes
    else:
        assert (B, config.data.max_predictions, V) in shapes
        assert (B, T, V) not in shapes


def chunked(config, chunk_size: int):
    c = config.copy_and_resolve_references()
    c.train.loss_chunk_size = chunk_size
    return c


# Chunk sizes that divide the scored positions and one that does not: GPT's T = 64, BERT's P = 10.
CHUNKS = {"clm": (16, 24), "mlm_nsp": (5, 4)}


def test_chunked_loss_matches_full_logits_in_the_model(real):
    """train.loss_chunk_size on a tiny GPT (real rows with a document boundary) and BERT (MLM + NSP,
    padding): shard_loss gives the same loss, metrics and gradients as the full logits, for chunks
    that divide the positions and one that does not, with dropout on (the same masks: the chunked
    loss changes nothing before the head)."""
    config, batches = real
    c = config.copy_and_resolve_references()
    c.model.dropout_rate = 0.1
    model = models.get_model(train_lib.model_config(c))
    tx = optimizer_lib.make_optimizer(c.train)
    params = train_lib.init_state(model, tx, c, jax.random.key(0)).params
    # Away from the init (zero output bias), so the bias's gradient shows.
    keys = iter(jax.random.split(jax.random.key(3), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda x: x + 0.02 * jax.random.normal(next(keys), x.shape, x.dtype), params)
    batch = batches[0]
    totals = step_lib.batch_totals(batch, c.objective)

    def loss(chunk_size):
        f = lambda p: step_lib.shard_loss(  # noqa: E731
            p,
            batch,
            jax.random.key(2),
            totals,
            model=model,
            objective=c.objective,
            pair_weight=1.0,
            train=True,
            loss_chunk_size=chunk_size,
        )
        return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

    want = loss(0)
    for chunk_size in CHUNKS[c.objective]:
        assert_same_loss_metrics_and_grads(loss(chunk_size), want)


def test_chunked_loss_trains_like_full_logits_and_never_holds_them(real, f32_run):
    """The product train step with train.loss_chunk_size: the same losses and parameters, and no
    [B, T, V] (GPT) or [B, P, V] (BERT) array in the step (the head sees [B, C, V]); bf16 stays near
    bf16's full logits."""
    config, batches = real
    chunk = CHUNKS[config.objective][1]
    losses, state, _, _ = run(chunked(config, chunk), batches)
    np.testing.assert_allclose(losses, f32_run[0], rtol=1e-6)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(state.params), jax.tree.leaves(f32_run[1].params)
    ):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))

    c = chunked(config, chunk)
    model = models.get_model(train_lib.model_config(c))
    tx = optimizer_lib.make_optimizer(c.train)
    step = step_lib.make_train_step(
        model,
        tx,
        optimizer_lib.learning_rate_schedule(c.train),
        objective=c.objective,
        loss_chunk_size=chunk,
    )
    state = train_lib.init_state(model, tx, c, jax.random.key(0))
    shapes = jaxpr_shapes(jax.make_jaxpr(step)(state, batches[0], jax.random.key(1)).jaxpr)
    B, V = 8, c.model.vocab_size
    positions = c.data.seq_len if c.objective == "clm" else c.data.max_predictions
    # Equal chunks of at most `chunk` positions: GPT's 64 in 3 of 22, BERT's 10 in 3 of 4 (2 padding).
    K, C = objectives.chunk_shape(positions, chunk)
    assert (K, C) == {"clm": (3, 22), "mlm_nsp": (3, 4)}[c.objective]
    assert (B, positions, V) not in shapes and (B, C, V) in shapes

    bf16, bf16_chunked = config.copy_and_resolve_references(), chunked(config, chunk)
    bf16.model.dtype = bf16_chunked.model.dtype = "bfloat16"
    np.testing.assert_allclose(run(bf16_chunked, batches)[0], run(bf16, batches)[0], rtol=2e-3)


def test_loss_chunk_size_is_checked():
    from flaxlm import config as config_lib

    for name in ("bert_tiny", "spanbert_tiny", "albert_tiny", "gpt_tiny", "prefix_lm_tiny"):
        c = load_config(name)
        c.train.loss_chunk_size = 128
        config_lib.validate(c)
    for name, objective in (("electra_tiny", "electra"), ("t5_tiny", "span_corruption")):
        c = load_config(name)
        c.train.loss_chunk_size = 128
        with pytest.raises(
            config_lib.ConfigError,
            match="loss_chunk_size=128 chunks the causal-LM loss of arch 'gpt' and BERT's MLM and SBO "
            f"losses only: set it to 0 for objective '{objective}'",
        ):
            config_lib.validate(c)
    c = config_lib.base_config()
    c.train.loss_chunk_size = -1
    with pytest.raises(config_lib.ConfigError, match="loss_chunk_size=-1 must be >= 0"):
        config_lib.validate(c)


def jaxpr_shapes(jaxpr) -> set:
    """The shapes of every value a jaxpr (and the jaxprs inside it) computes."""
    shapes = set()
    for eqn in jaxpr.eqns:
        shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            shapes |= jaxpr_shapes(sub)
    return shapes


def test_dropout_drops_at_the_rate_and_keeps_the_mean():
    x = jnp.ones((256, 1000), jnp.float32)
    y = np.asarray(layers.dropout(x, 0.1, jax.random.key(0)))
    assert set(np.unique(y)) == {0.0, np.float32(1 / (1 - 6554 / 65536))}  # 0.1 rounded to 6554/65536
    assert abs((y == 0).mean() - 0.1) < 0.003  # 256k draws: 3 sigma is 0.0018
    assert abs(y.mean() - 1.0) < 0.005
    z = np.asarray(layers.dropout(x, 0.1, jax.random.key(1)))
    assert not np.array_equal(y, z)  # another key, another mask
    odd = np.asarray(layers.dropout(jnp.ones((40000, 7)), 0.1, jax.random.key(0)))  # one draw each
    assert abs((odd == 0).mean() - 0.1) < 0.003
    np.testing.assert_array_equal(layers.Dropout(0.1).apply({}, x, deterministic=True), x)
