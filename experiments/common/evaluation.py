"""After a run has trained: what it saw (tokens, FLOPs) and how it scores on other validation splits.

`analyze_run` writes RUN/analysis.json:
  phases[]  per phase: steps, train examples, epochs, real (non-padding) tokens
            and scored targets (MLM masked positions or next-token targets) per
            example, measured on a sample of the prepared training split
  totals    tokens_seen, targets_seen, train_flops (experiments.common.flops)
  evals     {EvalSpec.name: metrics}: the final parameters evaluated with flaxlm's
            eval step on another builder's validation split

Cross-evaluations use one fixed evaluation set per builder for every run:
dynamic masks drawn with data seed 0 (the same masked positions for every
model, whatever its own seed or masking), so differences between runs are
differences between models.
"""

import logging
import os
from typing import Sequence

import grain
import jax
import ml_collections
import numpy as np

from experiments.common import flops as flops_lib
from experiments.common import runner
from flaxlm import baselines
from flaxlm import checkpoint as ckpt
from flaxlm import config as config_lib
from flaxlm import models
from flaxlm import train as train_lib
from flaxlm import train_step as step_lib
from flaxlm.data import pipeline

log = logging.getLogger(__name__)

# Every cross-evaluation reads the same examples with the same masks.
FIXED_EVAL = {"data.masking": "dynamic", "data.dupe_factor": 1, "data.seed": 0}
STATS_SAMPLE = 2048  # training examples read to measure tokens and targets per example


def _targets(example, builder: str) -> float:
    """Scored targets in one example: masked positions (MLM), next-token targets (causal LM; a prefix
    LM's continuation only) or decoder targets (T5's span corruption and i.i.d. denoising)."""
    if builder in ("causal", "prefix_lm"):
        seg = example["segment_ids"]
        scored = (seg[1:] == seg[:-1]) & (seg[:-1] != 0)
        if builder == "prefix_lm":  # the target token t + 1 is in the continuation, not the prefix
            scored &= example["prefix_mask"][1:] == 0
        return float(np.sum(scored))
    if "decoder_segment_ids" in example:
        return float(np.count_nonzero(example["decoder_segment_ids"]))
    return float(np.sum(example["mlm_weights"]))


def data_stats(config: ml_collections.ConfigDict, sample: int = STATS_SAMPLE) -> dict:
    """Training-split size and mean real tokens / scored targets per example (masks as in training)."""
    data = train_lib.prepare_data(config)
    n = len(data.train)
    idx = np.unique(np.linspace(0, n - 1, min(n, sample)).astype(int))
    ds = pipeline.with_dynamic_masks(grain.MapDataset.source(data.train).seed(config.data.seed), data)
    real, targets = [], []
    for i in idx:
        ex = ds[int(i)]
        real.append(np.count_nonzero(ex["segment_ids"]))
        targets.append(_targets(ex, config.data.builder))
    return {
        "train_examples": n,
        "validation_examples": len(data.validation),
        "real_tokens_per_example": float(np.mean(real)),
        "targets_per_example": float(np.mean(targets)),
        "sampled_examples": int(idx.size),
    }


def run_accounting(recipe_config: str, phases: Sequence[dict]) -> dict:
    """Per-phase and total steps, epochs, tokens, targets and training FLOPs of a run's phases."""
    out, prev = [], 0
    totals = {"steps": 0, "tokens_seen": 0.0, "targets_seen": 0.0, "train_flops": 0.0}
    for overrides in phases:
        config = runner.resolved_config(recipe_config, overrides)
        steps = int(config.train.num_steps) - prev
        prev = int(config.train.num_steps)
        stats = data_stats(config)
        batch = int(config.train.batch_size)
        phase = dict(
            stats,
            steps=steps,
            batch_size=batch,
            seq_len=int(config.data.seq_len),
            epochs=steps * batch / stats["train_examples"],
            tokens_seen=steps * batch * stats["real_tokens_per_example"],
            targets_seen=steps * batch * stats["targets_per_example"],
            flops_per_step=flops_lib.train_flops_per_step(config.to_dict()),
        )
        phase["train_flops"] = float(steps) * phase["flops_per_step"]
        out.append(phase)
        for k in totals:
            totals[k] += phase[k]
    params = flops_lib.parameter_count(config.model.to_dict(), config.objective, config.data.max_predictions)
    return {"phases": out, "totals": totals, "parameters": params}


def restore(workdir: str):
    """(params, step, saved config as ConfigDict) of a run's latest checkpoint."""
    params, step, saved = ckpt.restore_params(workdir)
    return params, int(step), config_lib.from_saved(saved)


def cross_evaluate(params, run_config: ml_collections.ConfigDict, overrides: dict) -> dict:
    """Evaluates `params` (trained with `run_config`) on the validation split that `overrides` describe.

    The model is built as it was trained (its pair head exists iff the
    training objective had one); the evaluation objective, e.g. mlm_sop for
    an NSP-trained model, only decides which labels are scored. Returns
    flaxlm's eval metrics plus `examples`, the trivial baselines on the same
    targets (`unigram_mlm_loss`, ... as flaxlm/baselines.py names them) and, for
    pair tasks, `majority_rate` (the accuracy of always guessing the commoner
    label of the evaluated examples).
    """
    eval_config = runner.apply_overrides(
        ml_collections.ConfigDict(run_config.to_dict()), {**FIXED_EVAL, **overrides}
    )
    config_lib.validate(eval_config)
    model = models.get_model(train_lib.model_config(run_config))
    data = train_lib.prepare_data(eval_config)
    batches = pipeline.eval_batches(
        data,
        global_batch=int(eval_config.train.batch_size),
        seed=int(eval_config.data.seed) + 1,
        max_batches=int(eval_config.train.eval_batches),
    )
    eval_step = jax.jit(step_lib.make_eval_step(model, objective=eval_config.objective))
    acc = step_lib.EvalAccumulator(float(eval_config.pair_weight))
    labels = []
    for batch in batches:
        metrics, totals = eval_step(params, batch)
        acc.add(jax.device_get(metrics), jax.device_get(totals))
        if "pair_label" in batch:
            labels.append(np.asarray(batch["pair_label"]))
    out = acc.result()
    out["examples"] = int(sum(len(b["input_ids"]) for b in batches))
    out.update(baselines.evaluate(baselines.train_statistics(data), batches, eval_config.objective))
    if labels:
        rate = float(np.concatenate(labels).mean())
        out["majority_rate"] = max(rate, 1.0 - rate)
    return out


def analyze_run(run: "runner.Run", recipe: "runner.Recipe", specs: Sequence["runner.EvalSpec"]) -> dict:
    """Writes (or completes) RUN/analysis.json for a finished run; returns it."""
    path = os.path.join(run.workdir, "analysis.json")
    analysis = runner.read_json(path, {})
    step = runner.latest_checkpoint(run.workdir)
    if analysis.get("step") != step:
        analysis = {"step": step}
    if "totals" not in analysis:
        analysis.update(run_accounting(recipe.config, run.phases))
        runner.write_json(path, analysis)
    objective = run.phases[-1].get("objective") or runner.load_config(recipe.config).objective
    todo = [s for s in specs if s.applies(objective) and s.name not in analysis.get("evals", {})]
    if todo:
        params, _, saved = restore(run.workdir)
        for spec in todo:
            analysis.setdefault("evals", {})[spec.name] = cross_evaluate(params, saved, spec.overrides)
            runner.write_json(path, analysis)
    return analysis
