"""Whether lab B reproduced lab A's headline ratios, decided against a stated tolerance.

The study's claims are MoE/dense ratios, so those are what a rerun has to reproduce, not each model's
tok/s (another machine of the same kind may be faster on every model alike). Per context, dense model
and headline metric, each side's ratio is the geometric mean of its paired ratios (axes.py); the shift
is B's ratio over A's, with a Welch t-interval on the difference of the mean logs. Where a side holds
records of several machines, its standard error is the random-effects one (stats.machine_spread), so
its own between-machine spread is inside the interval.

The decision is an equivalence test of the shift against the band [1/(1+t), 1+t] for a tolerance t:

- **reproduced**: the whole 95% interval of the shift lies inside the band;
- **not reproduced**: the whole interval lies outside it;
- **inconclusive**: the interval straddles a bound (more repetitions or machines would decide).

Overlapping within-run intervals are not the rule: two runs can each be precise and still disagree by
more than machines of one kind do, and two noisy runs overlap whatever they measured. The tolerance is
`--tolerance` when given; else MLPerf's replication rule, 5%, widened to the measured between-machine
spread where one of the bundles has records of at least MIN_MACHINES_FOR_TOLERANCE machines of one
kind (frame.machine_kind) for that ratio and they disagree by more (t = exp(1.96 * sqrt(2) * tau) - 1:
the 95% range of the difference between two machines' ratios). Two machines give one look at that difference: their tau is often
exactly 0 (DerSimonian-Laird truncates) or a lucky draw, and a 0% band would fail every rerun, so a
spread counts from three machines on (as the prediction for another machine does) and never narrows
the 5%. Records of different runners
(llama-cli's counters against llama-server's timers) measure different things: their shift is shown,
never judged. Two sides of different machine kinds are judged, with a note: the study's ratios are
claims about hardware, and whether one carries over to another GPU is a question an evaluator asks.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from moebench.analysis.axes import AXIS_METRICS, axis_pairs
from moebench.analysis.frame import CONTEXT_FIELDS, Loaded, to_frame
from moebench.analysis.spread import measured_by_machine, pairs_by_machine
from moebench.analysis.stats import CONFIDENCE, MIN_N_FOR_INTERVAL, machine_spread, t_quantile
from moebench.config import Config

DEFAULT_TOLERANCE = 0.05
DEFAULT_TOLERANCE_SOURCE = "MLPerf's replication rule (a result stands when reruns agree within 5%)"
MIN_MACHINES_FOR_TOLERANCE = 3
DECISIONS = ("reproduced", "not reproduced", "inconclusive", "not comparable")
# The context two bundles are matched on: the runner is compared, not matched, so a change of metric shows.
MATCH_FIELDS = tuple(f for f in CONTEXT_FIELDS if f != "runner_mode")


@dataclass(frozen=True)
class SideRatio:
    """One side's MoE/dense ratio on the log scale: mean, standard error, degrees of freedom."""
    n_pairs: int
    machines: int
    log_mean: float
    se: float | None
    df: float | None
    tau: float | None  # between-machine SD of the log ratio, where the side has several machines
    runner: str
    kinds: tuple[str, ...] = ()  # frame.machine_kind of the side's machines

    def interval(self) -> tuple[float, float | None, float | None]:
        if self.se is None:
            return math.exp(self.log_mean), None, None
        half = t_quantile(self.df, CONFIDENCE) * self.se
        return math.exp(self.log_mean), math.exp(self.log_mean - half), math.exp(self.log_mean + half)


@dataclass(frozen=True)
class Decision:
    context: str
    vs: str
    metric: str
    a: SideRatio
    b: SideRatio
    shift: tuple[float, float | None, float | None]  # B/A ratio of ratios, low, high
    tolerance: float
    tolerance_source: str
    decision: str
    note: str | None = None


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    return to_frame([Loaded(r, Path("bundle"), i) for i, r in enumerate(records, 1)])


def side_ratios(cfg: Config, records: list[dict[str, Any]]) -> dict[tuple, SideRatio]:
    """(context, dense model, metric) -> the side's ratio, from the memory-footprint pairs (every dense model)."""
    if not records:
        return {}
    measured = measured_by_machine(_frame(records))
    out: dict[tuple, SideRatio] = {}
    for values, group in measured.groupby([*MATCH_FIELDS, "runner_mode"], dropna=False, sort=True):
        context, runner = tuple(values[:-1]), values[-1]
        for axis, moe, dense in axis_pairs(cfg):
            if axis != "memory_footprint":
                continue
            num, den = group[group["model_id"] == moe], group[group["model_id"] == dense]
            for metric in AXIS_METRICS:
                pairs = pairs_by_machine(num, den, metric)
                logs = {m: [math.log(a) - math.log(b) for a, b in v if a > 0 and b > 0] for m, v in pairs.items()}
                kinds = tuple(sorted(set(num["machine_kind"]) | set(den["machine_kind"])))
                ratio = _side(logs, str(runner), kinds)
                if ratio is not None:
                    out[(context, dense, metric)] = ratio
    return out


def _side(logs: dict[str, list[float]], runner: str, kinds: tuple[str, ...]) -> SideRatio | None:
    pooled = [x for v in logs.values() for x in v]
    if not pooled:
        return None
    spread = machine_spread(list(logs.values()))
    if spread.ratio is not None:  # several machines: the random-effects centre and its standard error
        return SideRatio(len(pooled), spread.machines, math.log(spread.ratio), spread.se, spread.machines - 1,
                         spread.tau, runner, kinds)
    mean = math.fsum(pooled) / len(pooled)
    if len(pooled) < MIN_N_FOR_INTERVAL:
        return SideRatio(len(pooled), len(logs), mean, None, None, None, runner, kinds)
    return SideRatio(len(pooled), len(logs), mean, statistics.stdev(pooled) / math.sqrt(len(pooled)),
                     len(pooled) - 1, None, runner, kinds)


def _tolerance(a: SideRatio, b: SideRatio, given: float | None) -> tuple[float, str]:
    if given is not None:
        return given, "given (--tolerance)"
    measured = [(side, s) for side, s in (("A", a), ("B", b))
                if s.tau is not None and s.machines >= MIN_MACHINES_FOR_TOLERANCE]
    taus = [(s.tau, s.machines, side) for side, s in measured if len(s.kinds) == 1]
    if measured and not taus:
        side, s = measured[0]
        return DEFAULT_TOLERANCE, (f"{DEFAULT_TOLERANCE_SOURCE}; the {s.machines} machines of {side} are of "
                                   f"{len(s.kinds)} kinds, so their spread is not one kind's between-machine spread")
    if taus:
        tau, machines, side = max(taus)
        band = math.expm1(1.96 * math.sqrt(2) * tau)
        spread = f"measured between-machine spread of {side} ({machines} machines, tau {tau:.4f} on the log scale)"
        if band > DEFAULT_TOLERANCE:
            return band, spread
        return DEFAULT_TOLERANCE, f"{DEFAULT_TOLERANCE_SOURCE}; the {spread} is narrower: {band:.1%}"
    few = max(s.machines for s in (a, b))
    if few > 1:
        return DEFAULT_TOLERANCE, (f"{DEFAULT_TOLERANCE_SOURCE}; {few} machines are too few to measure the spread "
                                   f"between machines (it counts from {MIN_MACHINES_FOR_TOLERANCE})")
    return DEFAULT_TOLERANCE, DEFAULT_TOLERANCE_SOURCE


def _shift(a: SideRatio, b: SideRatio) -> tuple[float, float | None, float | None]:
    diff = b.log_mean - a.log_mean
    if a.se is None or b.se is None:
        return math.exp(diff), None, None
    var = a.se ** 2 + b.se ** 2
    if var == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    df = var ** 2 / (a.se ** 4 / a.df + b.se ** 4 / b.df)
    half = t_quantile(df, CONFIDENCE) * math.sqrt(var)
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def decide_shift(shift: tuple[float, float | None, float | None], tolerance: float) -> str:
    """The equivalence rule of the module docstring on one shift's interval."""
    _, low, high = shift
    if low is None or high is None:
        return "inconclusive"
    band = (1 / (1 + tolerance), 1 + tolerance)
    if band[0] <= low and high <= band[1]:
        return "reproduced"
    if high < band[0] or low > band[1]:
        return "not reproduced"
    return "inconclusive"


def decide(cfg: Config, a_records: list[dict[str, Any]], b_records: list[dict[str, Any]],
           tolerance: float | None = None) -> list[Decision]:
    """One decision per context, dense model and headline metric both sides measured."""
    sides_a, sides_b = side_ratios(cfg, a_records), side_ratios(cfg, b_records)
    decisions = []
    for key in sorted(set(sides_a) & set(sides_b), key=str):
        context, dense, metric = key
        a, b = sides_a[key], sides_b[key]
        tol, source = _tolerance(a, b, tolerance)
        shift = _shift(a, b)
        notes = []
        if a.runner != b.runner:
            verdict = "not comparable"
            notes.append(f"runner {a.runner} in A, {b.runner} in B: different measurements; the shift is shown, "
                         "not judged")
        else:
            verdict = decide_shift(shift, tol)
            if shift[1] is None:
                notes.append(f"fewer than {MIN_N_FOR_INTERVAL} pairs on a side: no interval")
        if a.kinds != b.kinds:
            notes.append(f"machines of another kind: A {' + '.join(a.kinds)}, B {' + '.join(b.kinds)}; the decision "
                         "says whether the ratio holds on B's hardware, not whether B's machine is a replicate of A's")
        label = ", ".join(f"{f}={v}" for f, v in zip(MATCH_FIELDS, context))
        decisions.append(Decision(label, dense, metric, a, b, shift, tol, source, verdict, "; ".join(notes) or None))
    return decisions
