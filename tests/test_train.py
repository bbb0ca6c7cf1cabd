"""Training: mesh-jit vs pmap vs 1 device, gradient accumulation, the optimizer recipe, end to end."""

import jax
import numpy as np
import pytest

from conftest import load_config
from flaxlm import config as config_lib
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import train as train_lib
from flaxlm.data import pipeline


def tiny(name, data_dir, **train):
    c = load_config(name)
    c.model.update(
        num_layers=1,
        hidden_size=32,
        num_heads=2,
        mlp_dim=64,
        vocab_size=1000,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    c.data.update(data_dir=data_dir, seq_len=64, max_predictions=10, mask_prob=0.15)
    c.model.max_len = 64
    c.train.update(**{**dict(batch_size=16, num_steps=4, warmup_steps=1, learning_rate=1e-3), **train})
    return c


def run_steps(config, batches, devices=None, parallelism="mesh"):
    config.parallelism = parallelism
    model = models.get_model(train_lib.model_config(config))
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    tx = optimizer_lib.make_optimizer(config.train)
    runner = train_lib.Runner(config, model, tx, schedule, devices=devices)
    rng = jax.random.key(0)
    state = runner.init(model, tx, rng)
    history = []
    for batch in batches:
        state, metrics = runner.train_step(state, batch, rng)
        history.append(metrics)
    return [runner.metrics_to_host(m) for m in history], jax.device_get(runner.host_state(state).params)


def loss_atol(config) -> float:
    """1e-5, times ELECTRA's λ: its total is MLM + 50 x RTD, so float32 rounding of the same sums is 50x."""
    return 1e-5 * (config.rtd_weight if config.objective == "electra" else 1.0)


def losses(history):
    return np.array([m["loss"] for m in history])


def assert_params_close(a, b, atol=1e-5):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module", params=["bert_tiny", "gpt_tiny", "electra_tiny"])
def setup(request, data_dir):
    config = tiny(request.param, data_dir)
    data = train_lib.prepare_data(config)
    it = pipeline.train_iterator(data, global_batch=config.train.batch_size, seed=0)
    return config, pipeline.take(it, 4)


def test_eight_devices_mesh_pmap_and_one_device_agree(setup):
    config, batches = setup
    assert jax.device_count() == 8
    one, one_params = run_steps(config.copy_and_resolve_references(), batches, devices=jax.devices()[:1])
    mesh, mesh_params = run_steps(config.copy_and_resolve_references(), batches)
    pmap, pmap_params = run_steps(config.copy_and_resolve_references(), batches, parallelism="pmap")
    one_loss, mesh_loss, pmap_loss = losses(one), losses(mesh), losses(pmap)
    assert one_loss[-1] < one_loss[0]
    np.testing.assert_allclose(mesh_loss, one_loss, atol=loss_atol(config), rtol=0)
    np.testing.assert_allclose(pmap_loss, one_loss, atol=loss_atol(config), rtol=0)
    assert_params_close(mesh_params, one_params)
    assert_params_close(pmap_params, one_params)


def test_gradient_accumulation_matches_full_batch(setup):
    config, batches = setup
    full, full_params = run_steps(config.copy_and_resolve_references(), batches)
    c = config.copy_and_resolve_references()
    c.train.grad_accum_steps = 2
    acc, acc_params = run_steps(c, batches)
    np.testing.assert_allclose(losses(acc), losses(full), atol=loss_atol(config), rtol=0)
    assert_params_close(acc_params, full_params)


@pytest.mark.parametrize("name,chunk_size", [("gpt_tiny", 24), ("bert_tiny", 4)])
def test_chunked_loss_agrees_on_mesh_pmap_and_with_accumulation(name, chunk_size, data_dir):
    """train.loss_chunk_size over 8 devices (mesh and pmap) and with 2 microbatches: the same losses
    and parameters as the full logits on one device (GPT's causal LM; BERT's MLM + NSP, whose chunks
    also sum the output bias's gradient over the batch's shards)."""
    config = tiny(name, data_dir)
    config.train.loss_chunk_size = 0
    data = train_lib.prepare_data(config)
    batches = pipeline.take(pipeline.train_iterator(data, global_batch=config.train.batch_size, seed=0), 3)
    one, one_params = run_steps(config.copy_and_resolve_references(), batches, devices=jax.devices()[:1])
    chunked = config.copy_and_resolve_references()
    chunked.train.loss_chunk_size = chunk_size
    accum = chunked.copy_and_resolve_references()
    accum.train.grad_accum_steps = 2
    for c, parallelism in (
        (chunked, "mesh"),
        (chunked.copy_and_resolve_references(), "pmap"),
        (accum, "mesh"),
    ):
        history, params = run_steps(c, batches, parallelism=parallelism)
        np.testing.assert_allclose(losses(history), losses(one), atol=1e-5, rtol=0)
        assert_params_close(params, one_params)


def test_weight_decay_skips_layernorm_and_biases():
    params = {
        "dense": {"kernel": np.ones(2), "bias": np.ones(2)},
        "ln": {"scale": np.ones(2), "bias": np.ones(2)},
        "embed": {"embedding": np.ones(2)},
        "mlm_bias": np.ones(2),
    }
    mask = optimizer_lib.decay_mask(params)
    assert mask == {
        "dense": {"kernel": True, "bias": False},
        "ln": {"scale": False, "bias": False},
        "embed": {"embedding": True},
        "mlm_bias": False,
    }
    # Fine-tuning keys its trained parameters by "/"-joined path; LoRA factors are decayed.
    flat = {
        "params": {"bert/mlm_bias": 1.0, "bert/ln/scale": 1.0, "head/kernel": 1.0},
        "lora": {"q": {"a": 1.0}},
    }
    assert optimizer_lib.decay_mask(flat) == {
        "params": {"bert/mlm_bias": False, "bert/ln/scale": False, "head/kernel": True},
        "lora": {"q": {"a": True}},
    }


def test_bert_mlm_bias_gets_no_weight_decay():
    """A zero-gradient step of the real BERT parameters: only weight decay moves them."""
    config = load_config("bert_tiny")
    config.model.update(num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, vocab_size=100)
    config.train.update(warmup_steps=0, weight_decay=0.1, learning_rate=1.0)
    tx = optimizer_lib.make_optimizer(config.train)
    model = models.get_model(train_lib.model_config(config))
    params = train_lib.init_state(model, tx, config, jax.random.key(0)).params
    params = jax.tree.map(np.ones_like, params)
    updates, _ = tx.update(jax.tree.map(np.zeros_like, params), tx.init(params), params)
    moved = {jax.tree_util.keystr(p) for p, u in jax.tree_util.tree_leaves_with_path(updates) if np.any(u)}
    assert "['mlm_bias']" not in moved
    assert not any(p.endswith(("['bias']", "['scale']")) for p in moved), moved
    assert "['mlm_transform']['kernel']" in moved


def test_schedule_warms_up_then_decays_linearly():
    c = load_config("bert_tiny").train
    c.update(learning_rate=1e-3, warmup_steps=10, num_steps=110)
    s = optimizer_lib.learning_rate_schedule(c)
    np.testing.assert_allclose([s(0), s(5), s(10), s(60), s(110)], [0, 5e-4, 1e-3, 5e-4, 0], atol=1e-9)


def test_nsp_head_learns_real_pairs(data_dir):
    """The NSP path (pooler → pair head) gets gradients: the model memorises the labels of 32 real pairs.

    (On the full corpus a 2-layer model needs far more than a CPU test's steps to beat chance at NSP;
    this checks the mechanism, the end-to-end test checks the MLM curve.)
    """
    config = tiny("bert_tiny", data_dir, learning_rate=3e-3, warmup_steps=1, num_steps=150)
    config.model.update(hidden_size=64, mlp_dim=128)
    data = train_lib.prepare_data(config)
    batch = next(pipeline.train_iterator(data, global_batch=32, seed=0))
    config.train.batch_size = 32
    history, _ = run_steps(config, [batch] * 150, devices=jax.devices()[:1])
    first, last = history[0], history[-1]
    assert first["nsp_loss"] > 0.6
    assert last["nsp_loss"] < 0.2 and last["nsp_accuracy"] == 1.0, last


def test_resume_refuses_a_checkpoint_of_another_albert_or_roberta_layout():
    config = load_config("albert_tiny")
    saved = config.to_dict()
    train_lib.check_resume_config(saved, config)  # the same model
    for field, value in [("share_layers", "none"), ("embedding_size", 128), ("position_offset", 2)]:
        other = config.copy_and_resolve_references()
        other.model[field] = value
        with pytest.raises(config_lib.ConfigError, match=f"{field}: checkpoint"):
            train_lib.check_resume_config(saved, other)
    # A checkpoint written before these fields existed has none of them: nothing to compare.
    old = dict(saved, model={k: v for k, v in saved["model"].items() if k != "share_layers"})
    plain = config.copy_and_resolve_references()
    plain.model.share_layers = "none"
    train_lib.check_resume_config(old, plain)
