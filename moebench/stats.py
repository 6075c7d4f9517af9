"""Statistics of the analysis: mean with a Student-t 95% CI, and a ratio of two means with Fieller's CI.

Every function takes plain sequences of floats and returns a dataclass; a value that cannot be
computed (one sample, a denominator indistinguishable from zero) is None with the reason beside it,
so tables can print an empty cell and say why instead of inventing a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RATIO_CI_METHOD = "Fieller (independent samples, Welch-Satterthwaite df), 95%"


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float | None
    stddev: float | None
    ci_low: float | None
    ci_high: float | None
    note: str | None = None


@dataclass(frozen=True)
class RatioCI:
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = RATIO_CI_METHOD
    note: str | None = None


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    return float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df))


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI:
    """n, mean, sample stddev (n-1) and the two-sided Student-t interval of the mean."""
    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return MeanCI(0, None, None, None, None, "no measured values")
    mean = math.fsum(data) / n
    if n == 1:
        return MeanCI(1, mean, None, None, None, "n=1: no stddev or CI")
    stddev = math.sqrt(math.fsum((v - mean) ** 2 for v in data) / (n - 1))
    half = t_quantile(n - 1, confidence) * stddev / math.sqrt(n)
    return MeanCI(n, mean, stddev, mean - half, mean + half)


def _welch_df(terms: Sequence[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of independent variance terms (var, n)."""
    numerator = sum(v for v, _ in terms) ** 2
    denominator = sum(v * v / (n - 1) for v, n in terms if v > 0)
    return numerator / denominator if denominator > 0 else float(sum(n - 1 for _, n in terms))


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], confidence: float = CONFIDENCE) -> RatioCI:
    """mean(numerator) / mean(denominator) with Fieller's interval for two independent samples.

    The interval is every rho for which (a - rho*b)^2 <= t^2 (var_a + rho^2 var_b), a and b the sample
    means and var_* their squared standard errors; t uses the Welch-Satterthwaite df of that sum.
    """
    num, den = mean_ci(numerator), mean_ci(denominator)
    if num.mean is None or den.mean is None:
        missing = "numerator" if num.mean is None else "denominator"
        return RatioCI(None, None, None, note=f"no measured values for the {missing}")
    if den.mean == 0:
        return RatioCI(None, None, None, note="the denominator's mean is zero")
    a, b = num.mean, den.mean
    ratio = a / b
    if num.stddev is None or den.stddev is None:
        return RatioCI(ratio, None, None, note=f"n={num.n}/{den.n}: a CI needs at least 2 values on each side")
    var_a, var_b = num.stddev ** 2 / num.n, den.stddev ** 2 / den.n
    df = _welch_df([(var_a, num.n), (ratio * ratio * var_b, den.n)])
    t = t_quantile(df, confidence)
    g = t * t * var_b / (b * b)
    if g >= 1.0:
        return RatioCI(ratio, None, None, note="the denominator's CI includes zero: Fieller's interval is unbounded")
    root = (t / abs(b)) * math.sqrt(var_a * (1.0 - g) + ratio * ratio * var_b)
    low, high = (ratio - root) / (1.0 - g), (ratio + root) / (1.0 - g)
    return RatioCI(ratio, low, high)


def intervals_overlap(low_a: float, high_a: float, low_b: float, high_b: float) -> bool:
    return low_a <= high_b and low_b <= high_a
