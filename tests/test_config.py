"""config.validate: the recipes in configs/ pass; mistakes are one ConfigError line naming the fix."""

import json

import jax
import numpy as np
import optax
import pytest

from conftest import load_config
from flaxlm import config as config_lib
from flaxlm import optimizer as optimizer_lib

PRETRAINING = [
    "bert_tiny",
    "bert_base",
    "bert_large",
    "albert_tiny",
    "albert_base",
    "spanbert_tiny",
    "electra_tiny",
    "electra_small",
    "roberta_base",
    "gpt_tiny",
    "prefix_lm_tiny",
    "gpt2_small",
    "gpt_1b",
    "t5_tiny",
    "t5_small",
]


def config_with(name="bert_tiny", **fields):
    c = load_config(name)
    for path, value in fields.items():
        *parents, key = path.split("__")
        node = c
        for p in parents:
            node = node[p]
        node[key] = value
    return c


@pytest.mark.parametrize("name", PRETRAINING)
def test_every_pretraining_recipe_is_valid(name):
    config_lib.validate(load_config(name))


def test_t5_tiny_iid_denoising_override_is_valid():
    """configs/t5_tiny.py's documented override: T5's BERT-style objective."""
    config_lib.validate(config_with("t5_tiny", objective="iid_denoising", data__builder="iid_denoising"))


@pytest.mark.parametrize(
    "fields",
    [
        dict(data__dupe_factor=10),  # BERT: segment pairs are drawn anew for each copy
        dict(objective="mlm_sop", data__builder="sop", data__dupe_factor=3),
        dict(objective="mlm", data__builder="full_sentences", data__masking="static", data__dupe_factor=5),
        dict(data__seq_len=512, model__max_len=512, data__mask_prob=0.15, data__max_predictions=80),  # BERT
    ],
)
def test_copies_that_differ_and_enough_predictions_are_valid(fields):
    config_lib.validate(config_with(**fields))


@pytest.mark.parametrize(
    "name, fields, message",
    [
        ("bert_tiny", dict(data__dupe_factor=0), "config.data.dupe_factor=0 must be >= 1"),
        (
            "bert_tiny",
            dict(objective="mlm", data__builder="full_sentences", data__dupe_factor=5),
            "config.data.dupe_factor=5 would make identical copies: builder 'full_sentences' has no "
            "randomness; set --config.data.dupe_factor=1, or set --config.data.masking=static",
        ),
        (
            "bert_tiny",
            dict(objective="mlm", data__builder="sentence_pair", data__dupe_factor=2),
            "builder 'sentence_pair' has no randomness",
        ),
        (
            "gpt_tiny",
            dict(data__dupe_factor=2),
            "builder 'causal' has no randomness; set --config.data.dupe_factor=1, "
            "or raise config.train.num_steps",
        ),
        (
            "bert_tiny",
            dict(data__seq_len=512, model__max_len=512, data__mask_prob=0.15, data__max_predictions=20),
            "config.data.max_predictions=20 caps the masked tokens below seq_len=512 x mask_prob=0.15 = 77 "
            "per sequence; set --config.data.max_predictions=77",
        ),
        (
            "bert_tiny",
            dict(data__nsp_negatives="nearby"),
            "config.data.nsp_negatives='nearby' is unknown; choose one of any, same_source, other_source",
        ),
        (
            "bert_tiny",
            dict(objective="mlm_sop", data__builder="sop", data__nsp_negatives="same_source"),
            "config.objective='mlm_sop' has no NSP; set config.objective='mlm_nsp' or drop it",
        ),
        (
            "bert_tiny",
            dict(model__share_layers="odd"),
            "config.model.share_layers='odd' is unknown; choose one of none, all, attention, ffn",
        ),
        ("bert_tiny", dict(model__embedding_size=-8), "config.model.embedding_size=-8 must be >= 0"),
        ("t5_tiny", dict(model__init="xavier"), "config.model.init='xavier' is unknown; choose 'normal'"),
        (
            "albert_tiny",
            dict(data__span=True),
            "config.data.ngram is exclusive with config.data.whole_word and config.data.span",
        ),
        ("albert_tiny", dict(data__max_ngram=0), "config.data.max_ngram=0 must be >= 1"),
        (
            "bert_tiny",
            dict(data__reader_workers=-2),
            "config.data.reader_workers=-2 must be >= 0 (grain worker processes making training batches; "
            "0: none)",
        ),
        ("bert_tiny", dict(data__reader_threads=-1), "config.data.reader_threads=-1 must be >= 0"),
        (
            "bert_tiny",
            dict(data__prepare_workers=-1),
            "config.data.prepare_workers=-1 must be >= 0 (Beam worker processes preparing the data; "
            "0: in this process)",
        ),
        (
            "bert_tiny",
            dict(data__tokenizer_sample_sentences=-1),
            "config.data.tokenizer_sample_sentences=-1 must be >= 0",
        ),
        (
            "bert_tiny",
            dict(objective="mlm_sbo"),
            "config.objective='mlm_sbo' predicts masked spans from their boundaries and needs span "
            "masking; set --config.data.span=True",
        ),
        (
            "gpt_tiny",
            dict(objective="mlm_sbo", data__span=True),
            "config.objective='mlm_sbo' does not fit config.model.arch='gpt'",
        ),
        (
            "gpt_tiny",
            dict(objective="prefix_lm"),
            "config.objective='prefix_lm' needs config.data.builder='prefix_lm', not 'causal'",
        ),
        (
            "t5_tiny",
            dict(objective="iid_denoising"),
            "config.objective='iid_denoising' needs config.data.builder='iid_denoising'",
        ),
        (
            "gpt_tiny",
            dict(objective="iid_denoising", data__builder="iid_denoising"),
            "config.objective='iid_denoising' does not fit config.model.arch='gpt'",
        ),
        (
            "gpt_tiny",
            dict(model__share_layers="all"),
            "config.model.embedding_size and config.model.share_layers (ALBERT) apply to arch 'bert' only",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_fix(name, fields, message):
    with pytest.raises(config_lib.ConfigError) as e:
        config_lib.validate(config_with(name, **fields))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_a_config_saved_before_a_field_existed_reads_with_its_default():
    saved = config_with("bert_tiny").to_dict()
    del saved["train"]["num_seeds"]  # config.json of a run written before num_seeds existed
    saved["data"]["mask_prob"] = 0.15
    c = config_lib.from_saved(json.loads(json.dumps(saved)))
    assert c.train.num_seeds == 1 and c.data.mask_prob == 0.15 and c.model.hidden_size == 128
    config_lib.validate(c)


def test_roberta_base_is_the_papers_recipe_and_its_adam_betas_reach_optax():
    c = load_config("roberta_base")
    assert (c.objective, c.data.builder, c.data.masking, c.data.mask_prob) == (
        "mlm",
        "full_sentences",
        "dynamic",
        0.15,
    )
    assert (c.model.vocab_size, c.model.max_len, c.model.position_offset, c.model.type_vocab_size) == (
        50265,
        512,
        2,
        1,
    )
    assert (c.model.pre_ln, c.model.activation, c.model.dropout_rate) == (False, "gelu", 0.1)
    assert c.train.batch_size == 8192 and c.train.batch_size // c.train.grad_accum_steps == 256
    assert (c.train.learning_rate, c.train.warmup_steps, c.train.num_steps) == (6e-4, 24_000, 500_000)
    assert (c.train.b2, c.train.eps, c.train.weight_decay) == (0.98, 1e-6, 0.01)
    # One AdamW step on a bias (no weight decay) at a constant rate: nu = (1 - b2) g^2, and the update
    # is -lr g / (|g| + eps) (bias-corrected first step), so a gradient of 1e-6 moves by lr / 2.
    lr = 1e-3
    tx = optimizer_lib.make_optimizer(c.train, optax.constant_schedule(lr))
    params = {"bias": np.zeros(3, np.float32)}
    grads = {"bias": np.array([1e-6, 1e-3, -2e-6], np.float32)}
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    is_adam = lambda x: isinstance(x, optax.ScaleByAdamState)
    (adam,) = [x for x in jax.tree.leaves(state, is_leaf=is_adam) if is_adam(x)]
    nu = adam.nu
    np.testing.assert_allclose(nu["bias"], 0.02 * grads["bias"] ** 2, rtol=1e-5)
    expected = -lr * grads["bias"] / (np.abs(grads["bias"]) + 1e-6)
    np.testing.assert_allclose(updates["bias"], expected, rtol=1e-4)
    np.testing.assert_allclose(updates["bias"][0], -lr / 2, rtol=1e-4)
