"""The command line every experiment's sweep.py shares.

  python -m experiments.<name>.sweep [--scale=cpu|full] [--quick] [--seeds=0,1] [--variants=a,b]
      [--out=DIR] [--set=FIELD=VALUE ...] [--dry_run] [--launcher=PREFIX] [--no_downstream] [--no_report]

Trains every variant × seed (skipping finished runs, resuming interrupted
ones), analyses each finished run (tokens, FLOPs, cross-evaluations), runs
the downstream stage where flaxlm can, then writes the report. Exit codes:
0 all runs finished, 1 some run failed (the report lists it), 2 the sweep
could not go on (the message says why; rerun to resume).
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Sequence

from experiments.common import runner


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str  # folder under experiments/
    title: str
    variants: tuple[runner.Variant, ...]
    recipes: dict[str, runner.Recipe]  # "cpu", "full"
    quick: Callable[[runner.Recipe], runner.Recipe]  # the same recipe, tiny and a few steps
    evals: tuple[runner.EvalSpec, ...]
    default_seeds: dict[str, tuple[int, ...]]  # per scale; --quick uses the first seed
    write_report: Callable[[str, str], str]  # (runs_dir, report_dir) -> REPORT.md path
    # Variants as a recipe needs them (e.g. steps scaled to matched FLOPs at that recipe's shapes).
    adapt: Callable[[runner.Recipe, Sequence[runner.Variant]], list[runner.Variant]] | None = None
    # The variants a scale runs without --variants, where not all (a scale that cannot test one says why
    # in its report); --variants may still name any.
    default_variants: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def folder(self) -> str:
        return os.path.join(runner.REPO, "experiments", self.name)


def default_runs_dir(exp: Experiment, scale: str, quick: bool) -> str:
    suffix = {"cpu": "", "full": "_full"}[scale] + ("_quick" if quick else "")
    return os.path.join(exp.folder, "runs" + suffix)


def default_report_dir(exp: Experiment, scale: str, quick: bool, runs_dir: str) -> str:
    """The committed report lives in the experiment's folder (CPU scale); the others beside their runs."""
    return exp.folder if scale == "cpu" and not quick else runs_dir


def parse_set(items: Sequence[str]) -> dict[str, Any]:
    """--set FIELD=VALUE (FIELD as in --config.FIELD); values are JSON numbers/booleans or strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise runner.SweepError(
                f"--set {item!r}: expected FIELD=VALUE, e.g. --set train.learning_rate=5e-4"
            )
        key, raw = item.split("=", 1)
        key = key.removeprefix("--").removeprefix("config.")
        if raw in ("True", "False"):
            out[key] = raw == "True"
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value if isinstance(value, (int, float, bool)) else raw
    return out


def parse_args(exp: Experiment, argv):
    p = argparse.ArgumentParser(prog=f"python -m experiments.{exp.name}.sweep", description=exp.title)
    p.add_argument("--scale", choices=sorted(exp.recipes), default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny model, a few steps: a smoke run of the sweep")
    p.add_argument("--seeds", help="pretraining seeds, e.g. 0,1,2 (default: per scale)")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(v.name for v in exp.variants)}")
    p.add_argument("--out", help="runs folder (default: experiments/<name>/runs[_full][_quick])")
    p.add_argument("--report_dir", help="where REPORT.md and figures/ go")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override for every run")
    p.add_argument("--dry_run", action="store_true", help="print the flaxlm commands and exit")
    p.add_argument("--launcher", default="", help="prefix for each `flaxlm train` (e.g. a pod launcher)")
    p.add_argument("--no_downstream", action="store_true", help="skip fine-tuning")
    p.add_argument("--no_report", action="store_true")
    return p.parse_args(argv)


def select_variants(exp: Experiment, names: str | None, scale: str = "cpu") -> list[runner.Variant]:
    if not names:
        default = exp.default_variants.get(scale)
        return [v for v in exp.variants if default is None or v.name in default]
    by_name = {v.name: v for v in exp.variants}
    unknown = [n for n in names.split(",") if n not in by_name]
    if unknown:
        raise runner.SweepError(f"unknown variant(s) {unknown}; choose from {', '.join(by_name)}")
    return [by_name[n] for n in names.split(",")]


def _use_compilation_cache(path: str) -> None:
    """Runs of one sweep share shapes (every seed, every resumption): compile each step once.

    The flaxlm children inherit the environment variable; this process (its cross-evaluations)
    has imported jax already, so it is told through jax.config. A cache the user set is kept.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    import jax

    jax.config.update("jax_compilation_cache_dir", path)


def _quiet_libraries() -> None:
    """This process only reads prepared data and evaluates: keep tfds/absl chatter out of the sweep log."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("flaxlm").setLevel(logging.WARNING)
    try:
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    except ImportError:
        pass


def _say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


def _finetune(run: runner.Run, recipe: runner.Recipe, name: str) -> None:
    """The downstream stage for one finished run: each of the recipe's tasks, unless already done."""
    from experiments.common import downstream

    for task in recipe.tasks:
        result = downstream.finetune_run(run.workdir, task, extra=recipe.finetune)
        _say(f"{name}: fine-tuning {task}: {result['status']}")


def _add_to_record(run: runner.Run, **fields) -> None:
    """Sets `fields` in the run's run.json (what the report reads about its downstream stage)."""
    path = os.path.join(run.workdir, "run.json")
    runner.write_json(path, {**runner.read_json(path, {}), **fields})


def main(exp: Experiment, argv=None) -> int:
    args = parse_args(exp, argv)
    try:
        return _main(exp, args)
    except runner.SweepError as e:
        sys.stderr.write(f"experiments.{exp.name}: error: {e}\n")
        return 2


def _main(exp: Experiment, args) -> int:
    import shlex

    recipe = exp.recipes[args.scale]
    if args.quick:
        recipe = exp.quick(recipe)
    from experiments.common import downstream

    unknown = [t for t in recipe.tasks if t not in downstream.TASKS]
    if unknown:
        raise runner.SweepError(
            f"the {recipe.scale} recipe names unknown downstream task(s) {', '.join(unknown)}; "
            f"use some of {', '.join(downstream.TASKS)}"
        )
    seeds = (
        [int(s) for s in args.seeds.split(",")]
        if args.seeds
        else list(exp.default_seeds[args.scale][: 1 if args.quick else None])
    )
    variants = select_variants(exp, args.variants, args.scale)
    if exp.adapt is not None:
        variants = exp.adapt(recipe, variants)
    extra = parse_set(args.set)
    runs_dir = os.path.abspath(args.out or default_runs_dir(exp, args.scale, args.quick))
    report_dir = os.path.abspath(args.report_dir or default_report_dir(exp, args.scale, args.quick, runs_dir))
    launcher = shlex.split(args.launcher)
    runs = runner.plan_runs(recipe, variants, seeds, runs_dir, extra)
    if args.dry_run:
        print("\n".join(runner.dry_run_commands(runs, recipe, launcher)))
        return 0
    _use_compilation_cache(os.path.join(runs_dir, "jax_cache"))
    _quiet_libraries()
    corpus = runs[0].phases[0].get("data.corpus", runner.load_config(recipe.config).data.corpus)
    if args.scale == "full" and not args.quick and corpus == "default":
        raise runner.SweepError(
            "the full-scale sweep needs a large corpus, not the embedded Shakespeare; "
            "pass --set data.corpus='/data/corpus/*.txt' (or --quick for a smoke run)"
        )

    from experiments.common import evaluation

    why_no_downstream = "--no_downstream" if args.no_downstream else downstream.unavailable()
    if why_no_downstream:
        _say(f"downstream fine-tuning skipped: {why_no_downstream}")
    failed = []
    for i, run in enumerate(runs, 1):
        name = f"[{i}/{len(runs)}] {run.variant.name} seed{run.seed}"
        t0 = time.time()
        _say(f"{name}: training in {runner.repo_relative(run.workdir)}")
        status = runner.train_run(run, recipe, launcher=launcher)
        _say(f"{name}: {status}" + ("" if status == "skipped" else f" in {time.time() - t0:.0f} s"))
        if status == "failed":
            failed.append(run)
            _say(f"{name}: see {runner.repo_relative(run.workdir)}/train.log")
            continue
        if launcher:  # a pod launcher's workdirs need not be readable here
            continue
        evaluation.analyze_run(run, recipe, exp.evals)
        if not why_no_downstream:
            _finetune(run, recipe, name)
        _add_to_record(
            run,
            downstream=why_no_downstream or "run",
            downstream_tasks=[] if why_no_downstream else list(recipe.tasks),
        )
    if not why_no_downstream and not launcher and not failed:
        for seed in seeds:
            run = runner.control_run(recipe, variants[0], seed, runs_dir, extra)
            name = f"[control] {run.variant.name} seed{seed}"
            status = runner.train_run(run, recipe)
            _say(f"{name}: {status}")
            if status == "failed":
                failed.append(run)
                continue
            _add_to_record(run, baseline=variants[0].name)
            _finetune(run, recipe, name)
    if not args.no_report:
        path = exp.write_report(runs_dir, report_dir)
        _say(f"report: {runner.repo_relative(path)}")
    if failed:
        _say(f"{len(failed)} run(s) failed: " + ", ".join(f"{r.variant.name} seed{r.seed}" for r in failed))
        return 1
    return 0
