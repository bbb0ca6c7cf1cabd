"""tools/time_to_quality.py: flaxlm and HF torch see the same batches, start from the same weights
(the same held-out loss) and stay together for a few steps; HF's inputs score flaxlm's targets."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, run_json_tool

sys.path.insert(0, str(REPO / "tools"))
import benchmark  # noqa: E402
import time_to_quality  # noqa: E402

SMALL = [
    *("--set=model.num_layers=1", "--set=model.hidden_size=32", "--set=model.num_heads=2"),
    *("--set=model.mlp_dim=64", "--set=train.batch_size=8"),
]


@pytest.mark.parametrize("model", ["bert_tiny", "gpt_tiny"])
def test_both_sides_train_alike_on_the_same_batches(model):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    cmd = [
        sys.executable,
        "tools/time_to_quality.py",
        f"--model={model}",
        "--quick",
        "--steps=3",
        "--eval_every=1",
        "--torch_threads=1",
        "--flaxlm_env=FLAXLM_TEST_MARK=flaxlm's alone",
        *SMALL,
    ]
    by_what, stderr = run_json_tool(cmd, env)
    workers = {r["framework"]: r for r in by_what["worker"]}
    assert list(workers) == ["flaxlm", "hf_torch"]
    # --flaxlm_env reached flaxlm's worker (as it reports) and not the peer's.
    assert workers["flaxlm"]["flaxlm_env"] == {"FLAXLM_TEST_MARK": "flaxlm's alone"}
    assert workers["hf_torch"]["flaxlm_env"] == {}
    assert workers["flaxlm"]["params"] == workers["hf_torch"]["params"]
    assert workers["flaxlm"]["eval_batches_sha256"] == workers["hf_torch"]["eval_batches_sha256"]
    assert workers["flaxlm"]["eval_batches"] == 2
    curves = {f: [r for r in by_what["eval"] if r["framework"] == f] for f in workers}
    assert [r["step"] for r in curves["flaxlm"]] == [r["step"] for r in curves["hf_torch"]] == [0, 1, 2, 3]
    for a, b in zip(curves["flaxlm"], curves["hf_torch"]):
        assert a["batches_sha256"] == b["batches_sha256"]  # the very same training batches so far
        # Same weights at step 0 (flaxlm's export), the same updates after (dropout 0 in both recipes).
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4 if a["step"] == 0 else 1e-3)
    assert len({r["batches_sha256"] for r in curves["flaxlm"]}) == 4  # each turn consumed new batches
    assert curves["flaxlm"][-1]["loss"] < curves["flaxlm"][0]["loss"]  # it trains
    target = max(curves[f][-1]["loss"] for f in curves)
    for r in by_what["time_to_target"]:
        assert r["target_loss"] == target and r["train_s_to_target"] > 0 and r["compile_s"] >= 0
    (ratio,) = by_what["ratio"]
    assert ratio["flaxlm_over"] == "hf_torch" and ratio["time_to_target"] > 0 and ratio["turns"] == 3
    assert "| flaxlm |" in stderr and "| hf_torch |" in stderr and "target" in stderr


def test_the_untimed_pass_at_each_turn_changes_no_result():
    """--turn_warmup 1 (the default) runs a step on a copy (flaxlm) and a forward and backward whose
    gradients are dropped (torch) before each turn: every held-out loss is as without it."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "tools/time_to_quality.py", "--model=bert_tiny", "--quick", "--torch_threads=1"]
    losses = {}
    for warm in (0, 1):
        by_what, _ = run_json_tool([*cmd, f"--turn_warmup={warm}", *SMALL], env)
        losses[warm] = [(r["framework"], r["step"], r["loss"]) for r in by_what["eval"]]
    assert len(losses[1]) == 6  # steps 0, 2, 4 of both frameworks
    assert losses[0] == losses[1]


def test_hf_inputs_score_flaxlm_targets_on_packed_and_padded_rows():
    """A GPT row of two packed documents and padding: HF's GPT-2, given flaxlm's weights and
    `benchmark.hf_torch_inputs`, gives flaxlm's loss (its per-document mask, positions and targets)."""
    import torch
    import transformers

    from flaxlm import hf, models, objectives
    from flaxlm import optimizer as optimizer_lib
    from flaxlm import train as train_lib
    from flaxlm import train_step as step_lib

    args = time_to_quality.parse_args(["--model=gpt_tiny", "--steps=4", *SMALL, "--set=model.vocab_size=300"])
    c = time_to_quality.ttq_config(args)
    c.data.seq_len = 16
    model_cfg = train_lib.model_config(c)
    model = models.get_model(model_cfg)
    state = train_lib.init_state(model, optimizer_lib.make_optimizer(c.train), c, jax.random.key(0))
    r = np.random.RandomState(0)
    batch = {
        "input_ids": r.randint(5, 300, (2, 16)).astype(np.int32),
        "segment_ids": np.array([[1] * 6 + [2] * 7 + [0] * 3, [1] * 16], np.int32),
        "positions": np.array([[*range(6), *range(7), 0, 0, 0], list(range(16))], np.int32),
    }
    logits = step_lib.apply_model(model, state.params, batch, objective="clm", train=False)
    ours, _ = objectives.causal_lm_loss(logits, batch["input_ids"], batch["segment_ids"])
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ttq_gpt_{os.getpid()}")
    hf.save_hf(out, model_cfg.to_dict(), state.params)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out, config=benchmark.hf_config(c, "hf_torch"))
    with torch.no_grad():
        loss = theirs.eval()(**benchmark.hf_torch_inputs(c, batch)).loss
    assert float(loss) == pytest.approx(float(ours), abs=1e-5)
    labels = benchmark.hf_causal_labels(batch)
    assert (labels[0, [0, 6, 13, 14, 15]] == -100).all() and (
        labels[1, 1:] == batch["input_ids"][1, 1:]
    ).all()


def test_time_to_target_interpolates_between_evaluations():
    curve = [(0, 9.0, 0.0), (10, 7.0, 5.0), (20, 5.0, 15.0)]
    assert time_to_quality.time_to(curve, 6.0) == (10.0, 15.0)  # halfway from step 10 to 20
    assert time_to_quality.time_to(curve, 7.0) == (5.0, 10.0)
    assert time_to_quality.time_to(curve, 4.0) == (None, None)
    assert time_to_quality.schedule_of_turns(25, 10, 4) == [
        *[(4, False), (4, False), (2, True)] * 2,
        (4, False),
        (1, True),
    ]


def test_help_and_a_bad_model():
    tool = [sys.executable, "tools/time_to_quality.py"]
    proc = subprocess.run([*tool, "--help"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "Time to a given model quality" in proc.stdout
    proc = subprocess.run([*tool, "--model=bert_huge"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "not a recipe in configs/" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([*tool, "--model=t5_tiny"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "no HF torch twin" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([*tool, "--flaxlm_env=XLA_FLAGS"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "expected NAME=VALUE" in proc.stderr.strip().splitlines()[-1]
