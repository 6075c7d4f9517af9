"""stats.py: Student-t mean CI against scipy directly, Fieller ratio CI on known inputs."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from moebench.stats import intervals_overlap, mean_ci, ratio_ci


def test_mean_ci_matches_scipy_t_interval():
    values = [10.2, 9.8, 11.1, 10.5, 9.9, 10.7]
    result = mean_ci(values)
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values),
                                       scale=scipy_stats.sem(values))
    assert result.n == 6
    assert result.stddev == pytest.approx(scipy_stats.tstd(values))
    assert result.ci_low == pytest.approx(low) and result.ci_high == pytest.approx(high)


def test_mean_ci_small_samples_say_why():
    assert mean_ci([]).mean is None and mean_ci([]).note
    one = mean_ci([5.0])
    assert one.mean == 5.0 and one.ci_low is None and "n=1" in one.note


def test_ratio_ci_endpoints_solve_fieller_equation():
    a_values, b_values = [9.0, 9.3, 8.7, 9.1], [10.0, 10.2, 9.8, 10.1, 9.9]
    result = ratio_ci(a_values, b_values)
    a, b = sum(a_values) / 4, sum(b_values) / 5
    var_a = scipy_stats.tvar(a_values) / 4
    var_b = scipy_stats.tvar(b_values) / 5
    assert result.ratio == pytest.approx(a / b)
    # at each endpoint rho: (a - rho b)^2 = t^2 (var_a + rho^2 var_b), t from Welch-Satterthwaite df
    for rho in (result.ci_low, result.ci_high):
        r = a / b
        df = (var_a + r * r * var_b) ** 2 / (var_a ** 2 / 3 + (r * r * var_b) ** 2 / 4)
        t = scipy_stats.t.ppf(0.975, df)
        assert (a - rho * b) ** 2 == pytest.approx(t * t * (var_a + rho * rho * var_b), rel=1e-9)
    assert result.ci_low < result.ratio < result.ci_high


def test_ratio_ci_known_values():
    # exact means 9 and 10, equal spread: the interval is nearly symmetric around 0.9
    result = ratio_ci([8.0, 9.0, 10.0], [9.0, 10.0, 11.0])
    assert result.ratio == pytest.approx(0.9)
    assert 0.6 < result.ci_low < 0.9 < result.ci_high < 1.3
    assert "Fieller" in result.method


def test_ratio_ci_identical_constant_samples_collapse():
    result = ratio_ci([2.0, 2.0, 2.0], [4.0, 4.0])
    assert result.ratio == 0.5
    assert result.ci_low == pytest.approx(0.5) and result.ci_high == pytest.approx(0.5)


def test_ratio_ci_unbounded_and_missing():
    wild = ratio_ci([1.0, 1.1], [0.1, 50.0])
    assert wild.ratio is not None and wild.ci_low is None and "unbounded" in wild.note
    assert ratio_ci([], [1.0, 2.0]).ratio is None
    single = ratio_ci([1.0], [2.0, 2.1])
    assert single.ratio == pytest.approx(1 / 2.05) and single.ci_low is None


def test_overlap():
    assert intervals_overlap(0.85, 0.95, 0.9, 1.0)
    assert not intervals_overlap(0.5, 0.6, 0.64, 0.74)
    assert math.isclose(mean_ci([1.0, 3.0]).mean, 2.0)
