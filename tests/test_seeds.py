"""Seeds as one program (config.train.num_seeds): seed i of K equals the single run with train.seed + i
and data.seed + i, step by step and in its final parameters, through an interruption; its workdir is
that run's; bad settings are one line."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import load_config, write_scenes
from flaxlm import checkpoint as ckpt
from flaxlm import config as config_lib
from flaxlm import lm as lm_lib
from flaxlm import metrics as metrics_lib
from flaxlm import train as train_lib
from test_cli import SMALL, flaxlm

K, STEPS, SEED, DATA_SEED = 2, 6, 3, 5


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """40 scenes of the embedded Shakespeare: each data seed prepares its own examples, quickly."""
    return write_scenes(tmp_path_factory.mktemp("corpus") / "scenes.jsonl.gz", 40)


def tiny(data_dir, corpus, **train):
    """A 1-layer BERT with dropout, evaluated on the whole validation split (its length differs by seed)."""
    c = load_config("bert_tiny")
    c.model.update(num_layers=1, hidden_size=32, num_heads=2, mlp_dim=64, vocab_size=1000, max_len=64)
    c.model.update(dropout_rate=0.1, attention_dropout_rate=0.1)
    c.data.update(data_dir=data_dir, corpus=corpus, seq_len=64, max_predictions=10, validation_fraction=0.1)
    c.data.mask_prob = 0.15
    c.data.seed = DATA_SEED
    c.train.update(
        **{
            **dict(batch_size=16, num_steps=STEPS, seed=SEED, warmup_steps=2, learning_rate=3e-3),
            **dict(grad_accum_steps=2),  # the scan over microbatches, inside the vmap over seeds
            **dict(log_every=1, eval_every=3, eval_batches=0, checkpoint_every=3),
            # Step 5's update is dropped in every run: the skip path of the vmapped step, per seed.
            **dict(debug_nan_step=5, nonfinite="skip"),
            **train,
        }
    )
    return c


@pytest.fixture(scope="module")
def singles(tmp_path_factory, data_dir, scenes):
    """The K single runs (train.seed = SEED + i, data.seed = DATA_SEED + i) the seeds must equal."""
    root = tmp_path_factory.mktemp("singles")
    workdirs = []
    for i in range(K):
        c = tiny(data_dir, scenes)
        c.train.seed, c.data.seed = SEED + i, DATA_SEED + i
        workdirs.append(str(root / f"single_{i}"))
        train_lib.train_and_evaluate(c, workdirs[-1])
    return workdirs


def by_step(workdir, key):
    """step -> the rows logging `key` (wall-clock fields dropped), last write wins (a resume rewrites)."""
    rows = [r for r in metrics_lib.read_metrics(workdir) if key in r]
    return {r["step"]: {k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in rows}


def assert_rows_close(got, want, what):
    assert sorted(got) == sorted(want), what
    for step in want:
        assert sorted(got[step]) == sorted(want[step]), (what, step)
        for k, v in want[step].items():
            if isinstance(v, str):  # "nan": the poisoned step
                assert got[step][k] == v, (what, step, k)
            else:
                assert abs(got[step][k] - v) <= 1e-5, (what, step, k, got[step][k], v)


def test_each_seed_equals_its_single_run_through_an_interruption(tmp_path, data_dir, scenes, singles, capsys):
    workdir = str(tmp_path / "seeds")
    # Stopped after step 5, seed 1's save of step 5 lost (as if the process died during it): all
    # seeds must resume together from step 3, with their data iterators where they were.
    train_lib.train_and_evaluate(tiny(data_dir, scenes, num_seeds=K, stop_at_step=5), workdir)
    assert sorted(os.listdir(workdir)) == ["config.json", "seed_0", "seed_1"]
    shutil.rmtree(os.path.join(workdir, "seed_1", "checkpoints", "5"))
    capsys.readouterr()
    evals = train_lib.train_and_evaluate(tiny(data_dir, scenes, num_seeds=K), workdir)
    out = capsys.readouterr()
    assert "resuming from step 3" in out.out
    assert "holds steps [5], ahead of the other seeds' common step 3" in out.err

    for i, single in enumerate(singles):
        seed_dir = os.path.join(workdir, f"seed_{i}")
        assert_rows_close(by_step(seed_dir, "loss"), by_step(single, "loss"), f"seed {i} train")
        assert_rows_close(
            {s: r for s, r in by_step(seed_dir, "eval_loss").items() if s != 5},  # the stop's evaluation
            by_step(single, "eval_loss"),
            f"seed {i} eval",
        )
        assert evals[i]["loss"] == pytest.approx(by_step(single, "eval_loss")[STEPS]["eval_loss"], abs=1e-5)
        got, step, saved = ckpt.restore_params(seed_dir)
        want, _, _ = ckpt.restore_params(single)
        assert step == STEPS
        for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(
                x, y, atol=1e-5, rtol=0, err_msg=f"seed {i} {jax.tree_util.keystr(path)}"
            )
        # The seed's workdir is its single run's: the same config (its seeds), so tools and resume read it.
        with open(os.path.join(single, "config.json")) as f:
            want_config = json.load(f)
        with open(os.path.join(seed_dir, "config.json")) as f:
            assert json.load(f) == want_config == saved
        assert (want_config["train"]["seed"], want_config["data"]["seed"]) == (SEED + i, DATA_SEED + i)
        assert lm_lib.read(seed_dir).source.startswith(
            f"flaxlm workdir {seed_dir}"
        )  # what finetune --init reads
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["num_seeds"] == K
    with pytest.raises(config_lib.ConfigError, match="holds one workdir per seed"):
        lm_lib.read(workdir)


def test_num_seeds_below_one_is_one_line(tmp_path, data_dir):
    proc = flaxlm(
        "train",
        "--config=configs/bert_tiny.py",
        f"--workdir={tmp_path}",
        *SMALL,
        "--config.train.num_seeds=0",
        data_dir=data_dir,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "flaxlm train: error: config.train.num_seeds=0 must be >= 1", proc.stderr[-2000:]


def test_num_seeds_with_pmap_is_refused():
    c = load_config("bert_tiny")
    c.train.num_seeds, c.parallelism = 2, "pmap"
    with pytest.raises(config_lib.ConfigError, match="set --config.parallelism=mesh"):
        config_lib.validate(c)


def test_num_seeds_in_several_processes_is_refused(monkeypatch):
    c = load_config("bert_tiny")
    c.train.num_seeds = 2
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(config_lib.ConfigError, match="start one run per seed"):
        train_lib.Runner(c, model=None, tx=None, schedule=None)
