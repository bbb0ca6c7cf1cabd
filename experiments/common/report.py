"""Reading a sweep's runs back, and the Markdown pieces every REPORT.md is made of.

Experiments' report.py files compose these: `load_runs` → per-variant
scores → `summary_table` / `comparison_table` / `claims_table` → REPORT.md
with figures from plots.py.
"""

import dataclasses
import datetime
import json
import math
import os
from typing import Callable, Sequence

from experiments.common import downstream
from experiments.common import runner
from experiments.common import stats


@dataclasses.dataclass
class RunData:
    """One run as the report sees it: run.json, its metrics rows, analysis.json and fine-tuning scores."""

    workdir: str
    record: dict
    rows: list[dict]
    analysis: dict
    downstream: dict  # {task: {metric: [score per fine-tuning seed]}}

    @property
    def variant(self) -> str:
        return self.record.get("variant", os.path.basename(os.path.dirname(self.workdir)))

    @property
    def seed(self) -> int:
        return int(self.record.get("seed", 0))

    @property
    def finished(self) -> bool:
        return self.record.get("status") == "done"

    def evals(self) -> dict[int, dict]:
        return {r["step"]: r for r in self.rows if any(k.startswith("eval_") for k in r)}

    def final_eval(self) -> dict:
        evals = self.evals()
        return evals[max(evals)] if evals else {}

    def curve(self, key: str, x: Callable[[int], float] = float):
        """(xs, ys) of `key` over the logged steps (eval or train rows, whichever hold it)."""
        pts = [(x(r["step"]), r[key]) for r in self.rows if isinstance(r.get(key), (int, float))]
        return [p[0] for p in pts], [p[1] for p in pts]


def dedupe_rows(rows: Sequence[dict]) -> list[dict]:
    """A resumed run re-logs the steps after its last checkpoint: keep the last row of each
    (step, train|eval) pair, in step order."""
    keep: dict[tuple[int, bool], dict] = {}
    for r in rows:
        keep[(r["step"], any(k.startswith("eval_") for k in r))] = r
    return [keep[k] for k in sorted(keep)]


def load_runs(runs_dir: str) -> list[RunData]:
    runs = []
    if not os.path.isdir(runs_dir):
        return runs
    for variant in sorted(os.listdir(runs_dir)):
        vdir = os.path.join(runs_dir, variant)
        if not os.path.isdir(vdir):
            continue
        for seed in sorted(os.listdir(vdir)):
            workdir = os.path.join(vdir, seed)
            if not (seed.startswith("seed") and os.path.isdir(workdir)):
                continue
            record = runner.read_json(os.path.join(workdir, "run.json"))
            if record is None:
                continue
            rows = []
            metrics = os.path.join(workdir, "metrics.jsonl")
            if os.path.exists(metrics):
                with open(metrics, encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]
            runs.append(
                RunData(
                    workdir=workdir,
                    record=record,
                    rows=dedupe_rows(rows),
                    analysis=runner.read_json(os.path.join(workdir, "analysis.json"), {}),
                    downstream=downstream.load_scores(workdir),
                )
            )
    return runs


def by_variant(runs: Sequence[RunData], order: Sequence[str]) -> dict[str, list[RunData]]:
    """Finished runs grouped by variant, in `order` (variants without a finished run left out)."""
    out = {}
    for name in order:
        done = sorted((r for r in runs if r.variant == name and r.finished), key=lambda r: r.seed)
        if done:
            out[name] = done
    return out


def metric_values(runs: Sequence[RunData], get: Callable[[RunData], float | None]) -> list[float]:
    vals = []
    for r in runs:
        v = get(r)
        if _finite(v):
            vals.append(float(v))
    return vals


# Formatting ---------------------------------------------------------------------------------------------


def fmt(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, int) or (isinstance(x, float) and abs(x) >= 1e5):
        return f"{x:,.0f}" if abs(x) < 1e9 else f"{x:.3g}"
    return f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_interval(lo: float, hi: float, digits: int = 4) -> str:
    if math.isnan(lo):
        return "n/a"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(values: dict[str, stats.Groups], labels: dict[str, str], digits: int = 4) -> str:
    """variant | n | mean ± std | 95% t-interval | 95% bootstrap interval."""
    rows = []
    for name, v in values.items():
        if not len(v):
            continue
        s = stats.summarize(v)
        n = f"{s.n}" if s.n == s.n_scores else f"{s.n} × {s.n_scores // max(s.n, 1)}"
        std = "" if math.isnan(s.std) else f" ± {s.std:.{digits}f}"
        rows.append(
            [
                labels.get(name, name),
                n,
                f"{s.mean:.{digits}f}{std}",
                fmt_interval(s.t_low, s.t_high, digits),
                fmt_interval(s.boot_low, s.boot_high, digits),
            ]
        )
    return md_table(["variant", "n", "mean ± std", "95% CI (t)", "95% CI (bootstrap)"], rows)


def comparison_table(
    pairs: Sequence[tuple[str, str]],
    values: dict[str, stats.Groups],
    labels: dict[str, str],
    digits: int = 4,
) -> tuple[str, dict[tuple[str, str], stats.Comparison]]:
    """a − b for each pair with intervals, Welch's p and Holm-adjusted p over the table's pairs."""
    # Each pair once (a variant can be both "vs the baseline" and "static vs dynamic"): a repeated pair
    # would be printed twice and counted twice in Holm's adjustment.
    pairs = [(a, b) for a, b in dict.fromkeys(pairs) if len(values.get(a, [])) and len(values.get(b, []))]
    comps = stats.compare_all([(values[a], values[b]) for a, b in pairs])
    rows = []
    for (a, b), c in zip(pairs, comps):
        sig = {True: "**yes**", False: "no", None: "n/a (needs ≥ 2 seeds each)"}[c.significant]
        rows.append(
            [
                f"{labels.get(a, a)} − {labels.get(b, b)}",
                f"{c.diff:+.{digits}f}",
                fmt_interval(c.t_low, c.t_high, digits),
                fmt_interval(c.boot_low, c.boot_high, digits),
                fmt_p(c.p),
                fmt_p(c.p_holm),
                sig,
            ]
        )
    headers = [
        "difference",
        "Δ",
        "95% CI (Welch t)",
        "95% CI (bootstrap)",
        "p (Welch)",
        "p (Holm)",
        "significant",
    ]
    return md_table(headers, rows), dict(zip(pairs, comps))


# Published claims ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Claim:
    """A published direction to check: `a` vs `b` (variant names) on a measure.

    expect: ">" a is better than b, ">=" a is at least as good, "≈" no
    difference. `higher_is_better` says what "better" means for the measure.
    """

    source: str
    published: str
    a: str
    b: str
    expect: str
    measure: str  # key into the report's value tables
    higher_is_better: bool = True
    proxy: bool = False  # a pretraining stand-in for a downstream claim


def verdict(claim: Claim, comp: stats.Comparison | None) -> str:
    """Our measurement against the published direction: agrees / disagrees / inconclusive, and why."""
    if comp is None:
        return "not measured"
    better = comp.diff if claim.higher_is_better else -comp.diff
    direction = "in the published direction" if better > 0 else "against the published direction"
    sig = comp.significant
    if claim.expect == "≈":
        if sig is None:
            return "untested (needs ≥ 2 seeds per variant)"
        return "disagrees: significant difference" if sig else "consistent: no significant difference"
    if sig is None:
        return f"untested (needs ≥ 2 seeds per variant); {direction}"
    if claim.expect == ">=":
        if sig and better < 0:
            return "disagrees: significantly worse"
        return "agrees: significantly better" if sig else "consistent: not significantly worse"
    if sig:
        return "agrees (significant)" if better > 0 else "disagrees: significantly opposite"
    return f"inconclusive: {direction}, not significant"


def machine_section(runs: Sequence[RunData]) -> str:
    """The machines and load the runs' training attempts recorded."""
    attempts = [a for r in runs for a in r.record.get("attempts", [])]
    if not attempts:
        return "No training attempt recorded."
    machines = sorted({json.dumps(a.get("machine", {}), sort_keys=True) for a in attempts})
    lines = []
    for m in map(json.loads, machines):
        lines.append(
            f"- {m.get('cpu_count')} CPUs ({m.get('cpu')}), {m.get('devices')}; {m.get('platform')}; "
            f"Python {m.get('python')}, JAX {m.get('jax')}"
        )
    loads = [a[k] for a in attempts for k in ("load_avg_start", "load_avg_end") if k in a]
    wall = sum(a.get("wall_s", 0.0) for a in attempts)
    started = sorted(a["started"] for a in attempts if "started" in a)
    lines.append(
        f"- {len(attempts)} training attempts, {wall / 3600:.2f} h of training wall time in all"
        + (f", from {started[0]} to {started[-1]}" if started else "")
    )
    if loads:
        lines.append(
            f"- 1-minute load average during training: {min(loads):.1f} to {max(loads):.1f} "
            f"(a load above the CPU count means the machine was shared and wall times are inflated)"
        )
    return "\n".join(lines)


def commands_section(runs: Sequence[RunData]) -> str:
    lines = []
    for r in sorted(runs, key=lambda r: (r.seed, r.variant)):
        for p in r.record.get("phases", []):
            if p.get("command"):
                lines.append(p["command"])
    return "```bash\n" + "\n".join(lines) + "\n```"


def generated_line(command: str) -> str:
    return f"Generated {datetime.datetime.now().isoformat(timespec='minutes')} by `{command}`."


@dataclasses.dataclass(frozen=True)
class Measure:
    """A per-run score the report tabulates: `get(run)` → float or None.

    baseline: (what it is, get) of a trivial predictor scored on the same targets as `get` in the
    same run (the unigram model, the majority label), printed under the table with each variant's
    margin over it.
    """

    key: str
    label: str
    get: Callable[[RunData], float | None]
    higher_is_better: bool = True
    digits: int = 4
    baseline: tuple[str, Callable[[RunData], float | None]] | None = None


UNIGRAM = "the unigram model of the training tokens"
MAJORITY = "always the majority label"


def final_eval_metric(name: str) -> Callable[[RunData], float | None]:
    """The run's last logged evaluation of `name` (on its own validation split)."""
    return lambda r: r.final_eval().get(f"eval_{name}")


def cross_eval_metric(spec: str, name: str) -> Callable[[RunData], float | None]:
    """A metric of the run's cross-evaluation `spec` (analysis.json)."""
    return lambda r: r.analysis.get("evals", {}).get(spec, {}).get(name)


def baseline_line(grouped: dict[str, list[RunData]], measure: Measure, labels: dict[str, str]) -> str:
    """ "Trivial baseline on the same targets: ..., X; margin: variant +d, ..." ("" without one).

    The margin is the variant's mean over runs of (its score − the baseline of the same run), signed so
    that positive is better than the baseline.
    """
    if measure.baseline is None:
        return ""
    what, get_base = measure.baseline
    sign = 1.0 if measure.higher_is_better else -1.0
    bases, margins = [], {}
    for variant, runs in grouped.items():
        pairs = [(measure.get(r), get_base(r)) for r in runs]
        pairs = [(float(v), float(b)) for v, b in pairs if _finite(v) and _finite(b)]
        bases += [b for _, b in pairs]
        if pairs:
            margins[variant] = sum(sign * (v - b) for v, b in pairs) / len(pairs)
    if not bases:
        return ""
    d = measure.digits
    spread = (
        f" (runs {min(bases):.{d}f} to {max(bases):.{d}f})" if max(bases) - min(bases) > 0.5 * 10**-d else ""
    )
    parts = ", ".join(f"{labels.get(v, v)} {m:+.{d}f}" for v, m in margins.items())
    return (
        f"Trivial baseline on the same targets: {what}, {sum(bases) / len(bases):.{d}f}{spread}. "
        f"Margin over it ({'higher' if measure.higher_is_better else 'lower'} is better, positive means "
        f"better than the baseline): {parts}."
    )


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def measure_values(grouped: dict[str, list[RunData]], measure: Measure) -> dict[str, list[float]]:
    return {v: metric_values(runs, measure.get) for v, runs in grouped.items()}


def downstream_values(grouped: dict[str, list[RunData]]) -> dict[str, dict[str, stats.Groups]]:
    """{"task/metric": {variant: [fine-tuning scores of each pretraining seed]}} for the headline metrics."""
    out: dict[str, dict[str, list]] = {}
    for v, runs in grouped.items():
        for r in runs:
            for task, metrics in r.downstream.items():
                headlines = downstream.HEADLINE.get(task, ())
                for metric, scores in metrics.items():
                    if any(h in metrics for h in headlines) and metric not in headlines:
                        continue
                    out.setdefault(f"{task}/{metric}", {}).setdefault(v, []).append(scores)
    return out


def variants_table(variants, grouped: dict[str, list[RunData]], digits_flops: int = 3) -> str:
    """What each variant is and what its runs saw: data, epochs, tokens, targets, FLOPs, wall time."""
    rows = []
    for v in variants:
        runs = grouped.get(v.name, [])
        if not runs:
            continue
        tot = [r.analysis.get("totals", {}) for r in runs]
        first = [r.analysis.get("phases", [{}])[0] for r in runs]

        def mean(xs):
            xs = [x for x in xs if isinstance(x, (int, float))]
            return sum(xs) / len(xs) if xs else math.nan

        wall = mean([sum(a.get("wall_s", 0) for a in r.record.get("attempts", [])) for r in runs])
        flags = " ".join(f"`{k}={runner._cli_value(x)}`" for k, x in v.overrides.items())
        rows.append(
            [
                v.label,
                flags,
                fmt(mean([t.get("steps") for t in tot]), 0),
                fmt(mean([p.get("train_examples") for p in first]), 0),
                fmt(mean([p.get("epochs") for p in first]), 2),
                fmt(mean([p.get("real_tokens_per_example") for p in first]), 1),
                fmt(mean([p.get("targets_per_example") for p in first]), 1),
                fmt(mean([t.get("tokens_seen") for t in tot]), 0),
                f"{mean([t.get('train_flops') for t in tot]):.{digits_flops}e}",
                f"{wall / 60:.1f}",
            ]
        )
    headers = [
        "variant",
        "flags",
        "steps",
        "train examples",
        "epochs",
        "real tokens / seq",
        "targets / seq",
        "tokens seen",
        "training FLOPs",
        "wall min / run",
    ]
    return md_table(headers, rows)


def curves(grouped, labels: dict[str, str], key: str, x: Callable[[RunData, int], float] | None = None):
    """{label: [(xs, ys) per seed]} of metrics.jsonl `key`; x(run, step) maps steps (default: steps)."""
    out = {}
    for v, runs in grouped.items():
        per_seed = []
        for r in runs:
            xs, ys = r.curve(key)
            if x is not None:
                xs = [x(r, int(s)) for s in xs]
            per_seed.append((xs, ys))
        if any(len(xs) for xs, _ in per_seed):
            out[labels.get(v, v)] = per_seed
    return out


def flops_at(run: RunData, step: int) -> float:
    """Training FLOPs spent by `step`, from the run's per-phase FLOPs per step (analysis.json)."""
    total, left = 0.0, step
    for phase in run.analysis.get("phases", []):
        n = min(left, phase["steps"])
        total += n * phase["flops_per_step"]
        left -= n
    return total


def failed_section(runs: Sequence[RunData]) -> str:
    bad = [r for r in runs if not r.finished]
    if not bad:
        return ""
    rows = [
        [r.variant, str(r.seed), r.record.get("status", "?"), r.record.get("error", "")[:200]] for r in bad
    ]
    return "## Runs left out (not finished)\n\n" + md_table(["variant", "seed", "status", "last error"], rows)


# Report sections -----------------------------------------------------------------------------------------
# Each returns Markdown lines; an experiment's report.py puts them in order.


@dataclasses.dataclass(frozen=True)
class Context:
    """What every section needs: the runs by variant, labels, where figures go, how it was made."""

    name: str  # experiment folder name
    runs: list[RunData]
    grouped: dict[str, list[RunData]]
    labels: dict[str, str]
    fig_dir: str
    sweep_cmd: str
    report_cmd: str
    scale: str
    seeds: list[int]
    control: list[RunData] = dataclasses.field(default_factory=list)  # runner.CONTROL's runs

    @property
    def quick(self) -> bool:
        return self.scale.endswith("-quick")


def context(name: str, runs_dir: str, report_dir: str, variants) -> Context:
    runs = load_runs(runs_dir)
    control = [r for r in runs if r.variant == runner.CONTROL.name]
    runs = [r for r in runs if r.variant != runner.CONTROL.name]
    scale = next((r.record.get("scale") for r in runs if r.record.get("scale")), "unknown")
    seeds = sorted({r.seed for r in runs})
    fig_dir = os.path.join(report_dir, "figures")
    os.makedirs(fig_dir, exist_ok=True)
    sweep_cmd = (
        f"python -m experiments.{name}.sweep --scale={scale.removesuffix('-quick')}"
        + (" --quick" if scale.endswith("-quick") else "")
        + f" --seeds={','.join(map(str, seeds))}"
        + f" --out={runner.repo_relative(runs_dir)}"
    )
    report_cmd = (
        f"python -m experiments.{name}.report --runs={runner.repo_relative(runs_dir)} "
        f"--out={runner.repo_relative(report_dir)}"
    )
    return Context(
        name=name,
        runs=runs,
        grouped=by_variant(runs, [v.name for v in variants]),
        labels={v.name: v.label for v in variants},
        fig_dir=fig_dir,
        sweep_cmd=sweep_cmd,
        report_cmd=report_cmd,
        scale=scale,
        seeds=seeds,
        control=control,
    )


def header_lines(ctx: Context, title: str, matched: str) -> list[str]:
    out = [
        f"# {title} ({ctx.scale} scale)",
        "",
        generated_line(ctx.report_cmd) + f" Runs: `{ctx.sweep_cmd}`.",
        "",
    ]
    if ctx.quick:
        out += [
            "**This is a smoke run** (a tiny model for a few steps): it shows that the sweep, the "
            "evaluations and the report work; its numbers say nothing about the question.",
            "",
        ]
    n_done = sum(r.finished for r in ctx.runs)
    out += [f"{n_done} of {len(ctx.runs)} runs finished; pretraining seeds {ctx.seeds}. {matched}", ""]
    return out


def setup_lines(ctx: Context) -> list[str]:
    """The flags all runs share per phase (the rest vary by variant), model sizes, seeds and the machine."""
    records = [r.record for r in ctx.runs if r.record.get("phases")]
    lines = ["## Setup", ""]
    n_phases = max((len(rec["phases"]) for rec in records), default=0)
    for i in range(n_phases):
        overrides = [rec["phases"][i]["overrides"] for rec in records if len(rec["phases"]) > i]
        keys = [k for k in overrides[0] if k not in ("train.seed", "data.seed")]
        shared = {k: overrides[0][k] for k in keys if all(o.get(k) == overrides[0][k] for o in overrides)}
        varying = sorted(
            {k for o in overrides for k in o if k not in shared and k not in ("train.seed", "data.seed")}
        )
        flags = " ".join(f"`{k}={runner._cli_value(v)}`" for k, v in shared.items())
        line = f"- Phase {i + 1}: `{records[0].get('config')}` with {flags}"
        if varying:
            line += f"; by variant: {', '.join(f'`{k}`' for k in varying)}"
        lines.append(line)
    for v, runs in ctx.grouped.items():
        params = runs[0].analysis.get("parameters")
        if params:
            lines.append(
                f"- {ctx.labels.get(v, v)}: {params['total']:,} parameters "
                f"({params['non_embedding']:,} outside the embeddings)"
            )
    lines += [
        "- Pretraining seed k sets `train.seed=k` (initialisation, dropout) and `data.seed=k` "
        "(segmentation, pairs, order, masks)",
        "",
        "Machine:",
        "",
        machine_section(ctx.runs),
        "",
    ]
    return lines


def measure_lines(ctx: Context, measures: Sequence[Measure], values: dict[str, dict]) -> list[str]:
    """Per measure: summary table (mean ± std, t and bootstrap intervals) and a bar chart."""
    from experiments.common import plots

    out = []
    for m in measures:
        vals = {v: x for v, x in values[m.key].items() if x}
        if not vals:
            continue
        chance = m.key.endswith(("nsp_accuracy", "sop_accuracy"))
        chart = plots.bar_chart(
            {ctx.labels.get(v, v): x for v, x in vals.items()},
            os.path.join(ctx.fig_dir, f"bar_{m.key}.png"),
            title=m.label,
            ylabel=m.key.replace("_", " "),
            reference=0.5 if chance else None,
            reference_label="50%" if chance else "",
        )
        out += [f"### {m.label}", "", summary_table(vals, ctx.labels, m.digits), ""]
        base = baseline_line(ctx.grouped, m, ctx.labels)
        out += [base, ""] if base else []
        out += [f"![{m.label}](figures/{os.path.basename(chart)})", ""]
    return out


DIFFERENCES_NOTE = (
    "Δ = first − second. Welch's t-test over pretraining seeds; *significant* means Holm-adjusted "
    "p < 0.05 within the table. With 2–3 seeds the t-intervals are wide and the bootstrap intervals "
    "too narrow (a bootstrap of two values cannot show their spread): trust the t-intervals."
)


def difference_lines(ctx, measures, pairs, values) -> tuple[list[str], dict]:
    out, comps = [], {}
    for m in measures:
        table, comps[m.key] = comparison_table(pairs, values[m.key], ctx.labels, m.digits)
        if comps[m.key]:
            out += [f"### {m.label}", "", table, ""]
    return out, comps


def downstream_lines(ctx: Context, pairs) -> tuple[list[str], dict]:
    """The fine-tuning tables, and their comparisons keyed "downstream:task/metric"."""
    dvals = downstream_values(ctx.grouped)
    out = ["## Downstream fine-tuning", ""]
    if not dvals:
        reasons = sorted({str(r.record["downstream"]) for r in ctx.runs if r.record.get("downstream")})
        why = "; ".join(reasons) if reasons else "no fine-tuning results found"
        return out + [f"Not run: {why}. This report has pretraining measurements only.", ""], {}
    out += [
        "Fine-tuned from each run's final checkpoint; n = pretraining seeds × fine-tuning seeds. The "
        "bootstrap resamples pretraining seeds, then fine-tuning seeds within each; the t-interval and "
        "Welch's test use each pretraining seed's mean.",
        "",
    ]
    unscored = [v for v, runs in ctx.grouped.items() if runs and not any(r.downstream for r in runs)]
    if unscored:
        records = [r.record for v in unscored for r in ctx.grouped[v]]
        why = sorted({str(rec.get("downstream", "no results")) for rec in records})
        out += [
            f"Not fine-tuned: {', '.join(ctx.labels.get(v, v) for v in unscored)} (the sweep recorded: "
            f"{'; '.join(why)}). The tables below compare the other variants only.",
            "",
        ]
    recorded = [r.record.get("downstream_tasks", []) for r in ctx.runs if r.record.get("downstream") == "run"]
    text_to_text = any(t in downstream.TEXT_TO_TEXT for tasks in recorded for t in tasks)
    candidates = [t for t in downstream.TASKS if text_to_text or t not in downstream.TEXT_TO_TEXT]
    skipped = [t for t in candidates if recorded and not any(t in tasks for tasks in recorded)]
    if skipped:
        out += [
            f"Not fine-tuned at this scale: {', '.join(skipped)} (the recipe's `tasks`, "
            "experiments/common/recipes.py or the study's sweep.py, which says why).",
            "",
        ]
    control = [r for r in ctx.control if r.finished and r.downstream]
    cvals = downstream_values({runner.CONTROL.name: control})
    if control:
        out += [
            f"The last row of each table, *{runner.CONTROL.label}*, is the control: the model of "
            f"{ctx.labels.get(control[0].record.get('baseline', ''), 'the first variant')}, "
            f"{runner.CONTROL.description}. A variant whose pretraining helped the task scores above it.",
            "",
        ]
    labels = {**ctx.labels, runner.CONTROL.name: runner.CONTROL.label}
    comps = {}
    for key, vals in dvals.items():
        table, comps[f"downstream:{key}"] = comparison_table(pairs, vals, ctx.labels)
        out += [f"### {key}", "", summary_table({**vals, **cvals.get(key, {})}, labels), "", table, ""]
        if key in cvals:
            ctable, ccomps = comparison_table(
                [(v, runner.CONTROL.name) for v in vals], {**vals, **cvals[key]}, labels
            )
            sign = 1 if downstream.higher_is_better(key) else -1
            better = [ctx.labels.get(v, v) for (v, _), c in ccomps.items() if sign * c.diff > 0]
            sig = [
                ctx.labels.get(v, v) for (v, _), c in ccomps.items() if sign * c.diff > 0 and c.significant
            ]
            out += ["Each variant against the control (Holm over this table):", "", ctable, ""]
            if sign < 0:
                out += ["Lower is better here: a variant better than the control has a negative Δ.", ""]
            if sig:
                out += [f"**Significantly better than the control:** {', '.join(sig)}.", ""]
            else:
                above = f" (better by mean, not significantly: {', '.join(better)})" if better else ""
                out += [
                    f"**No variant is significantly better than the {runner.CONTROL.label} control**"
                    f"{above}: at this scale pretraining did not measurably help this task, so the "
                    "differences between variants say which pretraining hurt least, not which helped most.",
                    "",
                ]
        chance = downstream.CHANCE.get(key)
        pooled = [[x for seed in g for x in seed] for g in vals.values()]
        means = [sum(xs) / len(xs) for xs in pooled if xs]
        if chance is not None and means and max(means) <= chance:
            comps.setdefault(AT_CHANCE, set()).add(f"downstream:{key}")
            out += [
                f"**At chance.** No variant's mean {key} is above {chance:g}, the level of a model that "
                "learned nothing usable (experiments/common/downstream.py, `CHANCE`). At this fine-tuning "
                "budget the pretrained models are too weak for the task, so this table says nothing about "
                "the variants; the differences above are noise.",
                "",
            ]
    return out, comps


def curve_lines(ctx: Context, specs, x=None, xlabel: str = "step", logx: bool = False) -> list[str]:
    """Learning-curve figures for (metrics.jsonl key, title) specs; x(run, step) maps the x axis."""
    from experiments.common import plots

    out = []
    for key, title in specs:
        c = curves(ctx.grouped, ctx.labels, key, x)
        if not c:
            continue
        path = plots.learning_curves(
            c,
            os.path.join(ctx.fig_dir, f"curve_{key}.png"),
            title=title,
            ylabel=key,
            xlabel=xlabel,
            logx=logx,
        )
        out += [f"![{title}](figures/{os.path.basename(path)})", ""]
    if out:
        out = ["## Learning curves", "", "Mean over seeds; the band spans the seeds' min–max.", ""] + out
    return out


def lookup(comps: dict, a: str, b: str) -> stats.Comparison | None:
    """The comparison a − b from a table that may hold it as b − a."""
    if (a, b) in comps:
        return comps[(a, b)]
    if (b, a) in comps:
        c = comps[(b, a)]
        return stats.Comparison(
            -c.diff, -c.t_high, -c.t_low, -c.boot_high, -c.boot_low, -c.t, c.df, c.p, c.p_holm
        )
    return None


AT_CHANCE = "at_chance"  # downstream_lines' comps: the tables in which every variant is at chance


def claim_rows(claims: Sequence[Claim], comps: dict, labels: dict[str, str]) -> list[list[str]]:
    """One row per claim and measurement: every downstream table, then the claim's pretraining measure.
    A table where every variant is at chance (downstream_lines) is no evidence either way."""
    rows = []
    at_chance = comps.get(AT_CHANCE, set())
    downstream_keys = [k for k in comps if k.startswith("downstream:")]
    for c in claims:
        measures = downstream_keys + ([c.measure] if c.measure else [])
        for measure in measures or [""]:
            comp = lookup(comps.get(measure, {}), c.a, c.b)
            # The claim's direction is its pretraining measure's; a downstream table's is its metric's
            # (a fine-tuned loss: the better model is lower).
            claim = c
            if measure.startswith("downstream:"):
                claim = dataclasses.replace(c, higher_is_better=downstream.higher_is_better(measure))
            proxy = c.proxy and not measure.startswith("downstream:")
            what = f"{labels.get(c.a, c.a)} vs {labels.get(c.b, c.b)}"
            if measure:
                what += f", {measure.removeprefix('downstream:').replace('_', ' ')}" + (
                    " (proxy)" if proxy else ""
                )
            ours = (
                "not measured (needs the downstream stage)"
                if comp is None and not measure
                else "not measured"
                if comp is None
                else f"Δ = {comp.diff:+.4f}, 95% CI {fmt_interval(comp.t_low, comp.t_high)}"
            )
            why = verdict(claim, comp)
            if measure in at_chance and comp is not None:
                why = "no evidence: every variant is at chance on this measure"
            rows.append([c.source, c.published, what, ours, why])
    return rows


CLAIMS_NOTE = (
    "The published claims are about fine-tuned accuracy (MNLI, QNLI, MRPC, SQuAD). Rows marked *(proxy)* "
    "use held-out MLM accuracy on the common split instead, which is not what the papers measured: a "
    "proxy can agree or disagree for reasons that have nothing to do with fine-tuning. *Consistent* means "
    "our data cannot reject a claim of no difference (or of no loss): it supports the claim only as far "
    "as the interval in *ours* is narrow, and with few seeds it is usually wide enough to hide the "
    "published effect."
)

BERT_BASE_TOKENS = 0.9e6 * 256 * 128 + 0.1e6 * 256 * 512  # 1M steps of 256: 90% at 128, 10% at 512 positions


def scale_and_noise_lines(ctx: Context) -> list[str]:
    lines = []
    runs = [r for rs in ctx.grouped.values() for r in rs]
    tokens = [r.analysis.get("totals", {}).get("tokens_seen") for r in runs]
    tokens = [t for t in tokens if t]
    params = [r.analysis.get("parameters", {}).get("total") for r in runs]
    params = [p for p in params if p]
    if tokens and params:
        t = sum(tokens) / len(tokens)
        lines.append(
            f"- **Scale.** Each run trained a {max(params) / 1e6:.1f}M-parameter model on "
            f"{t / 1e6:.2f}M real tokens. BERT-base has 110M parameters and saw about "
            f"{BERT_BASE_TOKENS / 1e9:.0f}B token positions (1M steps of 256 sequences), "
            f"{BERT_BASE_TOKENS / t:,.0f}× more. Effects that "
            "appear only once a model has learned the easy statistics of its data cannot show up here."
        )
    corpora = {
        str(p.get("overrides", {}).get("data.corpus", "default"))
        for r in runs
        for p in r.record.get("phases", [])[:1]
    }
    lines.append(_data_line(corpora))
    n = min((len(rs) for rs in ctx.grouped.values()), default=0)
    lines.append(
        f"- **Noise.** {n} pretraining seed(s) per variant: a difference smaller than the seed-to-seed "
        "spread cannot be resolved, and with one seed no test is possible. The validation splits are "
        "held-out documents and add their own sampling noise."
    )
    return lines


def _data_line(corpora: set[str]) -> str:
    """What the runs trained on, against BERT's BooksCorpus + English Wikipedia."""
    bert = "instead of BooksCorpus + English Wikipedia (3.3B words)"
    if corpora == {"default"}:
        return (
            "- **Data.** flaxlm's default corpus, four kinds of text (Shakespeare's plays, Austen's novels, "
            f"the World English Bible, the Python documentation; ~3.5M words), {bert}. Its documents "
            "(scenes, chapters, pages) are short, so segment pairs and document-bounded sequences often "
            "end early."
        )
    if corpora == {"shakespeare"}:
        return (
            f"- **Data.** One corpus of verse drama (Shakespeare, ~0.8M words) {bert}; its scenes are short, "
            "so segment pairs and document-bounded sequences often end early."
        )
    return f"- **Data.** `data.corpus={', '.join(sorted(corpora))}` {bert}."


def commands_lines(ctx: Context) -> list[str]:
    return [
        "## Exact commands",
        "",
        f"The sweep: `{ctx.sweep_cmd}` (it runs each command below, skipping finished runs), "
        f"then `{ctx.report_cmd}`.",
        "",
        "<details><summary>Every flaxlm command, in the order run</summary>",
        "",
        commands_section(ctx.runs + ctx.control),
        "",
        "</details>",
        "",
    ]


def write(ctx: Context, report_dir: str, lines: Sequence[str]) -> str:
    failed = failed_section(ctx.runs + ctx.control)
    path = os.path.join(report_dir, "REPORT.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join([*lines, *([failed, ""] if failed else [])]).rstrip() + "\n")
    return path


def report_main(name: str, write_report: Callable[[str, str], str], argv=None) -> int:
    """`python -m experiments.<name>.report [--runs DIR] [--out DIR]`: rewrites REPORT.md from the runs."""
    import argparse

    folder = os.path.join(runner.REPO, "experiments", name)
    p = argparse.ArgumentParser(prog=f"python -m experiments.{name}.report")
    p.add_argument("--runs", default=os.path.join(folder, "runs"))
    p.add_argument("--out", default=folder)
    args = p.parse_args(argv)
    print(write_report(os.path.abspath(args.runs), os.path.abspath(args.out)))
    return 0
