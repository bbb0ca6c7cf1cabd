"""Prompt tuning and prefix tuning: the model mechanism on BERT, GPT and T5, the finetune methods.

Model-level checks run tiny random models (vocabulary 64): off means unchanged, masks (padding,
other rows, causality), the prompt/prefix reach every real token, cached decoding with prefixes.
The method-level checks reuse tests/test_lora.py's tiny BERT on real snippets, and one CLI run
fine-tunes the tiny pretrained workdir of tests/test_finetune.py.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from flaxlm import finetune
from flaxlm.models import BertEncoder, GPTDecoder, TransformerConfig, t5
from test_finetune import pretrained_workdir, sentiment_files  # noqa: F401 (fixtures)
from test_cli import flaxlm
from test_lora import data, fresh_params, head_model, train  # noqa: F401 (data is a fixture)

V, T, P = 64, 8, 3
BASE = dict(vocab_size=V, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, max_len=T)
BERT = TransformerConfig(**BASE, dropout_rate=0.0, attention_dropout_rate=0.0)
GPT = TransformerConfig(
    **BASE,
    type_vocab_size=0,
    pre_ln=True,
    activation="gelu_tanh",
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
)
T5 = t5.t5_config(**BASE, head_dim=8, dropout_rate=0.0)


def inputs(seed=0, lengths=(T, 5)):
    """Right-padded rows of the given lengths: (ids, segment ids, positions)."""
    ids = np.random.default_rng(seed).integers(1, V, (len(lengths), T)).astype(np.int32)
    seg = (np.arange(T)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return ids, seg, np.broadcast_to(np.arange(T, dtype=np.int32), ids.shape) * seg


def run(arch, cfg, ids, seg, pos, params=None):
    """(params, real tokens' outputs): BERT hidden_BTD, GPT logits_BTV, T5 logits_BTV (decoder = inputs)."""
    if arch == "bert":
        model, args = BertEncoder(cfg), (ids, np.zeros_like(ids), seg, pos)
    elif arch == "gpt":
        model, args = GPTDecoder(cfg), (ids, seg, pos)
    else:
        model, args = t5.T5ForConditionalGeneration(cfg), (ids, seg, pos, ids, seg, pos)
    params = params or model.init(jax.random.key(0), *args, deterministic=True)["params"]
    out = model.apply({"params": params}, *args, deterministic=True)
    return params, np.asarray(out[0] if arch == "bert" else out)


MODELS = {"bert": BERT, "gpt": GPT, "t5": T5}
KINDS = {"prompt": dict(prompt_length=P), "prefix": dict(prefix_length=P)}
CASES = [(a, k) for a in MODELS for k in KINDS]


def new_paths(arch, kind):
    """The flat parameter paths `kind` adds to `arch`'s tree."""
    base, _ = run(arch, MODELS[arch], *inputs())
    tuned, _ = run(arch, dataclasses.replace(MODELS[arch], **KINDS[kind]), *inputs())
    base, tuned = (traverse_util.flatten_dict(p, sep="/") for p in (base, tuned))
    assert set(base) <= set(tuned)
    return base, tuned, sorted(set(tuned) - set(base))


@pytest.mark.parametrize("arch", list(MODELS))
def test_off_is_the_original_model_bitwise(arch):
    cfg = MODELS[arch]
    params, out = run(arch, cfg, *inputs())
    params_off, out_off = run(arch, dataclasses.replace(cfg, prompt_length=0, prefix_length=0), *inputs())
    assert jax.tree.structure(params) == jax.tree.structure(params_off)
    np.testing.assert_array_equal(out, out_off)


@pytest.mark.parametrize("arch,kind", CASES)
def test_only_prompt_or_prefix_params_are_added_with_their_sizes(arch, kind):
    _, tuned, added = new_paths(arch, kind)
    d, layers_ = BASE["hidden_size"], BASE["num_layers"] * (2 if arch == "t5" else 1)  # T5: both stacks
    if kind == "prompt":
        assert added == ["soft_prompt/embedding"]
        assert tuned[added[0]].shape == (P, d)
    else:
        assert len(added) == 2 * layers_ and all(p.split("/")[-1] in finetune.PROMPT_PARAMS for p in added)
        assert all("cross_attention" not in p for p in added)
        assert sum(tuned[p].size for p in added) == layers_ * 2 * P * d


@pytest.mark.parametrize("arch,kind", CASES)
def test_every_real_token_sees_it_padding_and_other_rows_do_not_leak(arch, kind):
    cfg = dataclasses.replace(MODELS[arch], **KINDS[kind])
    ids, seg, pos = inputs()
    params, out = run(arch, cfg, ids, seg, pos)
    real = seg.astype(bool)

    # Other padding ids, and another first row: row 1's real outputs stay bitwise.
    ids2 = np.where(real, ids, (ids + 7) % V)
    ids2[0] = (ids[0] + 3) % V
    _, out2 = run(arch, cfg, ids2, seg, pos, params)
    np.testing.assert_allclose(out2[1][real[1]], out[1][real[1]], atol=1e-6)
    # Alone, row 1 gives what it gives in the batch.
    _, alone = run(arch, cfg, ids[1:], seg[1:], pos[1:], params)
    np.testing.assert_allclose(alone[0][real[1]], out[1][real[1]], atol=1e-6)

    # Changing the prompt / prefix moves every real token's output (GPT's first token included).
    flat = traverse_util.flatten_dict(params, sep="/")
    moved = {
        p: v + 0.5 * jax.random.normal(jax.random.key(1), v.shape)
        for p, v in flat.items()
        if any(s in finetune.PROMPT_PARAMS for s in p.split("/"))
    }
    _, out3 = run(arch, cfg, ids, seg, pos, traverse_util.unflatten_dict({**flat, **moved}, sep="/"))
    change = np.abs(out3 - out).max(axis=-1)
    assert (change[real] > 1e-6).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_gpt_stays_causal_and_positions_unshifted(kind):
    cfg = dataclasses.replace(GPT, **KINDS[kind])
    ids, seg, pos = inputs(lengths=(T, T))
    params, out = run("gpt", cfg, ids, seg, pos)
    later = ids.copy()
    later[:, 5:] = (later[:, 5:] + 1) % V
    _, out2 = run("gpt", cfg, later, seg, pos, params)
    np.testing.assert_allclose(out2[:, :5], out[:, :5], atol=1e-6)
    assert (np.abs(out2[:, 5:] - out[:, 5:]).max(axis=-1) > 1e-6).all()


def test_prompt_segment_is_the_rows_first_document():
    """Left padding (decode-style rows) and packed rows: the prompt joins the first real document."""
    from flaxlm.models import layers

    x = jnp.zeros((2, 4, 1))
    _, seg = layers.prepend_prompt(jnp.ones((2, 1)), x, jnp.asarray([[0, 0, 1, 1], [1, 1, 2, 2]]))
    np.testing.assert_array_equal(seg, [[1, 1, 0, 0, 1, 1], [1, 1, 1, 1, 2, 2]])


def test_t5_cached_decoding_with_prefixes_equals_full_decoding():
    """What seq2seq generation calls: encode (with a prompt) once, decode token by token with prefixes."""
    cfg = dataclasses.replace(T5, prompt_length=P, prefix_length=P)
    model = t5.T5ForConditionalGeneration(cfg)
    enc, enc_seg, enc_pos = inputs(lengths=(T, 6))
    dec, dec_seg, dec_pos = inputs(seed=1, lengths=(5, 5))
    dec, dec_seg, dec_pos = dec[:, :5], dec_seg[:, :5], dec_pos[:, :5]
    args = (enc, enc_seg, enc_pos, dec, dec_seg, dec_pos)
    params = model.init(jax.random.key(0), *args, deterministic=True)
    full = model.apply(params, *args, deterministic=True)

    decoder = t5.T5ForConditionalGeneration(dataclasses.replace(cfg, decode=True))
    encoded = decoder.apply(params, enc, enc_seg, enc_pos, deterministic=True, method="encode")
    assert encoded.shape[1] == T  # the real tokens' states only
    cache = jax.tree.map(jnp.zeros_like, decoder.init(jax.random.key(0), *args, deterministic=True)["cache"])
    steps = []
    for i in range(dec.shape[1]):
        logits, mutated = decoder.apply(
            {**params, "cache": cache},
            encoded,
            enc_seg,
            *(a[:, i : i + 1] for a in (dec, dec_seg, dec_pos)),
            deterministic=True,
            method="decode",
            mutable=["cache"],
        )
        cache = mutated["cache"]
        steps.append(logits)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_gpt_cached_decoding_with_a_prompt_equals_recomputing():
    """The soft prompt fills the first P cache slots at the prefill; single-token steps attend to it.

    Left-padded rows of different lengths: cached greedy decoding gives the tokens and logits of
    recomputing the padded batch at every step, and of each row alone, right-padded, as training
    lays it out (prompt, then positions from 0). Beam search (1 beam) gives the same tokens.
    """
    from flaxlm import beam_search, generate

    cfg = dataclasses.replace(GPT, prompt_length=P, max_len=16)
    prompts = [[5, 9, 2, 7, 11], [3], [8, 1, 4]]
    n = 6
    model = GPTDecoder(cfg)
    params = model.init(jax.random.key(0), *inputs(), deterministic=True)["params"]
    kwargs = dict(max_new_tokens=n, eos_id=None, return_logits=True)
    cached = generate.generate(model, params, prompts, **kwargs)
    full = generate.generate(model, params, prompts, use_cache=False, **kwargs)
    np.testing.assert_array_equal(cached.tokens, full.tokens)
    np.testing.assert_allclose(cached.logits, full.logits, atol=1e-5)
    for b, prompt in enumerate(prompts):
        ids = np.asarray([prompt + cached.tokens[b, : n - 1].tolist()], np.int32)
        _, alone = run("gpt", cfg, ids, np.ones_like(ids), np.arange(ids.shape[1])[None], params)
        np.testing.assert_allclose(alone[0, len(prompt) - 1 :], cached.logits[b], atol=1e-5)
    beams = beam_search.beam_search(model, params, prompts, num_beams=1, max_new_tokens=n, eos_id=None)
    np.testing.assert_array_equal(beams.tokens[:, 0], cached.tokens)

    # The prompt is in the cache: another soft prompt changes the first and the later steps.
    other = {**params, "soft_prompt": {"embedding": params["soft_prompt"]["embedding"][::-1] + 0.5}}
    moved = generate.generate(model, other, prompts, **kwargs)
    assert (np.abs(moved.logits - cached.logits).max(axis=-1) > 1e-4).all()

    # Decode calls with a prompt say whether they are the prefill.
    decoder = GPTDecoder(dataclasses.replace(cfg, decode=True))
    cache = generate.init_cache(cfg, 1, 4)
    assert cache["index"].shape == () and cache["segment_ids"].shape == (1, P + 4)
    ones = np.ones((1, 2), np.int32)
    with pytest.raises(ValueError, match="prefill=True"):
        decoder.apply(
            {"params": params, "cache": cache}, ones, ones, ones, deterministic=True, mutable=["cache"]
        )


# The methods -------------------------------------------------------------------------------------------


def tuned_bert(kind, length):
    """tests/test_lora.py's tiny BERT classifier with a fresh prompt / prefix."""
    model = head_model(**{f"{kind}_length": length})
    params, new = fresh_params(model)
    assert new  # nothing came from the (empty) pretrained tree
    return model, params


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_method_trains_only_its_params_and_the_head(method, data):  # noqa: F811
    model, params = tuned_bert(method, 4)
    result = train(model, params, method, *data)
    d, num_layers = 32, 2
    head = d * 2 + 2 + d * d + d  # classifier + pooler
    added = 4 * d if method == "prompt" else num_layers * 2 * 4 * d
    assert result["counts"]["trainable"] == added + head
    trained = result["state"].trainable["params"]
    prompt_param = lambda p: any(s in finetune.PROMPT_PARAMS for s in p.split("/"))
    added_or_head = lambda p: not p.startswith("encoder/") or "pooler" in p or prompt_param(p)
    assert sorted(trained) == sorted(filter(added_or_head, traverse_util.flatten_dict(params, sep="/")))
    for p, v in trained.items():  # every trained leaf moved
        assert not np.array_equal(np.asarray(v), result["before"][0]["params"][p]), p
    for p, v in result["frozen"].items():  # the backbone is bitwise what it was
        np.testing.assert_array_equal(np.asarray(v), result["before"][1][p])
    assert result["losses"][-1] < result["losses"][0]


def test_soft_prompt_starts_as_vocabulary_rows():
    model, params = tuned_bert("prompt", 5)
    table = np.asarray(params["encoder"]["word_embeddings"]["embedding"])
    prompt = np.asarray(params["encoder"]["soft_prompt"]["embedding"])
    assert all((table == row).all(axis=1).any() for row in prompt)


def test_finetune_cli_prompt_writes_results(tmp_path, data_dir, pretrained_workdir, sentiment_files):  # noqa: F811
    workdir = tmp_path / "ft"
    flaxlm(
        "finetune",
        "--config=configs/finetune_sentiment.py",
        f"--init={pretrained_workdir}",
        f"--workdir={workdir}",
        "--config.method=prompt",
        "--config.prompt.length=4",
        "--config.task.max_seq_len=32",
        "--config.train.num_steps=3",
        "--config.train.batch_size=16",
        *[f"--config.task.{s}_file={p}" for s, p in sentiment_files.items()],
        data_dir=data_dir,
    )
    results = json.loads((workdir / finetune.RESULTS_FILE).read_text())
    assert results["method"] == "prompt"
    saved = json.loads((workdir / "seed_0" / "model_config.json").read_text())
    assert saved["model"]["prompt_length"] == 4 and saved["model"]["prefix_length"] == 0
    d = saved["model"]["hidden_size"]
    head = d * 2 + 2 + d * d + d
    assert results["params"]["trainable"] == 4 * d + head
    model, params, _ = finetune.load_finetuned(str(workdir / "seed_0"))
    assert "soft_prompt" in params["encoder"]


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_gpt_classifier_trains_its_params_and_the_head(method, data):  # noqa: F811
    model = head_model("gpt", **{f"{method}_length": 4})
    params, _ = fresh_params(model)
    trainable, frozen, counts = finetune.split_params(
        params, method, "decoder", train_pooler=True, lora_cfg=None, rng=jax.random.key(0)
    )
    d, head = 32, 32 * 2 + 2  # GPT has no pooler
    assert counts["trainable"] == (4 * d if method == "prompt" else 2 * 2 * 4 * d) + head
    task, batch = data
    loss_fn = lambda tr: task.loss(
        finetune.Setup(model, task, 1.0, 1).apply(
            traverse_util.unflatten_dict({**frozen, **tr}, sep="/"), batch, train=False
        ),
        batch,
    )[0]
    grads = jax.grad(loss_fn)(trainable["params"])
    assert all(np.abs(np.asarray(g)).max() > 0 for g in grads.values())
