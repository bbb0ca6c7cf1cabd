"""Sharding rules on the real BERT/GPT parameter trees, and data / fsdp / tensor / mixed meshes on 8
devices giving the loss and parameters of 1 device."""

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from conftest import load_config
from flaxlm import errors
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import parallel
from flaxlm import sharding
from flaxlm import train as train_lib
from flaxlm.data import pipeline
from test_train import assert_params_close, losses, tiny

CATCH_ALL = len(sharding.DEFAULT_RULES) - 1


def abstract_state(config):
    model = models.get_model(train_lib.model_config(config))
    tx = optimizer_lib.make_optimizer(config.train)
    return jax.eval_shape(lambda r: train_lib.init_state(model, tx, config, r), jax.random.key(0))


def mesh_of(data, fsdp, tensor):
    return Mesh(
        np.array(jax.devices()[: data * fsdp * tensor]).reshape(data, fsdp, tensor), parallel.MESH_AXES
    )


# What the rules must give each kind of parameter (block_3's stand for all blocks).
BLOCK = {
    "block_3/attention/query/kernel": ("fsdp", "tensor"),
    "block_3/attention/key/bias": ("tensor",),
    "block_3/attention/value/kernel": ("fsdp", "tensor"),
    "block_3/attention/out/kernel": ("tensor", "fsdp"),
    "block_3/attention/out/bias": (),
    "block_3/attention_norm/bias": (),
    "block_3/mlp/fc_in/kernel": ("fsdp", "tensor"),
    "block_3/mlp/fc_in/bias": ("tensor",),
    "block_3/mlp/fc_out/kernel": ("tensor", "fsdp"),
    "block_3/mlp/fc_out/bias": (),
    "block_3/mlp_norm/scale": (),
    "word_embeddings/embedding": ("tensor", None),
    "position_embeddings/embedding": (),
}
EXPECTED = {
    "bert_base": {
        **{f"encoder/{k}": v for k, v in BLOCK.items()},
        "encoder/token_type_embeddings/embedding": (),
        "encoder/embeddings_norm/scale": (),
        "encoder/pooler/kernel": ("fsdp", None),
        "mlm_transform/kernel": ("fsdp", None),
        "mlm_norm/bias": (),
        "mlm_bias": ("tensor",),
        "pair_head/kernel": (),
    },
    "gpt2_small": {**BLOCK, "final_norm/scale": ()},
}
# ALBERT: the one block every layer shares, and the factorised embeddings' E -> D projection.
EXPECTED["albert_base"] = {
    **{k.replace("block_3", "shared_block"): v for k, v in EXPECTED["bert_base"].items()},
    "encoder/embedding_projection/kernel": (None, "fsdp"),
    "encoder/embedding_projection/bias": (),
}
# Partial sharing (ALBERT's ablations): the shared sublayer beside each block's own.
EXPECTED["albert_base:attention"] = {
    "encoder/shared_attention/query/kernel": ("fsdp", "tensor"),
    "encoder/shared_attention/out/kernel": ("tensor", "fsdp"),
    "encoder/shared_attention_norm/scale": (),
    "encoder/block_3/mlp/fc_in/kernel": ("fsdp", "tensor"),
}
EXPECTED["albert_base:ffn"] = {
    "encoder/shared_mlp/fc_in/kernel": ("fsdp", "tensor"),
    "encoder/shared_mlp/fc_out/kernel": ("tensor", "fsdp"),
    "encoder/shared_mlp_norm/bias": (),
    "encoder/block_3/attention/value/kernel": ("fsdp", "tensor"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_rules_name_every_parameter_of_the_real_models(name):
    recipe, _, share = name.partition(":")
    config = load_config(recipe)
    if share:
        config.model.share_layers = share
    params = abstract_state(config).params
    rows = sharding.explain(params, sharding.DEFAULT_RULES)
    assert len(rows) == len(jax.tree.leaves(params))
    caught = [path for path, _, regex, _ in rows if regex == sharding.DEFAULT_RULES[CATCH_ALL][0]]
    assert not caught, f"left to the catch-all rule: {caught}"
    got = {path: spec for path, _, _, spec in rows}
    for path, spec in EXPECTED[name].items():
        assert got[path] == spec, path
    # Every matrix of the blocks is split over fsdp (ZeRO-3); all that stays whole is small.
    for path, shape, _, spec in rows:
        if len(shape) == 2 and ("block_" in path or "/shared_" in path):
            assert "fsdp" in spec, path


def test_optimizer_state_follows_the_parameters_and_bytes_split():
    state = abstract_state(load_config("bert_base"))
    mesh = mesh_of(2, 2, 2)
    shardings = sharding.state_shardings(state, state.params, mesh, sharding.DEFAULT_RULES)
    params_q = shardings.params["encoder"]["block_0"]["attention"]["query"]["kernel"]
    assert params_q.spec == P("fsdp", "tensor")
    adam = shardings.opt_state[1][0]
    for moment in (adam.mu, adam.nu):
        assert moment["encoder"]["block_0"]["attention"]["query"]["kernel"] == params_q
        assert moment["encoder"]["word_embeddings"]["embedding"].spec == P("tensor", None)
    assert adam.count.spec == P() and shardings.step.spec == P()
    # Each leaf's bytes divided by the sizes of the mesh axes its spec names; fsdp x tensor = 4
    # splits the blocks 4 ways, so a device holds under a third of the 440 MB of weights.
    whole = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, P()), state.params)
    full = sharding.bytes_per_device(state.params, whole)
    split = sharding.bytes_per_device(state.params, shardings.params)
    assert full == 4 * sum(x.size for x in jax.tree.leaves(state.params))
    expected = 0
    for x, s in zip(jax.tree.leaves(state.params), jax.tree.leaves(shardings.params)):
        ways = np.prod([mesh.shape[a] for e in s.spec if e for a in ((e,) if isinstance(e, str) else e)])
        expected += 4 * x.size // ways
    assert split == expected < full / 3


def test_bytes_per_device_counts_shards():
    mesh = mesh_of(2, 2, 2)
    tree = {"w": jax.ShapeDtypeStruct((8, 6), np.float32)}
    shard = {"w": jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), "tensor"))}
    assert sharding.bytes_per_device(tree, shard) == 2 * 3 * 4


@pytest.mark.parametrize(
    "name, mesh, message",
    [
        (
            "bert_base",
            (1, 1, 8),
            "parameter encoder/word_embeddings/embedding of shape (30522, 768) "
            "(rule 'word_embeddings/embedding$' -> ('tensor', None)): dim 0 (30522) is not divisible "
            "by mesh axis 'tensor' (size 8)",
        ),
        (
            "gpt2_small",
            (1, 2, 2),
            "parameter word_embeddings/embedding of shape (50257, 768) "
            "(rule 'word_embeddings/embedding$' -> ('tensor', None)): dim 0 (50257) is not divisible "
            "by mesh axis 'tensor' (size 2)",
        ),
    ],
)
def test_a_dim_the_mesh_does_not_divide_names_param_shape_and_axis(name, mesh, message):
    state = abstract_state(load_config(name))
    with pytest.raises(errors.ConfigError) as e:
        sharding.state_shardings(state, state.params, mesh_of(*mesh), sharding.DEFAULT_RULES)
    assert message in str(e.value)
    assert "choose config.mesh sizes that divide" in str(e.value)
    # The same models on an fsdp mesh (D = 768 splits 8 ways) are fine.
    sharding.state_shardings(state, state.params, mesh_of(1, 8, 1), sharding.DEFAULT_RULES)


def test_bad_rules_are_config_errors():
    state = abstract_state(load_config("bert_tiny"))
    mesh = mesh_of(2, 2, 2)
    with pytest.raises(errors.ConfigError, match="unknown mesh axis 'model'"):
        sharding.state_shardings(state, state.params, mesh, ((r"kernel$", (None, "model")), (".*", ())))
    with pytest.raises(errors.ConfigError, match="more entries than the array has dims"):
        sharding.state_shardings(state, state.params, mesh, ((r"bias$", ("fsdp", None)), (".*", ())))
    with pytest.raises(errors.ConfigError, match="no entry of config.sharding.rules matches"):
        sharding.state_shardings(state, state.params, mesh, ((r"kernel$", ()),))


def make_runner(config, mesh_shape=None, devices=None):
    if mesh_shape is not None:
        config.mesh.update(data=mesh_shape[0], fsdp=mesh_shape[1], tensor=mesh_shape[2])
    model = models.get_model(train_lib.model_config(config))
    schedule = optimizer_lib.learning_rate_schedule(config.train)
    tx = optimizer_lib.make_optimizer(config.train)
    return train_lib.Runner(config, model, tx, schedule, devices=devices), model, tx


def run(runner, state, batches):
    """Train steps from `state`; returns (metrics per step, the final state)."""
    history = []
    for batch in batches:
        state, metrics = runner.train_step(state, batch, jax.random.key(0))
        history.append(metrics)
    return [runner.metrics_to_host(m) for m in history], state


@pytest.fixture(scope="module", params=["bert_tiny", "gpt_tiny"])
def reference(request, data_dir):
    """A tiny model with 4 heads (so tensor=4 splits whole heads), dropout on, 3 real batches, 1 device."""
    config = tiny(request.param, data_dir)
    config.model.update(num_heads=4, dropout_rate=0.1, attention_dropout_rate=0.1)
    data = train_lib.prepare_data(config)
    batches = pipeline.take(pipeline.train_iterator(data, global_batch=config.train.batch_size, seed=0), 3)
    runner, model, tx = make_runner(config.copy_and_resolve_references(), devices=jax.devices()[:1])
    init = jax.device_get(runner.init(model, tx, jax.random.key(0)))
    history, state = run(runner, jax.device_put(init), batches)
    return config, batches, init, history, jax.device_get(state.params)


# Data-only (8, 1, 1) is tests/test_train.py's mesh case (config.mesh.data=-1 on 8 devices).
@pytest.mark.parametrize("mesh", [(1, 8, 1), (2, 1, 4), (2, 2, 2)], ids=str)
def test_meshes_give_the_loss_and_parameters_of_one_device(reference, mesh):
    config, batches, init, one, one_params = reference
    runner, model, tx = make_runner(config.copy_and_resolve_references(), mesh)
    if mesh == (2, 2, 2):  # built sharded, each device computing only its shards, to the same values
        state = runner.init(model, tx, jax.random.key(0))
        assert_params_close(jax.device_get(state.params), init.params, atol=0)
    else:  # (one init compile is enough: place the 1-device init on the mesh)
        state = jax.device_put(init, runner.state_sharding)
    history, state = run(runner, state, batches)
    assert losses(one)[-1] < losses(one)[0]
    np.testing.assert_allclose(losses(history), losses(one), atol=1e-5, rtol=0)
    assert_params_close(jax.device_get(state.params), one_params)
    # The state really is laid out by the rules: a q kernel [32, 32] and Adam's mu for it.
    blocks = state.params["encoder"] if "encoder" in state.params else state.params
    q = blocks["block_0"]["attention"]["query"]["kernel"]
    assert q.sharding.spec == P("fsdp", "tensor")
    assert q.addressable_shards[0].data.shape == (32 // mesh[1], 32 // mesh[2])
    mu = state.opt_state[1][0].mu
    mu_q = (mu["encoder"] if "encoder" in mu else mu)["block_0"]["attention"]["query"]["kernel"]
    assert mu_q.sharding == q.sharding
