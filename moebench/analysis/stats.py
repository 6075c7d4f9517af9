"""Statistics of the analysis: intervals that stay positive, paired ratios, and run-to-run warnings.

Every quantity summarized here is positive (tok/s, ms, bytes, J/token), and its run-to-run noise is
multiplicative (a busy core slows a run by a fraction, not by a fixed amount). So the interval is a
Student-t interval of the mean of the *log* values, exponentiated: an interval for the geometric
mean that can never reach zero and is as asymmetric as the data (the tables keep the arithmetic
mean and stddev beside it, and the CV = stddev / mean). Chosen over a BCa bootstrap
(`scipy.stats.bootstrap`) because

- it is deterministic with no seed: the same records give the same bytes in every report;
- it keeps its coverage at the n the matrix has (3 repetitions of a prompt), where a bootstrap
  interval is too narrow (3 values have only 10 distinct resamples);
- a ratio is a difference of logs, so a paired ratio's interval is the same t-interval on the log
  per-pair ratios: one method for values and ratios.

Below 3 values there is no interval, with the reason: with n=2 a t-interval has one degree of
freedom (t = 12.7) and says nothing. A value that cannot be computed is None with the reason beside
it, so tables print an empty cell and say why instead of inventing a number.

Two warnings per cell, as hyperfine gives them: the repetitions of one prompt vary by more than
CV_WARN_THRESHOLD, or the cell's first measured run is an outlier among its prompt's repetitions
(see `first_run_outlier`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MIN_N_FOR_INTERVAL = 3
POSITIVE_CI_METHOD = "geometric mean, Student-t on log values, exponentiated, 95%"
PAIRED_RATIO_METHOD = ("geometric mean of per-pair ratios (pairs: same prompt and repetition), "
                       "Student-t on log ratios, exponentiated, 95%")
# A cell is noisy when one prompt's repetitions have a coefficient of variation above this.
CV_WARN_THRESHOLD = 0.10
# The first measured run is an outlier when it lies more than OUTLIER_MADS robust standard deviations
# (1.4826 x the median absolute deviation) AND more than OUTLIER_MIN_RELATIVE of the median away from
# the median of the other repetitions of its prompt. The relative floor keeps two near-identical
# repetitions (a MAD of almost zero) from flagging a run that differs by a fraction of a percent.
OUTLIER_MADS = 3.0
OUTLIER_MIN_RELATIVE = 0.10
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Summary:
    """One metric of one cell: n, arithmetic mean, stddev, CV, and the geometric mean's interval."""
    n: int
    mean: float | None
    stddev: float | None
    cv: float | None
    geomean: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = POSITIVE_CI_METHOD
    note: str | None = None


@dataclass(frozen=True)
class PairedRatio:
    n_pairs: int
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = PAIRED_RATIO_METHOD
    note: str | None = None


def t_quantile(df: float, confidence: float = CONFIDENCE) -> float:
    return float(scipy_stats.t.ppf(0.5 + confidence / 2.0, df))


def _log_t_interval(logs: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """exp(mean), exp(mean -+ t * s / sqrt(n)) of log values: centre and bounds, all > 0."""
    n = len(logs)
    centre = math.fsum(logs) / n
    half = t_quantile(n - 1, confidence) * statistics.stdev(logs) / math.sqrt(n)
    return math.exp(centre), math.exp(centre - half), math.exp(centre + half)


def too_few(n: int, what: str = "values") -> str:
    return f"n={n}: an interval needs at least {MIN_N_FOR_INTERVAL} {what}"


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample stddev / mean; None below two values or for a mean that is not positive."""
    if len(values) < 2:
        return None
    mean = math.fsum(values) / len(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def positive_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """n, mean, sample stddev (n-1), CV, geometric mean and its interval (see the module docstring)."""
    data = [float(v) for v in values]
    n = len(data)
    if n == 0:
        return Summary(0, None, None, None, None, None, None, note="no measured values")
    mean = math.fsum(data) / n
    stddev = statistics.stdev(data) if n > 1 else None
    cv = coefficient_of_variation(data)
    if min(data) <= 0:
        return Summary(n, mean, stddev, cv, None, None, None,
                       note=f"a value <= 0 ({min(data):g}): no geometric mean or log-scale interval")
    logs = [math.log(v) for v in data]
    if n < MIN_N_FOR_INTERVAL:
        return Summary(n, mean, stddev, cv, math.exp(math.fsum(logs) / n), None, None, note=too_few(n))
    geomean, low, high = _log_t_interval(logs, confidence)
    return Summary(n, mean, stddev, cv, geomean, low, high)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float],
                 confidence: float = CONFIDENCE) -> PairedRatio:
    """Geometric mean of numerator[i] / denominator[i] with a t-interval of the mean log ratio.

    The two sequences are already matched: element i of each comes from the same prompt and
    repetition, so the prompt's effect cancels in each ratio instead of widening the interval.
    """
    if len(numerator) != len(denominator):
        raise ValueError(f"paired_ratio: {len(numerator)} numerators for {len(denominator)} denominators")
    pairs = [(float(a), float(b)) for a, b in zip(numerator, denominator)]
    n = len(pairs)
    if n == 0:
        return PairedRatio(0, None, None, None, note="no pair with a value on both sides")
    if min(min(p) for p in pairs) <= 0:
        return PairedRatio(n, None, None, None, note="a value <= 0: no ratio on the log scale")
    logs = [math.log(a) - math.log(b) for a, b in pairs]
    if n < MIN_N_FOR_INTERVAL:
        return PairedRatio(n, math.exp(math.fsum(logs) / n), None, None, note=too_few(n, "pairs"))
    ratio, low, high = _log_t_interval(logs, confidence)
    return PairedRatio(n, ratio, low, high)


def first_run_outlier(first: float, others: Sequence[float]) -> str | None:
    """Why the first measured run is an outlier among the other repetitions of its prompt, or None.

    Tested only with at least two others (a median and a spread need them)."""
    if len(others) < 2:
        return None
    median = statistics.median(others)
    spread = MAD_TO_SD * statistics.median(abs(v - median) for v in others)
    deviation = abs(first - median)
    if deviation <= OUTLIER_MADS * spread or deviation <= OUTLIER_MIN_RELATIVE * abs(median):
        return None
    return (f"first measured run {first:.4g} is {deviation / abs(median):.0%} from the median {median:.4g} of "
            f"the other {len(others)} runs of its prompt (> {OUTLIER_MADS:g} MADs)")


def run_warnings(runs: Sequence[tuple[str, float]]) -> list[str]:
    """Warnings for one metric of one cell; runs are (prompt_id, value) in the order they were measured.

    CV is judged per prompt (the repetitions of one prompt), so different prompts' speeds in a
    pooled cell never raise it; the first run is compared with the other runs of its prompt."""
    by_prompt: dict[str, list[float]] = {}
    for prompt, value in runs:
        by_prompt.setdefault(prompt, []).append(float(value))
    warnings = []
    noisy = {p: cv for p, cv in ((p, coefficient_of_variation(v)) for p, v in by_prompt.items())
             if cv is not None and cv > CV_WARN_THRESHOLD}
    if noisy:
        worst = max(noisy, key=lambda p: (noisy[p], p))
        tested = sum(1 for v in by_prompt.values() if len(v) > 1)
        where = f"prompt {worst}" if tested == 1 else f"{len(noisy)} of {tested} prompts, highest {worst}"
        warnings.append(f"CV {noisy[worst]:.3f} > {CV_WARN_THRESHOLD:.2f} over repetitions ({where})")
    if runs:
        prompt, first = runs[0]
        outlier = first_run_outlier(first, by_prompt[prompt][1:])
        if outlier:
            warnings.append(outlier)
    return warnings


def intervals_overlap(low_a: float, high_a: float, low_b: float, high_b: float) -> bool:
    return low_a <= high_b and low_b <= high_a


# --- spread across machines ----------------------------------------------------------------------

MACHINE_SPREAD_METHOD = (
    "random effects over machines: each machine's mean log paired ratio with its own variance, "
    "DerSimonian-Laird between-machine variance tau^2, Hartung-Knapp-Sidik-Jonkman 95% interval "
    "(t with k-1 df), prediction for another machine with k-2 df; exponentiated")


@dataclass(frozen=True)
class MachineSpread:
    """A ratio measured on k machines: the pooled ratio with an interval that carries between-machine
    variation, how large that variation is, and where another machine's ratio is expected to land."""
    machines: int
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    tau: float | None  # between-machine standard deviation of the log ratio
    between_cv: float | None  # the same as a coefficient of variation of the ratio: sqrt(exp(tau^2) - 1)
    within_se: float | None  # the largest within-machine standard error of a machine's log ratio
    predict_low: float | None
    predict_high: float | None
    se: float | None = None  # standard error of the pooled log ratio (Hartung-Knapp), t with machines - 1 df
    method: str = MACHINE_SPREAD_METHOD
    note: str | None = None


def machine_spread(logs_by_machine: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> MachineSpread:
    """Random-effects pooling of per-machine log ratios (each machine's per-pair log ratios given).

    Chosen over a bootstrap that resamples machines: a lab has two to five machines, and k machines
    have few distinct resamples (three for k=2), so such an interval is far too narrow; the random-
    effects model uses every machine's own within-run variance and pays for few machines with t at
    k-1 degrees of freedom. Hartung-Knapp's scale is held at >= 1 so the interval is never narrower
    than the DerSimonian-Laird one. A machine with fewer than MIN_N_FOR_INTERVAL pairs has no
    variance of its own and is left out, with the reason."""
    usable = [list(map(float, logs)) for logs in logs_by_machine if len(logs) >= MIN_N_FOR_INTERVAL]
    dropped = len(logs_by_machine) - len(usable)
    note = f"{dropped} machine(s) with fewer than {MIN_N_FOR_INTERVAL} pairs left out" if dropped else None
    k = len(usable)
    if k < 2:
        why = "between-machine spread unmeasured: " + ("one machine" if k == 1 else "no machine with enough pairs")
        return MachineSpread(k, None, None, None, None, None, None, None, None,
                             note="; ".join(x for x in (why, note) if x))
    means = [math.fsum(x) / len(x) for x in usable]
    variances = [statistics.variance(x) / len(x) for x in usable]
    if min(variances) == 0:
        return MachineSpread(k, None, None, None, None, None, None, None, None,
                             note="a machine whose pairs all have the same ratio: no within-machine variance")
    weights = [1 / v for v in variances]
    fixed = math.fsum(w * y for w, y in zip(weights, means)) / math.fsum(weights)
    q = math.fsum(w * (y - fixed) ** 2 for w, y in zip(weights, means))
    scale = math.fsum(weights) - math.fsum(w * w for w in weights) / math.fsum(weights)
    tau2 = max(0.0, (q - (k - 1)) / scale)
    re_weights = [1 / (v + tau2) for v in variances]
    mu = math.fsum(w * y for w, y in zip(re_weights, means)) / math.fsum(re_weights)
    hk = math.fsum(w * (y - mu) ** 2 for w, y in zip(re_weights, means)) / (k - 1)
    se = math.sqrt(max(hk, 1.0) / math.fsum(re_weights))
    half = t_quantile(k - 1, confidence) * se
    predict: tuple[float | None, float | None] = (None, None)
    if k >= 3:
        spread = t_quantile(k - 2, confidence) * math.sqrt(tau2 + se * se)
        predict = (math.exp(mu - spread), math.exp(mu + spread))
    else:
        note = "; ".join(x for x in (note, "a prediction for another machine needs at least 3 machines") if x)
    return MachineSpread(k, math.exp(mu), math.exp(mu - half), math.exp(mu + half), math.sqrt(tau2),
                         math.sqrt(math.expm1(tau2)), max(math.sqrt(v) for v in variances), *predict, se=se, note=note)
