"""The sweep runner: one `flaxlm train` subprocess per variant × pretraining seed, resumable.

An experiment is a base recipe (a configs/*.py file plus overrides, per
scale), named variants (more overrides) and pretraining seeds. Each run
trains in RUNS/<variant>/seed<k>/, which is the run's `--workdir`:

  run.json       what was run: variant, seed, the exact commands, exit codes,
                 wall time, the machine
  train.log      the flaxlm subprocess's output (appended on each attempt)
  metrics.jsonl, checkpoints/, config.json, tensorboard/   written by flaxlm
  analysis.json  written after training (in this process): tokens seen,
                 training FLOPs, and the cross-evaluations
  finetune/      the downstream stage (see downstream.py)

Resumable: a run whose checkpoints already reach its last phase's
`train.num_steps` is skipped; any other is started again with the same
command, and flaxlm resumes it from its latest checkpoint. A run is never
silently continued with different settings: if the recorded overrides differ
(other than train.num_steps), the runner stops and says so.

A recipe may have several phases (BERT's 128 → 512 sequence length): each is
one `flaxlm train` command on the same workdir, continuing where the previous
one stopped.
"""

import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import ml_collections

from flaxlm import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Step-valued fields a variant's step_scale multiplies (matched-FLOPs comparisons).
STEP_FIELDS = (
    "train.num_steps",
    "train.warmup_steps",
    "train.eval_every",
    "train.checkpoint_every",
    "train.stop_at_step",
)


class SweepError(Exception):
    """A sweep that cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One arm of an experiment: named overrides of the recipe (config path -> value)."""

    name: str  # folder name and table key, e.g. "segpair_nsp"
    label: str  # for tables and plots, e.g. "SEGMENT-PAIR + NSP"
    overrides: dict[str, Any]
    description: str = ""
    step_scale: float = 1.0  # multiplies STEP_FIELDS (matched-compute sweeps)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A base config at one scale: a configs/*.py file, overrides, and one or more phases.

    Each phase is a dict of overrides (it must end up setting train.num_steps);
    phase k continues the workdir that phase k-1 left.
    """

    scale: str
    config: str  # relative to the repository root
    overrides: dict[str, Any]
    phases: tuple[dict[str, Any], ...] = ({},)
    note: str = ""  # one line for the report: what this scale is for
    finetune: tuple[str, ...] = ()  # extra `flaxlm finetune` flags for the downstream stage at this scale
    tasks: tuple[str, ...] = ("sentiment", "ner")  # the downstream tasks fine-tuned at this scale

    def with_overrides(
        self, scale: str, overrides: dict[str, Any], phases=None, note: str = "", finetune=None
    ) -> "Recipe":
        return dataclasses.replace(
            self,
            scale=scale,
            overrides={**self.overrides, **overrides},
            phases=self.phases if phases is None else tuple(phases),
            note=note or self.note,
            finetune=self.finetune if finetune is None else tuple(finetune),
        )


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """A cross-evaluation: a run's final parameters on another builder's validation split.

    `overrides` change the run's saved config into the evaluation's (builder,
    objective); `applies(objective)` says which trained objectives it fits
    (a model without a pair head cannot be scored on NSP).
    """

    name: str
    overrides: dict[str, Any]
    applies: Callable[[str], bool]
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Run:
    variant: Variant
    seed: int
    workdir: str
    phases: tuple[dict[str, Any], ...]  # the full override set of each phase's command

    @property
    def num_steps(self) -> int:
        return int(self.phases[-1]["train.num_steps"])


# The downstream stage's reference point: the baseline variant's model at its initialisation, fine-tuned
# like every pretrained run. "Pretraining helped" means beating this, not only beating another variant.
CONTROL = Variant(
    "random_init",
    "random init (not pretrained)",
    {"train.num_steps": 1, "train.warmup_steps": 1, "train.learning_rate": 0.0},
    "1 step at learning rate 0 (its initialisation), fine-tuned as the others",
)


def control_run(
    recipe: Recipe, baseline: Variant, seed: int, runs_dir: str, extra: dict[str, Any] | None = None
) -> Run:
    """The CONTROL run for `seed`: the baseline's first-phase settings, trained 1 step at learning rate 0.

    Adam's update is the learning rate times a bounded step, so the checkpoint holds the initialisation
    that `train.seed=seed` draws (tests/test_experiments.py checks it).
    """
    o = {**recipe.overrides, **baseline.overrides, **recipe.phases[0], **(extra or {})}
    o.update({"train.seed": seed, "data.seed": seed, "train.stop_at_step": 0, **CONTROL.overrides})
    o.update({"train.log_every": 1, "train.eval_every": 1, "train.checkpoint_every": 1})
    return Run(CONTROL, seed, os.path.join(os.path.abspath(runs_dir), CONTROL.name, f"seed{seed}"), (o,))


# Configs and commands ---------------------------------------------------------------------------------


def load_config(path: str) -> ml_collections.ConfigDict:
    """configs/<x>.py's get_config(), as `flaxlm --config=` loads it (path relative to the repo root)."""
    full = path if os.path.isabs(path) else os.path.join(REPO, path)
    spec = importlib.util.spec_from_file_location("flaxlm_experiment_config", full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Sets each "a.b.c" field (as --config.a.b.c=v would); unknown fields raise SweepError."""
    for path, value in overrides.items():
        node, keys = config, path.split(".")
        for key in keys[:-1]:
            node = node[key]
        if keys[-1] not in node:
            raise SweepError(f"override {path!r}: the config has no such field")
        node[keys[-1]] = value
    return config


def resolved_config(recipe_config: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    return apply_overrides(load_config(recipe_config), overrides)


def _cli_value(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def repo_relative(path: str) -> str:
    """`path` relative to the repository root when it lies inside it (commands run from the root)."""
    rel = os.path.relpath(os.path.abspath(path), REPO)
    return path if rel.startswith("..") else rel


def train_args(config_path: str, workdir: str, overrides: dict[str, Any]) -> list[str]:
    """The arguments after `flaxlm`: train --config=... --workdir=... --config.a.b=v ..."""
    return [
        "train",
        f"--config={config_path}",
        f"--workdir={repo_relative(workdir)}",
        *(f"--config.{k}={_cli_value(v)}" for k, v in overrides.items()),
    ]


def shell_command(args: Sequence[str], launcher: Sequence[str] = ()) -> str:
    """What a user types: `flaxlm train ...` (or the launcher's prefix before it)."""
    return shlex.join([*launcher, "flaxlm", *args])


def plan_runs(
    recipe: Recipe,
    variants: Sequence[Variant],
    seeds: Sequence[int],
    runs_dir: str,
    extra: dict[str, Any] | None = None,
) -> list[Run]:
    """Every (variant, seed) run with each phase's full overrides, seed-major order.

    Seed-major: all variants of seed 0 first, so a sweep stopped half way
    already holds one complete comparison. `extra` (the user's --set) applies
    last, to every run and phase.
    """
    runs = []
    for seed in seeds:
        for v in variants:
            phases = []
            for phase in recipe.phases:
                o = {**recipe.overrides, **v.overrides, **phase}
                o.update({"train.seed": seed, "data.seed": seed})
                o.update(extra or {})
                if v.step_scale != 1.0:
                    for f in STEP_FIELDS:
                        if f in o:
                            o[f] = max(1, round(o[f] * v.step_scale))
                if "train.num_steps" not in o:
                    o["train.num_steps"] = int(load_config(recipe.config).train.num_steps)
                phases.append(o)
            workdir = os.path.join(os.path.abspath(runs_dir), v.name, f"seed{seed}")
            runs.append(Run(v, seed, workdir, tuple(phases)))
    return runs


# Run state ----------------------------------------------------------------------------------------------


def latest_checkpoint(workdir: str) -> int:
    """The newest complete checkpoint's step (0 if none). Orbax renames a step's folder into place only
    once it is complete, so a listed integer folder is a finished save."""
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return 0
    return max((int(d) for d in os.listdir(root) if d.isdigit()), default=0)


def read_json(path: str, default=None):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def write_json(path: str, obj) -> None:
    files.write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _settings(phases) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "train.num_steps"} for p in phases]


def check_same_settings(run: Run, record: dict | None) -> None:
    if not record:
        return
    old, new = record.get("phases_overrides"), _settings(run.phases)
    if old is not None and json.loads(json.dumps(old)) != json.loads(json.dumps(new)):
        diffs = []
        for i, (a, b) in enumerate(zip(old, new)):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    diffs.append(f"phase {i + 1} {k}: {a.get(k)!r} -> {b.get(k)!r}")
        if len(old) != len(new):
            diffs.append(f"{len(old)} phases -> {len(new)}")
        raise SweepError(
            f"{run.workdir} was trained with different settings ({'; '.join(diffs[:4])}); "
            "use another --out, or delete that run to retrain it"
        )


def machine_info() -> dict[str, Any]:
    """Where a run ran: CPU model and count, OS, Python/JAX versions, accelerator kind."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["devices"] = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
    except Exception as e:  # noqa: BLE001 - informational only
        info["devices"] = f"unknown ({type(e).__name__})"
    return info


# Running ------------------------------------------------------------------------------------------------


class _Child:
    """Runs one flaxlm subprocess; SIGTERM/SIGINT to the sweep reach it and we wait for its save."""

    def __init__(self):
        self.proc = None
        self.stop_signal = None

    def _forward(self, signum, _frame):
        self.stop_signal = signal.Signals(signum).name
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signum)

    def run(self, cmd, log_path: str, env) -> int:
        old = {s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(f"\n$ {shlex.join(cmd)}\n")
                log.flush()
                # Own process group: a terminal's Ctrl-C reaches the child only through _forward,
                # once, so flaxlm gets to save before we report.
                self.proc = subprocess.Popen(
                    cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
                return self.proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.proc = None


def _tail(path: str, n: int = 3) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    keep = [line for line in lines if "error" in line.lower()] or lines
    return " | ".join(keep[-n:])


def phase_end(phase: dict[str, Any]) -> int:
    """The step a phase's command ends at: train.stop_at_step when set, else train.num_steps."""
    return int(phase.get("train.stop_at_step") or phase["train.num_steps"])


def train_run(run: Run, recipe: Recipe, *, launcher: Sequence[str] = (), env=None) -> str:
    """Trains one run through all its phases; returns "skipped", "done" or "failed".

    Raises SweepError when a signal stopped it (after flaxlm saved: rerun to resume).
    """
    os.makedirs(run.workdir, exist_ok=True)
    record_path = os.path.join(run.workdir, "run.json")
    record = read_json(record_path)
    check_same_settings(run, record)
    if latest_checkpoint(run.workdir) >= run.num_steps and record and record.get("status") == "done":
        return "skipped"
    record = record or {}
    record.update(
        variant=run.variant.name,
        label=run.variant.label,
        seed=run.seed,
        scale=recipe.scale,
        config=recipe.config,
        phases_overrides=_settings(run.phases),
        phases=[{"num_steps": phase_end(p), "overrides": p, "command": ""} for p in run.phases],
    )
    attempts = record.setdefault("attempts", [])
    base = [*launcher, "flaxlm"] if launcher else [sys.executable, "-m", "flaxlm"]
    status = "done"
    for i, phase in enumerate(run.phases):
        args = train_args(recipe.config, run.workdir, phase)
        record["phases"][i]["command"] = shell_command(args, launcher)
        target = phase_end(phase)
        before = latest_checkpoint(run.workdir)
        if before >= target:
            continue
        record["status"] = "running"
        write_json(record_path, record)
        child = _Child()
        t0, load0 = time.time(), os.getloadavg()[0]
        rc = child.run([*base, *args], os.path.join(run.workdir, "train.log"), env)
        after = latest_checkpoint(run.workdir)
        attempts.append(
            {
                "phase": i + 1,
                "started": datetime.datetime.fromtimestamp(t0).isoformat(timespec="seconds"),
                "wall_s": round(time.time() - t0, 1),
                "from_step": before,
                "to_step": after,
                "returncode": rc,
                "load_avg_start": round(load0, 2),
                "load_avg_end": round(os.getloadavg()[0], 2),
                "machine": machine_info(),
            }
        )
        if child.stop_signal or (rc == 0 and after < target):
            record["status"] = "interrupted"
            write_json(record_path, record)
            raise SweepError(
                f"{run.workdir}: stopped at step {after} by {child.stop_signal or 'a signal'}; "
                "rerun the same command to resume"
            )
        if rc != 0:
            record["status"] = "failed"
            record["error"] = _tail(os.path.join(run.workdir, "train.log"))
            status = "failed"
            break
    if status == "done":
        record.pop("error", None)
    record["status"] = status
    write_json(record_path, record)
    return status


def dry_run_commands(runs: Sequence[Run], recipe: Recipe, launcher: Sequence[str] = ()) -> list[str]:
    return [shell_command(train_args(recipe.config, r.workdir, p), launcher) for r in runs for p in r.phases]
