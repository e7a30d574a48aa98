"""Statistics across seeds on fixed inputs, checked against published t-test results."""

from __future__ import annotations

import math

import pytest

from tinyseek.reporting.stats import summarize, welch_compare


def test_summary_of_three_seeds():
    stat = summarize([1.0, 2.0, 3.0])
    assert stat.n == 3
    assert stat.mean == 2.0
    assert stat.std == 1.0
    # t(0.975, 2) = 4.302653; half-width 4.302653 / sqrt(3) = 2.484138.
    assert stat.ci_low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert stat.ci_high == pytest.approx(2.0 + 2.484138, abs=1e-6)


def test_summary_of_one_seed_has_no_spread():
    stat = summarize([0.75])
    assert stat.mean == 0.75
    assert stat.std is None
    assert stat.ci_low is None
    assert stat.ci_high is None


def test_welch_matches_r_t_test():
    # R: t.test(c(1, 2, 3), c(4, 5, 6)) gives t = -3.6742, df = 4, p-value = 0.02131.
    # Interval: -3 -/+ t(0.975, 4) * sqrt(1/3 + 1/3) = -3 -/+ 2.776445 * 0.816497.
    result = welch_compare([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert result.diff == -3.0
    assert result.p_value == pytest.approx(0.02131, abs=5e-5)
    assert result.ci_low == pytest.approx(-5.266958, abs=1e-5)
    assert result.ci_high == pytest.approx(-0.733042, abs=1e-5)
    assert result.within_noise is False


def test_welch_unequal_variances():
    # Welch-Satterthwaite df for sd 1 (n=3) against sd 3 (n=3): (1/3 + 3)^2 /
    # ((1/3)^2/2 + 3^2/2) = 2.4390; t = 1 / sqrt(10/3) = 0.547723.
    result = welch_compare([1.0, 2.0, 3.0], [-2.0, 1.0, 4.0])
    assert result.diff == pytest.approx(1.0)
    t = 1.0 / math.sqrt(10.0 / 3.0)
    from scipy import stats

    assert result.p_value == pytest.approx(2 * stats.t.sf(t, df=2.4390244), abs=1e-6)
    assert result.within_noise is True


def test_noise_and_exact_ties():
    same = welch_compare([2.0, 2.0], [2.0, 2.0])
    assert same.p_value == 1.0
    assert same.within_noise is True
    apart = welch_compare([3.0, 3.0], [2.0, 2.0])
    assert apart.p_value == 0.0
    assert apart.within_noise is False


def test_one_seed_comparison_is_untested():
    result = welch_compare([1.5], [1.0, 1.2])
    assert result.diff == pytest.approx(0.4)
    assert result.p_value is None
    assert result.within_noise is None


def test_invalid_values_rejected():
    with pytest.raises(ValueError, match="non-empty"):
        summarize([])
    with pytest.raises(ValueError, match="NaN or infinity"):
        summarize([1.0, float("nan")])
