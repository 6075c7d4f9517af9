"""The study's two axes: the MoE model over each dense model, as paired ratios.

A ratio comes from pairs of measured records of one context (experiment, device, weights, runner,
threads, n_predict), one per model, that ran the same prompt at the same repetition index: the
geometric mean of the per-pair ratios with a t-interval on the log ratios (stats.paired_ratio).
Each prompt's own cost cancels inside its pairs, so twelve prompts of different lengths no longer
widen (or, with a ratio of pooled means, bias) the interval.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from moebench.analysis.frame import CONTEXT_FIELDS, GROUP_FIELDS, PAIR_FIELDS, measured_pairs
from moebench.config import Config
from moebench.analysis.stats import paired_ratio

AXIS_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "peak_rss_bytes", "joules_per_token")
# A dense model is on the active-parameter axis when its total parameters are within this fraction
# of the MoE's active parameters; every dense model is on the memory-footprint axis.
ACTIVE_MATCH_TOLERANCE = 0.25
AXIS_RULES = {
    "active_parameters": f"dense models with params_total within +-{ACTIVE_MATCH_TOLERANCE:.0%} of the MoE's params_active",
    "memory_footprint": "every dense model, largest params_total first (the closest footprint to the MoE)",
}
METRIC_LABELS = {"gen_tokens_per_s": "gen tok/s", "prefill_tokens_per_s": "prefill tok/s",
                 "peak_rss_bytes": "peak RSS", "joules_per_token": "J/token"}
RATIO_COLUMNS = ["n_pairs", "ratio", "ci95_low", "ci95_high", "ci_method", "note"]
AXES_COLUMNS = [*CONTEXT_FIELDS, "axis", "axis_rule", "metric", "numerator_model", "denominator_model",
                "numerator_n", "numerator_mean", "denominator_n", "denominator_mean", *RATIO_COLUMNS[:-1],
                "statement", "note", "mixed_provenance"]
_SIDE_KEYS = [*CONTEXT_FIELDS, "axis", "pair_order", "numerator_model", "denominator_model", "metric"]


def axis_pairs(cfg: Config) -> list[tuple[str, str, str]]:
    """(axis, MoE model id, dense model id) from models.yaml kinds and parameter counts."""
    models = cfg.models.models
    dense = sorted(((mid, s) for mid, s in models.items() if s.kind == "dense"),
                   key=lambda kv: kv[1].params_total, reverse=True)
    pairs = []
    for moe_id, moe in models.items():
        if moe.kind != "moe":
            continue
        for dense_id, spec in dense:
            if abs(spec.params_total / moe.params_active - 1.0) <= ACTIVE_MATCH_TOLERANCE:
                pairs.append(("active_parameters", moe_id, dense_id))
        pairs += [("memory_footprint", moe_id, dense_id) for dense_id, _ in dense]
    return pairs


def _ratio(numerator: pd.Series, denominator: pd.Series) -> dict[str, Any]:
    both = pd.DataFrame({"a": numerator, "b": denominator}).dropna()
    result = paired_ratio(both["a"].tolist(), both["b"].tolist())
    return {"n_pairs": result.n_pairs, "ratio": result.ratio, "ci95_low": result.ci_low,
            "ci95_high": result.ci_high, "ci_method": result.method, "note": result.note}


def paired_ratios(numerator: pd.DataFrame, denominator: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Per value of `keys`: numerator over denominator of `metric`, from rows of measured_pairs() matched
    on keys and PAIR_FIELDS. Keys with no pair are absent."""
    columns = [*keys, *PAIR_FIELDS, metric]
    matched = numerator[columns].dropna(subset=[metric]).merge(
        denominator[columns].dropna(subset=[metric]), on=[*keys, *PAIR_FIELDS], suffixes=("_num", "_den"))
    if matched.empty:
        return pd.DataFrame(columns=[*keys, *RATIO_COLUMNS])
    return (matched.groupby(keys, dropna=False, sort=True)
            .apply(lambda g: pd.Series(_ratio(g[f"{metric}_num"], g[f"{metric}_den"])), include_groups=False)
            .reset_index())


def _side_values(group: pd.DataFrame) -> pd.Series:
    num, den = group["numerator"], group["denominator"]
    out = {"numerator_n": int(num.count()), "numerator_mean": num.mean() if num.count() else None,
           "denominator_n": int(den.count()), "denominator_mean": den.mean() if den.count() else None}
    out.update(_ratio(num, den))
    out["n_unpaired"] = int(len(group) - out["n_pairs"])
    return pd.Series(out)


def _cell_column(per_model: pd.DataFrame, role: str, column: str, metric_suffix: str | None) -> pd.DataFrame:
    """(context, <role>_model, metric) -> per_model's column for that model's cell (a metric's note or
    the cell's mixed_provenance)."""
    if metric_suffix is None:
        out = per_model[[*GROUP_FIELDS, column]]
    else:
        out = per_model.melt(id_vars=list(GROUP_FIELDS), value_vars=[f"{m}{metric_suffix}" for m in AXIS_METRICS],
                             var_name="metric", value_name=column)
        out["metric"] = out["metric"].str.removesuffix(metric_suffix)
    return out.rename(columns={"model_id": f"{role}_model", column: f"{role}_{column}"})


def axes_table(cfg: Config, frame: pd.DataFrame, per_model: pd.DataFrame) -> pd.DataFrame:
    """One row per context, axis, MoE/dense pair and metric measured on either side."""
    pairs = pd.DataFrame(axis_pairs(cfg), columns=["axis", "numerator_model", "denominator_model"])
    pairs["pair_order"] = range(len(pairs))
    present = frame[[*CONTEXT_FIELDS, "model_id"]].drop_duplicates()
    both = (pairs.merge(present.rename(columns={"model_id": "numerator_model"}), on="numerator_model")
            .merge(present.rename(columns={"model_id": "denominator_model"}),
                   on=[*CONTEXT_FIELDS, "denominator_model"]))
    values = (measured_pairs(frame, AXIS_METRICS)
              .melt(id_vars=[*GROUP_FIELDS, *PAIR_FIELDS], var_name="metric", value_name="value")
              .dropna(subset=["value"]).astype({"value": float}))
    sides = [both.merge(values.rename(columns={"model_id": f"{role}_model", "value": role}),
                        on=[*CONTEXT_FIELDS, f"{role}_model"]) for role in ("numerator", "denominator")]
    matched = sides[0].merge(sides[1], on=[*_SIDE_KEYS, *PAIR_FIELDS], how="outer")
    if matched.empty:
        return pd.DataFrame(columns=AXES_COLUMNS)
    table = (matched.groupby(_SIDE_KEYS, dropna=False, sort=False)[["numerator", "denominator"]]
             .apply(_side_values).reset_index())
    for role in ("numerator", "denominator"):
        table = table.merge(_cell_column(per_model, role, "note", "_note"), how="left",
                            on=[*CONTEXT_FIELDS, f"{role}_model", "metric"])
        table = table.merge(_cell_column(per_model, role, "mixed_provenance", None), how="left",
                            on=[*CONTEXT_FIELDS, f"{role}_model"])
    table["metric_order"] = table["metric"].map(AXIS_METRICS.index)
    table = table.sort_values([*CONTEXT_FIELDS, "pair_order", "metric_order"], kind="stable").reset_index(drop=True)
    table["axis_rule"] = table["axis"].map(AXIS_RULES)
    table["note"] = table.apply(_notes, axis=1)
    table["mixed_provenance"] = table.apply(
        lambda r: ";".join(sorted({m for m in (r["numerator_mixed_provenance"], r["denominator_mixed_provenance"])
                                   if isinstance(m, str) and m})) or None, axis=1)
    table["statement"] = table.apply(lambda r: ratio_statement(cfg, r), axis=1)
    return table[AXES_COLUMNS].astype(object).where(table[AXES_COLUMNS].notna(), None)


def _notes(row: pd.Series) -> str | None:
    notes = [row["note"]]
    for role in ("numerator", "denominator"):
        if row[f"{role}_n"] == 0:
            notes.append(f"{row[f'{role}_model']}: {row[f'{role}_note']}")
    if row["n_unpaired"] and row["n_pairs"]:
        notes.append(f"{row['n_unpaired']} record(s) without a partner "
                     "(prompt and repetition measured on one side only)")
    return "; ".join(n for n in notes if isinstance(n, str) and n) or None


def ratio_statement(cfg: Config, row: pd.Series | dict[str, Any]) -> str:
    ratio = row["ratio"]
    if ratio is None or (isinstance(ratio, float) and math.isnan(ratio)):
        return ""
    models = cfg.models.models
    name = lambda mid: models[mid].display_name if mid in models else mid  # noqa: E731
    low, high = row["ci95_low"], row["ci95_high"]
    has_ci = low is not None and not (isinstance(low, float) and math.isnan(low))
    ci = f" [{low:.2f}, {high:.2f}]" if has_ci else " (no interval)"
    return (f"{name(row['numerator_model'])} {METRIC_LABELS.get(row['metric'], row['metric'])} = {ratio:.2f}x "
            f"{name(row['denominator_model'])}{ci}, geometric mean of {row['n_pairs']} paired ratios")

