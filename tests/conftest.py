"""Test setup: 8 fake CPU devices (before jax is imported) and one prepared data dir per session."""

import os

# Multi-device code is tested on 8 host devices; this must precede `import jax`.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_json_tool(cmd, env) -> tuple[dict[str, list[dict]], str]:
    """Runs a benchmark tool (cwd: the repository) that prints JSON lines on stdout; asserts it exits 0
    and that every stdout line is JSON; returns its rows grouped by their "what" field, and its stderr."""
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_what: dict[str, list[dict]] = {}
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        by_what.setdefault(row["what"], []).append(row)
    return by_what, proc.stderr


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data dir shared by the whole session, so each corpus/tokenizer is prepared once."""
    if os.environ.get("DEVHACK_DATA"):
        return os.environ["DEVHACK_DATA"]
    return str(tmp_path_factory.mktemp("flaxlm_data"))


def write_scenes(path, n: int) -> str:
    """The first `n` scenes of the embedded Shakespeare as a JSON-lines corpus at `path` (quick to read)."""
    import gzip
    import json

    from flaxlm.data import corpus

    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in corpus.load_embedded("shakespeare")[:n]:
            f.write(json.dumps({"id": d.id, "text": "\n\n".join(d.paragraphs)}) + "\n")
    return str(path)


def load_config(name: str):
    """configs/<name>.py's get_config(), as the CLI would load it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"configs_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def assert_same_loss_metrics_and_grads(got, want):
    """Two `jax.value_and_grad(..., has_aux=True)` results of a loss, ((loss, metrics), grads), agree:
    loss and metrics to rtol 1e-6, every gradient leaf to atol 1e-6 (float32 summation order)."""
    import jax
    import numpy as np

    (got_loss, got_m), got_g = got
    (want_loss, want_m), want_g = want
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
    assert set(got_m) == set(want_m)
    for k in want_m:
        np.testing.assert_allclose(got_m[k], want_m[k], rtol=1e-6, err_msg=k)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(got_g), jax.tree.leaves(want_g)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, err_msg=jax.tree_util.keystr(path))


# Overrides of configs/gpt_tiny.py for `tiny_gpt_workdir`: hidden 64 at a high learning rate, so that
# 120 steps (about 30 s on 2 cores) learn enough word order for the scoring tests to see it.
TINY_GPT_TRAIN = [
    "--config.model.hidden_size=64",
    "--config.model.mlp_dim=128",
    "--config.train.num_steps=120",
    "--config.train.learning_rate=5e-3",
    "--config.train.warmup_steps=10",
    "--config.train.log_every=40",
    "--config.train.eval_every=120",
    "--config.train.eval_batches=1",
    "--config.train.checkpoint_every=120",
]


@pytest.fixture(scope="session")
def tiny_gpt_workdir(tmp_path_factory, data_dir):
    """A `flaxlm train` workdir of a small GPT trained on the embedded corpus (generation and scoring tests).

    Its config records data_dir, so the tokenizer is found without $FLAXLM_DATA_DIR.
    """
    from test_cli import SMALL, flaxlm

    workdir = str(tmp_path_factory.mktemp("tiny_gpt"))
    flaxlm(
        "train",
        "--config=configs/gpt_tiny.py",
        f"--workdir={workdir}",
        *SMALL,
        f"--config.data.data_dir={data_dir}",
        *TINY_GPT_TRAIN,
        data_dir=data_dir,
    )
    return workdir
