"""`flaxlm train` as 2 jax.distributed processes on localhost (2 CPU devices each, one 4-device mesh):
the same losses as 1 process with 4 devices, both hosts stopping at the same step when only one
of them gets SIGTERM, and a checkpoint that a 1-process run resumes from."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from test_cli import SMALL

sys.path.insert(0, str(REPO / "tools"))
from fault_matrix import PAUSE_AT_STEP  # noqa: E402

STEPS = 60
TINY = [
    "train",
    "--config=configs/bert_tiny.py",
    *SMALL,
    "--config.model.num_layers=1",
    "--config.model.hidden_size=32",
    "--config.model.mlp_dim=64",
    "--config.mesh.fsdp=2",  # 4 devices: data 2 x fsdp 2, so parameters are split across the hosts
    "--config.train.warmup_steps=2",
    "--config.train.log_every=1",
    "--config.train.eval_every=1000",
    "--config.train.eval_batches=1",
    "--config.train.checkpoint_every=1000",
    f"--config.train.num_steps={STEPS}",
]


@pytest.fixture(scope="module")
def env(tmp_path_factory, data_dir):
    """The children's environment: the shared data dir and one persistent XLA cache (the resumed
    1-process run reuses the reference run's executables)."""
    cache = tmp_path_factory.mktemp("jax_cache")
    env = dict(
        os.environ,
        FLAXLM_DATA_DIR=data_dir,
        JAX_COMPILATION_CACHE_DIR=str(cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    env.pop("XLA_FLAGS", None)
    return env


def start(args, env, devices, pause=None):
    """`flaxlm ARGS` with `devices` CPU devices; pause=(step, marker): it waits after logging that step
    until the marker file is deleted (tools/fault_matrix.py)."""
    env = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", "flaxlm", *args]
    if pause is not None:
        cmd = [sys.executable, "-c", PAUSE_AT_STEP, str(pause[0]), str(pause[1]), *args]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{err[-3000:]}"
    return out, err


def losses(workdir) -> dict[int, float]:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    steps = [r["step"] for r in rows if "loss" in r]
    assert len(steps) == len(set(steps)), "a step was logged twice (only process 0 may write)"
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_stop_together_and_resume_in_one(tmp_path, env):
    ref_dir, two_dir = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    finish(start([*TINY, f"--workdir={ref_dir}"], env, devices=4))
    ref = losses(ref_dir)
    assert sorted(ref) == list(range(1, STEPS + 1))

    port, paused = free_port(), tmp_path / "paused"
    procs = [
        start(
            [
                *TINY,
                f"--workdir={two_dir}",
                f"--coordinator_address=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            env,
            devices=2,
            pause=(3, paused) if i == 0 else None,
        )
        for i in range(2)
    ]
    # A preemption notice reaches one host only: process 1 gets SIGTERM while process 0 waits after
    # logging step 3 (process 1 waits for it in the next collective), so neither can be done by then.
    deadline = time.time() + 600
    while not paused.exists():
        assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    paused.unlink()
    (out0, err0), (out1, err1) = finish(procs[0]), finish(procs[1])

    two = losses(two_dir)
    stopped = max(two)
    assert 3 <= stopped < STEPS, "the run should have stopped early, at a step both hosts agreed on"
    assert f"at step {stopped}; checkpoint saved" in out0
    assert os.listdir(os.path.join(two_dir, "checkpoints")) == [str(stopped)]
    # Only process 0 reports: progress bar, metrics, final line.
    bar = re.compile(r"train:\s+\d+%")
    assert bar.search(err0) and not bar.search(err1) and "flaxlm:" not in out1
    steps = sorted(two)
    np.testing.assert_allclose([two[s] for s in steps], [ref[s] for s in steps], atol=1e-5, rtol=0)
    print(f"2 processes stopped at step {stopped}; max |loss - 1 process| over steps 1..{stopped}:",
          max(abs(two[s] - ref[s]) for s in steps))  # fmt: skip

    # One process with 4 devices continues the 2-process checkpoint, with the reference's losses.
    out, _ = finish(start([*TINY, f"--workdir={two_dir}"], env, devices=4))
    assert f"resuming from step {stopped}" in out
    resumed = losses(two_dir)
    steps = list(range(stopped + 1, STEPS + 1))
    assert sorted(set(resumed) - set(two)) == steps
    np.testing.assert_allclose([resumed[s] for s in steps], [ref[s] for s in steps], atol=1e-5, rtol=0)
    print(f"resumed by 1 process: max |loss - 1 process| over steps {stopped + 1}..{STEPS}:",
          max(abs(resumed[s] - ref[s]) for s in steps))  # fmt: skip


# Cluster detection (no processes started): what `flaxlm train` joins without flags.
SLURM = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "node[003-004]",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


@pytest.mark.parametrize(
    "env_vars, expected",
    [
        ({}, None),
        ({**SLURM, "SLURM_NTASKS": "8"}, ("slurm", 8)),
        ({**SLURM, "SLURM_NTASKS": "1"}, ("slurm", 1)),  # one task (e.g. a `salloc` shell): not joined
        (
            {"OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.0.0.1:34911", "OMPI_COMM_WORLD_SIZE": "4"},
            ("ompi", 4),
        ),
    ],
)
def test_detects_the_launchers_jax_knows(monkeypatch, env_vars, expected):
    from flaxlm import distributed

    for k in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_"))]:
        monkeypatch.delenv(k)
    for k, v in env_vars.items():
        monkeypatch.setenv(k, v)
    assert distributed.detect_cluster() == expected
    if expected is None or expected[1] == 1:
        assert distributed.initialize() is False  # a single process never starts a coordinator


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(coordinator_address="h:1", num_processes=2, process_id=2), "--process_id=2 is not in 0..1"),
        (
            dict(coordinator_address="h:1"),
            "need all of --coordinator_address, --num_processes and --process_id",
        ),
    ],
)
def test_inconsistent_flags_are_one_line_errors(monkeypatch, kwargs, message):
    from flaxlm import distributed

    for k in [k for k in os.environ if k.startswith(("SLURM_", "OMPI_"))]:
        monkeypatch.delenv(k)
    with pytest.raises(distributed.ClusterError, match=message):
        distributed.initialize(**kwargs)
    assert distributed.initialize(num_processes=1) is False
