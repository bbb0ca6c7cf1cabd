"""ELECTRA (objective "electra"): what the RTD loss covers, where its gradient goes, the electra-small
shape, HF discriminator parity, FLOPs, and the tiny recipe through the CLI (training, SIGTERM resume,
fine-tuning the discriminator)."""

import json
import os
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import load_config
from flaxlm import config as config_lib
from flaxlm import hf, models, objectives
from flaxlm import train as train_lib
from flaxlm import train_step as step_lib
from flaxlm.models import electra

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

ELECTRA_SMALL_PARAMS = 13_549_057  # transformers.ElectraForPreTraining(ElectraConfig()) (electra-small)
TOL = 1e-5


def tiny_config(**model):
    c = load_config("electra_tiny")
    c.model.update(vocab_size=300, hidden_size=32, num_heads=2, mlp_dim=64, max_len=32, **model)
    c.data.update(seq_len=32, max_predictions=8)
    return c


def masked_batch(c, batch_size=4, real=(32, 20, 9, 32), seed=0):
    """A batch as the pipeline gives it: rows padded after `real` tokens, 15% of the real ones masked."""
    rng = np.random.default_rng(seed)
    b = train_lib.dummy_batch(c, batch_size)
    t, p = c.data.seq_len, c.data.max_predictions
    for i, n in enumerate(real):
        b["input_ids"][i, :n] = rng.integers(5, c.model.vocab_size, n)
        b["segment_ids"][i, :n] = 1
        b["positions"][i, :n] = np.arange(n)
        k = min(p, max(1, round(0.15 * n)))
        where = np.sort(rng.choice(np.arange(1, n), k, replace=False))
        b["mlm_positions"][i, :k] = where
        b["mlm_targets"][i, :k] = b["input_ids"][i, where]
        b["mlm_weights"][i, :k] = 1.0
        b["input_ids"][i, where] = 4  # [MASK]
    assert b["input_ids"].shape == (batch_size, t)
    return b


@pytest.fixture(scope="module")
def tiny():
    c = tiny_config()
    model = models.get_model(train_lib.model_config(c))
    params = train_lib.init_state(model, optax.identity(), c, jax.random.key(0)).params
    return c, model, params


def test_rtd_loss_covers_every_real_token_and_no_padding(tiny):
    c, model, params = tiny
    batch = masked_batch(c)
    out = step_lib.apply_model(
        model,
        params,
        batch,
        objective="electra",
        train=True,
        rng=jax.random.key(1),
        sample_rng=jax.random.key(2),
    )
    terms = {t.name: t for t in objectives.loss_terms(out, batch, objective="electra")}
    assert set(terms) == {"mlm", "rtd"}
    assert (
        float(terms["rtd"].count) == 32 + 20 + 9 + 32 == float(step_lib.batch_totals(batch, "electra")["rtd"])
    )
    # The loss is the mean sigmoid cross-entropy over exactly the real tokens.
    logits = np.asarray(out["rtd_logits"], np.float64)
    labels = np.asarray(out["rtd_labels"], np.float64)
    real = batch["segment_ids"] != 0
    bce = np.logaddexp(0, logits) - labels * logits
    np.testing.assert_allclose(float(terms["rtd"].loss), bce[real].mean(), rtol=1e-5)
    # Replaced tokens are only ever at masked positions, and the corruption keeps everything else.
    masked = np.zeros_like(real)
    for i in range(4):
        masked[i, batch["mlm_positions"][i][batch["mlm_weights"][i] > 0]] = True
    assert not labels[~masked].any() and labels[masked].mean() > 0.5  # random generator: most differ
    loss, m = objectives.pretraining_loss(out, batch, objective="electra", rtd_weight=50.0)
    np.testing.assert_allclose(loss, m["mlm_loss"] + 50.0 * m["rtd_loss"], rtol=1e-6)
    assert 0 < float(m["rtd_replaced_fraction"]) < 0.25


def test_generator_gets_no_gradient_from_rtd_and_embeddings_get_both(tiny):
    c, model, params = tiny
    batch = masked_batch(c)

    def term(name):
        def f(p):
            out = step_lib.apply_model(
                model,
                p,
                batch,
                objective="electra",
                train=True,
                rng=jax.random.key(1),
                sample_rng=jax.random.key(2),
            )
            return {t.name: t.loss for t in objectives.loss_terms(out, batch, objective="electra")}[name]

        return jax.grad(f)(params)

    rtd, mlm = term("rtd"), term("mlm")
    assert "word_embeddings" not in params["generator"]["encoder"]  # shared: the discriminator's tables
    for leaf in jax.tree.leaves(rtd["generator"]):
        assert not np.any(np.asarray(leaf)), "RTD gradient reached the generator"
    for name in ("rtd_head", "rtd_dense"):
        assert all(np.any(np.asarray(x)) for x in jax.tree.leaves(rtd[name]))
    assert np.any(np.asarray(rtd["encoder"]["block_1"]["mlp"]["fc_out"]["kernel"]))
    # The MLM term never touches the discriminator's blocks or head, but does train the shared embeddings.
    assert not np.any(np.asarray(mlm["encoder"]["block_0"]["attention"]["query"]["kernel"]))
    assert not np.any(np.asarray(mlm["rtd_head"]["kernel"]))
    for table in ("word_embeddings", "position_embeddings", "embeddings_norm"):
        assert all(np.any(np.asarray(x)) for x in jax.tree.leaves(mlm["encoder"][table])), table
        assert all(np.any(np.asarray(x)) for x in jax.tree.leaves(rtd["encoder"][table])), table


def test_samples_depend_on_the_row_not_its_place_in_the_batch(tiny):
    """One device, mesh shards, pmap shards and microbatches see the same corruption of each row."""
    c, model, params = tiny
    batch = masked_batch(c)
    half = jax.tree.map(lambda x: x[2:], batch)
    run = lambda b: step_lib.apply_model(
        model, params, b, objective="electra", train=True, rng=jax.random.key(1), sample_rng=jax.random.key(2)
    )["rtd_labels"]
    np.testing.assert_array_equal(run(batch)[2:], run(half))


def test_electra_small_discriminator_has_hf_parameter_count():
    c = load_config("electra_small")
    config_lib.validate(c)
    model = models.get_model(train_lib.model_config(c))
    z = jnp.zeros((1, 8), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), z, z, z, z, deterministic=True))["params"]
    assert "generator" not in shapes  # the discriminator alone, as HF's ElectraForPreTraining
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == ELECTRA_SMALL_PARAMS
    hf_model = transformers.ElectraForPreTraining(transformers.ElectraConfig())
    assert sum(p.numel() for p in hf_model.parameters()) == ELECTRA_SMALL_PARAMS
    gen = electra.generator_config(model.config)
    assert (gen.hidden_size, gen.num_heads, gen.mlp_dim, gen.embedding_size) == (64, 1, 256, 128)


def test_flops_and_parameter_count_include_the_generator(tiny):
    from experiments.common import flops

    c, _, params = tiny
    d = c.to_dict()
    n = flops.parameter_count(d["model"], "electra")["total"]
    assert n == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    bert = dict(d, objective="mlm", model=dict(d["model"], generator_size=0.0, pooler=False))
    gen_only = flops.train_flops_per_step(d) - flops.train_flops_per_step(bert)
    assert gen_only > 0  # the generator's blocks and the discriminator's per-token head ...
    no_gen = dict(d, model=dict(d["model"], generator_size=1e-9))
    assert flops.train_flops_per_step(no_gen) < flops.train_flops_per_step(d)  # ... grow with its width


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(generator_size=0.0), "config.objective='electra' needs a generator"),
        (dict(generator_size=0.45), "gives the generator hidden size 58 and 4 head(s)"),
        (dict(pooler=True), "trains no [CLS] pooler"),
    ],
)
def test_bad_electra_configs_are_one_line_errors(change, message):
    c = load_config("electra_tiny")
    c.model.update(change)
    if change.get("generator_size") == 0.45:
        c.model.update(hidden_size=128, num_heads=8)
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
        config_lib.validate(c)
    c = load_config("bert_tiny")
    c.model.generator_size = 0.25
    with pytest.raises(config_lib.ConfigError, match="only config.objective='electra' trains"):
        config_lib.validate(c)


# ----------------------------------------------------------------------------- Hugging Face


def random_hf_electra(architecture, embedding_size=16, seed=0):
    torch.manual_seed(seed)
    config = transformers.ElectraConfig(
        vocab_size=120,
        embedding_size=embedding_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    model = getattr(transformers, architecture)(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize(
    "architecture, embedding_size",
    [("ElectraForPreTraining", 16), ("ElectraForPreTraining", 32), ("ElectraModel", 16)],
)
def test_random_hf_electra_matches_and_round_trips_exactly(architecture, embedding_size, tmp_path):
    hf_model = random_hf_electra(architecture, embedding_size)
    hf_model.save_pretrained(tmp_path / "hf")
    model_cfg, params, _ = hf.load_hf(str(tmp_path / "hf"))
    pretraining = architecture == "ElectraForPreTraining"
    assert model_cfg["embedding_size"] == (0 if embedding_size == 32 else embedding_size)
    assert not model_cfg["pooler"] and not model_cfg["pair_head"]
    assert hf.objective_of(model_cfg) == ("electra" if pretraining else "mlm")
    assert hf.heads_of(model_cfg, params) == (["rtd"] if pretraining else [])

    rng = np.random.default_rng(0)
    ids = rng.integers(1, 120, (3, 40)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 25:] = 0
    ids[1, 25:] = 0
    types = np.zeros_like(ids)
    types[:, 20:] = 1
    pos = np.broadcast_to(np.arange(40, dtype=np.int32), ids.shape)
    with torch.no_grad():
        t = lambda x: torch.tensor(np.asarray(x), dtype=torch.long)
        ref = hf_model(
            input_ids=t(ids), token_type_ids=t(types), attention_mask=t(mask), output_hidden_states=True
        )
    config = models.get_model(model_cfg).config
    real = mask.astype(bool)
    if pretraining:
        logits, hidden = models.get_model(model_cfg).apply(
            {"params": params}, ids, types, mask, pos, deterministic=True, method="discriminate"
        )
        diffs = {"logits": float(np.abs(np.asarray(logits) - ref.logits.numpy())[real].max())}
    else:
        hidden, _ = models.BertEncoder(config).apply(
            {"params": params["encoder"]}, ids, types, mask, pos, deterministic=True
        )
        diffs = {}
    diffs["hidden"] = float(np.abs(np.asarray(hidden) - ref.hidden_states[-1].numpy())[real].max())
    assert max(diffs.values()) <= TOL, diffs
    print(f"random {architecture} (E {embedding_size}) max abs diff: {diffs}")

    if not pretraining:
        return
    # Export (with a generator in the tree, as a training run has) writes HF's tensors back, bit for bit.
    full = dict(params, generator={"mlm_bias": np.zeros(120, np.float32)})
    hf.save_hf(str(tmp_path / "out"), model_cfg, full)
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config_out["architectures"] == [architecture] and config_out["model_type"] == "electra"
    from safetensors.numpy import load_file

    original = load_file(str(tmp_path / "hf" / "model.safetensors"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, w in original.items():
        assert np.array_equal(exported[name], w), name
    reloaded = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        again = reloaded(input_ids=t(ids), token_type_ids=t(types), attention_mask=t(mask))
    assert np.array_equal(again.logits.numpy(), ref.logits.numpy())


# ----------------------------------------------------------------------------- the CLI


def electra_args(workdir, steps, every):
    from test_cli import SMALL

    return [
        "train",
        "--config=configs/electra_tiny.py",
        f"--workdir={workdir}",
        *[a for a in SMALL if "max_predictions" not in a and "dropout" not in a],
        "--config.data.max_predictions=10",
        "--config.model.num_layers=1",
        "--config.model.hidden_size=32",
        "--config.model.mlp_dim=64",
        "--config.train.warmup_steps=2",
        "--config.train.log_every=1",
        "--config.train.eval_every=1000",
        "--config.train.eval_batches=1",
        f"--config.train.checkpoint_every={every}",
        f"--config.train.num_steps={steps}",
    ]


def test_electra_tiny_trains_from_the_cli_and_finetunes_its_discriminator(tmp_path, data_dir):
    from test_cli import flaxlm
    from test_finetune import SLICES  # noqa: F401  (the movie-snippet slice)
    from flaxlm.tasks import classification, common

    workdir = str(tmp_path / "electra")
    flaxlm(*electra_args(workdir, 30, 30), "--config.train.learning_rate=3e-3", data_dir=data_dir)
    rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if '"loss"' in l]
    train = [r for r in rows if "rtd_loss" in r and "learning_rate" in r]
    assert all(np.isfinite(r["loss"]) for r in train)
    first, last = np.mean([r["loss"] for r in train[:5]]), np.mean([r["loss"] for r in train[-5:]])
    assert last < first, (first, last)
    assert 0.05 < train[-1]["rtd_replaced_fraction"] < 0.2

    folder = tmp_path / "sentiment"
    folder.mkdir()
    text = (SLICES / "movie_snippets.txt").read_text(encoding="utf-8")
    splits = common.split_by_key(
        classification.sentiment_examples(classification.parse_movie_snippets(text)), lambda ex: ex["text"]
    )
    for split, examples in splits.items():
        common.write_jsonl(str(folder / f"{split}.jsonl"), examples)
    ft = str(tmp_path / "ft")
    proc = flaxlm(
        "finetune",
        "--config=configs/finetune_sentiment.py",
        f"--init={workdir}",
        f"--workdir={ft}",
        "--config.task.max_seq_len=32",
        "--config.train.num_steps=4",
        "--config.train.batch_size=16",
        *[f"--config.task.{s}_file={folder / (s + '.jsonl')}" for s in common.SPLITS],
        data_dir=data_dir,
    )
    assert proc.returncode == 0
    from flaxlm import checkpoint as ckpt
    from flaxlm import finetune

    _, params, meta = finetune.load_finetuned(
        os.path.join(ft, "seed_0") if os.path.isdir(os.path.join(ft, "seed_0")) else ft
    )
    pre, _, _ = ckpt.restore_params(workdir)
    # The fine-tuned backbone started from the discriminator (not the generator): same tree, same shapes.
    assert jax.tree.structure(params["encoder"]["block_0"]) == jax.tree.structure(pre["encoder"]["block_0"])
    assert "pooler" in params["encoder"] and "pooler" not in pre["encoder"]


def test_electra_sigterm_resume_is_bitwise(tmp_path, data_dir):
    from test_cli import flaxlm
    from test_faults import PAUSE_AT_STEP, losses_by_step, start, train_rows, wait_for
    from flaxlm import checkpoint as ckpt

    steps, every = 12, 4
    reference = str(tmp_path / "reference")
    flaxlm(*electra_args(reference, steps, every), data_dir=data_dir)
    workdir, paused = str(tmp_path / "run"), tmp_path / "paused"
    proc = start(electra_args(workdir, steps, every), data_dir, hook=PAUSE_AT_STEP, step=6, marker=paused)
    wait_for(paused.exists, proc)
    proc.send_signal(signal.SIGTERM)
    paused.unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    k = int([l for l in out.splitlines() if "stopped by SIGTERM" in l][0].split(" at step ")[1].split(";")[0])
    proc = flaxlm(*electra_args(workdir, steps, every), data_dir=data_dir)
    assert f"resuming from step {k}" in proc.stdout
    ref, got = losses_by_step(train_rows(reference)), losses_by_step(train_rows(workdir))
    assert [r["step"] for r in train_rows(workdir)] == list(range(1, steps + 1))
    for step in range(k + 1, steps + 1):
        assert got[step] == ref[step], step
    a, _, _ = ckpt.restore_params(reference, steps)
    b, _, _ = ckpt.restore_params(workdir, steps)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        assert np.array_equal(x, y), jax.tree_util.keystr(path)
