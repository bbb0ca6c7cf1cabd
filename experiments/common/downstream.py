"""The downstream stage: fine-tune each pretrained run on the sentiment and NER tasks.

It calls `flaxlm finetune` as a subprocess, once per (run, task), into
RUN/finetune/<task>/, and reads the per-seed scores from the results JSON
that command writes there. Everything this module assumes about that
command is in the constants below, so wiring it to the command as merged is
a change here only.

Until flaxlm has a `finetune` subcommand (and the task configs exist),
`unavailable()` says why and the sweep skips this stage; the report then
says the downstream tables were not produced.
"""

import math
import os
import subprocess
import sys
from typing import Any

from experiments.common import runner

TASKS = {  # task -> fine-tuning config, relative to the repository root
    "sentiment": "configs/finetune_sentiment.py",
    "ner": "configs/finetune_ner.py",
    # Generation tasks (a decoder generates the answer): GPT and T5 alike.
    "sentiment_t2t": "configs/finetune_sentiment_t2t.py",  # sentiment as text to text (T5's classification)
    "definitions": "configs/finetune_definitions.py",  # WordNet definitions, ROUGE
}
# Fine-tuned as text to text (a decoder generates the answer). A study that fine-tunes none of them is not
# told it left them out (report.downstream_lines): they are another way of fine-tuning, not a missing task.
TEXT_TO_TEXT = ("sentiment_t2t", "definitions")
# The command, after `python -m flaxlm` (or `flaxlm`); {config}, {init} (the pretraining workdir)
# and {workdir} (RUN/finetune/<task>) are filled in. Add fine-tuning seed flags here.
FINETUNE_ARGS = ("finetune", "--config={config}", "--init={init}", "--workdir={workdir}")
# Each recipe adds its own flags (`Recipe.finetune`: the training budget at that scale).
RESULTS_FILE = "results.json"  # written by `flaxlm finetune` in its --workdir
HEADLINE = {
    "sentiment": ("accuracy",),
    "ner": ("f1",),
    "sentiment_t2t": ("exact_match",),
    # ROUGE-L of greedy decodes, and the teacher-forced loss of the reference definitions (nats per
    # target token): a small model's decodes sit near the trivial baselines long before its loss stops
    # telling models apart, so the loss is the finer measure at CPU scale.
    "definitions": ("rougeL", "loss"),
}  # the metrics the report tables show, each in a table of its own
LOWER_IS_BETTER = ("loss", "perplexity")  # downstream metrics where a smaller value is the better model


def higher_is_better(metric: str) -> bool:
    """Whether a larger `metric` (a results.json key, or a report's "task/metric") is the better model."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


# A fine-tuned model at or below these scores has learned nothing usable: 52.2% of the sentiment
# test split has the majority label (plus 3 points of margin), and an entity F1 under 0.05 finds
# almost no entity. Text-to-text sentiment has the same majority rate. Definitions: 0.084 is the test
# ROUGE-L of always answering the most common definition (docs/finetuning.md's trivial baseline).
# The report flags a table in which no variant gets above them.
CHANCE = {
    "sentiment/accuracy": 0.552,
    "ner/f1": 0.05,
    "sentiment_t2t/exact_match": 0.552,
    "definitions/rougeL": 0.084,
}
# Where results.json keeps its per-seed records: a list of {"seed": k, "test": {metric: value}, ...}.
PER_SEED_KEYS = ("seeds",)
SCORED_SPLIT = "test"  # the split whose metrics the report tables use


def unavailable() -> str | None:
    """Why the downstream stage cannot run in this tree, or None if it can."""
    from flaxlm import cli

    if "finetune" not in cli.SUBCOMMANDS:
        return "flaxlm has no `finetune` subcommand in this tree"
    missing = [c for c in TASKS.values() if not os.path.exists(os.path.join(runner.REPO, c))]
    if missing:
        return f"missing fine-tuning config(s): {', '.join(missing)}"
    return None


def finetune_dir(run_workdir: str, task: str) -> str:
    return os.path.join(run_workdir, "finetune", task)


def finetune_args(run_workdir: str, task: str, extra=()) -> list[str]:
    fields = dict(
        config=TASKS[task],
        init=runner.repo_relative(run_workdir),
        workdir=runner.repo_relative(finetune_dir(run_workdir, task)),
    )
    return [a.format(**fields) for a in FINETUNE_ARGS] + list(extra)


def finetune_run(run_workdir: str, task: str, env=None, extra=()) -> dict[str, Any]:
    """Fine-tunes one pretrained run on `task` unless its results exist; returns a status record."""
    out = finetune_dir(run_workdir, task)
    results = os.path.join(out, RESULTS_FILE)
    if os.path.exists(results):
        return {"status": "skipped", "results": results}
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "flaxlm", *finetune_args(run_workdir, task, extra)]
    with open(os.path.join(out, "finetune.log"), "a", encoding="utf-8") as log:
        rc = subprocess.call(cmd, cwd=runner.REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0 or not os.path.exists(results):
        return {"status": "failed", "returncode": rc, "log": os.path.join(out, "finetune.log")}
    return {"status": "done", "results": results}


def per_seed_scores(results: dict) -> dict[str, list[float]]:
    """{metric: [score per fine-tuning seed]} from a results JSON (numeric fields of each seed record)."""
    records = next((results[k] for k in PER_SEED_KEYS if isinstance(results.get(k), list)), None)
    if records is None:
        raise ValueError(
            f"{RESULTS_FILE} has none of {PER_SEED_KEYS} (a list of per-seed records); "
            "adjust experiments/common/downstream.py to the finetune command's format"
        )
    scores: dict[str, list[float]] = {}
    for rec in records:
        rec = rec.get(SCORED_SPLIT, rec) if isinstance(rec.get(SCORED_SPLIT), dict) else rec
        for k, v in rec.items():
            if k in ("seed", "step") or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if math.isfinite(v):
                scores.setdefault(k, []).append(float(v))
    return scores


def load_scores(run_workdir: str) -> dict[str, dict[str, list[float]]]:
    """{task: {metric: per-seed scores}} for every task whose results exist in this run."""
    out = {}
    for task in TASKS:
        results = runner.read_json(os.path.join(finetune_dir(run_workdir, task), RESULTS_FILE))
        if results is not None:
            out[task] = per_seed_scores(results)
    return out
