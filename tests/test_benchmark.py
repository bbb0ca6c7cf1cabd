"""tools/benchmark.py and flaxlm.flops: the FLOP count by hand and against XLA's, the published peaks,
and a --quick run of the tool against both HF peers."""

import os
import subprocess
import sys

import jax
import pytest

from conftest import REPO, load_config, run_json_tool
from flaxlm import flops
from flaxlm import models
from flaxlm import optimizer as optimizer_lib
from flaxlm import train as train_lib
from flaxlm import train_step as step_lib

sys.path.insert(0, str(REPO / "tools"))
import benchmark  # noqa: E402
import step_cost  # noqa: E402


def test_flops_per_token_by_hand():
    bert = dict(load_config("bert_base").model, pair_head=True)
    # Per token at seq 128 with 20 masked positions per row:
    blocks = 12 * (4 * 768 * 768 + 2 * 768 * 3072)  # 84,934,656 weights in the 12 blocks
    assert blocks == 84_934_656
    head = 30522 * 768 * 20 / 128  # the tied vocabulary projection on 20 of 128 positions
    head += 768 * 768 * 20 / 128  # mlm_transform, same positions
    head += 768 * 768 / 128 + 2 * 768 / 128  # pooler and NSP head, once per row
    assert flops.matmul_params_per_token(bert, 128, 20) == pytest.approx(blocks + head, rel=1e-12)
    attention = 12 * 12 * 768 * 128  # 12 L D T
    assert flops.train_flops_per_token(bert, 128, 20) == pytest.approx(6 * (blocks + head) + attention)
    assert flops.train_flops_per_token(bert, 128, 20) == pytest.approx(546_320_232)

    gpt = dict(load_config("gpt2_small").model)
    # GPT-2 small at 1024: 6 * (84.9M blocks + 38.6M tied head on every position) + 12 L D T.
    expected = 6 * (84_934_656 + 50257 * 768) + 12 * 12 * 768 * 1024
    assert flops.train_flops_per_token(gpt, 1024, 1024) == expected == 854_438_400


def test_flops_per_token_of_albert_by_hand():
    """ALBERT-base: E=128 embeddings projected to D=768 at every position; the MLM head is D -> E -> V."""
    albert = dict(load_config("albert_base").model, pair_head=True)
    blocks = 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 128 * 768  # one shared block run 12 times; projection
    head = 30000 * 128 * 80 / 512 + 768 * 128 * 80 / 512  # vocabulary projection and mlm_transform
    head += 768 * 768 / 512 + 2 * 768 / 512  # pooler and SOP head, once per row
    assert flops.matmul_params_per_token(albert, 512, 80) == pytest.approx(blocks + head, rel=1e-12)


def test_flops_per_token_of_spanbert_by_hand():
    """SpanBERT's SBO head on the same 20 of 128 positions: 3D -> D, D -> D, and the vocabulary again."""
    bert = dict(load_config("bert_base").model, pair_head=False)
    spanbert = dict(bert, sbo_positions=20)
    sbo = (3 * 768 * 768 + 768 * 768 + 30522 * 768) * 20 / 128
    assert flops.matmul_params_per_token(spanbert, 128, 20) == pytest.approx(
        flops.matmul_params_per_token(bert, 128, 20) + sbo, rel=1e-12
    )


@pytest.mark.parametrize("name", ["bert_tiny", "gpt_tiny", "albert_tiny", "spanbert_tiny"])
def test_flops_per_token_against_xla_cost_analysis(name):
    """XLA counts every FLOP of the lowered train step (matmuls, and the elementwise work the model
    count leaves out); the model count is within 8% below it on a model of hidden size 128.
    (Leaving out attention would put it ~7% lower still, counting a matmul twice above XLA's.)"""
    c = load_config(name)
    c.model.update(hidden_size=128, num_layers=2, num_heads=2, mlp_dim=512, vocab_size=1000, max_len=64)
    c.model.update(dropout_rate=0.0, attention_dropout_rate=0.0)  # dropout's RNG is not model work
    c.data.update(seq_len=64, max_predictions=10, mask_prob=0.15)
    c.train.batch_size = 8
    model = models.get_model(train_lib.model_config(c))
    tx = optimizer_lib.make_optimizer(c.train)
    state = jax.eval_shape(lambda: train_lib.init_state(model, tx, c, jax.random.key(0)))
    step = step_lib.make_train_step(
        model, tx, optimizer_lib.learning_rate_schedule(c.train), objective=c.objective
    )
    lowered = jax.jit(step).lower(state, benchmark.synthetic_batch(c), jax.random.key(1))
    xla = lowered.cost_analysis()["flops"]
    ours = benchmark.flops_per_token(c) * 8 * 64
    assert 0.92 * xla < ours <= xla


def test_published_peaks():
    assert flops.published_peak_flops("NVIDIA H100 80GB HBM3", "bfloat16") == (
        989e12,
        "NVIDIA H100 SXM spec sheet, BF16 dense",
    )
    assert flops.published_peak_flops("NVIDIA H100 PCIe", "bfloat16")[0] == 756e12
    assert flops.published_peak_flops("NVIDIA A100-SXM4-80GB", "float32")[0] == 156e12
    assert flops.published_peak_flops("TPU v5 lite", "bfloat16")[0] == 197e12
    assert flops.published_peak_flops("TPU v4", "bfloat16")[0] == 275e12
    assert flops.published_peak_flops("cpu", "float32") is None


TRAIN_STEP_FIELDS = {
    "framework",
    "model",
    "seq",
    "batch",
    "dtype",
    "tokens_per_s",
    "step_s_median",
    "step_s_min",
    "step_s_max",
    "flops_per_token",
    "flops_per_s",
    "peak_flops_per_s",
    "mfu",
    "peak_memory_bytes",
    "compile_s",
    "cpu_s_median",
    "loss_first",
    "loss_last",
    "params",
}


def test_quick_run_against_both_peers_prints_json_lines_and_a_table():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    cmd = [
        sys.executable,
        "tools/benchmark.py",
        "--model=bert_tiny",
        "--seq=32",
        "--batch=4",
        "--quick",
        "--rounds=2",  # flaxlm, hf_torch, hf_flax, flaxlm, hf_torch, hf_flax: one step each
        "--compare=hf_torch,hf_flax",
        "--flaxlm_env=FLAXLM_TEST_MARK=flaxlm's alone",
        *("--set=model.num_layers=1", "--set=model.hidden_size=32", "--set=model.num_heads=2"),
        *("--set=model.mlp_dim=64", "--set=model.vocab_size=1000"),
    ]
    by_what, stderr = run_json_tool(cmd, env)
    assert by_what["machine"][0]["backend"] == "cpu"
    peaks = {p["dtype"]: p for p in by_what["peak"]}
    assert set(peaks) == {"float32", "bfloat16"} and all(p["flops_per_s"] > 1e8 for p in peaks.values())
    steps = {r["framework"]: r for r in by_what["train_step"]}
    assert list(steps) == ["flaxlm", "hf_torch", "hf_flax"]
    fpt = benchmark.flops_per_token(benchmark.bench_config(benchmark.parse_args(cmd[2:])))
    for r in steps.values():
        assert TRAIN_STEP_FIELDS <= set(r), TRAIN_STEP_FIELDS - set(r)
        assert r["steps"] == 2 and r["tokens_per_step"] == 4 * 32
        # Taking turns on a CPU, each turn starts with an untimed step: compile + 1 warmup + 2 x (1 + 1).
        assert r["turn_warmup"] == 1 and r["steps_run"] == 6
        assert r["step_s_min"] <= r["step_s_median"] <= r["step_s_max"]
        assert r["tokens_per_s"] == pytest.approx(128 / r["step_s_median"])
        assert r["flops_per_token"] == fpt  # the same model FLOPs for every framework
        assert r["mfu"] == pytest.approx(r["flops_per_s"] / peaks["float32"]["flops_per_s"])
        assert r["peak_memory_bytes"] > r["import_rss_bytes"] > 0
        assert 0 < r["loss_last"] < 10
    assert steps["flaxlm"]["flaxlm_env"] == {"FLAXLM_TEST_MARK": "flaxlm's alone"}  # as its worker saw it
    assert steps["hf_torch"]["flaxlm_env"] == steps["hf_flax"]["flaxlm_env"] == {}
    # Same architecture: the same number of parameters in all three frameworks.
    assert steps["flaxlm"]["params"] == steps["hf_torch"]["params"] == steps["hf_flax"]["params"]
    ratios = {r["flaxlm_over"]: r for r in by_what["ratio"]}
    assert set(ratios) == {"hf_torch", "hf_flax"}
    for r in ratios.values():
        # The median of the two rounds' ratios, inside its interval, inside the rounds' range.
        assert len(r["tokens_per_s_rounds"]) == 2
        assert r["tokens_per_s"] == pytest.approx(sum(r["tokens_per_s_rounds"]) / 2)
        assert r["tokens_per_s_min"] <= r["tokens_per_s_low"] <= r["tokens_per_s"]
        assert r["tokens_per_s"] <= r["tokens_per_s_high"] <= r["tokens_per_s_max"]
        assert r["tokens_per_s_min"] == min(r["tokens_per_s_rounds"]) > 0
        assert "bootstrap 95%" in r["interval"]
    assert "| flaxlm |" in stderr and "| hf_torch |" in stderr and "peak:" in stderr
    assert f"{ratios['hf_torch']['tokens_per_s']:.3f}x (" in stderr  # the table shows the interval


def test_ratio_stats_on_fixed_numbers():
    # Two rounds: a resample's median is a, b or their mean (p = 1/4, 1/4, 1/2), so the 95% interval
    # runs from one round to the other.
    assert benchmark.ratio_stats([1.0, 2.0]) == dict(median=1.5, low=1.0, high=2.0, min=1.0, max=2.0)
    assert benchmark.ratio_stats([1.1]) == dict(median=1.1, low=1.1, high=1.1, min=1.1, max=1.1)
    ten = [1.00, 1.02, 1.04, 1.05, 1.06, 1.06, 1.07, 1.08, 1.10, 1.30]
    s = benchmark.ratio_stats(ten)
    assert s["median"] == pytest.approx(1.06) and (s["min"], s["max"]) == (1.00, 1.30)
    # With ten rounds a resample's median rarely reaches the extremes: the interval is narrower than
    # the range, and one outlying round (1.30) does not move it.
    assert 1.00 < s["low"] < 1.06 < s["high"] < 1.30
    assert s == benchmark.ratio_stats(ten)  # seeded: the same rounds give the same interval
    assert benchmark.ratio_stats([*ten[:-1], 5.0]) == dict(s, max=5.0)


def test_bad_model_is_one_line():
    proc = subprocess.run(
        [sys.executable, "tools/benchmark.py", "--model=bert_huge"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "not a recipe in configs/" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_step_cost_breakdown_and_the_chunked_loss():
    """tools/step_cost.py on a tiny GPT: its matmul FLOPs (counted per op of the optimised HLO) are
    most of XLA's count; the chunked loss keeps every matmul FLOP (nothing recomputed), never writes
    a [B, T, V] array, and needs less temporary memory."""
    argv = ["--model=gpt_tiny", "--seq=64", "--batch=4", "--set=model.vocab_size=4000"]
    results = {}
    for chunk in (0, 16):
        config, compiled = step_cost.compile_step(
            benchmark.parse_args([*argv, f"--set=train.loss_chunk_size={chunk}"])
        )
        assert config.train.loss_chunk_size == chunk
        cats, arrays = step_cost.breakdown(compiled.as_text())
        cost = compiled.cost_analysis()
        results[chunk] = cats, arrays, compiled.memory_analysis().temp_size_in_bytes, cost["flops"]
    cats, arrays, temp, xla = results[0]
    matmul = sum(c["matmul_flops"] for c in cats.values())
    assert 0.8 * xla < matmul <= xla
    logits = 4 * 64 * 4000 * 4
    assert arrays[0][0] == logits  # the largest array: the float32 logits
    chunked_cats, chunked_arrays, chunked_temp, _ = results[16]
    assert sum(c["matmul_flops"] for c in chunked_cats.values()) == matmul
    assert chunked_arrays[0][0] < logits and chunked_temp < temp


def test_matmul_benchmark_times_the_steps_matmuls_in_both_frameworks():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, "tools/matmul_benchmark.py", "--model=bert_tiny", "--seq=32", "--batch=2"]
    by_what, stderr = run_json_tool([*cmd, "--rounds=2", "--min_time=0.001", "--pause=0"], env)
    rows = {r["op"]: r for r in by_what["matmul"]}
    assert len(rows) == 8
    # bert_tiny: hidden 128, MLP 512, 2 heads; 2 x 32 positions, 2 x 10 of them masked, vocabulary 8000.
    assert rows["MLP up"]["lhs"] == [64, 128] and rows["MLP up"]["rhs"] == [128, 512]
    assert rows["MLP up"]["flops"] == 2 * 64 * 128 * 512
    assert rows["MLP up: weight gradient"]["flops"] == rows["MLP up"]["flops"]
    assert rows["attention scores"]["flops"] == 2 * 4 * 32 * 32 * 64
    assert rows["vocabulary projection"]["lhs"] == [20, 128]
    for r in rows.values():
        assert r["xla_gflops"] > 0 and r["torch_gflops"] > 0
        assert r["xla_over_torch_low"] <= r["xla_over_torch"] <= r["xla_over_torch_high"]
    assert "| MLP up | [64, 128] x [128, 512] |" in stderr
