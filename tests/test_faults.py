"""Faults end to end through the CLI, in subprocesses, on the embedded corpus: SIGTERM and exact
resume, kill -9 during training and during an async save, a corrupted latest checkpoint, NaN
injection (stop and skip), resuming with a different model, and export.

Every run is compared with one uninterrupted reference run of the same tiny config: losses at
every step after the fault and the final parameters must be bitwise equal.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from flaxlm import checkpoint as ckpt
from test_cli import SMALL, flaxlm

sys.path.insert(0, str(REPO / "tools"))
import fault_matrix  # noqa: E402

STEPS, EVERY = 18, 6
TINY = [
    "train",
    "--config=configs/bert_tiny.py",
    *SMALL,
    "--config.model.num_layers=1",
    "--config.model.hidden_size=32",
    "--config.model.mlp_dim=64",
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.eval_every=1000",
    "--config.train.eval_batches=1",
    f"--config.train.checkpoint_every={EVERY}",
    f"--config.train.num_steps={STEPS}",
]

# The CLI with one save made to hang, so kill -9 lands mid-save, or paused after it logged a step, so a
# signal or kill -9 lands at that step whatever the machine's speed (shared with tools/fault_matrix.py).
HANG_IN_SAVE, PAUSE_AT_STEP = fault_matrix.HANG_IN_SAVE, fault_matrix.PAUSE_AT_STEP


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for this module's subprocesses: each run then starts in seconds.

    Only the child processes read these variables (this process imported jax already). The
    resumed runs execute the very executables the reference run compiled, which is what a
    user's rerun with a warm cache does too.
    """
    cache = tmp_path_factory.mktemp("jax_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        yield


def env_for(data_dir):
    env = dict(os.environ, FLAXLM_DATA_DIR=data_dir)
    env.pop("XLA_FLAGS", None)  # one CPU device, as the reference run
    return env


def start(args, data_dir, hook=None, step=None, marker=None):
    cmd = [sys.executable, "-m", "flaxlm", *args]
    if hook is not None:
        cmd = [sys.executable, "-c", hook, str(step), str(marker), *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env_for(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def train_rows(workdir):
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if '"loss"' in l]


def wait_for(predicate, proc, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode} early:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def losses_by_step(rows):
    """step -> the logged training metrics (wall-clock fields dropped)."""
    return {r["step"]: {k: v for k, v in r.items() if k not in ("time", "tokens_per_s")} for r in rows}


def assert_same_params(workdir_a, workdir_b, step=STEPS):
    a, _, _ = ckpt.restore_params(workdir_a, step)
    b, _, _ = ckpt.restore_params(workdir_b, step)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        assert np.array_equal(x, y), jax.tree_util.keystr(path)  # bitwise, not close


def assert_same_losses_after(ref_workdir, workdir, k):
    # Each step logged once, however often the run was stopped and resumed.
    assert [r["step"] for r in train_rows(workdir)] == list(range(1, STEPS + 1))
    ref, got = losses_by_step(train_rows(ref_workdir)), losses_by_step(train_rows(workdir))
    for step in range(k + 1, STEPS + 1):
        assert got[step] == ref[step], step  # same batch (data order) and same update at every step


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    workdir = str(tmp_path_factory.mktemp("faults") / "reference")
    flaxlm(*TINY, f"--workdir={workdir}", data_dir=data_dir)
    return workdir


def sigterm_at_step_9_then_resume(args, workdir, tmp_path, data_dir) -> int:
    """Runs `args`, SIGTERMs it while step 9 runs, checks the save, resumes to the end; returns the step."""
    paused = tmp_path / "paused"
    proc = start([*args, f"--workdir={workdir}"], data_dir, hook=PAUSE_AT_STEP, step=8, marker=paused)
    wait_for(paused.exists, proc)  # step 8 is logged, step 9 runs: the signal lands there
    proc.send_signal(signal.SIGTERM)
    paused.unlink()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    line = [l for l in out.splitlines() if "stopped by SIGTERM" in l][0]
    k = int(line.split(" at step ")[1].split(";")[0])
    assert k == 9 and f"checkpoint saved to {workdir}/checkpoints/{k}" in line
    assert str(k) in os.listdir(os.path.join(workdir, "checkpoints"))  # durable before the exit

    proc = flaxlm(*args, f"--workdir={workdir}", data_dir=data_dir)
    assert f"resuming from step {k}" in proc.stdout
    return k


def test_sigterm_saves_the_step_and_resume_is_exact(reference, tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    k = sigterm_at_step_9_then_resume(TINY, workdir, tmp_path, data_dir)
    assert_same_losses_after(reference, workdir, k)
    assert_same_params(reference, workdir)


# The other encoder recipes at TINY's size, each with what defines it kept on (ALBERT: factorised,
# shared, SOP, n-gram masks; SpanBERT: span masks and the SBO head; RoBERTa below): their data and
# heads resume as exactly as BERT's.
RECIPES = {
    "albert_tiny": ["--config.model.embedding_size=16"],
    "spanbert_tiny": [],
    # RoBERTa's position offset, no pooler, FULL-SENTENCES and gradient accumulation (2 micro-batches).
    "roberta_base": ["--config.model.num_heads=2", "--config.train.grad_accum_steps=2"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_sigterm_resume_is_exact_for_every_encoder_recipe(recipe, tmp_path, data_dir):
    args = [a.replace("configs/bert_tiny.py", f"configs/{recipe}.py") for a in TINY] + RECIPES[recipe]
    reference, workdir = str(tmp_path / "reference"), str(tmp_path / "run")
    flaxlm(*args, f"--workdir={reference}", data_dir=data_dir)
    k = sigterm_at_step_9_then_resume(args, workdir, tmp_path, data_dir)
    assert_same_losses_after(reference, workdir, k)
    assert_same_params(reference, workdir)


def test_kill_9_during_save_and_during_training_loses_nothing(reference, tmp_path, data_dir):
    workdir, marker = str(tmp_path / "run"), tmp_path / "saving"
    ckdir = os.path.join(workdir, "checkpoints")

    # 1. kill -9 in the middle of the async save of step 12: the step's tmp folder is left behind.
    proc = start([*TINY, f"--workdir={workdir}"], data_dir, hook=HANG_IN_SAVE, step=2 * EVERY, marker=marker)
    wait_for(marker.exists, proc)
    proc.kill()
    proc.wait()
    assert any(n.startswith(f"{2 * EVERY}.orbax-checkpoint-tmp") for n in os.listdir(ckdir))
    assert ckpt.manager(workdir, keep=3).latest_step() == EVERY  # the partial one is never listed

    # 2. Restart: resumes from the last complete checkpoint (and deletes the tmp folder); kill -9 again
    # between checkpoints, paused after step EVERY + 3: the save of step 2 * EVERY has not begun.
    paused = tmp_path / "paused"
    proc = start([*TINY, f"--workdir={workdir}"], data_dir, hook=PAUSE_AT_STEP, step=EVERY + 3, marker=paused)
    wait_for(paused.exists, proc)
    proc.kill()
    out, _ = proc.communicate()
    assert f"resuming from step {EVERY}" in out
    assert not any("orbax-checkpoint-tmp" in n for n in os.listdir(ckdir))

    # 3. The next start again resumes from step 6 and ends where the uninterrupted run ended.
    proc = flaxlm(*TINY, f"--workdir={workdir}", data_dir=data_dir)
    assert f"resuming from step {EVERY}" in proc.stdout
    assert_same_losses_after(reference, workdir, EVERY)
    assert_same_params(reference, workdir)


def test_corrupted_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(STEPS)))  # as if the run stopped at 12
    shutil.copytree(
        os.path.join(reference, "checkpoints", str(STEPS)), os.path.join(workdir, "checkpoints", "15")
    )  # a complete-looking step 15 ...
    data_files = sorted(pathlib.Path(workdir, "checkpoints", "15", "state").rglob("d/*"))
    biggest = max(data_files, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:100])  # ... whose arrays are truncated

    proc = flaxlm(*TINY, f"--workdir={workdir}", data_dir=data_dir)
    warning = [l for l in proc.stderr.splitlines() if "flaxlm: warning:" in l]
    assert len(warning) == 1 and "step 15 is unreadable" in warning[0] and "step 12" in warning[0]
    assert "Traceback" not in proc.stderr
    assert f"resuming from step {2 * EVERY}" in proc.stdout
    assert os.listdir(os.path.join(workdir, "corrupt_checkpoints"))[0].startswith("15-")  # kept aside
    assert_same_params(reference, workdir)


def test_nonfinite_stop_keeps_the_last_checkpoint_then_skip_goes_on(tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    args = [*TINY, f"--workdir={workdir}", "--config.train.num_steps=8", "--config.train.debug_nan_step=5"]
    stop = flaxlm(*args, "--config.train.checkpoint_every=2", data_dir=data_dir, check=False)
    assert stop.returncode == 3, stop.stderr[-3000:]
    last = stop.stderr.strip().splitlines()[-1]
    assert last.startswith("flaxlm train: error: non-finite loss (nan)") and "at step 5" in last, last
    assert "the checkpoint of step 4 is untouched" in last and "Traceback" not in stop.stderr
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]  # nothing of step 5 on
    good, _, _ = ckpt.restore_params(workdir, 4)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(good))

    skip = flaxlm(*args, "--config.train.nonfinite=skip", data_dir=data_dir)
    assert "resuming from step 4" in skip.stdout
    rows = losses_by_step(train_rows(workdir))
    assert rows[5]["loss"] == "nan" and rows[5]["skipped_steps"] == 1.0
    assert rows[8]["skipped_steps"] == 1.0 and np.isfinite(rows[8]["loss"])
    final, _, _ = ckpt.restore_params(workdir, 8)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final))


def test_resuming_with_a_different_model_is_one_line_and_keeps_the_checkpoint(reference, tmp_path, data_dir):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference, workdir)
    proc = flaxlm(
        *TINY, f"--workdir={workdir}", "--config.model.hidden_size=64", data_dir=data_dir, check=False
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("flaxlm train: error: the checkpoint in the workdir was written by a different")
    assert "hidden_size: checkpoint 32 vs config 64" in last and "Traceback" not in proc.stderr
    assert_same_params(reference, workdir)


def test_export_round_trip(reference, tmp_path, data_dir):
    out = str(tmp_path / "export")
    proc = flaxlm("export", f"--workdir={reference}", f"--out={out}", f"--step={EVERY}", data_dir=data_dir)
    assert f"exported the parameters of step {EVERY}" in proc.stdout
    params, config = ckpt.load_params(out)
    expected, _, _ = ckpt.restore_params(reference, EVERY)
    assert jax.tree.structure(params) == jax.tree.structure(expected)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)))
    assert config["step"] == EVERY and config["objective"] == "mlm_nsp"
    assert config["model"]["hidden_size"] == 32 and config["model"]["pair_head"] is True

    missing = flaxlm(
        "export", f"--workdir={reference}", f"--out={out}", "--step=7", data_dir=data_dir, check=False
    )
    assert missing.returncode == 2 and "no checkpoint of step 7" in missing.stderr.splitlines()[-1]
