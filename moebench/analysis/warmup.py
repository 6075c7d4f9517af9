"""Warm-ups by evidence: per cell, what its warm-up runs measured and how far its first measured run
sits from the rest, so a warm-up count that was not enough shows instead of hiding in a mean.

The first measured run is the cell's earliest measured record in run order (file order; with the
interleaved order, its order position); it is set against the median of the other repetitions of
its prompt. A cell is flagged "warm-up not enough" when that run is an outlier by the same rule as
the cell's noise warnings (stats.first_run_outlier: beyond 3 MADs and 10% of the median). The
study's warm-up count (experiments.yaml `warmup_runs`) is shown, never changed.
"""

from __future__ import annotations

import statistics

import pandas as pd

from moebench.analysis.frame import GROUP_FIELDS
from moebench.analysis.stats import first_run_outlier

WARMUP_METRIC = "gen_tokens_per_s"
WARMUP_COLUMNS = [*GROUP_FIELDS, "warmup_n", "warmup_gen_tokens_per_s", "first_prompt_id", "first_gen_tokens_per_s",
                  "rest_n", "rest_median_gen_tokens_per_s", "first_vs_rest", "warmup_enough", "note"]


def _row(key: tuple, cell: pd.DataFrame) -> dict:
    row = dict(zip(GROUP_FIELDS, key))
    warm = cell[cell["is_warmup"] & (cell["status"] == "ok")][WARMUP_METRIC].dropna()
    measured = cell[cell["measured"]].dropna(subset=[WARMUP_METRIC])
    row.update(warmup_n=int(cell["is_warmup"].sum()),
               warmup_gen_tokens_per_s=";".join(f"{v:.4g}" for v in warm) or None)
    if measured.empty:
        return {**row, "note": "no measured run with a gen rate"}
    first = measured.iloc[0]
    others = [float(v) for v in measured[measured["prompt_id"] == first["prompt_id"]][WARMUP_METRIC].iloc[1:]]
    row.update(first_prompt_id=first["prompt_id"], first_gen_tokens_per_s=float(first[WARMUP_METRIC]),
               rest_n=len(others))
    if len(others) < 2:
        return {**row, "note": f"{len(others)} other runs of prompt {first['prompt_id']}: a median and spread need 2"}
    median = statistics.median(others)
    outlier = first_run_outlier(float(first[WARMUP_METRIC]), others)
    return {**row, "rest_median_gen_tokens_per_s": median,
            "first_vs_rest": float(first[WARMUP_METRIC]) / median - 1, "warmup_enough": outlier is None,
            "note": outlier}


def warmup_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (GROUP_FIELDS), in the order the records ran."""
    if frame.empty:
        return pd.DataFrame(columns=WARMUP_COLUMNS)
    rows = [_row(key, cell) for key, cell in frame.groupby(list(GROUP_FIELDS), dropna=False, sort=True)]
    return pd.DataFrame(rows, columns=WARMUP_COLUMNS)
