"""Statistics of a comparison between recommenders: spread over seeds, paired tests over users (scipy.stats; the
correction of Holm, Scand. J. Statist. 1979).

* :func:`seed_summary`: mean, standard deviation and the t-distribution confidence interval of a metric over a
  configuration's seeds (``scipy.stats.t.interval``).
* :func:`paired_test`: two configurations evaluated on the same units (users, or test events), each unit's metric
  averaged over the configuration's seeds first (no pseudo-replication of user × seed rows): the paired t-test
  (``scipy.stats.ttest_rel``, two-sided; its confidence interval of the mean difference is the effect size) and the
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, Wilcoxon 1945; zero differences dropped, the
  ``zero_method='wilcox'`` default, so ``wilcoxon_n`` counts the units where the two differ). The differences are
  rounded to 12 decimals before ranking (SciPy's advice: round-off must not create rank differences).
* :func:`holm`: Holm–Bonferroni adjusted p-values (Holm 1979): sort ascending, ``p̃₍ᵢ₎ = max_{j ≤ i} (m − j + 1)
  p₍ⱼ₎`` capped at 1; reject where ``p̃ ≤ α``.

Cases without a test (fewer than :data:`MIN_UNITS` units, identical values) carry a ``note`` and NaN statistics,
never an exception. A leaf module: numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

#: fewest paired units a test is run on (the t-test needs one degree of freedom)
MIN_UNITS = 2
#: decimals the per-unit differences are rounded to before the Wilcoxon ranking
ROUND_DECIMALS = 12


@dataclass(frozen=True)
class SeedSummary:
    """A metric over ``n`` seeds: mean, sample standard deviation and confidence interval (NaN for ``n < 2``)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def seed_summary(values: Sequence[float], confidence: float = 0.95) -> SeedSummary:
    """Mean ± the ``confidence`` t interval (``n − 1`` degrees of freedom) of ``values`` (one per seed)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        raise ValueError("seed_summary of no values")
    mean = float(x.mean())
    if n < 2:
        return SeedSummary(n, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    if std == 0.0:  # all seeds agree (e.g. a model with nothing random): the interval is the point
        return SeedSummary(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
    return SeedSummary(n, mean, std, float(low), float(high))


@dataclass(frozen=True)
class PairedTest:
    """``other`` against ``baseline`` over ``n`` paired units (difference = other − baseline)."""

    n: int
    mean_diff: float
    diff_ci_low: float
    diff_ci_high: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float
    #: units with a non-zero difference (those the Wilcoxon test ranks)
    wilcoxon_n: int
    #: why a test did not run ("" when both ran)
    note: str = ""


def paired_test(baseline: np.ndarray, other: np.ndarray, confidence: float = 0.95) -> PairedTest:
    """Paired t-test and Wilcoxon signed-rank test of ``other`` vs ``baseline`` (same units, same order)."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two vectors of the same length, got {a.shape} and {b.shape}")
    n = len(a)
    nan = math.nan
    if n < MIN_UNITS:
        mean = float((b - a).mean()) if n else nan
        return PairedTest(n, mean, nan, nan, nan, nan, nan, nan, 0, f"too few units (n = {n}) for a paired test")
    diff = np.round(b - a, ROUND_DECIMALS)
    nonzero = int(np.count_nonzero(diff))
    mean = float(diff.mean())
    if nonzero == 0:
        return PairedTest(n, 0.0, 0.0, 0.0, nan, nan, nan, nan, 0, "identical per-unit values: no test")
    if np.all(diff == diff[0]):  # one constant difference: no variance for the t-test
        t_stat, t_p, lo, hi = nan, nan, mean, mean
        note = "constant difference: t-test undefined"
    else:
        t = stats.ttest_rel(b, a)
        ci = t.confidence_interval(confidence)
        t_stat, t_p, lo, hi = float(t.statistic), float(t.pvalue), float(ci.low), float(ci.high)
        note = ""
    w = stats.wilcoxon(diff)
    return PairedTest(n, mean, lo, hi, t_stat, t_p, float(w.statistic), float(w.pvalue), nonzero, note)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values over the family of the finite ``pvalues`` (NaN entries, tests that did
    not run, stay NaN and do not count in the family size)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
    unsorted = np.empty(m)
    unsorted[order] = adjusted
    out[ok] = unsorted
    return out
