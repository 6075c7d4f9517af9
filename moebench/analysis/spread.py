"""The study's ratios across machines: within-run intervals beside between-machine spread.

A within-run interval (axes.py) says how well one run pinned its own ratio; it says nothing about
what another machine of the same kind, with the same binary and files, will measure, which is what a
committee rerunning the artifact has to judge. Where the records of one context come from several
machines (frame.machine_of: one boot of one host, or one run for records that name no host), every
MoE/dense ratio is also computed per machine, from pairs made inside that machine, and pooled by a
random-effects model (stats.machine_spread) that separates the two sources of variation. Machines
pool only with machines of their kind (frame.machine_kind): records of another GPU or CPU get rows of
their own. With records from one machine the between-machine columns stay empty and the note says the
spread is unmeasured.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from moebench.analysis.axes import AXIS_METRICS, axis_pairs
from moebench.analysis.frame import CONTEXT_FIELDS, PAIR_FIELDS
from moebench.analysis.stats import machine_spread, paired_ratio
from moebench.config import Config

SPREAD_COLUMNS = [*CONTEXT_FIELDS, "machine_kind", "axis", "numerator_model", "denominator_model", "metric",
                  "n_machines", "machine_basis", "per_machine", "n_pairs", "within_ratio", "within_ci95_low", "within_ci95_high",
                  "ratio", "ci95_low", "ci95_high", "between_machine_cv", "within_machine_se_max",
                  "prediction_low", "prediction_high", "ci_method", "note"]


def measured_by_machine(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured rows numbered per machine, model, prompt and repetition in run order (`occurrence`), so
    two runs on one machine pair in order and no record pairs across machines."""
    rows = frame[frame["measured"]].sort_values(["started_at", "source_file", "source_line"], kind="stable")
    occurrence = rows.groupby([*CONTEXT_FIELDS, "machine", "model_id", "prompt_id", "repetition"],
                              dropna=False, sort=False).cumcount()
    return rows.assign(occurrence=occurrence)


def pairs_by_machine(num: pd.DataFrame, den: pd.DataFrame, metric: str) -> dict[str, list[tuple[float, float]]]:
    """(MoE value, dense value) of each pair, per machine; a pair never spans two machines."""
    keys = ["machine", *PAIR_FIELDS]
    matched = num[[*keys, metric]].dropna().merge(den[[*keys, metric]].dropna(), on=keys, suffixes=("_n", "_d"))
    pairs: dict[str, list[tuple[float, float]]] = {}
    for row in matched.itertuples(index=False):
        pairs.setdefault(row.machine, []).append((float(getattr(row, f"{metric}_n")), float(getattr(row, f"{metric}_d"))))
    return pairs


def _row(context: dict[str, Any], pair: tuple[str, str, str], metric: str,
         pairs: dict[str, list[tuple[float, float]]], basis: str) -> dict[str, Any]:
    pooled = [p for machine in sorted(pairs) for p in pairs[machine]]
    within = paired_ratio([a for a, _ in pooled], [b for _, b in pooled])
    logs = {m: [math.log(a) - math.log(b) for a, b in v if a > 0 and b > 0] for m, v in pairs.items()}
    spread = machine_spread([logs[m] for m in sorted(logs)])
    per_machine = "; ".join(f"{m}: {math.exp(math.fsum(v) / len(v)):.4g} (n={len(v)})"
                            for m, v in sorted(logs.items()) if v)
    return {**context, "axis": pair[0], "numerator_model": pair[1], "denominator_model": pair[2], "metric": metric,
            "n_machines": len(pairs), "machine_basis": basis, "per_machine": per_machine, "n_pairs": len(pooled),
            "within_ratio": within.ratio, "within_ci95_low": within.ci_low, "within_ci95_high": within.ci_high,
            "ratio": spread.ratio, "ci95_low": spread.ci_low, "ci95_high": spread.ci_high,
            "between_machine_cv": spread.between_cv, "within_machine_se_max": spread.within_se,
            "prediction_low": spread.predict_low, "prediction_high": spread.predict_high,
            "ci_method": spread.method, "note": spread.note}


def spread_table(cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    """One row per context, machine kind, axis pair and metric that has pairs: the within-run ratio of all
    pairs pooled as one run, and the random-effects ratio across machines with the between-machine CV."""
    measured = measured_by_machine(frame)
    rows = []
    keys = [*CONTEXT_FIELDS, "machine_kind"]
    for context_values, group in measured.groupby(keys, dropna=False, sort=True):
        context = dict(zip(keys, context_values))
        bases = sorted(set(group["machine_basis"]))
        for pair in axis_pairs(cfg):
            num, den = group[group["model_id"] == pair[1]], group[group["model_id"] == pair[2]]
            if num.empty or den.empty:
                continue
            for metric in AXIS_METRICS:
                pairs = pairs_by_machine(num, den, metric)
                if pairs:
                    rows.append(_row(context, pair, metric, pairs, "+".join(bases)))
    table = pd.DataFrame(rows, columns=SPREAD_COLUMNS)
    return table.astype(object).where(table.notna(), None)
