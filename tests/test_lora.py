"""Parameter-efficient tuning: LoRA merging, frozen bases, adapters, on tiny models and real snippets.

Compiling even a tiny model costs seconds on a CPU, so the module builds one
BERT, one adapter BERT and one LoRA and one adapter training run, and the
tests share them.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from conftest import REPO
from flaxlm import finetune, lora, models
from flaxlm.data import tokenizer as tokenizer_lib
from flaxlm.models import heads
from flaxlm.tasks import classification

VOCAB = REPO / "tests" / "testdata" / "bert_uncased_vocab.txt"
SNIPPETS = REPO / "tests" / "testdata" / "finetune" / "movie_snippets.txt"
SEQ = 32
LORA = ml_collections.ConfigDict(dict(rank=4, alpha=8.0, mlp=False))


def tiny_model_config(arch="bert", **overrides):
    """A 2-layer, 32-wide model over the real 30,522-piece uncased BERT vocabulary."""
    cfg = dict(
        arch=arch,
        vocab_size=30522,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        mlp_dim=64,
        max_len=SEQ,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    if arch == "gpt":
        cfg.update(type_vocab_size=0, pre_ln=True, activation="gelu_tanh", layer_norm_eps=1e-5)
    cfg.update(overrides)
    return cfg


def head_model(arch="bert", head="sequence", num_labels=2, **overrides):
    cfg = models.get_model(ml_collections.ConfigDict(tiny_model_config(arch, **overrides))).config
    return heads.get_head_model(arch, cfg, head, num_labels)


def fresh_params(model, seed=0, backbone=None):
    """A fresh init; `backbone` (e.g. another model's encoder) is grafted in as --init would be."""
    name = heads.BACKBONE[model.arch]
    return finetune.init_params(finetune.make_init(model, SEQ), jax.random.key(seed), backbone or {}, name)


def sentiment_task():
    cfg = ml_collections.ConfigDict(dict(max_seq_len=SEQ))
    return classification.ClassificationTask(cfg, {}, classification.SENTIMENT_LABELS)


@pytest.fixture(scope="module")
def data():
    """16 real snippets, WordPiece-encoded for BERT, and the task that scores them."""
    tok = tokenizer_lib.load_tokenizer(str(VOCAB))
    rows = classification.parse_movie_snippets(SNIPPETS.read_text(encoding="utf-8"))
    examples = classification.sentiment_examples(rows)[:16]
    task = sentiment_task()
    batch = {k: jnp.asarray(v) for k, v in task.encode(examples, tok, "bert").arrays.items()}
    return task, batch


@pytest.fixture(scope="module")
def bert():
    model = head_model()
    params, new = fresh_params(model)
    assert new  # nothing came from the (empty) pretrained tree
    return model, params


@pytest.fixture(scope="module")
def adapter_bert(bert):
    """The same BERT with adapters: its backbone grafted in, adapters fresh."""
    model = head_model(adapter_dim=8)
    params, new = fresh_params(model, seed=1, backbone=bert[1]["encoder"])
    assert new and all("_adapter/" in p for p in new)
    params["classifier"] = bert[1]["classifier"]  # the same head, so outputs compare
    return model, params


def train(model, params, method, task, batch, steps=4, lr=1e-2):
    """A few train steps of `method` on one real batch."""
    trainable, frozen, counts = finetune.split_params(
        params, method, "encoder", train_pooler=True, lora_cfg=LORA, rng=jax.random.key(5)
    )
    tx, schedule = finetune.make_optimizer(finetune.base_config().train, lr, steps)
    setup = finetune.Setup(model, task, LORA.alpha, LORA.rank)
    train_step, predict_step = finetune.make_steps(setup, tx, schedule)
    train_step = jax.jit(train_step)
    before = jax.tree.map(np.asarray, (trainable, frozen))
    state = finetune.new_state(trainable, tx)
    losses = []
    for _ in range(steps):
        state, metrics = train_step(state, frozen, batch, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return dict(
        setup=setup,
        state=state,
        frozen=frozen,
        before=before,
        counts=counts,
        losses=losses,
        predict=predict_step,
    )


@pytest.fixture(scope="module")
def lora_run(bert, data):
    return train(*bert, "lora", *data)


@pytest.fixture(scope="module")
def adapter_run(adapter_bert, data):
    return train(*adapter_bert, "adapter", *data)


def test_target_paths_cover_attention_and_optionally_mlp(bert):
    params = bert[1]
    paths = lora.target_paths(params)
    assert paths == sorted(
        f"encoder/block_{i}/attention/{p}/kernel" for i in range(2) for p in ("query", "key", "value", "out")
    )
    with_mlp = lora.target_paths(params, include_mlp=True)
    assert set(with_mlp) - set(paths) == {
        f"encoder/block_{i}/mlp/{p}/kernel" for i in range(2) for p in lora.MLP
    }


def test_merge_is_kernel_plus_scaled_product_and_identity_at_init(bert):
    params = bert[1]
    factors = lora.init(jax.random.key(1), params, lora.target_paths(params), rank=4)
    # B = 0 at init: merging changes nothing, bit for bit.
    merged = lora.merge(params, factors, alpha=8.0, rank=4)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, merged)))

    # With B != 0, an adapted Dense computes x W + (alpha/r) (x A) B: the unmerged LoRA forward.
    path = "encoder/block_0/attention/query/kernel"
    factors[path]["b"] = 0.1 * jax.random.normal(jax.random.key(2), factors[path]["b"].shape)
    merged = lora.merge(params, factors, alpha=8.0, rank=4)
    w = traverse_util.flatten_dict(params, sep="/")[path]
    w_merged = traverse_util.flatten_dict(merged, sep="/")[path]
    x = jax.random.normal(jax.random.key(3), (5, w.shape[0]))
    unmerged = x @ w + (8.0 / 4) * ((x @ factors[path]["a"]) @ factors[path]["b"])
    np.testing.assert_allclose(x @ w_merged, unmerged, rtol=1e-5, atol=1e-6)
    assert not np.allclose(x @ w_merged, x @ w, atol=1e-3)
    assert jnp.array_equal(traverse_util.flatten_dict(params, sep="/")[path], w)  # input untouched


@pytest.mark.parametrize("method", ["lora", "adapter"])
def test_frozen_base_stays_bitwise_unchanged(lora_run, adapter_run, method):
    out = lora_run if method == "lora" else adapter_run
    trainable_before, frozen_before = out["before"]
    # Frozen leaves are inputs of the step, never outputs: identical bits after training.
    assert set(out["frozen"]) == set(frozen_before)
    for path, value in out["frozen"].items():
        assert np.array_equal(np.asarray(value), frozen_before[path]), path
    assert "encoder/block_0/attention/query/kernel" in out["frozen"]
    assert "encoder/word_embeddings/embedding" in out["frozen"]
    # What is trained moved, and the optimizer keeps state for the trained leaves only.
    after = out["state"].trainable
    kernel = "classifier/kernel"
    assert not np.array_equal(np.asarray(after["params"][kernel]), trainable_before["params"][kernel])
    adam = out["state"].opt_state[1][0]
    assert jax.tree.structure(adam.mu) == jax.tree.structure(after)
    if method == "lora":
        assert float(jnp.abs(after["lora"]["encoder/block_1/attention/value/kernel"]["b"]).max()) > 0
        head = {"classifier/kernel", "classifier/bias", "encoder/pooler/kernel", "encoder/pooler/bias"}
        assert set(after["params"]) == head
    else:
        assert "encoder/block_0/attention_adapter/up/kernel" in after["params"]
        assert "encoder/block_1/mlp_norm/scale" in after["params"]
        assert "encoder/embeddings_norm/bias" in after["params"]
        assert not any("/attention/" in p or "/mlp/" in p for p in after["params"])
    assert out["losses"][-1] < out["losses"][0]  # it learns through the trained part alone


def test_merged_export_computes_exactly_what_was_trained(lora_run, data, tmp_path):
    """The LoRA model saved for export (merged, through msgpack) gives bitwise the training model's logits."""
    _, batch = data
    state, frozen, setup = lora_run["state"], lora_run["frozen"], lora_run["setup"]
    apply = jax.jit(lambda params: setup.apply(params, batch, train=False))
    logits_trained = apply(setup.full_params(state.trainable, frozen))
    merged = jax.device_get(setup.full_params(state.trainable, frozen))
    meta = {"model": tiny_model_config(), "head": "sequence", "num_labels": 2}
    finetune.save_finetuned(str(tmp_path), merged, meta)
    model, params, loaded_meta = finetune.load_finetuned(str(tmp_path))
    assert loaded_meta == meta and model == setup.model
    assert not any("lora" in "/".join(p) for p in traverse_util.flatten_dict(params))
    logits_export = apply(params)
    assert np.array_equal(np.asarray(logits_export), np.asarray(logits_trained))
    predicted = jax.jit(lora_run["predict"])(state.trainable, frozen, batch)
    assert np.array_equal(np.argmax(np.asarray(logits_export), -1), np.asarray(predicted))
    # LoRA did change the function: the base with the trained head gives other logits.
    logits_base = apply(setup.full_params({"params": state.trainable["params"], "lora": {}}, frozen))
    assert not np.allclose(np.asarray(logits_base), np.asarray(logits_trained), atol=1e-4)


def test_adapters_at_init_leave_outputs_nearly_unchanged(bert, adapter_bert, data):
    _, batch = data
    inputs = heads.apply_inputs(batch)
    plain = jax.jit(lambda p: bert[0].apply({"params": p}, *inputs, deterministic=True))
    adapted = jax.jit(lambda p: adapter_bert[0].apply({"params": p}, *inputs, deterministic=True))
    y0 = np.asarray(plain(bert[1]))
    y1 = np.asarray(adapted(adapter_bert[1]))
    assert 0 < np.abs(y1 - y0).max() < 1e-2 * np.abs(y0).max()
    # With `up` zeroed the adapters are exactly the identity.
    flat = traverse_util.flatten_dict(adapter_bert[1], sep="/")
    flat = {p: (jnp.zeros_like(v) if "_adapter/up/" in p else v) for p, v in flat.items()}
    assert np.array_equal(np.asarray(adapted(traverse_util.unflatten_dict(flat, sep="/"))), y0)


def test_trainable_parameters_by_method(adapter_bert):
    params = adapter_bert[1]
    lora_mlp = ml_collections.ConfigDict(dict(rank=4, alpha=8.0, mlp=True))
    counts = {}
    for method in finetune.METHODS:
        _, _, counts[method] = finetune.split_params(
            params, method, "encoder", train_pooler=False, lora_cfg=lora_mlp, rng=jax.random.key(0)
        )
    total = counts["full"]["total"]
    assert counts["full"]["trainable"] == total and counts["full"]["trainable_fraction"] == 1.0
    head = 32 * 2 + 2
    assert counts["head"]["trainable"] == head
    # 2 layers x (4 attention [32,4]+[4,32], fc_in [32,4]+[4,64], fc_out [64,4]+[4,32]), counted in the total.
    assert counts["lora"]["trainable"] == head + 2 * (4 * 256 + 384 + 384)
    assert counts["lora"]["total"] == total + 2 * (4 * 256 + 384 + 384)
    # adapters 2 x 2 x ([32,8]+8 + [8,32]+32) + LayerNorms (embeddings + 2 per layer) x 64
    assert counts["adapter"]["trainable"] == head + 4 * 552 + 5 * 64
