"""Statistics across seeds: mean, standard deviation, 95 % t-intervals and Welch's t-test."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
"""Level of every interval in the report."""
ALPHA = 0.05
"""A difference to the baseline with Welch p >= ALPHA is reported as within noise."""


@dataclass(frozen=True)
class SeedSummary:
    """One metric of one variant over its seeds. Spread fields are None for a single seed."""

    n: int
    mean: float
    std: float | None
    """Sample standard deviation (ddof=1)."""
    ci_low: float | None
    ci_high: float | None
    """Bounds of the 95 % t-interval of the mean: mean -/+ t(0.975, n-1) * std / sqrt(n)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """A variant's difference to the baseline in one metric (variant minus baseline)."""

    diff: float
    ci_low: float | None
    ci_high: float | None
    """95 % Welch interval of the difference of the means."""
    p_value: float | None
    """Two-sided Welch t-test; None when either side has fewer than two seeds."""
    within_noise: bool | None
    """True when p >= ALPHA, None when untested."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _values(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"need a non-empty list of numbers, got {list(values)!r}.")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"values {list(values)!r} contain NaN or infinity: check the runs.")
    return array


def summarize(values: Sequence[float]) -> SeedSummary:
    """Mean, standard deviation and 95 % t-interval of one metric over seeds."""
    x = _values(values)
    n = x.size
    mean = float(x.mean())
    if n < 2:
        return SeedSummary(n, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1)) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half, mean + half)


def welch_compare(variant: Sequence[float], baseline: Sequence[float]) -> Comparison:
    """Difference of the means with its Welch interval and two-sided p-value.

    Identical constant samples on both sides give p = 1; constant samples that differ give
    p = 0, because the t statistic is infinite.
    """
    a, b = _values(variant), _values(baseline)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return Comparison(diff, None, None, None, None)

    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        p = 1.0 if diff == 0.0 else 0.0
        return Comparison(diff, diff, diff, p, p >= ALPHA)
    # Welch-Satterthwaite degrees of freedom, as scipy uses for equal_var=False.
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=df)) * se
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(diff, diff - half, diff + half, p, p >= ALPHA)
