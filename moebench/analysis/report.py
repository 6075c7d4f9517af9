"""results/REPORT.md: what was run, where, the numbers, and whether the study's claims were reproduced.

The report states only what the records say: every number comes from the analysis tables, every
missing number is shown as missing with the records' null reason, and every claim of
configs/reference.yaml gets one machine-greppable verdict line:

    - **<claim id>**: reproduced | not reproduced | not comparable — <why>
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from moebench.analysis.axes import AXIS_RULES, paired_ratios
from moebench.analysis.frame import (CONTEXT_FIELDS, GROUP_FIELDS, load_records, measured_pairs, null_note,
                                     rows_of, to_frame)
from moebench.analysis.tables import AnalysisResult
from moebench.config import Config, ReferenceClaim
from moebench.analysis.figures import FIGURES, MANIFEST
from moebench.files import write_atomic
from moebench.analysis.findings import HEADLINE_EXPERIMENT, section_findings
from moebench.analysis.format import (DASH, MIB, fmt, fmt_ci, fmt_cv, fmt_ratio, knobs_label, short, source_label,
                                     table)
from moebench.analysis.stats import CV_WARN_THRESHOLD, MIN_N_FOR_INTERVAL, intervals_overlap



@dataclass(frozen=True)
class Verdict:
    claim_id: str
    status: str  # reproduced | not reproduced | not comparable
    reason: str

    def line(self) -> str:
        return f"- **{self.claim_id}**: {self.status} {DASH} {self.reason}"


# --- sections ----------------------------------------------------------------------------------

def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def section_what(analysis: AnalysisResult) -> str:
    frame = analysis.frame
    counts = (frame.assign(weights=[source_label(r) for r in rows_of(frame[["model_source", "replica_scale"]])],
                           failed=frame["status"] == "failed")
              .groupby(["experiment", "device", "weights"], sort=True)
              .agg(cells=("cell_key", "nunique"), records=("record_id", "size"), measured=("measured", "sum"),
                   warmups=("is_warmup", "sum"), failed=("failed", "sum"), runs=("run_id", "nunique"))
              .reset_index())
    rows = [list(r.values()) for r in rows_of(counts)]
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
        "Every throughput statistic uses the study's rates, llama.cpp's own prompt-only and decode-only counters "
        "(`prefill_tokens_per_s`, `gen_tokens_per_s`, from llama-cli's perf footer); the end-to-end rates a "
        "llama-server client sees (`e2e_*`, with sampling and serving) are in benchmark_results.csv only."
        + _server_note(analysis.records),
        _order_note(analysis.records),
    ])


def _order_note(records: list) -> str:
    """Each run's planned order (plan.py), from its records; records made before orders were recorded
    ran model-major."""
    def label(record: dict) -> str:
        order = record.get("order") or {"mode": "fixed (not recorded)", "seed": None}
        return order["mode"] + (f" (seed {order['seed']})" if order["seed"] is not None else "")

    per_run = {i.record["run_id"]: label(i.record) for i in records}
    counts = Counter(per_run.values())
    return ("Order: " + "; ".join(f"{name}, {n} run(s)" for name, n in sorted(counts.items()))
            + ". Interleaved: repetition-major, models in a seeded random order each repetition; fixed: "
            "model-major, the study's schedule.")


def _server_note(records: list) -> str:
    served = sum(1 for i in records if i.record["runner_mode"] == "server")
    if not served:
        return ""
    return (f" {served} records come from the server runner, which exposes no such counter: their study rates are "
            "null (or, in records made before the e2e_* fields existed, are llama-server's slot timers).")


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
    replayed = _distinct(records, lambda r: json.dumps(r["provenance"].get("monitor_replay"), sort_keys=True))
    replayed.pop("null", None)
    if replayed:
        sources = "; ".join(", ".join(f"{tool} from {path}" for tool, path in json.loads(k).items())
                            for k in replayed)
        lines += [f"> **Replayed monitors** in {sum(replayed.values())} of {len(records)} records ({sources}): "
                  "their power, energy, temperature and power mode are recorded tool output played back, not "
                  "measurements of this run.", ""]
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
    models = _distinct(records, lambda r: (r["model_id"], source_label(r), r["provenance"].get("tokenizer"),
                                           r["provenance"].get("model_sha256")))
    lines += ["", table(["model", "weights", "tokenizer", "model SHA-256", "records"],
                        [[m, s, t or "not recorded (record predates the field)", f"`{sha}`" if sha else DASH, n]
                         for (m, s, t, sha), n in sorted(models.items(), key=lambda kv: str(kv[0]))])]
    if any(str(r["provenance"].get("tokenizer", "")).startswith(("approximate", "synthetic")) for r in records):
        lines += ["", "A tokenizer marked approximate or synthetic is not the model's own: its prompt token counts, "
                      "hence prefill work and context use, may differ from the real model's (configs/models.yaml "
                      "`tokenizer.differs` says how)."]
    if analysis.mixed_cells:
        lines += ["", f"**Mixed provenance (--allow-mixed)**: {len(analysis.mixed_cells)} summary cells pool records of "
                      "different binaries, llama.cpp commits or model files; their rows carry `mixed_provenance`:", ""]
        lines += [f"- {cell}" for cell in analysis.mixed_cells]
    return "\n".join(lines)


def _missing(rows: list[dict], prefix: str) -> dict[str, str]:
    return {_cell_name(r): r[f"{prefix}_note"] for r in rows
            if r.get(f"{prefix}_mean") is None and r.get(f"{prefix}_note")}


def _cell_name(row: dict[str, Any]) -> str:
    return f"{row['display_name']} ({row['experiment']}, {row['device']}, {knobs_label(row)})"


HEADLINE_METRICS = (("gen_tokens_per_s", "gen tok/s"), ("prefill_tokens_per_s", "prefill tok/s"),
                    ("ttft_ms", "TTFT"), ("joules_per_token", "J/token"))


def interval_notes(rows: list[dict]) -> list[str]:
    """Why cells have a value but no interval (n < 3), one line per reason."""
    by_reason: dict[str, tuple[set[str], set[str]]] = {}
    for r in rows:
        for prefix, label in HEADLINE_METRICS:
            if r.get(f"{prefix}_mean") is not None and r.get(f"{prefix}_ci95_low") is None and r.get(f"{prefix}_note"):
                labels, cells = by_reason.setdefault(r[f"{prefix}_note"], (set(), set()))
                labels.add(label)
                cells.add(_cell_name(r))
    return [f"No interval for {', '.join(name for _, name in HEADLINE_METRICS if name in labels)} in "
            f"{len(cells)} of {len(rows)} cells: {reason}." for reason, (labels, cells) in sorted(by_reason.items())]


def warning_lines(rows: list[dict]) -> list[str]:
    """hyperfine-style warnings under a table: the cells whose runs were noisy."""
    flagged = [r for r in rows if r.get("warnings")]
    if not flagged:
        return [f"No warnings: in every cell each prompt's repetitions vary by at most CV {CV_WARN_THRESHOLD:.2f} "
                "and no first measured run is an outlier."]
    lines = [f"**Warnings** ({len(flagged)} of {len(rows)} cells): a prompt's repetitions vary by more than CV "
             f"{CV_WARN_THRESHOLD:.2f}, or the cell's first measured run is an outlier among them; such a cell's "
             "numbers are noisy (a busy host, too short a run, or a cold first run).", ""]
    lines += [f"- {_cell_name(r)}: {r['warnings']}" for r in flagged]
    return lines


def section_headline(analysis: AnalysisResult) -> str:
    rows = analysis.tables["per_model_summary"]
    body = [[r["display_name"], r["experiment"], r["device"], source_label(r), knobs_label(r),
             f"{r['n_measured']} / {r['n_failed']} / {r['n_warmup_excluded']}",
             fmt_ci(r, "gen_tokens_per_s"), fmt_ci(r, "prefill_tokens_per_s"), fmt_ci(r, "ttft_ms"),
             fmt_cv(r, ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms")),
             fmt(r["peak_rss_bytes_max"] / MIB if r["peak_rss_bytes_max"] is not None else None, 1),
             fmt(r["model_file_bytes"] / MIB if isinstance(r["model_file_bytes"], int) else None, 1),
             fmt_ci(r, "joules_per_token", digits=3), fmt(r["peak_temp_c_max"], 1)] for r in rows]
    lines = ["## Results per model", "",
             "Geometric mean [95% interval: Student-t on the log values, exponentiated, so never below zero] over "
             f"the measured records of each cell (prompts pooled); no interval below n={MIN_N_FOR_INTERVAL}. "
             "CV = stddev / mean of the cell. n = measured / failed / warm-ups excluded.", "",
             table(["model", "experiment", "device", "weights", "knobs", "n", "gen tok/s", "prefill tok/s",
                    "TTFT ms", "CV gen / prefill / TTFT", "peak RSS max MiB", "file MiB", "J/token", "peak °C"],
                   body)]
    notes = interval_notes(rows)
    for prefix, label in (("joules_per_token", "J/token"), ("peak_temp_c", "peak temperature"),
                          ("gen_tokens_per_s", "gen tok/s"), ("prefill_tokens_per_s", "prefill tok/s")):
        missing = _missing(rows, prefix)
        reasons = sorted(set(missing.values()))
        if reasons:
            notes.append(f"{label} not measured in {len(missing)} cell(s): " + "; ".join(reasons))
    lines += ["", *notes] if notes else []
    return "\n".join(lines + ["", *warning_lines(rows)])


def _ratio_note() -> str:
    return ("Paired ratios, MoE over each dense model: the geometric mean of per-pair ratios with a 95% interval "
            "(Student-t on the log ratios, exponentiated, so never below zero). A pair is one MoE record and one "
            "dense record of the same cell that ran the same prompt at the same repetition index, so a prompt's "
            f"own cost cancels; pairs = n; no interval below {MIN_N_FOR_INTERVAL} pairs.")


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
    order = sorted(by_pair, key=lambda k: (k[0] != HEADLINE_EXPERIMENT, k))
    metrics = ("gen_tokens_per_s", "prefill_tokens_per_s", "joules_per_token", "peak_rss_bytes")
    body = [[*key[:4], key[4], "/".join(sorted({str(m["n_pairs"]) for m in by_pair[key].values()})),
             *(fmt_ratio(by_pair[key].get(metric)) for metric in metrics)] for key in order]
    return "\n".join(["## Summary: MoE / dense", "",
                      _ratio_note() + " Details under *The study's two axes*.", "",
                      table(["experiment", "device", "weights", "knobs", "vs", "pairs", "gen tok/s",
                             "prefill tok/s", "J/token", "peak RSS"], body)])


def section_axes(analysis: AnalysisResult) -> str:
    rows = analysis.tables["axes_summary"]
    lines = ["## The study's two axes", "", _ratio_note(), ""]
    lines += [f"- **{axis.replace('_', ' ')} axis**: {rule}." for axis, rule in AXIS_RULES.items()]
    if not rows:
        return "\n".join(lines + ["", "No cell holds both the MoE model and a dense model: no ratios."])
    body = []
    for r in rows:
        ci = f"[{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]" if r["ci95_low"] is not None else DASH
        body.append([r["axis"].replace("_", " "), r["experiment"], r["device"], source_label(r), knobs_label(r),
                     r["metric"], r["denominator_model"], f"{r['numerator_n']}/{r['denominator_n']}", r["n_pairs"],
                     fmt(r["ratio"], 3), ci, r["note"] or ""])
    lines += ["", table(["axis", "experiment", "device", "weights", "knobs", "metric", "vs", "records", "pairs",
                         "ratio", "95% CI", "note"], body)]
    return "\n".join(lines)


def section_sequence(analysis: AnalysisResult) -> str | None:
    rows = analysis.tables["sequence_length_summary"]
    if not rows:
        return None
    body = [[r["display_name"], r["device"], source_label(r), r["n_predict"], r["prompt_length_class"],
             fmt(r["prompt_tokens_mean"], 0), r["gen_tokens_per_s_n"], fmt_ci(r, "gen_tokens_per_s"),
             fmt_ci(r, "prefill_tokens_per_s"), fmt_ci(r, "ttft_ms"),
             fmt_cv(r, ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms")), r["warnings"] or ""] for r in rows]
    return "\n".join(["## Sequence length", "",
                      "Geometric mean [95% interval: Student-t on the log values, exponentiated] per generation "
                      "length and prompt class; CV = stddev / mean.", "",
                      table(["model", "device", "weights", "n_predict", "prompt class", "prompt tokens", "n",
                             "gen tok/s", "prefill tok/s", "TTFT ms", "CV gen / prefill / TTFT", "warnings"], body)])


def section_threads(analysis: AnalysisResult) -> str | None:
    rows = analysis.tables["thread_optimum_summary"]
    if not rows:
        return None
    body = [[r["display_name"], r["device"], source_label(r), r["threads_tested"], fmt(r.get("best_threads")),
             fmt_ci(r, "gen_tokens_per_s"), fmt(r.get("runner_up_threads")),
             fmt(r.get("best_ci_clear_of_runner_up")), r.get("note") or ""] for r in rows]
    return "\n".join(["## CPU thread sweep", "",
                      "Best = the thread count with the highest geometric-mean gen tok/s; its 95% interval "
                      "(Student-t on the log values) is compared with the runner-up's.", "",
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


def section_warmups(analysis: AnalysisResult) -> str | None:
    """Per cell, the warm-ups' rates and the first measured run against the rest (analysis/warmup.py);
    a cell whose first run sits apart is flagged: its warm-up was not enough."""
    rows = analysis.tables.get("warmup_summary") or []
    if not rows:
        return None
    flagged = [r for r in rows if r["warmup_enough"] is False]
    judged = [r for r in rows if r["warmup_enough"] is not None]
    lines = ["## Warm-ups", "",
             f"Per cell, the warm-up runs' decode rates (experiments.yaml `warmup_runs`, not changed by the kit) and "
             f"the first measured run against the median of its prompt's other repetitions. {len(flagged)} of "
             f"{len(judged)} judged cells flagged: their first measured run is an outlier (> 3 MADs and > 10% "
             "from the median), so their warm-up was not enough or the machine drifted.", ""]
    body = [[r["model_id"], r["experiment"], knobs_label(r), r["warmup_n"], r["warmup_gen_tokens_per_s"] or DASH,
             fmt(r["first_gen_tokens_per_s"]), fmt(r["rest_median_gen_tokens_per_s"]),
             DASH if r["first_vs_rest"] is None else f"{r['first_vs_rest']:+.1%}",
             DASH if r["warmup_enough"] is None else ("**not enough**" if r["warmup_enough"] is False else "enough"),
             ] for r in rows]
    lines.append(table(["model", "experiment", "knobs", "warm-ups", "warm-up gen tok/s", "first run gen tok/s",
                        "rest median", "first vs rest", "warm-up"], body))
    return "\n".join(lines)


SPREAD_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "joules_per_token")
# the rows' machine_basis values -> (the replicate unit's name, the unit with how it is told apart)
SPREAD_UNITS = {
    frozenset({"host"}): ("machine", "machine (one boot of one host, by the records' host_id and boot_id)"),
    frozenset({"run"}): ("run", "run (these records name no host, so each run counts as a machine)"),
    frozenset({"host", "run"}): ("machine", "machine: one boot of one host where the records name it (host_id, "
                                            "boot_id), else the run (older records name no host, so their run "
                                            "counts as a machine)"),
}


def section_spread(analysis: AnalysisResult) -> str | None:
    """The headline experiment's ratios within one run and across machines (analysis/spread.py); with one
    machine, a sentence that the between-machine spread is unmeasured."""
    rows = [r for r in analysis.tables.get("spread_summary") or []
            if r["experiment"] == HEADLINE_EXPERIMENT and r["axis"] == "memory_footprint"
            and r["metric"] in SPREAD_METRICS]
    if not rows:
        return None
    machines = max(r["n_machines"] for r in rows)
    name, unit = SPREAD_UNITS[frozenset(basis for r in rows for basis in r["machine_basis"].split("+"))]
    lines = ["## Spread across machines", "",
             f"The replicate unit is the {unit}. Within run: the paired ratio of all pairs as if from one run "
             "(its interval covers only the noise inside runs). Across machines: " + rows[0]["ci_method"] + "; "
             "between-machine CV = sqrt(exp(tau^2) - 1). Machines are replicates only of machines of their kind "
             "(GPU, else CPU): each kind has rows of its own.", ""]
    kinds = sorted({r["machine_kind"] for r in rows})
    if machines < 2 and len(kinds) == 1:
        lines += [f"**Between-machine spread is unmeasured**: every {HEADLINE_EXPERIMENT} record comes from one "
                  f"{name} ({rows[0]['per_machine'].split(':')[0]}). The within-run intervals below "
                  "say how well this run pinned its ratios, not what another machine of the same kind will measure; "
                  "a second machine's run of the same configuration, analyzed together with these records, "
                  "measures that.", ""]
    elif machines < 2:
        lines += [f"**Between-machine spread is unmeasured**: each machine kind here ({'; '.join(kinds)}) has "
                  f"{HEADLINE_EXPERIMENT} records of one {name}. Their rows differ by hardware, which is not the "
                  "spread between machines of one kind.", ""]
    def ratio(centre: str, low: str, high: str, row: dict[str, Any]) -> str:
        return fmt_ratio({"ratio": row[centre], "ci95_low": row[low], "ci95_high": row[high],
                          "n_pairs": row["n_pairs"]}, digits=3)

    body = [[r["machine_kind"], r["denominator_model"], r["metric"], r["n_machines"], r["n_pairs"],
             ratio("within_ratio", "within_ci95_low", "within_ci95_high", r), fmt_ratio(r, digits=3),
             DASH if r["between_machine_cv"] is None else f"{r['between_machine_cv']:.1%}",
             DASH if r["prediction_low"] is None else ratio("ratio", "prediction_low", "prediction_high", r),
             r["per_machine"]] for r in rows]
    lines.append(table(["machine kind", "vs", "metric", "machines", "pairs", "within run", "across machines",
                        "between-machine CV", "another machine (95% prediction)", "per machine"], body))
    return "\n".join(lines)


# --- verdicts ----------------------------------------------------------------------------------

def verdict(claim: ReferenceClaim, analysis: AnalysisResult) -> Verdict:
    """The claim against the measured records of its device, headline experiment and real weights."""
    frame = analysis.frame[analysis.frame["experiment"] == HEADLINE_EXPERIMENT]
    devices = sorted(set(frame["device"]))
    if claim.device not in devices:
        where = ", ".join(devices) or "none"
        return Verdict(claim.id, "not comparable",
                       f"{HEADLINE_EXPERIMENT} records are from device {where}, claim is for {claim.device}")
    on_device = frame[frame["device"] == claim.device]
    real = on_device[on_device["model_source"] == "real"]
    if real.empty:
        scales = sorted({str(s) for s in on_device["replica_scale"]})
        return Verdict(claim.id, "not comparable",
                       f"records on {claim.device} use replica weights (scale {', '.join(scales)}), the claim is "
                       "about the real models")
    num_id, den_id = claim.numerator_model, claim.denominator_model
    present = real[[*CONTEXT_FIELDS, "model_id"]].drop_duplicates()
    holding = present[present["model_id"] == num_id].merge(present[present["model_id"] == den_id],
                                                           on=list(CONTEXT_FIELDS))
    if holding.empty:
        return Verdict(claim.id, "not comparable",
                       f"no cell on {claim.device} with real weights holds both {num_id} and {den_id} "
                       f"(models present: {', '.join(sorted(set(real['model_id'])))})")
    values = measured_pairs(real, [claim.metric])
    ratios = paired_ratios(values[values["model_id"] == num_id], values[values["model_id"] == den_id],
                           list(CONTEXT_FIELDS), claim.metric)
    if ratios.empty:
        sides = [m for m in (num_id, den_id) if values.loc[values["model_id"] == m, claim.metric].isna().all()]
        why = (null_note(real[real["model_id"] == sides[0]], claim.metric) if sides
               else "no prompt and repetition measured for both models")
        return Verdict(claim.id, "not comparable", f"{claim.metric} not measured on {claim.device}: {why}")
    best = rows_of(ratios.sort_values("n_pairs", ascending=False, kind="stable"))[0]
    setting = f"t={best['threads']}, n_predict={best['n_predict']}, {best['runner_mode']}"
    if best["ci95_low"] is None:
        return Verdict(claim.id, "not comparable",
                       f"measured ratio {best['ratio']:.3f} has no interval ({best['note']}); n={best['n_pairs']} "
                       f"pairs on {claim.device}, {setting}")
    band = (claim.ratio - claim.tolerance, claim.ratio + claim.tolerance)
    status = "reproduced" if intervals_overlap(best["ci95_low"], best["ci95_high"], *band) else "not reproduced"
    return Verdict(claim.id, status,
                   f"measured {claim.metric} ratio {best['ratio']:.3f} [{best['ci95_low']:.3f}, "
                   f"{best['ci95_high']:.3f}] (geometric mean of {best['n_pairs']} paired ratios, 95% t-interval on "
                   f"log ratios) vs claimed {claim.ratio} ± {claim.tolerance} on {claim.device}, real weights, "
                   f"{setting}")


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
    _, earlier_records = load_records(reference_dir)
    metrics = ["gen_tokens_per_s", "prefill_tokens_per_s"]
    now, then = measured_pairs(analysis.frame, metrics), measured_pairs(to_frame(earlier_records), metrics)
    lines = ["## Comparison with an earlier run", "",
             f"Earlier records: `{reference_dir}` ({len(earlier_records)} records). Cells matched on experiment, "
             "device, model, weights, runner and knobs; now / earlier is the geometric mean of ratios of records "
             "paired on prompt and repetition, with a 95% t-interval on the log ratios.", ""]
    keys = list(GROUP_FIELDS)
    body = []
    for metric in metrics:
        means = [side.groupby(keys, dropna=False)[metric].mean().rename(name).reset_index()
                 for side, name in ((then, "earlier_mean"), (now, "now_mean"))]
        ratios = paired_ratios(now, then, keys, metric).merge(means[0], on=keys).merge(means[1], on=keys)
        body += [[r["model_id"], r["experiment"], r["device"], source_label(r), knobs_label(r), metric,
                  fmt(r["earlier_mean"], 1), fmt(r["now_mean"], 1), r["n_pairs"], fmt(r["ratio"], 3),
                  DASH if r["ci95_low"] is None else f"[{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"]
                 for r in rows_of(ratios)]
    cells = [side[keys].drop_duplicates() for side in (now, then)]
    sides = cells[0].merge(cells[1], on=keys, how="outer", indicator=True)["_merge"]
    if not body:
        lines.append("No cell with measured values in both runs.")
    else:
        lines.append(table(["model", "experiment", "device", "weights", "knobs", "metric", "earlier mean",
                            "now mean", "pairs", "now / earlier", "95% CI"], sorted(body, key=str)))
    lines += ["", f"Cells only in this run: {int((sides == 'left_only').sum())}; only in the earlier run: "
                  f"{int((sides == 'right_only').sum())}."]
    return "\n".join(lines)


# --- verification against another lab -----------------------------------------------------------

VERIFICATION_FILE = "verification.json"
VERIFICATION_HEADING = "## Verification"


def _digest_cell(side: dict[str, Any] | None) -> str:
    return "absent" if side is None else f"`{side['digest']}`"


def section_verification(output_dir: Path) -> str | None:
    """Which binaries matched another lab's and which numbers agree, from the last `invoke compare` of a
    bundle (output_dir/verification.json); None when no bundle has been compared."""
    path = Path(output_dir) / VERIFICATION_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    artifacts = data["artifacts"]
    binaries = [a for a in artifacts if a["name"].startswith("binary ")]
    matched = [a for a in binaries if a["status"] == "IDENTICAL"]
    signers = {side: ", ".join(f"`{k}`" for k in data[side]["signers"]) or "no signed attestation"
               for side in ("a", "b")}
    lines = [VERIFICATION_HEADING, "",
             f"`invoke compare` of A `{data['a']['source']}` (signed by {signers['a']}) with B "
             f"`{data['b']['source']}` (signed by {signers['b']}): **{data['verdict']}**.", "",
             f"Binaries: {len(matched)} of {len(binaries)} identical.", ""]
    if artifacts:
        lines += [table(["artifact", "status", "A", "B"],
                        [[a["name"], a["status"], _digest_cell(a["a"]), _digest_cell(a["b"])] for a in artifacts]), ""]
    lines += [f"- {note}" for note in data["artifact_notes"]]
    work = data.get("work") or []
    if work:
        counts = data["work_counts"]
        same = sum(1 for w in work if w["model"] == "same" and w["prompt_tokens"] == w["gen_tokens"] == "match")

        def tally(name: str) -> str:
            return ", ".join(f"{n} {state}" for state, n in sorted(counts[name].items()))

        lines += ["", f"Work: the same in {same} of {len(work)} cells (model file, prompt token ids and generated "
                      f"token ids per cell and prompt). Prompt tokens: {tally('prompt_tokens')}; generated tokens: "
                      f"{tally('gen_tokens')}.", ""]
        odd = [w for w in work if w["model"] != "same" or "match" != w["prompt_tokens"] or "match" != w["gen_tokens"]]
        if odd:
            lines += [table(["cell", "model file", "prompt tokens", "generated tokens", "detail"],
                            [[w["cell"], w["model"], w["prompt_tokens"], w["gen_tokens"] + (
                                f" ({w['expected']})" if w["expected"] else ""), w["detail"] or DASH] for w in odd]), ""]
    metrics = data["metrics"]
    if metrics:
        agree = sum(m["verdict"] == "agree" for m in metrics)

        def number(value: float | None) -> str:
            return DASH if value is None else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"

        def interval(v: list) -> str:
            return number(v[0]) + (f" [{number(v[1])}, {number(v[2])}]" if v[1] is not None else "")

        lines += ["", f"Numbers: {agree} of {len(metrics)} headline metrics agree (their two labs' 95% intervals "
                      f"overlap). B/A: {data['ratio_method']}.", "",
                  table(["cell", "metric", "n A / B", "A", "B", "overlap", "B/A", "verdict"],
                        [[m["cell"], m["metric"], f"{m['n_a']} / {m['n_b']}", interval(m["a"]), interval(m["b"]),
                          DASH if m["overlap"] is None else ("yes" if m["overlap"] else "no"),
                          interval([m["ratio"], m["ratio_low"], m["ratio_high"]]), m["verdict"]] for m in metrics])]
    lines += [f"- {note}" for note in data["record_notes"]]
    lines += _headline_decisions(data)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines))


def _headline_decisions(data: dict[str, Any]) -> list[str]:
    """The MoE/dense ratios of both sides, their shift B/A and compare's decision against its tolerance
    (evidence/reproduction.py): what a rerun, or a change of pin or runner, did to the study's claims."""
    decisions = data.get("reproduction") or []
    if not decisions:
        return []

    def ratio(v: list) -> str:
        return f"{v[0]:.3f}x" + (f" [{v[1]:.3f}, {v[2]:.3f}]" if v[1] is not None else " (no interval)")

    def side(d: dict[str, Any], index: int, key: str) -> str:
        machines = d["machines"][index]
        return (f"{ratio(d[key])} ({d['n_pairs'][index]} pairs, {d[f'runner_{key}']}"
                + (f", {machines} machines)" if machines > 1 else ")"))

    rows = [[d["context"], d["vs"], d["metric"], side(d, 0, "a"), side(d, 1, "b"), ratio(d["shift"]),
             f"{d['tolerance']:.1%}", d["decision"], d["note"] or DASH] for d in decisions]
    sources = sorted({d["tolerance_source"] for d in decisions})
    return ["", f"Headline ratios: {data['reproduction_rule']}.", "",
            table(["context", "vs", "metric", "A", "B", "B/A", "tolerance", "decision", "note"], rows), "",
            *[f"- tolerance: {source}" for source in sources],
            *([f"- {data['results_reproduced']}"] if data.get("results_reproduced") else [])]


def put_section(output_dir: Path, heading: str, section: str) -> Path | None:
    """Put `section` (its first line is `heading`) at the end of an existing output_dir/REPORT.md,
    replacing an earlier section of that heading; how stages after the analysis (compare, fleet)
    add to the report without a second writer of it."""
    report = Path(output_dir) / "REPORT.md"
    if not report.is_file():
        return None
    text = report.read_text(encoding="utf-8")
    start = text.find("\n" + heading + "\n")
    if start >= 0:
        following = text.find("\n## ", start + 1)
        text = text[:start] + (text[following:] if following >= 0 else "\n")
    return write_atomic(report, text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n")


def add_verification_section(output_dir: Path) -> Path | None:
    """Put the Verification section into an existing output_dir/REPORT.md (replacing an earlier one)."""
    section = section_verification(output_dir)
    return None if section is None else put_section(output_dir, VERIFICATION_HEADING, section)


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
        section_what(analysis), section_summary(analysis), section_findings(analysis), section_where(analysis),
        section_headline(analysis),
        section_axes(analysis), section_spread(analysis),
        section_sequence(analysis), section_threads(analysis), section_roofline(analysis),
        section_figures(output_dir), section_failures(analysis), section_warmups(analysis),
        section_verdicts(cfg, analysis),
        section_reference(analysis, Path(reference_dir)) if reference_dir is not None else None,
        section_verification(output_dir),
    ]
    text = re.sub(r"\n{3,}", "\n\n", "\n\n".join(p for p in parts if p is not None)) + "\n"
    return write_atomic(output_dir / "REPORT.md", text)
