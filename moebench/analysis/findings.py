"""REPORT.md's findings: the study's answer, read off the analysis tables before the detail tables.

For each context (experiment, device, weights, knobs) and dense model: the MoE's paired ratios of
decode speed and energy per token, and what the bandwidth roofline predicts for that ratio. The
prediction is the test of the MoE's premise: if decode were bound by memory bandwidth, the MoE would
run at (dense bytes per token) / (MoE bytes per token) of the dense model's speed, since each token
reads only the experts it routes to. The sentences below the table are derived from these numbers
by fixed rules (an interval wholly below or above 1, a fraction below every dense model's), never
written by hand, so they change with the records.
"""

from __future__ import annotations

from typing import Any

from moebench.analysis.frame import CONTEXT_FIELDS
from moebench.analysis.tables import AnalysisResult
from moebench.analysis.format import DASH, fmt_ratio, knobs_label, source_label, table

# The study's headline ratios come from its efficiency experiment; verdicts use only that one.
HEADLINE_EXPERIMENT = "experiment_1_efficiency"
FINDING_METRICS = ("gen_tokens_per_s", "joules_per_token")
COMPARISONS = {"gen_tokens_per_s": ("decodes slower than", "decodes faster than",
                                    "decodes at a speed not distinguishable from"),
               "joules_per_token": ("spends less energy per token than", "spends more energy per token than",
                                    "spends energy per token not distinguishable from")}


def _context(row: dict[str, Any]) -> tuple:
    return tuple(row[f] for f in CONTEXT_FIELDS)


def _side(ratio: dict[str, Any] | None) -> int | None:
    """-1 when the interval lies wholly below 1, +1 wholly above, 0 when it holds 1; None without one."""
    if ratio is None or ratio["ci95_low"] is None:
        return None
    return -1 if ratio["ci95_high"] < 1 else 1 if ratio["ci95_low"] > 1 else 0


def finding_rows(analysis: AnalysisResult) -> list[dict[str, Any]]:
    """One row per context and dense model: the axes it sits on, the MoE's ratios for
    FINDING_METRICS, and the roofline of both models in that context."""
    roofline = {(*_context(r), r["model_id"]): r for r in analysis.tables["roofline_summary"]}
    rows: dict[tuple, dict[str, Any]] = {}
    for r in analysis.tables["axes_summary"]:
        key = (*_context(r), r["denominator_model"])
        row = rows.setdefault(key, {**{f: r[f] for f in CONTEXT_FIELDS}, "moe": r["numerator_model"],
                                    "dense": r["denominator_model"], "axes": []})
        if r["axis"] not in row["axes"]:
            row["axes"].append(r["axis"])
        if r["metric"] in FINDING_METRICS:
            row[r["metric"]] = r
    for row in rows.values():
        row["moe_roofline"] = roofline.get((*_context(row), row["moe"]))
        row["dense_roofline"] = roofline.get((*_context(row), row["dense"]))
        moe, dense = row["moe_roofline"], row["dense_roofline"]
        known = moe and dense and moe.get("bytes_per_token_active") and dense.get("bytes_per_token_active")
        row["bytes_ratio"] = moe["bytes_per_token_active"] / dense["bytes_per_token_active"] if known else None
    return sorted(rows.values(), key=lambda r: (r["experiment"] != HEADLINE_EXPERIMENT, _context(r), r["dense"]))


def _fraction(roofline: dict[str, Any] | None, kind: str) -> float | None:
    return roofline.get(f"fraction_of_{kind}_bound") if roofline else None


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value:.1%}"


def _names(analysis: AnalysisResult) -> dict[str, str]:
    return {r["model_id"]: r["display_name"] for r in analysis.tables["per_model_summary"]}


def _table(rows: list[dict[str, Any]], names: dict[str, str]) -> str:
    body = [[r["experiment"], r["device"], source_label(r), knobs_label(r), names.get(r["dense"], r["dense"]),
             ", ".join(a.replace("_", " ") for a in r["axes"]),
             r.get("gen_tokens_per_s", {}).get("n_pairs", DASH),
             fmt_ratio(r.get("gen_tokens_per_s")), fmt_ratio(r.get("joules_per_token")),
             DASH if r["bytes_ratio"] is None else f"{r['bytes_ratio']:.2f}x",
             DASH if r["bytes_ratio"] is None else f"{1 / r['bytes_ratio']:.2f}x",
             f"{_pct(_fraction(r['moe_roofline'], 'active'))} / {_pct(_fraction(r['moe_roofline'], 'all_weights'))}",
             _pct(_fraction(r["dense_roofline"], "active"))] for r in rows]
    return table(["experiment", "device", "weights", "knobs", "vs dense", "axes", "pairs", "decode tok/s (MoE/dense)",
                  "J/token (MoE/dense)", "bytes/token (MoE/dense)", "decode if bandwidth-bound",
                  "MoE roofline: active / all weights", "dense roofline"], body)


def _comparison_sentence(subject: str, metric: str, rows: list[dict[str, Any]], names: dict[str, str]) -> str | None:
    groups: dict[int | None, list[str]] = {}
    for r in rows:
        ratio = r.get(metric)
        if ratio is not None and ratio["ratio"] is not None:
            groups.setdefault(_side(ratio), []).append(f"{names.get(r['dense'], r['dense'])} ({fmt_ratio(ratio)})")
    below, above, level = COMPARISONS[metric]
    wording = {-1: below, 1: above, 0: level,
               None: "has too few pairs for an interval against"}
    parts = [f"{wording[side]} {', '.join(groups[side])}" for side in (-1, 0, 1, None) if side in groups]
    return f"{subject} {'; '.join(parts)}." if parts else None


def _roofline_sentences(moe: str, rows: list[dict[str, Any]], names: dict[str, str]) -> list[str]:
    sentences = []
    for r in rows:
        speed = r.get("gen_tokens_per_s")
        if r["bytes_ratio"] is None or speed is None or speed["ratio"] is None:
            continue
        sentences.append(f"Against {names.get(r['dense'], r['dense'])} it reads {r['bytes_ratio']:.2f}x the "
                         f"bytes per token (active weights and KV cache): a bandwidth-bound decode would run at "
                         f"{1 / r['bytes_ratio']:.2f}x its speed; measured {speed['ratio']:.2f}x.")
    moe_active = _fraction(rows[0]["moe_roofline"], "active")
    dense = [f for f in (_fraction(r["dense_roofline"], "active") for r in rows) if f is not None]
    if moe_active is None or not dense:
        return sentences
    sentences.append(f"It reaches {_pct(moe_active)} of its active-bytes bound "
                     f"({_pct(_fraction(rows[0]['moe_roofline'], 'all_weights'))} counting all weights); the dense "
                     f"models reach {_pct(min(dense))} to {_pct(max(dense))} of theirs.")
    if moe_active < min(dense):
        sentences.append("Its decode is further from the bandwidth bound than every dense model's: the expert "
                         "weights it skips by routing do not turn into speed here, so something other than "
                         "reading the weights limits it.")
    return sentences


def section_findings(analysis: AnalysisResult) -> str | None:
    """The headline table for every context, and sentences for each context of the headline experiment."""
    rows = finding_rows(analysis)
    if not rows:
        return None
    names = _names(analysis)
    lines = ["## Findings: the MoE against each dense model", "",
             "Paired ratios as under *The study's two axes* (geometric mean of per-pair ratios, 95% Student-t "
             "interval on the log ratios). Bytes per token and roofline fractions as under *Memory-bandwidth "
             "roofline*: the fraction is measured decode tok/s over bandwidth / bytes per token, counting the "
             "MoE's active experts (active) or every expert (all weights).", "", _table(rows, names)]
    contexts: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["experiment"] == HEADLINE_EXPERIMENT:
            contexts.setdefault(_context(r), []).append(r)
    for group in contexts.values():
        first, moe = group[0], names.get(group[0]["moe"], group[0]["moe"])
        sentences = [_comparison_sentence(moe if i == 0 else "It", metric, group, names)
                     for i, metric in enumerate(FINDING_METRICS)]
        sentences += _roofline_sentences(moe, group, names)
        lines += ["", f"**{first['experiment']} on {first['device']}, {source_label(first)} weights, "
                      f"{knobs_label(first)}.** " + " ".join(s for s in sentences if s)]
    return "\n".join(lines)
