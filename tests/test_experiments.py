"""experiments/: statistics against scipy, FLOPs against XLA's count, every planned config valid, and the
quick NSP-ablation sweep end to end (cross-evaluation, report, skip finished runs, resume interrupted)."""

import dataclasses
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from scipy import stats as sps

from conftest import REPO, load_config
from experiments.common import downstream
from experiments.common import flops
from experiments.common import recipes
from experiments.common import report
from experiments.common import runner
from experiments.common import stats
from experiments.nsp_ablation import sweep as nsp_sweep
from experiments.objectives import sweep as obj_sweep
from experiments.t5_objectives import sweep as t5_sweep
from flaxlm import config as config_lib
from flaxlm import models
from flaxlm import train as train_lib
from flaxlm import train_step as step_lib

# Held-out MLM accuracies of five short BERT runs (values of the kind the reports compare).
A = [0.1123, 0.1187, 0.1142, 0.1201, 0.1165]
B = [0.1098, 0.1131, 0.1076, 0.1120]


# Statistics ---------------------------------------------------------------------------------------------


def test_welch_and_intervals_match_scipy():
    t, df, p = stats.welch_t_test(A, B)
    ref = sps.ttest_ind(A, B, equal_var=False)
    np.testing.assert_allclose([t, p], [ref.statistic, ref.pvalue], rtol=1e-10)
    np.testing.assert_allclose(df, ref.df, rtol=1e-10)

    lo, hi = stats.t_interval(A)
    ref_lo, ref_hi = sps.t.interval(0.95, len(A) - 1, loc=np.mean(A), scale=sps.sem(A))
    np.testing.assert_allclose([lo, hi], [ref_lo, ref_hi], rtol=1e-12)

    # The Welch interval of the difference excludes 0 exactly when the test rejects at 5%.
    d_lo, d_hi = stats.welch_interval(A, B)
    assert (d_lo > 0) == (p < 0.05)
    np.testing.assert_allclose((d_lo + d_hi) / 2, np.mean(A) - np.mean(B), rtol=1e-12)

    s = stats.summarize(A)
    assert (s.n, s.n_scores) == (5, 5)
    np.testing.assert_allclose([s.mean, s.std], [np.mean(A), np.std(A, ddof=1)], rtol=1e-12)
    # Hand computation: mean ± t_{0.975,4} · s/√5 with t_{0.975,4} = 2.776445105.
    np.testing.assert_allclose(s.t_high - s.mean, 2.776445105 * np.std(A, ddof=1) / math.sqrt(5), rtol=1e-8)


def test_bootstrap_matches_scipy_percentile_and_respects_seed_groups():
    lo, hi = stats.bootstrap_ci(A, n_boot=20_000)
    ref = sps.bootstrap((A,), np.mean, method="percentile", n_resamples=20_000, random_state=0)
    np.testing.assert_allclose(
        [lo, hi], [ref.confidence_interval.low, ref.confidence_interval.high], atol=4e-4
    )

    # Two pretraining seeds far apart, three fine-tuning seeds each: the interval must span the seeds,
    # not shrink as if the six scores were independent.
    groups = [[0.70, 0.71, 0.72], [0.80, 0.81, 0.82]]
    g_lo, g_hi = stats.bootstrap_ci(groups)
    f_lo, f_hi = stats.bootstrap_ci([x for g in groups for x in g])
    assert g_lo < 0.715 and g_hi > 0.805
    assert (g_hi - g_lo) > 1.4 * (f_hi - f_lo)
    s = stats.summarize(groups)
    assert (s.n, s.n_scores) == (2, 6)
    # The t-interval of grouped scores is over the two seed means (df = 1).
    half = sps.t.ppf(0.975, 1) * np.std([0.71, 0.81], ddof=1) / math.sqrt(2)
    np.testing.assert_allclose([s.t_low, s.t_high], [0.76 - half, 0.76 + half], rtol=1e-10)


def test_too_few_seeds_give_nan_not_numbers():
    assert all(math.isnan(x) for x in stats.t_interval([0.5]))
    assert all(math.isnan(x) for x in stats.welch_t_test([0.5], B))
    assert all(math.isnan(x) for x in stats.welch_t_test([0.5, 0.5], [0.4, 0.4]))  # no variance
    c = stats.compare([0.5], [0.4])
    assert c.diff == pytest.approx(0.1) and c.significant is None


def test_holm_and_comparison_family():
    # Hand computation for 4 tests: sorted p 0.005, 0.01, 0.03, 0.04 -> ×4, ×3, ×2, ×1, kept monotone.
    adjusted = stats.holm([0.01, 0.04, 0.03, float("nan"), 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, np.nan, 0.02])
    comps = stats.compare_all([(A, B), (B, A), (A, A)])
    assert comps[0].p_holm == pytest.approx(min(1.0, 3 * comps[0].p))
    assert comps[0].diff == pytest.approx(-comps[1].diff)
    p = stats.binomial_vs_chance(60, 100, 0.5)
    assert p == pytest.approx(sps.binomtest(60, 100, 0.5).pvalue)


def test_verdicts_follow_published_direction():
    claim = report.Claim("src", "a better", "a", "b", ">", "m")
    sig_pos = stats.Comparison(0.02, 0.01, 0.03, 0.01, 0.03, 5.0, 4.0, 0.001, 0.002)
    not_sig_neg = stats.Comparison(-0.01, -0.03, 0.01, -0.02, 0.0, -1.0, 4.0, 0.3, 0.3)
    assert report.verdict(claim, sig_pos) == "agrees (significant)"
    assert (
        report.verdict(claim, not_sig_neg) == "inconclusive: against the published direction, not significant"
    )
    loss_claim = report.Claim("src", "a lower loss", "a", "b", ">", "m", higher_is_better=False)
    assert report.verdict(loss_claim, sig_pos) == "disagrees: significantly opposite"
    same = report.Claim("src", "≈", "a", "b", "≈", "m")
    assert report.verdict(same, not_sig_neg) == "consistent: no significant difference"
    at_least = report.Claim("src", "a ≥ b", "a", "b", ">=", "m")
    assert report.verdict(at_least, not_sig_neg) == "consistent: not significantly worse"
    assert report.verdict(at_least, sig_pos) == "agrees: significantly better"
    # A pair listed twice (baseline comparison and static-vs-dynamic) is one row and one Holm test.
    values = {"a": [[0.1], [0.2], [0.3]], "b": [[0.2], [0.3], [0.5]], "c": [[0.1], [0.1], [0.2]]}
    table, comps = report.comparison_table([("a", "b"), ("c", "b"), ("a", "b")], values, {})
    assert len(comps) == 2 and table.count("| a − b |") == 1
    assert report.verdict(claim, None) == "not measured"
    # On a fine-tuned loss the better model is lower, whatever the claim's pretraining measure says.
    comps = {
        "downstream:definitions/rougeL": {("a", "b"): sig_pos},
        "downstream:definitions/loss": {("a", "b"): sig_pos},
    }
    rows = report.claim_rows([claim], comps, {})
    verdicts = {row[2]: row[4] for row in rows}
    assert verdicts == {
        "a vs b, definitions/rougeL": "agrees (significant)",
        "a vs b, definitions/loss": "disagrees: significantly opposite",
        "a vs b, m": "not measured",
    }
    comps[report.AT_CHANCE] = {"downstream:definitions/rougeL"}  # a table where every variant is at chance
    rows = report.claim_rows([claim], comps, {})
    assert rows[0][4] == "no evidence: every variant is at chance on this measure"


# FLOPs, schedule and planned configs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch,objective",
    [
        ("bert", "mlm_nsp"),
        ("gpt", "clm"),
        ("albert", "mlm_sop"),
        ("bert", "mlm_sbo"),
        ("gpt", "prefix_lm"),
        ("t5", "span_corruption"),
        ("t5", "iid_denoising"),
        ("t5.1.1", "span_corruption"),
    ],
)
def test_flops_within_xla_count_and_parameters_exact(arch, objective):
    """Our matmul-only count is the bulk of what XLA counts for the forward pass (the rest is
    elementwise), at the CPU recipe's shapes; the parameter count is exact. ALBERT: factorised
    embeddings (E 64 < D 128) and one block shared by the layers. mlm_sbo: SpanBERT's SBO head.
    prefix_lm: GPT's count. T5: encoder, decoder with cross-attention, head_dim != D / N, a decoder
    deeper than the encoder; T5.1.1: gated MLP and an untied lm_head."""
    from flaxlm.models.t5 import T5_SWITCHES

    config = runner.resolved_config(recipes.CPU.config, recipes.CPU.overrides)
    config.objective = objective
    config.model.arch = {"albert": "bert", "t5.1.1": "t5"}.get(arch, arch)
    builders = {"gpt": "causal", "albert": "sop", "t5": objective, "t5.1.1": objective}
    config.data.builder = builders.get(arch, "segment_pair")
    if objective == "prefix_lm":
        config.data.builder = "prefix_lm"
    if arch == "albert":
        config.model.update(embedding_size=64, share_layers="all")
    if arch.startswith("t5"):
        config.model.update(T5_SWITCHES)
        config.model.update(head_dim=48, num_decoder_layers=3)
    if arch == "t5.1.1":
        config.model.update(gated_mlp=True, activation="gelu_tanh", tie_embeddings=False)
    model = models.get_model(train_lib.model_config(config))
    batch = train_lib.dummy_batch(config, 1)
    params = jax.eval_shape(
        lambda: train_lib.init_state(model, optax.identity(), config, jax.random.key(0)).params
    )
    assert (
        sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        == (flops.parameter_count(config.model.to_dict(), objective, config.data.max_predictions)["total"])
    )
    forward = jax.jit(lambda p, b: step_lib.apply_model(model, p, b, objective=objective, train=False))
    cost = forward.lower(params, batch).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    targets_length = batch["targets"].shape[1] if "targets" in batch else 0
    ours = flops.forward_flops_per_sequence(
        config.model.to_dict(), objective, 128, config.data.max_predictions, targets_length
    )
    assert 0.93 * cost["flops"] < ours <= cost["flops"]
    assert flops.train_flops_per_step(config.to_dict()) == 3 * ours * config.train.batch_size


@pytest.mark.parametrize(
    "exp", [nsp_sweep.EXPERIMENT, obj_sweep.EXPERIMENT, t5_sweep.EXPERIMENT], ids=lambda e: e.name
)
def test_every_planned_config_is_valid_and_matched(exp, tmp_path):
    for scale, recipe in exp.recipes.items():
        for r in (recipe, exp.quick(recipe)):
            variants = exp.adapt(r, exp.variants) if exp.adapt else list(exp.variants)
            runs = runner.plan_runs(r, variants, [0, 1], str(tmp_path), {"data.corpus": "/data/*.txt"})
            assert len(runs) == 2 * len(exp.variants)
            budgets = {}  # variant -> (training FLOPs, FLOPs of one step per phase)
            for run in runs:
                prev_steps, total, per_step = 0, 0, []
                for phase in run.phases:
                    config = runner.resolved_config(r.config, phase)
                    config_lib.validate(config)
                    assert config.train.seed == run.seed == config.data.seed
                    steps = config.train.num_steps - prev_steps
                    prev_steps = config.train.num_steps
                    per_step.append(flops.train_flops_per_step(config.to_dict()))
                    total += steps * per_step[-1]
                budgets[run.variant.name] = (total, per_step)
            reference = {"objectives": "mlm", "t5_objectives": "span_corruption"}.get(exp.name, "segpair_nsp")
            ref = budgets[reference][0]
            for name, (total, per_step) in budgets.items():
                if exp.name != "nsp_ablation":  # matched FLOPs, up to rounding each phase to whole steps
                    assert abs(total - ref) <= 0.5 * sum(per_step), (scale, name)
                else:  # matched steps, batch and length: FLOPs differ only by the 2-way head
                    assert abs(total - ref) / ref < 1e-4, (scale, name)


def test_objectives_give_clm_fewer_steps_for_the_same_flops():
    recipe = obj_sweep.EXPERIMENT.recipes["cpu"]  # bert_tiny as tuned: 40% masks, 600 steps
    assert recipe is recipes.CPU
    variants = {v.name: v for v in obj_sweep.matched_flops(recipe, obj_sweep.VARIANTS)}
    runs = {r.variant.name: r for r in runner.plan_runs(recipe, variants.values(), [0], "/tmp/x")}
    assert runs["mlm"].num_steps == 600
    assert runs["mlm_nsp"].num_steps == 600
    # Forward FLOPs per sequence at the CPU shapes (hidden 128, vocabulary 8000): MLM 225.7M (the
    # vocabulary projection on 52 scored positions), CLM 379.6M (on all 128).
    assert runs["clm"].num_steps == round(600 * 225_673_216 / 379_584_512) == 357
    # RoBERTa's inputs cost what BERT's do; ALBERT's 64-wide vocabulary projection is half of BERT's
    # (plus the 64 -> 128 projection at every position), SpanBERT's SBO head scores the 52 positions again.
    assert runs["roberta"].num_steps == 600
    assert runs["albert"].num_steps == round(600 * 225_673_216 / 173_670_912) == 780
    assert runs["spanbert"].num_steps == round(600 * 225_673_216 / 338_984_960) == 399
    # ELECTRA: the discriminator's blocks plus a half-width generator's, 20 predictions at 15% masks.
    assert runs["electra"].num_steps == round(600 * 225_673_216 / 198_606_848) == 682
    # 15% masks (20 scored positions, 159.1M) would leave the CLM fewer steps for the same budget.
    shakespeare_era = recipe.with_overrides("cpu", {"data.max_predictions": 20, "train.num_steps": 240})
    variants = obj_sweep.matched_flops(shakespeare_era, obj_sweep.VARIANTS)
    runs = {r.variant.name: r for r in runner.plan_runs(shakespeare_era, variants, [0], "/tmp/x")}
    assert runs["mlm"].num_steps == 240 and runs["clm"].num_steps == round(240 * 159_088_640 / 379_584_512)


def test_t5_objectives_match_span_corruptions_flops():
    recipe = t5_sweep.EXPERIMENT.recipes["cpu"]  # t5_tiny's shape, 600 steps of 32 x 128
    variants = t5_sweep.matched_flops(recipe, t5_sweep.VARIANTS)
    runs = {r.variant.name: r for r in runner.plan_runs(recipe, variants, [0], "/tmp/x")}
    assert runs["span_corruption"].num_steps == 600
    # Forward FLOPs per sequence (flops.py): span corruption 224.9M (encoder over 128 inputs, decoder
    # over 29 targets), BERT-style 547.4M (decoder over all 128), a 4-layer GPT 497.0M (prefix LM and
    # LM alike: a prefix LM computes every position).
    assert runs["iid_denoising"].num_steps == round(600 * 224_879_616 / 547_356_672) == 247
    assert (
        runs["prefix_lm"].num_steps == runs["clm"].num_steps == round(600 * 224_879_616 / 497_025_024) == 271
    )
    configs = {n: runner.resolved_config(recipe.config, r.phases[0]) for n, r in runs.items()}
    assert {c.model.arch for n, c in configs.items() if n in ("prefix_lm", "clm")} == {"gpt"}
    assert configs["clm"].model.num_layers == 4 and configs["span_corruption"].model.num_layers == 2
    params = {n: flops.parameter_count(c.model.to_dict(), c.objective)["total"] for n, c in configs.items()}
    assert abs(params["clm"] - params["span_corruption"]) / params["span_corruption"] < 0.1  # 2P vs 2P
    assert set(recipe.tasks) <= set(downstream.TASKS) and all(t in downstream.HEADLINE for t in recipe.tasks)


def test_results_json_parsing():
    results = {
        "task": "sentiment",
        "seeds": [  # as flaxlm.finetune.finetune writes them: metrics per split
            {"seed": s, "dev": {"accuracy": 0.5}, "test": {"accuracy": a, "f1": f}, "steps": 9}
            for s, a, f in [(0, 0.81, 0.80), (1, 0.83, 0.82), (2, 0.80, 0.79)]
        ],
    }
    assert downstream.per_seed_scores(results) == {"accuracy": [0.81, 0.83, 0.80], "f1": [0.80, 0.82, 0.79]}
    with pytest.raises(ValueError, match="per-seed"):
        downstream.per_seed_scores({"mean": 0.8})
    from flaxlm import cli

    if "finetune" not in cli.SUBCOMMANDS:
        assert "finetune" in downstream.unavailable()


# The quick sweep end to end -------------------------------------------------------------------------------


def sweep(out, *args, data_dir, module="experiments.nsp_ablation.sweep"):
    env = dict(os.environ, FLAXLM_DATA_DIR=data_dir)
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    return subprocess.run(
        [sys.executable, "-m", module, "--quick", "--seeds=0", f"--out={out}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def ok(proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_quick_nsp_sweep_cross_evaluates_reports_skips_and_resumes(tmp_path, data_dir):
    out = tmp_path / "runs"
    # --no_downstream: tests/test_finetune.py covers `flaxlm finetune`; the results it writes are
    # put in place below, as the downstream stage would find them.
    ok(sweep(out, "--variants=segpair_nsp,sop", "--no_downstream", data_dir=data_dir))
    nsp_run, sop_run = out / "segpair_nsp" / "seed0", out / "sop" / "seed0"

    # Cross-evaluation: both pair-head models on both tasks, and everyone on the common MLM split.
    for run in (nsp_run, sop_run):
        evals = json.loads((run / "analysis.json").read_text())["evals"]
        assert set(evals) == {"common_mlm", "nsp", "sop", "nsp_same_source", "nsp_other_source"}
        assert 0.0 <= evals["nsp"]["nsp_accuracy"] <= 1.0 and 0.0 <= evals["sop"]["sop_accuracy"] <= 1.0
        assert evals["nsp"]["examples"] == evals["sop"]["examples"] == 4 * 16  # train.eval_batches x batch
        # NotNext drawn within and across the default corpus's four sources: other examples than "nsp".
        within, across = evals["nsp_same_source"], evals["nsp_other_source"]
        assert within["examples"] == across["examples"] == 4 * 16
        assert within["nsp_loss"] != across["nsp_loss"] != evals["nsp"]["nsp_loss"]
    # The same three numbers for one run, from the command line.
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.nsp_ablation.sources", f"--workdir={nsp_run}"],
        cwd=REPO,
        env=dict(os.environ, FLAXLM_DATA_DIR=data_dir),  # where the sweep prepared the run's data
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = ok(proc).stdout.splitlines()
    evals = json.loads((nsp_run / "analysis.json").read_text())["evals"]
    for line, spec in zip(lines, ("nsp", "nsp_same_source", "nsp_other_source")):
        assert f"nsp_accuracy {evals[spec]['nsp_accuracy']:.4f}" in line, (line, spec)
    # A run of seed 0 evaluated on its own task reads the very batches its own last evaluation read:
    # restored parameters + flaxlm's eval step must give the training loop's numbers.
    for run, task in ((nsp_run, "nsp"), (sop_run, "sop")):
        own = report.load_runs(str(out))
        own = next(r for r in own if r.workdir == str(run)).final_eval()
        cross = json.loads((run / "analysis.json").read_text())["evals"][task]
        for k in ("mlm_loss", "mlm_accuracy", f"{task}_loss", f"{task}_accuracy"):
            assert cross[k] == pytest.approx(own[f"eval_{k}"], rel=1e-5, abs=1e-6), (task, k)
    totals = json.loads((nsp_run / "analysis.json").read_text())["totals"]
    assert totals["steps"] == 6 and 0 < totals["tokens_seen"] <= 6 * 16 * 64

    text = (out / "REPORT.md").read_text()
    for needle in (
        "## Pretraining results",
        "| SEGMENT-PAIR + NSP | 1 |",
        "| SEGMENT-PAIR + SOP | 1 |",
        "## NSP ↔ SOP cross-evaluation",
        "## NSP within and across kinds of text",
        "## Published directions and ours",
        "Not run: --no_downstream",
        "flaxlm train --config=configs/bert_tiny.py",
    ):
        assert needle in text, needle
    for fig in ("bar_common_mlm_accuracy.png", "bar_sop_accuracy.png", "curve_eval_mlm_loss.png"):
        assert (out / "figures" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
        assert f"figures/{fig}" in text

    # A second invocation trains nothing.
    metrics_before = (sop_run / "metrics.jsonl").read_text()
    proc = ok(sweep(out, "--variants=segpair_nsp,sop", "--no_report", "--no_downstream", data_dir=data_dir))
    assert proc.stdout.count(": skipped") == 2, proc.stdout
    assert (sop_run / "metrics.jsonl").read_text() == metrics_before

    # Different settings for an existing run: refused, nothing touched.
    proc = sweep(
        out, "--variants=sop", "--set", "train.learning_rate=0.0005", "--no_downstream", data_dir=data_dir
    )
    assert proc.returncode == 2 and "trained with different settings" in proc.stderr, proc.stderr

    # Interrupted run (its last checkpoint lost): resumed from step 3, ending where it ended before.
    final_before = report.dedupe_rows([json.loads(line) for line in metrics_before.splitlines()])[-1]
    shutil.rmtree(sop_run / "checkpoints" / "6")
    proc = ok(sweep(out, "--variants=segpair_nsp,sop", "--no_report", "--no_downstream", data_dir=data_dir))
    assert proc.stdout.count(": skipped") == 1 and "sop seed0: done" in proc.stdout, proc.stdout
    attempt = json.loads((sop_run / "run.json").read_text())["attempts"][-1]
    assert (attempt["from_step"], attempt["to_step"]) == (3, 6)
    rows = report.dedupe_rows(
        [json.loads(line) for line in (sop_run / "metrics.jsonl").read_text().splitlines()]
    )
    assert [r["step"] for r in rows if "eval_loss" in r] == [0, 3, 6]
    assert rows[-1]["eval_mlm_loss"] == final_before["eval_mlm_loss"]  # resumed bitwise

    # Fine-tuning results where the finetune command writes them reach the report's downstream tables.
    for run, accs in ((nsp_run, [0.71, 0.74, 0.72]), (sop_run, [0.70, 0.73, 0.69])):
        d = pathlib.Path(downstream.finetune_dir(str(run), "sentiment"))
        d.mkdir(parents=True)
        seeds = [{"seed": s, "test": {"accuracy": a}} for s, a in enumerate(accs)]
        (d / downstream.RESULTS_FILE).write_text(json.dumps({"seeds": seeds}))
    from experiments.nsp_ablation import report as nsp_report

    text = pathlib.Path(nsp_report.write_report(str(out), str(out))).read_text()
    assert "### sentiment/accuracy" in text and "| SEGMENT-PAIR + SOP | 1 × 3 |" in text
    assert "At chance" not in text and "Not fine-tuned at this scale" not in text
    # A recipe that fine-tunes on sentiment only (as the CPU recipe does): the report names the task left out.
    for run in (nsp_run, sop_run):
        record = json.loads((run / "run.json").read_text())
        record.update(downstream="run", downstream_tasks=["sentiment"])
        (run / "run.json").write_text(json.dumps(record))
    text = pathlib.Path(nsp_report.write_report(str(out), str(out))).read_text()
    assert "Not fine-tuned at this scale: ner (the recipe's `tasks`" in text

    # The random-init control, trained as the sweep trains it: 1 step at learning rate 0 leaves the
    # initialisation, so its evaluation after the step equals the one before, bitwise.
    recipe = nsp_sweep.EXPERIMENT.quick(recipes.CPU)
    control = runner.control_run(recipe, nsp_sweep.EXPERIMENT.variants[0], 0, str(out))
    env = dict(os.environ, FLAXLM_DATA_DIR=data_dir)
    env.pop("XLA_FLAGS", None)
    assert runner.train_run(control, recipe, env=env) == "done"
    record = json.loads((pathlib.Path(control.workdir) / "run.json").read_text())
    (pathlib.Path(control.workdir) / "run.json").write_text(json.dumps({**record, "baseline": "segpair_nsp"}))
    rows = [
        json.loads(line)
        for line in (pathlib.Path(control.workdir) / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 1] and evals[0]["eval_loss"] == evals[1]["eval_loss"]
    d = pathlib.Path(downstream.finetune_dir(control.workdir, "sentiment"))
    d.mkdir(parents=True)
    seeds = [{"seed": s, "test": {"accuracy": a}} for s, a in enumerate([0.75, 0.76, 0.74])]
    (d / downstream.RESULTS_FILE).write_text(json.dumps({"seeds": seeds}))
    text = pathlib.Path(nsp_report.write_report(str(out), str(out))).read_text()
    assert "| random init (not pretrained) | 1 × 3 | 0.7500 ± 0.0100 |" in text, text
    assert "| SEGMENT-PAIR + SOP − random init (not pretrained) | -0.0433 |" in text, text
    assert "**No variant is significantly better than the random init (not pretrained) control**:" in text
    assert "2 of 2 runs finished" in text  # the control is not a variant of the comparison
    assert "is the control: the model of SEGMENT-PAIR + NSP, 1 step at learning rate 0" in text
    # Scores no better than the majority label: the report says the table carries no information.
    for run in (nsp_run, sop_run):
        seeds = [{"seed": s, "test": {"accuracy": 0.522}} for s in range(3)]
        results = pathlib.Path(downstream.finetune_dir(str(run), "sentiment")) / downstream.RESULTS_FILE
        results.write_text(json.dumps({"seeds": seeds}))
    text = pathlib.Path(nsp_report.write_report(str(out), str(out))).read_text()
    assert "**At chance.** No variant's mean sentiment/accuracy is above 0.552" in text


def test_recipe_with_unknown_downstream_task_is_refused(capsys):
    from experiments.common import main as main_lib

    exp = dataclasses.replace(
        nsp_sweep.EXPERIMENT, recipes={"cpu": dataclasses.replace(recipes.CPU, tasks=("squad",))}
    )
    assert main_lib.main(exp, ["--scale=cpu", "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert "unknown downstream task(s) squad; use some of sentiment, ner" in err, err


# CPU recipe tuning -------------------------------------------------------------------------------------


def test_tuning_scores_every_setting_on_the_same_targets(tmp_path, data_dir, monkeypatch, capsys):
    """Two settings, 4 steps each at the tests' data shape: one trains with 40% masks, yet both are
    scored on the same 15%-masked held-out positions, next to the unigram model of those targets."""
    from experiments.cpu_recipe import tune

    monkeypatch.setenv("FLAXLM_DATA_DIR", data_dir)
    small = [f"{k}={v}" for k, v in recipes.QUICK_OVERRIDES.items() if k.split(".")[0] != "train"]
    small = [s for s in small if not s.startswith(("data.max_predictions", "data.mask_prob"))]  # each its own
    small += ["train.batch_size=16", "train.num_steps=4", "train.warmup_steps=1", "train.eval_every=4"]
    small += ["train.checkpoint_every=4", "train.eval_batches=2"]
    argv = [f"--out={tmp_path}", "--only=fast,fast_mask40", *(f"--set={s}" for s in small)]
    tune.main(argv)
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in rows] == ["fast", "fast_mask40"]
    fast, mask40 = (r["eval"] for r in rows)
    assert json.loads((tmp_path / "fast_mask40" / "config.json").read_text())["data"]["mask_prob"] == 0.4
    # Same targets: the unigram model scores them identically; the models differ.
    assert fast["unigram_mlm_loss"] == mask40["unigram_mlm_loss"] and fast["examples"] == mask40["examples"]
    assert fast["mlm_loss"] != mask40["mlm_loss"] and all(r["steps"] == 4 == r["eval"]["step"] for r in rows)
    table = capsys.readouterr().out
    assert table.count("\n| `fast") == 2 and "40% masking" in table

    # A second call finds both trained and only evaluates them again.
    mtime = (tmp_path / "fast" / "train.log").stat().st_mtime
    tune.main(argv)
    assert (tmp_path / "fast" / "train.log").stat().st_mtime == mtime
    assert json.loads((tmp_path / "results.json").read_text()) == rows


def test_baseline_line_gives_each_variant_its_margin_over_the_same_runs_baseline():
    def run(variant, seed, loss, unigram):
        row = {"step": 600, "eval_mlm_loss": loss, "eval_unigram_mlm_loss": unigram}
        return report.RunData(f"/r/{variant}/seed{seed}", {"variant": variant, "seed": seed}, [row], {}, {})

    grouped = {
        "a": [run("a", 0, 6.0, 6.7), run("a", 1, 6.2, 6.7)],  # margins 0.7 and 0.5
        "b": [run("b", 0, 6.9, 6.6)],  # worse than its baseline
    }
    measure = report.Measure(
        "loss",
        "MLM loss",
        report.final_eval_metric("mlm_loss"),
        higher_is_better=False,
        digits=2,
        baseline=(report.UNIGRAM, report.final_eval_metric("unigram_mlm_loss")),
    )
    line = report.baseline_line(grouped, measure, {"a": "A", "b": "B"})
    assert "the unigram model of the training tokens, 6.67 (runs 6.60 to 6.70)" in line
    assert line.endswith("A +0.60, B -0.30.")
    no_baseline = dataclasses.replace(measure, baseline=None)
    assert report.baseline_line(grouped, no_baseline, {}) == ""


@pytest.mark.parametrize("share", ["none", "all", "attention", "ffn"])
def test_parameter_count_of_albert_options_is_exact(share):
    model_cfg = dict(
        load_config("albert_tiny").model.to_dict(), num_layers=3, share_layers=share, pair_head=True
    )
    model = models.get_model(model_cfg)
    ids = np.zeros((1, 8), np.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids, ids, ids, deterministic=True))
    expected = flops.parameter_count(model_cfg, "mlm_sop")["total"]
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == expected
    # Sharing saves parameters, not FLOPs: every layer still runs a block.
    unshared = dict(model_cfg, share_layers="none")
    assert flops.forward_flops_per_sequence(model_cfg, "mlm_sop", 128, 52) == (
        flops.forward_flops_per_sequence(unshared, "mlm_sop", 128, 52)
    )
