"""Figures for reports (matplotlib, Agg backend: no display needed): learning curves and bar charts."""

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.common import stats  # noqa: E402


def learning_curves(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
    path: str,
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str,
    logx: bool = False,
) -> str:
    """One line per variant: the mean over its seeds at the x values all seeds share, and the
    seeds' min-max as a band. curves: {label: [(x, y) per seed]}."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, per_seed in curves.items():
        per_seed = [(np.asarray(x, float), np.asarray(y, float)) for x, y in per_seed if len(x)]
        if not per_seed:
            continue
        shared = sorted(set.intersection(*(set(x.tolist()) for x, _ in per_seed)))
        if not shared:
            continue
        ys = np.array([[dict(zip(x.tolist(), y.tolist()))[s] for s in shared] for x, y in per_seed])
        (line,) = ax.plot(shared, ys.mean(axis=0), marker="o", markersize=3, label=label)
        if len(per_seed) > 1:
            ax.fill_between(shared, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.15)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_chart(
    values: dict[str, Sequence[float]],
    path: str,
    *,
    title: str,
    ylabel: str,
    reference: float | None = None,
    reference_label: str = "",
) -> str:
    """Bars at each variant's mean with 95% t-interval error bars (when it has ≥ 2 seeds); the seeds'
    own values as dots. values: {label: scores per seed}."""
    labels = list(values)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels) + 2), 4.2))
    for i, label in enumerate(labels):
        v = np.asarray(values[label], float)
        if not v.size:
            continue
        lo, hi = stats.t_interval(v)
        yerr = None if math.isnan(lo) else [[v.mean() - lo], [hi - v.mean()]]
        ax.bar(i, v.mean(), yerr=yerr, capsize=4, color="C0", alpha=0.7)
        ax.plot(np.full(v.size, i), v, "k.", markersize=5)
    if reference is not None:
        ax.axhline(reference, color="C3", linestyle="--", linewidth=1, label=reference_label or None)
        if reference_label:
            ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    # Differences between variants are small next to the values: start the axis near the data.
    finite = [x for v in values.values() for x in v if math.isfinite(x)]
    if finite:
        span = max(finite) - min(finite)
        pad = 0.5 * span if span else 0.05 * abs(max(finite)) or 0.05
        bottom = min(finite) - pad
        if reference is not None:
            bottom = min(bottom, reference - pad)
        if bottom > 0:
            ax.set_ylim(bottom=bottom)
            ax.set_ylabel(f"{ylabel} (axis not from 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
