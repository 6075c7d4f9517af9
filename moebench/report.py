"""results/REPORT.md: what was run, where, the numbers, and whether the study's claims were reproduced.

The report states only what the records say: every number comes from the analysis tables, every
missing number is shown as missing with the records' null reason, and every claim of
configs/reference.yaml gets one machine-greppable verdict line:

    - **<claim id>**: reproduced | not reproduced | not comparable — <why>
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterable

from moebench.analyze import (AXIS_RULES, GROUP_FIELDS, AnalysisResult, group, is_measured, load_records,
                              null_note, values_of)
from moebench.config import Config, ReferenceClaim
from moebench.figures import FIGURES, MANIFEST
from moebench.stats import RATIO_CI_METHOD, intervals_overlap, mean_ci, ratio_ci

# The study's headline ratios come from its efficiency experiment; verdicts use only that one.
HEADLINE_EXPERIMENT = "experiment_1_efficiency"
MIB = 2 ** 20
DASH = "—"


@dataclass(frozen=True)
class Verdict:
    claim_id: str
    status: str  # reproduced | not reproduced | not comparable
    reason: str

    def line(self) -> str:
        return f"- **{self.claim_id}**: {self.status} {DASH} {self.reason}"


# --- formatting --------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def fmt_ci(row: dict[str, Any], prefix: str, scale: float = 1.0, digits: int = 1) -> str:
    mean = row.get(f"{prefix}_mean")
    if mean is None:
        return DASH
    low, high = row.get(f"{prefix}_ci95_low"), row.get(f"{prefix}_ci95_high")
    ci = f" [{low / scale:,.{digits}f}, {high / scale:,.{digits}f}]" if low is not None and high is not None else ""
    return f"{mean / scale:,.{digits}f}{ci}"


def table(headers: list[str], rows: Iterable[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def short(sha: Any, n: int = 12) -> str:
    return DASH if sha is None else str(sha)[:n]


def knobs_label(row: dict[str, Any]) -> str:
    return f"t={row['threads']}, n={row['n_predict']}, {row['runner_mode']}"


def source_label(row: dict[str, Any]) -> str:
    return row["model_source"] + (f" ({row['replica_scale']})" if row.get("replica_scale") else "")


# --- sections ----------------------------------------------------------------------------------

def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def section_what(analysis: AnalysisResult) -> str:
    by_run: dict[tuple, list[dict]] = defaultdict(list)
    for item in analysis.records:
        rec = item.record
        by_run[(rec["experiment"], rec["device"], source_label(rec))].append(rec)
    rows = []
    for (experiment, device, source), recs in sorted(by_run.items()):
        rows.append([experiment, device, source, len({r["cell_key"] for r in recs}), len(recs),
                     sum(is_measured(r) for r in recs), sum(r["is_warmup"] for r in recs),
                     sum(r["status"] == "failed" for r in recs), len({r["run_id"] for r in recs})])
    starts = [_parse_time(i.record["started_at"]) for i in analysis.records]
    ends = [_parse_time(i.record["started_at"]) + timedelta(milliseconds=i.record["wall_ms"] or 0)
            for i in analysis.records]
    files = ", ".join(f"`{p.name}`" for p in analysis.files)
    return "\n".join([
        "## What was run", "",
        table(["experiment", "device", "weights", "cells", "records", "measured", "warm-ups", "failed", "runs"], rows), "",
        f"Records: {len(analysis.records)} from {len(analysis.files)} file(s) in `{analysis.raw_dir}` ({files}).",
        f"Wall-time span: {min(starts).isoformat()} to {max(ends).isoformat()} "
        f"({(max(ends) - min(starts)).total_seconds() / 60:.1f} min; end = last start + its wall_ms).",
        "Warm-up records are kept in benchmark_results.csv and excluded from every statistic; failed records are "
        "counted and listed under Failures, never averaged.",
    ])


def _distinct(records: list[dict], getter) -> Counter:
    return Counter(getter(r) for r in records)


def _prov_line(records: list[dict], name: str, label: str, full: bool = True) -> str:
    values = _distinct(records, lambda r: r["provenance"].get(name))
    parts = []
    for value, count in values.most_common():
        if value is None:
            reasons = {r["provenance"]["null_reasons"].get(name, "no reason recorded") for r in records
                       if r["provenance"].get(name) is None}
            parts.append(f"not recorded ({'; '.join(sorted(reasons))}) — {count} records")
        else:
            parts.append(f"`{value if full else short(value)}` — {count} records")
    return f"- {label}: " + "; ".join(parts)


def section_where(analysis: AnalysisResult) -> str:
    records = [i.record for i in analysis.records]
    lines = ["## Where: provenance", ""]
    replica = [r for r in records if r["model_source"] == "replica"]
    if replica:
        scales = sorted({str(r["replica_scale"]) for r in replica})
        lines += [f"> **Replica weights were used** in {len(replica)} of {len(records)} records (scale: "
                  f"{', '.join(scales)}): synthetic weights of the real architectures, not the released models. "
                  "Their speeds, memory and ratios describe the replica files, not the study's models; no claim "
                  "can be reproduced from them.", ""]
    binaries = _distinct(records, lambda r: (r["provenance"].get("binary_name"), r["provenance"].get("binary_sha256")))
    lines += ["- binaries (SHA-256): " + "; ".join(f"{name} `{sha}` — {n} records"
                                                   for (name, sha), n in binaries.most_common())]
    lines.append(_prov_line(records, "llama_cpp_commit", "llama.cpp commit"))
    lines.append(_prov_line(records, "llama_cpp_pin", "llama.cpp pin (configs/lock.yaml)"))
    lines.append(_prov_line(records, "source_tree_hash", "source tree hash"))
    lines.append(_prov_line(records, "compiler", "compiler"))
    lines.append(_prov_line(records, "image_digest", "container image digest"))
    lines.append(_prov_line(records, "power_mode", "power mode (nvpmodel)"))
    lines.append(_prov_line(records, "kit_commit", "kit commit"))
    dirty = _distinct(records, lambda r: r["provenance"].get("kit_dirty"))
    lines.append("- kit checkout dirty: " + "; ".join(f"{v} — {n} records" for v, n in dirty.items()))
    verified = _distinct(records, lambda r: (r["provenance"]["verified"], r["provenance"]["allow_unverified"]))
    lines.append("- hashes verified before the run: " + "; ".join(
        f"{'yes' if v else 'no'}{' (run with --allow-unverified)' if a else ''} — {n} records"
        for (v, a), n in verified.items()))
    hosts = _distinct(records, lambda r: json.dumps({k: (r["provenance"].get("host") or {}).get(k) for k in
                                                     ("cpu_model", "physical_cores", "logical_cores", "ram_bytes",
                                                      "os")}, sort_keys=True))
    for host, n in hosts.items():
        h = json.loads(host)
        ram = f"{h['ram_bytes'] / 2**30:.1f} GiB" if h["ram_bytes"] else DASH
        lines.append(f"- host: {h['cpu_model']}, {h['physical_cores']} physical / {h['logical_cores']} logical cores, "
                     f"{ram} RAM, {h['os']} — {n} records")
    models = _distinct(records, lambda r: (r["model_id"], source_label(r), r["provenance"].get("model_sha256")))
    lines += ["", table(["model", "weights", "model SHA-256", "records"],
                        [[m, s, f"`{sha}`" if sha else DASH, n] for (m, s, sha), n in sorted(models.items(),
                                                                                                key=lambda kv: str(kv[0]))])]
    if analysis.mixed_cells:
        lines += ["", f"**Mixed provenance (--allow-mixed)**: {len(analysis.mixed_cells)} summary cells pool records of "
                      "different binaries, llama.cpp commits or model files; their rows carry `mixed_provenance`:", ""]
        lines += [f"- {cell}" for cell in analysis.mixed_cells]
    return "\n".join(lines)


def _missing(rows: list[dict], prefix: str) -> dict[str, str]:
    return {f"{r['display_name']} ({r['device']}, {knobs_label(r)})": r[f"{prefix}_note"]
            for r in rows if r.get(f"{prefix}_mean") is None and r.get(f"{prefix}_note")}


def section_headline(analysis: AnalysisResult) -> str:
    rows = analysis.tables["per_model_summary"]
    body = [[r["display_name"], r["experiment"], r["device"], source_label(r), knobs_label(r),
             f"{r['n_measured']} / {r['n_failed']} / {r['n_warmup_excluded']}",
             fmt_ci(r, "gen_tokens_per_s"), fmt_ci(r, "prefill_tokens_per_s"), fmt_ci(r, "ttft_ms"),
             fmt(r["peak_rss_bytes_max"] / MIB if r["peak_rss_bytes_max"] is not None else None, 1),
             fmt(r["model_file_bytes"] / MIB if isinstance(r["model_file_bytes"], int) else None, 1),
             fmt_ci(r, "joules_per_token", digits=3), fmt(r["peak_temp_c_max"], 1)] for r in rows]
    lines = ["## Results per model", "",
             "Mean with Student-t 95% CI over the measured records of each cell (prompts pooled); n = measured / "
             "failed / warm-ups excluded.", "",
             table(["model", "experiment", "device", "weights", "knobs", "n", "gen tok/s", "prefill tok/s",
                    "TTFT ms", "peak RSS max MiB", "file MiB", "J/token", "peak °C"], body)]
    for prefix, label in (("joules_per_token", "J/token"), ("peak_temp_c", "peak temperature"),
                          ("gen_tokens_per_s", "gen tok/s"), ("prefill_tokens_per_s", "prefill tok/s")):
        missing = _missing(rows, prefix)
        reasons = sorted(set(missing.values()))
        if reasons:
            lines += ["", f"{label} not measured in {len(missing)} cell(s): " + "; ".join(reasons)]
    return "\n".join(lines)


def section_summary(analysis: AnalysisResult) -> str | None:
    """The study's question in one table: the MoE's ratios to each dense model, one row per cell and
    dense model (the two axes share pairs; each pair appears once), headline experiment first."""
    rows = analysis.tables["axes_summary"]
    if not rows:
        return None
    by_pair: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        key = (r["experiment"], r["device"], source_label(r), knobs_label(r), r["denominator_model"])
        by_pair.setdefault(key, {})[r["metric"]] = r

    def ratio(metrics: dict[str, dict], metric: str) -> str:
        r = metrics.get(metric)
        if r is None or r["ratio"] is None:
            return DASH
        ci = f" [{r['ci95_low']:.2f}, {r['ci95_high']:.2f}]" if r["ci95_low"] is not None else " (CI unbounded)"
        return f"{r['ratio']:.2f}x{ci}"

    order = sorted(by_pair, key=lambda k: (k[0] != HEADLINE_EXPERIMENT, k))
    body = [[*key[:4], key[4], ratio(by_pair[key], "gen_tokens_per_s"), ratio(by_pair[key], "prefill_tokens_per_s"),
             ratio(by_pair[key], "peak_rss_bytes")] for key in order]
    return "\n".join(["## Summary: MoE / dense", "",
                      "Ratio of means, MoE over each dense model, 95% CI (details under *The study's two axes*).", "",
                      table(["experiment", "device", "weights", "knobs", "vs", "gen tok/s", "prefill tok/s",
                             "peak RSS"], body)])


def section_axes(analysis: AnalysisResult) -> str:
    rows = analysis.tables["axes_summary"]
    lines = ["## The study's two axes", "",
             f"Ratio of means MoE / dense with a CI by {RATIO_CI_METHOD}.", ""]
    lines += [f"- **{axis.replace('_', ' ')} axis**: {rule}." for axis, rule in AXIS_RULES.items()]
    if not rows:
        return "\n".join(lines + ["", "No cell holds both the MoE model and a dense model: no ratios."])
    body = []
    for r in rows:
        ci = f"[{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]" if r["ci95_low"] is not None else DASH
        body.append([r["axis"].replace("_", " "), r["experiment"], r["device"], source_label(r), knobs_label(r),
                     r["metric"], r["denominator_model"], f"{r['numerator_n']}/{r['denominator_n']}",
                     fmt(r["ratio"], 3), ci, r["note"] or ""])
    lines += ["", table(["axis", "experiment", "device", "weights", "knobs", "metric", "vs", "n", "ratio", "95% CI",
                         "note"], body)]
    return "\n".join(lines)


def section_sequence(analysis: AnalysisResult) -> str | None:
    rows = analysis.tables["sequence_length_summary"]
    if not rows:
        return None
    body = [[r["display_name"], r["device"], source_label(r), r["n_predict"], r["prompt_length_class"],
             fmt(r["prompt_tokens_mean"], 0), r["gen_tokens_per_s_n"], fmt_ci(r, "gen_tokens_per_s"),
             fmt_ci(r, "prefill_tokens_per_s"), fmt_ci(r, "ttft_ms")] for r in rows]
    return "\n".join(["## Sequence length", "", table(["model", "device", "weights", "n_predict", "prompt class",
                                                       "prompt tokens", "n", "gen tok/s", "prefill tok/s", "TTFT ms"],
                                                      body)])


def section_threads(analysis: AnalysisResult) -> str | None:
    rows = analysis.tables["thread_optimum_summary"]
    if not rows:
        return None
    body = [[r["display_name"], r["device"], source_label(r), r["threads_tested"], fmt(r.get("best_threads")),
             fmt_ci(r, "gen_tokens_per_s"), fmt(r.get("runner_up_threads")),
             fmt(r.get("best_ci_clear_of_runner_up")), r.get("note") or ""] for r in rows]
    return "\n".join(["## CPU thread sweep", "",
                      table(["model", "device", "weights", "threads tested", "best", "gen tok/s at best",
                             "runner-up", "best CI clear of runner-up", "note"], body)])


def section_roofline(analysis: AnalysisResult) -> str:
    rows = analysis.tables["roofline_summary"]
    body = [[r["display_name"], r["device"], source_label(r), knobs_label(r),
             fmt(r.get("weight_bytes_active", None) and r["weight_bytes_active"] / MIB, 1),
             fmt(r.get("weight_bytes_total", None) and r["weight_bytes_total"] / MIB, 1),
             fmt(r.get("kv_bytes_per_token", None) and r["kv_bytes_per_token"] / MIB, 3),
             r.get("weight_bytes_method") or DASH, fmt(r.get("bandwidth_gb_per_s"), 0),
             fmt(r.get("bound_tok_s_active"), 1), fmt(r.get("measured_gen_tok_s"), 1),
             fmt(r.get("fraction_of_active_bound"), 3), fmt(r.get("fraction_of_all_weights_bound"), 3),
             r.get("note") or ""] for r in rows]
    return "\n".join([
        "## Memory-bandwidth roofline", "",
        "Bytes read per generated token = weights the token uses (MoE: expert tensors scaled by experts used / "
        "experts) + the F16 KV cache at the mean context (prompt tokens + half the generated tokens). "
        "Bound = bandwidth (configs/devices.yaml; where it has none, the copy bandwidth each run measured on its host) / bytes per token.", "",
        table(["model", "device", "weights", "knobs", "active MiB/token", "all weights MiB", "KV MiB/token",
               "weight bytes from", "GB/s", "bound tok/s (active)", "measured tok/s", "fraction of active bound",
               "fraction of all-weights bound", "note"], body)])


def section_figures(output_dir: Path) -> str:
    manifest_path = output_dir / "figures" / MANIFEST
    lines = ["## Figures", ""]
    if not manifest_path.is_file():
        return "\n".join(lines + ["No figures rendered (run `invoke figures`)."])
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for name in FIGURES:
        png = output_dir / "figures" / f"{name}.png"
        if name in manifest["skipped"]:
            lines.append(f"- {name}: skipped — {manifest['skipped'][name]}")
        elif png.is_file():
            lines += [f"![{name}](figures/{name}.png)", f"(vector: [figures_pub/{name}.pdf](figures_pub/{name}.pdf))", ""]
    return "\n".join(lines)


def section_failures(analysis: AnalysisResult) -> str:
    rows = analysis.tables["failures"]
    if not rows:
        return "## Failures\n\nNo failed records."
    body = [[r["model_id"], r["experiment"], r["device"], r["prompt_id"], r["repetition"],
             "yes" if r["is_warmup"] else "no", r["reason"], r["message"][:200], r["source"]] for r in rows]
    return "\n".join(["## Failures", "", table(["model", "experiment", "device", "prompt", "rep", "warm-up", "reason",
                                                "message", "record"], body)])


# --- verdicts ----------------------------------------------------------------------------------

def verdict(claim: ReferenceClaim, analysis: AnalysisResult) -> Verdict:
    """The claim against the measured records of its device, headline experiment and real weights."""
    records = [i for i in analysis.records if i.record["experiment"] == HEADLINE_EXPERIMENT]
    devices = sorted({i.record["device"] for i in records})
    if claim.device not in devices:
        where = ", ".join(devices) or "none"
        return Verdict(claim.id, "not comparable",
                       f"{HEADLINE_EXPERIMENT} records are from device {where}, claim is for {claim.device}")
    on_device = [i for i in records if i.record["device"] == claim.device]
    real = [i for i in on_device if i.record["model_source"] == "real"]
    if not real:
        scales = sorted({str(i.record["replica_scale"]) for i in on_device})
        return Verdict(claim.id, "not comparable",
                       f"records on {claim.device} use replica weights (scale {', '.join(scales)}), the claim is "
                       "about the real models")
    groups = group(real)
    contexts = defaultdict(dict)
    model_at = GROUP_FIELDS.index("model_id")
    for key, items in groups.items():
        contexts[key[:model_at] + key[model_at + 1:]][key[model_at]] = items
    candidates = [(ctx, models) for ctx, models in contexts.items()
                  if claim.numerator_model in models and claim.denominator_model in models]
    if not candidates:
        present = sorted({i.record["model_id"] for i in real})
        return Verdict(claim.id, "not comparable",
                       f"no cell on {claim.device} with real weights holds both {claim.numerator_model} and "
                       f"{claim.denominator_model} (models present: {', '.join(present)})")
    ctx, models = max(candidates, key=lambda c: min(len(values_of(c[1][m], claim.metric)) for m in
                                                      (claim.numerator_model, claim.denominator_model)))
    num, den = models[claim.numerator_model], models[claim.denominator_model]
    num_values, den_values = values_of(num, claim.metric), values_of(den, claim.metric)
    if not num_values or not den_values:
        side = num if not num_values else den
        return Verdict(claim.id, "not comparable",
                       f"{claim.metric} not measured on {claim.device}: {null_note(side, claim.metric)}")
    result = ratio_ci(num_values, den_values)
    knobs = dict(zip([f for f in GROUP_FIELDS if f != "model_id"], ctx))
    setting = f"t={knobs['threads']}, n_predict={knobs['n_predict']}, {knobs['runner_mode']}"
    if result.ci_low is None:
        return Verdict(claim.id, "not comparable",
                       f"measured ratio {result.ratio:.3f} has no CI ({result.note}); n={len(num_values)}/"
                       f"{len(den_values)} on {claim.device}, {setting}")
    band = (claim.ratio - claim.tolerance, claim.ratio + claim.tolerance)
    status = "reproduced" if intervals_overlap(result.ci_low, result.ci_high, *band) else "not reproduced"
    return Verdict(claim.id, status,
                   f"measured {claim.metric} ratio {result.ratio:.3f} [{result.ci_low:.3f}, {result.ci_high:.3f}] "
                   f"(Fieller 95% CI) vs claimed {claim.ratio} ± {claim.tolerance} on {claim.device}, real weights, "
                   f"n={len(num_values)}/{len(den_values)}, {setting}")


def section_verdicts(cfg: Config, analysis: AnalysisResult) -> str:
    lines = ["## Reproduction verdict", "",
             f"Per claim of configs/reference.yaml, from the {HEADLINE_EXPERIMENT} records: `reproduced` when the "
             "measured ratio's 95% CI overlaps ratio ± tolerance on the same device with real weights, `not "
             "reproduced` when it does not, `not comparable` otherwise (with the reason).", ""]
    for claim in cfg.reference.claims:
        lines.append(verdict(claim, analysis).line())
        lines.append(f"  - claim: {claim.statement} (source: {claim.source})")
    return "\n".join(lines)


# --- comparison with an earlier run --------------------------------------------------------------

def section_reference(analysis: AnalysisResult, reference_dir: Path) -> str:
    _, earlier = load_records(reference_dir)
    now_groups, then_groups = group(analysis.records), group(earlier)
    lines = ["## Comparison with an earlier run", "",
             f"Earlier records: `{reference_dir}` ({len(earlier)} records). Cells matched on experiment, device, "
             f"model, weights, runner and knobs; now / earlier is a ratio of means with a {RATIO_CI_METHOD} CI.", ""]
    body = []
    for key in sorted(set(now_groups) & set(then_groups), key=str):
        row = dict(zip(GROUP_FIELDS, key))
        for metric in ("gen_tokens_per_s", "prefill_tokens_per_s"):
            now_v, then_v = values_of(now_groups[key], metric), values_of(then_groups[key], metric)
            if not now_v or not then_v:
                continue
            result = ratio_ci(now_v, then_v)
            ci = f"[{result.ci_low:.3f}, {result.ci_high:.3f}]" if result.ci_low is not None else DASH
            body.append([row["model_id"], row["experiment"], row["device"], source_label(row), knobs_label(row), metric,
                         fmt(mean_ci(then_v).mean, 1), fmt(mean_ci(now_v).mean, 1), fmt(result.ratio, 3), ci])
    only_now, only_then = len(set(now_groups) - set(then_groups)), len(set(then_groups) - set(now_groups))
    if not body:
        lines.append("No cell with measured values in both runs.")
    else:
        lines.append(table(["model", "experiment", "device", "weights", "knobs", "metric", "earlier mean",
                            "now mean", "now / earlier", "95% CI"], body))
    lines += ["", f"Cells only in this run: {only_now}; only in the earlier run: {only_then}."]
    return "\n".join(lines)


# --- the report ----------------------------------------------------------------------------------

def write_report(cfg: Config, analysis: AnalysisResult, output_dir: Path, reference_dir: Path | None = None) -> Path:
    """Write output_dir/REPORT.md from the analysis (and optionally compare with reference_dir's records)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    devices = sorted({i.record["device"] for i in analysis.records})
    experiments = sorted({i.record["experiment"] for i in analysis.records})
    sources = sorted({source_label(i.record) for i in analysis.records})
    parts = [
        "# moebench report", "",
        f"Experiments: {', '.join(experiments)}. Devices: {', '.join(devices)}. Weights: {', '.join(sources)}.",
        "Tables: `benchmark_results.csv` (one row per record) and `summary_tables/*.csv`.", "",
        section_what(analysis), section_summary(analysis), section_where(analysis), section_headline(analysis),
        section_axes(analysis),
        section_sequence(analysis), section_threads(analysis), section_roofline(analysis),
        section_figures(output_dir), section_failures(analysis), section_verdicts(cfg, analysis),
        section_reference(analysis, Path(reference_dir)) if reference_dir is not None else None,
    ]
    text = re.sub(r"\n{3,}", "\n\n", "\n\n".join(p for p in parts if p is not None)) + "\n"
    path = output_dir / "REPORT.md"
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path
