"""Statistics for sweep tables: mean ± std, 95% intervals, and which differences are significant.

A sample is a list of groups of scores: one group per pretraining seed, holding
that seed's score (pretraining metrics: groups of one) or its fine-tuning seeds'
scores (downstream). The pretraining seed is the independent unit, so
intervals and tests treat groups as the samples: the t-interval and Welch's
test run over group means, and the bootstrap resamples groups, then scores
within each drawn group (a two-level bootstrap). With groups of one this is
the ordinary t-interval, Welch test and percentile bootstrap.

With fewer than two groups no interval or test exists: those fields are NaN
and tables print them as "n/a".
"""

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_BOOT = 10_000
ALPHA = 0.05

Groups = Sequence[Sequence[float]]


def as_groups(values: Sequence[float] | Groups) -> list[list[float]]:
    """A flat list of scores becomes groups of one; groups pass through (as lists of floats)."""
    return [[float(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else [float(v)] for v in values]


def group_means(groups: Groups) -> np.ndarray:
    return np.array([np.mean(g) for g in groups], dtype=np.float64)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval for the mean: mean ± t_{(1+c)/2, n-1} · s/√n (s with n-1 in the denominator)."""
    x = np.asarray(values, np.float64)
    n = x.size
    if n < 2:
        return math.nan, math.nan
    half = sps.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean() - half), float(x.mean() + half)


def bootstrap_means(groups: Groups, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot] means of two-level resamples: draw groups with replacement, then scores within each."""
    groups = [np.asarray(g, np.float64) for g in groups]
    k = len(groups)
    picks_BK = rng.integers(0, k, size=(n_boot, k))
    # Each drawn slot gets its own within-group resample; vectorised per group.
    sums_BK = np.empty((n_boot, k))
    sizes_BK = np.empty((n_boot, k))
    for i, g in enumerate(groups):
        slots = picks_BK == i
        draws = g[rng.integers(0, g.size, size=(int(slots.sum()), g.size))]
        sums_BK[slots] = draws.sum(axis=1)
        sizes_BK[slots] = g.size
    return sums_BK.sum(axis=1) / sizes_BK.sum(axis=1)


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | Groups, confidence: float = CONFIDENCE, n_boot: int = N_BOOT, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean (two-level when given groups)."""
    groups = as_groups(values)
    if len(groups) < 2:
        return math.nan, math.nan
    return _percentile_interval(bootstrap_means(groups, n_boot, np.random.default_rng(seed)), confidence)


@dataclasses.dataclass(frozen=True)
class Summary:
    """One variant's scores: `n` groups (pretraining seeds) holding `n_scores` scores in all."""

    n: int
    n_scores: int
    mean: float  # over all scores
    std: float  # over all scores, ddof=1 (NaN for one score)
    t_low: float  # t-interval over group means
    t_high: float
    boot_low: float
    boot_high: float


def summarize(values: Sequence[float] | Groups, confidence: float = CONFIDENCE, seed: int = 0) -> Summary:
    groups = as_groups(values)
    flat = np.concatenate([np.asarray(g, np.float64) for g in groups]) if groups else np.zeros(0)
    t_low, t_high = t_interval(group_means(groups), confidence)
    b_low, b_high = bootstrap_ci(groups, confidence, seed=seed)
    return Summary(
        n=len(groups),
        n_scores=int(flat.size),
        mean=float(flat.mean()) if flat.size else math.nan,
        std=float(flat.std(ddof=1)) if flat.size > 1 else math.nan,
        t_low=t_low,
        t_high=t_high,
        boot_low=b_low,
        boot_high=b_high,
    )


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's unequal-variance t-test of mean(a) == mean(b): returns (t, df, two-sided p).

    df is the Welch–Satterthwaite approximation. NaNs when either side has
    fewer than two values or both have zero variance.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:
        return math.nan, math.nan, math.nan
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return float(t), float(df), float(2 * sps.t.sf(abs(t), df))


def welch_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE):
    """t-interval for mean(a) - mean(b) with Welch's standard error and degrees of freedom."""
    t, df, _ = welch_t_test(a, b)
    if math.isnan(df):
        return math.nan, math.nan
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    half = sps.t.ppf((1 + confidence) / 2, df) * se
    return float(diff - half), float(diff + half)


def bootstrap_diff_ci(
    a: Sequence[float] | Groups,
    b: Sequence[float] | Groups,
    confidence: float = CONFIDENCE,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval for mean(a) - mean(b), resampling each side independently."""
    ga, gb = as_groups(a), as_groups(b)
    if len(ga) < 2 or len(gb) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    diffs = bootstrap_means(ga, n_boot, rng) - bootstrap_means(gb, n_boot, rng)
    return _percentile_interval(diffs, confidence)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaNs stay NaN and do not count as tests)."""
    p = np.asarray(pvalues, np.float64)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    m = valid.size
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclasses.dataclass(frozen=True)
class Comparison:
    """mean(a) - mean(b), its intervals and Welch's test over pretraining seeds."""

    diff: float
    t_low: float
    t_high: float
    boot_low: float
    boot_high: float
    t: float
    df: float
    p: float
    p_holm: float = math.nan  # filled in by compare_all

    @property
    def significant(self) -> bool | None:
        """Holm-adjusted p < ALPHA (or raw p when not adjusted); None when no test was possible."""
        p = self.p if math.isnan(self.p_holm) else self.p_holm
        return None if math.isnan(p) else bool(p < ALPHA)


def compare(a: Sequence[float] | Groups, b: Sequence[float] | Groups, seed: int = 0) -> Comparison:
    ga, gb = as_groups(a), as_groups(b)
    ma, mb = group_means(ga), group_means(gb)
    flat_a = np.concatenate([np.asarray(g, np.float64) for g in ga])
    flat_b = np.concatenate([np.asarray(g, np.float64) for g in gb])
    t, df, p = welch_t_test(ma, mb)
    t_low, t_high = welch_interval(ma, mb)
    b_low, b_high = bootstrap_diff_ci(ga, gb, seed=seed)
    return Comparison(float(flat_a.mean() - flat_b.mean()), t_low, t_high, b_low, b_high, t, df, p)


def compare_all(pairs: Sequence[tuple[Groups, Groups]], seed: int = 0) -> list[Comparison]:
    """compare() for each (a, b), with Holm-adjusted p-values across the whole family."""
    comps = [compare(a, b, seed=seed) for a, b in pairs]
    adjusted = holm([c.p for c in comps])
    return [dataclasses.replace(c, p_holm=q) for c, q in zip(comps, adjusted)]


def binomial_vs_chance(correct: int, total: int, chance: float) -> float:
    """Two-sided exact binomial p-value of `correct` successes in `total` trials at rate `chance`.

    For sentence-pair accuracy pooled over a fixed evaluation set: is a model
    above (or below) the majority-label rate, even with one pretraining seed?
    """
    if total <= 0:
        return math.nan
    return float(sps.binomtest(int(correct), int(total), chance).pvalue)
