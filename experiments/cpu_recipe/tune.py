"""Tunes the CPU recipe: each setting trained from configs/bert_tiny.py, all scored on the same targets.

  python -m experiments.cpu_recipe.tune --out=/tmp/cpu_tune [--only=NAME,NAME] [--set FIELD=VALUE ...]

Each setting (SETTINGS below: overrides of the recipe) trains in OUT/NAME with `flaxlm train`, its
wall time measured; a setting whose workdir already holds its final checkpoint is not trained again.
Then every final model is evaluated on ONE fixed evaluation set: the default recipe's held-out
segment pairs with 15% dynamic masks drawn from data seed 0, so a setting that trains with 40% masks
or another seed is still scored on the same masked positions as the others. The unigram model of
the training tokens is scored on the same targets (flaxlm/baselines.py). A setting with another
vocabulary has other tokens, hence other targets: compare it by its distance to its own unigram.

Prints a markdown table (docs/cpu_recipe.md holds the measured one) and writes OUT/results.json.
"""

import argparse
import os
import subprocess
import sys
import time

from experiments.common import evaluation
from experiments.common import main as main_lib
from experiments.common import runner

CONFIG = "configs/bert_tiny.py"
# configs/bert_tiny.py as it was before this tuning: BERT's dropout and masking, lr 1e-3, 600 steps.
BEFORE = {
    "model.dropout_rate": 0.1,
    "model.attention_dropout_rate": 0.1,
    "train.learning_rate": 1e-3,
    "data.mask_prob": 0.15,
    "data.max_predictions": 20,
    "train.num_steps": 600,
    "train.warmup_steps": 60,
    "train.eval_every": 200,
    "train.checkpoint_every": 200,
}
# Cramming's (Geiping & Goldstein 2022) levers for a short budget: pre-LN, no dropout, a high peak rate.
FAST = {
    **BEFORE,
    "model.pre_ln": True,
    "model.dropout_rate": 0.0,
    "model.attention_dropout_rate": 0.0,
    "train.learning_rate": 2e-3,
}
MASK40 = {"data.mask_prob": 0.4, "data.max_predictions": 52}  # Wettig et al. 2022; 52 = 40% of 128 + slack
LONG = {
    "train.num_steps": 2000,
    "train.warmup_steps": 200,
    "train.eval_every": 250,
    "train.checkpoint_every": 1000,
}

# (name, overrides of configs/bert_tiny.py, what it tests), in the order they were tried.
SETTINGS = [
    ("before", BEFORE, "the recipe before tuning: post-LN, dropout 0.1, lr 1e-3, 15% masks"),
    ("fast", FAST, "pre-LN, no dropout, lr 2e-3"),
    ("fast_post_ln", {**FAST, "model.pre_ln": False}, "the same, post-LN"),
    ("fast_dropout", {**FAST, "model.dropout_rate": 0.1, "model.attention_dropout_rate": 0.1}, "dropout 0.1"),
    ("fast_lr4e-3", {**FAST, "train.learning_rate": 4e-3}, "peak lr 4e-3"),
    ("fast_mask40", {**FAST, **MASK40}, "40% masking"),
    ("fast_mask40_vocab4k", {**FAST, **MASK40, "model.vocab_size": 4000}, "a 4000-piece vocabulary"),
    ("fast_mask40_2000", {**FAST, **MASK40, **LONG}, "2000 steps"),
    ("bert_tiny", {}, "configs/bert_tiny.py now: post-LN, no dropout, lr 2e-3, 40% masks, 1800 steps"),
]


def train(name: str, overrides: dict, out: str) -> dict:
    """Trains one setting (or finds it trained); returns {"wall_s", "steps"}."""
    workdir = os.path.join(out, name)
    record_path = os.path.join(workdir, "tune.json")
    config = runner.resolved_config(CONFIG, overrides)
    steps = int(config.train.num_steps)
    record = runner.read_json(record_path, {})
    if record.get("overrides") == overrides and runner.latest_checkpoint(workdir) == steps:
        return record
    args = [sys.executable, "-m", "flaxlm", *runner.train_args(CONFIG, workdir, overrides)]
    print(f"tune: training {name}: {runner.shell_command(args[2:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "train.log"), "a", encoding="utf-8") as log:
        rc = subprocess.call(args, cwd=runner.REPO, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.exit(f"tune: {name} failed (exit {rc}); see {workdir}/train.log")
    record = {"overrides": overrides, "steps": steps, "wall_s": round(time.perf_counter() - t0, 1)}
    runner.write_json(record_path, record)
    return record


def evaluate(name: str, out: str) -> dict:
    """The final model of OUT/NAME on the fixed evaluation set, with the unigram baseline."""
    params, step, saved = evaluation.restore(os.path.join(out, name))
    fixed = {"data.mask_prob": 0.15, "data.max_predictions": 20, "train.eval_batches": 0}
    return dict(evaluation.cross_evaluate(params, saved, fixed), step=step)


def table(rows) -> str:
    lines = [
        "| setting | steps | wall (s) | held-out MLM loss | unigram | below unigram (nats) "
        "| MLM acc | NSP acc | what it tests |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        e = r["eval"]
        lines.append(
            f"| `{r['name']}` | {r['steps']} | {r['wall_s']:.0f} | {e['mlm_loss']:.3f} "
            f"| {e['unigram_mlm_loss']:.3f} | {e['unigram_mlm_loss'] - e['mlm_loss']:.2f} "
            f"| {e['mlm_accuracy']:.3f} | {e.get('nsp_accuracy', float('nan')):.3f} | {r['note']} |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder of the settings' workdirs")
    ap.add_argument("--only", default="", help="comma-separated setting names (default: all)")
    ap.add_argument("--set", action="append", help="FIELD=VALUE for every setting, e.g. train.num_steps=60")
    a = ap.parse_args(argv)
    try:
        extra = main_lib.parse_set(a.set or [])
    except runner.SweepError as e:
        ap.error(str(e))
    names = [n for n in a.only.split(",") if n]
    unknown = sorted(set(names) - {s[0] for s in SETTINGS})
    if unknown:
        ap.error(f"unknown setting(s) {', '.join(unknown)}; choose from {', '.join(s[0] for s in SETTINGS)}")
    rows = []
    for name, overrides, note in SETTINGS:
        if names and name not in names:
            continue
        record = train(name, {**overrides, **extra}, a.out)
        rows.append(dict(record, name=name, note=note, eval=evaluate(name, a.out)))
    runner.write_json(os.path.join(a.out, "results.json"), rows)
    print(table(rows))


if __name__ == "__main__":
    main()
