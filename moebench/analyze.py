"""JSONL records -> results/benchmark_results.csv (one row per record) -> results/summary_tables/*.csv.

A summary cell is the set of measured (not warm-up, status ok) records of one experiment, device,
model, weight source, runner and knob setting. Warm-ups and failures are counted beside the
statistics, never inside them. Records from different binaries, llama.cpp commits or model files are
never pooled into one cell silently: that is refused unless `allow_mixed`, which flags the cell.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from moebench import roofline as rl
from moebench.config import Bandwidth, Config, ModelSpec
from moebench.errors import UserError
from moebench.records import MEASUREMENT_FIELDS, RecordError, validate_record
from moebench.stats import RATIO_CI_METHOD, mean_ci, ratio_ci

GROUP_FIELDS = ("experiment", "device", "model_id", "model_source", "replica_scale", "runner_mode", "threads",
                "n_predict")
CONTEXT_FIELDS = tuple(f for f in GROUP_FIELDS if f != "model_id")
PINNED_FIELDS = ("binary_sha256", "llama_cpp_commit", "model_sha256")
SUMMARY_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "peak_rss_bytes", "joules_per_token",
                   "peak_temp_c", "prompt_tokens", "gen_tokens")
AXIS_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "peak_rss_bytes", "joules_per_token")
SEQUENCE_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "peak_rss_bytes", "prompt_tokens")
KNOBS = ("threads", "n_predict", "ctx_size", "batch_size", "ubatch_size", "n_gpu_layers", "seed", "temperature",
         "ignore_eos")
PROVENANCE_COLUMNS = ("binary_sha256", "binary_name", "llama_cpp_commit", "llama_cpp_pin", "source_tree_hash",
                      "source_channel", "compiler", "toolchain_id", "image_digest", "power_mode", "model_sha256",
                      "model_path", "kit_commit", "kit_dirty", "verified", "allow_unverified", "started_at")
# A dense model is on the active-parameter axis when its total parameters are within this fraction
# of the MoE's active parameters; every dense model is on the memory-footprint axis.
ACTIVE_MATCH_TOLERANCE = 0.25
AXIS_RULES = {
    "active_parameters": f"dense models with params_total within +-{ACTIVE_MATCH_TOLERANCE:.0%} of the MoE's params_active",
    "memory_footprint": "every dense model, largest params_total first (the closest footprint to the MoE)",
}
TABLES = ("per_model_summary", "sequence_length_summary", "cpu_thread_sweep_summary", "thread_optimum_summary",
          "failures", "axes_summary", "roofline_summary")


@dataclass(frozen=True)
class Loaded:
    record: dict[str, Any]
    path: Path
    line: int

    @property
    def origin(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass
class AnalysisResult:
    raw_dir: Path
    output_dir: Path
    files: list[Path]
    records: list[Loaded]
    tables: dict[str, list[dict[str, Any]]]
    paths: dict[str, Path] = field(default_factory=dict)
    allow_mixed: bool = False
    mixed_cells: list[str] = field(default_factory=list)

    @property
    def measured(self) -> list[Loaded]:
        return [r for r in self.records if is_measured(r.record)]

    def describe(self) -> str:
        failed = sum(1 for r in self.records if r.record["status"] == "failed")
        warm = sum(1 for r in self.records if r.record["is_warmup"])
        mixed = f", {len(self.mixed_cells)} mixed-provenance cells (flagged)" if self.mixed_cells else ""
        return (f"{len(self.records)} records from {len(self.files)} files ({warm} warm-ups, {failed} failed){mixed}"
                f" -> {self.paths.get('benchmark_results', self.output_dir)} and "
                f"{len(self.tables)} summary tables in {self.output_dir / 'summary_tables'}")


def is_measured(record: dict[str, Any]) -> bool:
    return record["status"] == "ok" and not record["is_warmup"]


# --- loading -----------------------------------------------------------------------------------

def load_records(raw_dir: Path) -> tuple[list[Path], list[Loaded]]:
    """Every record of raw_dir/*.jsonl, schema-validated; any bad line is an error naming file and line."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(raw_dir, "raw data directory does not exist", "give --raw-dir the folder of run_*.jsonl files")
    files = sorted(raw_dir.glob("*.jsonl"))
    loaded: list[Loaded] = []
    for path in files:
        loaded += _load_file(path)
    if not loaded:
        raise UserError(raw_dir, "no records (*.jsonl files with at least one line)",
                        "run an experiment first (invoke run) or point --raw-dir at its output")
    return files, loaded


def _load_file(path: Path) -> list[Loaded]:
    out = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                torn = "" if raw.endswith(b"\n") else " (a torn last line: the run was cut off mid-write)"
                raise UserError(path, f"line {number} is not valid JSON{torn}: {exc}",
                                "resume the run with --resume (it drops a torn tail) or delete that line") from None
            try:
                validate_record(record)
            except RecordError as exc:
                raise UserError(path, f"line {number} does not match schema/record-v1.json: {exc}",
                                "re-record the cell, or remove the line") from None
            out.append(Loaded(record, path, number))
    return out


# --- flattening --------------------------------------------------------------------------------

def flatten(item: Loaded) -> dict[str, Any]:
    """One benchmark_results.csv row: scalars, knobs, failure, provenance and null reasons, flat."""
    rec = item.record
    row: dict[str, Any] = {name: rec[name] for name in (
        "record_id", "run_id", "cell_key", "experiment", "device", "model_id", "model_source", "replica_scale",
        "prompt_id", "prompt_length_class", "repetition", "is_warmup", "runner_mode", "status", "started_at")}
    row.update({knob: rec["knobs"][knob] for knob in KNOBS})
    row.update({name: rec[name] for name in MEASUREMENT_FIELDS})
    failure = rec["failure"] or {}
    for name in ("reason", "message", "exit_code", "signal"):
        row[f"failure_{name}"] = failure.get(name)
    prov = rec["provenance"]
    for name in PROVENANCE_COLUMNS:
        row[f"prov_{name}"] = prov.get(name)
    row["prov_build_flags"] = " ".join(prov["build_flags"]) if prov.get("build_flags") else None
    host = prov.get("host") or {}
    for name in ("cpu_model", "physical_cores", "logical_cores", "ram_bytes", "os", "machine"):
        row[f"prov_host_{name}"] = host.get(name)
    row["prov_null_reasons"] = json.dumps(prov.get("null_reasons") or {}, sort_keys=True)
    row["null_reasons"] = json.dumps(rec["null_reasons"], sort_keys=True)
    row["source_file"] = item.path.name
    row["source_line"] = item.line
    return row


# --- grouping ----------------------------------------------------------------------------------

def group_key(record: dict[str, Any]) -> tuple[Any, ...]:
    knobs = record["knobs"]
    return tuple(knobs[f] if f in ("threads", "n_predict") else record[f] for f in GROUP_FIELDS)


def key_label(key: tuple[Any, ...], fields: tuple[str, ...] = GROUP_FIELDS) -> str:
    return "(" + ", ".join(f"{f}={v}" for f, v in zip(fields, key)) + ")"


def group(records: Iterable[Loaded], key=group_key) -> dict[tuple[Any, ...], list[Loaded]]:
    groups: dict[tuple[Any, ...], list[Loaded]] = defaultdict(list)
    for item in records:
        groups[key(item.record)].append(item)
    return dict(groups)


def pinned_values(items: list[Loaded]) -> dict[str, list[tuple[Any, str]]]:
    """field -> [(value, first record origin)] over the measured records of a cell."""
    seen: dict[str, dict[Any, str]] = {f: {} for f in PINNED_FIELDS}
    for item in items:
        if is_measured(item.record):
            for name in PINNED_FIELDS:
                seen[name].setdefault(item.record["provenance"].get(name), item.origin)
    return {name: list(values.items()) for name, values in seen.items()}


def check_mixed(groups: dict[tuple[Any, ...], list[Loaded]], raw_dir: Path, allow_mixed: bool) -> dict[tuple, str]:
    """cell key -> the mixed fields; raises unless allow_mixed."""
    mixed: dict[tuple, str] = {}
    for key, items in groups.items():
        differing = {name: values for name, values in pinned_values(items).items() if len(values) > 1}
        if not differing:
            continue
        if not allow_mixed:
            name, values = next(iter(differing.items()))
            shown = ", ".join(f"{v} ({origin})" for v, origin in values)
            raise UserError(raw_dir, f"cell {key_label(key)} mixes {name} values {shown}",
                            "analyze records of one binary, llama.cpp commit and model file at a time, "
                            "or pass --allow-mixed to pool them with a mixed_provenance column")
        mixed[key] = ";".join(differing)
    return mixed


# --- summary rows ------------------------------------------------------------------------------

def values_of(items: list[Loaded], metric: str) -> list[float]:
    return [i.record[metric] for i in items if is_measured(i.record) and i.record[metric] is not None]


def null_note(items: list[Loaded], metric: str) -> str | None:
    measured = [i.record for i in items if is_measured(i.record)]
    if not measured:
        failed = [i.record for i in items if i.record["status"] == "failed" and not i.record["is_warmup"]]
        reasons = sorted({r["failure"]["reason"] for r in failed})
        return f"no successful measured records ({len(failed)} failed: {', '.join(reasons) or 'none run'})"
    reasons = sorted({r["null_reasons"].get(metric, "null without a reason") for r in measured if r[metric] is None})
    return " | ".join(reasons) or None


def stat_columns(prefix: str, items: list[Loaded], metric: str) -> dict[str, Any]:
    summary = mean_ci(values_of(items, metric))
    return {f"{prefix}_n": summary.n, f"{prefix}_mean": summary.mean, f"{prefix}_stddev": summary.stddev,
            f"{prefix}_ci95_low": summary.ci_low, f"{prefix}_ci95_high": summary.ci_high,
            f"{prefix}_note": null_note(items, metric) if summary.n == 0 else summary.note}


def joined(values: Iterable[Any]) -> Any:
    distinct = list(dict.fromkeys(v for v in values))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else ";".join("null" if v is None else str(v) for v in distinct)


def base_columns(cfg: Config, key: tuple[Any, ...], items: list[Loaded]) -> dict[str, Any]:
    row = dict(zip(GROUP_FIELDS, key))
    spec = cfg.models.models.get(row["model_id"])
    row["display_name"] = spec.display_name if spec else row["model_id"]
    row["kind"] = spec.kind if spec else None
    row["n_records"] = len(items)
    row["n_measured"] = sum(1 for i in items if is_measured(i.record))
    row["n_failed"] = sum(1 for i in items if i.record["status"] == "failed" and not i.record["is_warmup"])
    row["n_warmup_excluded"] = sum(1 for i in items if i.record["is_warmup"])
    return row


def provenance_columns(items: list[Loaded], mixed_key: tuple, mixed: dict[tuple, str]) -> dict[str, Any]:
    measured = [i.record for i in items if is_measured(i.record)] or [i.record for i in items]
    row = {f"prov_{name}": joined(r["provenance"].get(name) for r in measured) for name in PINNED_FIELDS}
    row["mixed_provenance"] = mixed.get(mixed_key, "")
    return row


def per_model_rows(cfg: Config, groups: dict[tuple, list[Loaded]], mixed: dict[tuple, str]) -> list[dict[str, Any]]:
    rows = []
    for key, items in groups.items():
        row = base_columns(cfg, key, items)
        for metric in SUMMARY_METRICS:
            row.update(stat_columns(metric, items, metric))
        rss = values_of(items, "peak_rss_bytes")
        row["peak_rss_bytes_max"] = max(rss) if rss else None
        temps = values_of(items, "peak_temp_c")
        row["peak_temp_c_max"] = max(temps) if temps else None
        sizes = [i.record["model_file_bytes"] for i in items if i.record["model_file_bytes"] is not None]
        row["model_file_bytes"] = joined(sizes)
        row.update(provenance_columns(items, key, mixed))
        rows.append(row)
    return rows


def sequence_rows(cfg: Config, records: list[Loaded], experiments: set[str], mixed: dict[tuple, str]) -> list[dict]:
    chosen = [r for r in records if r.record["experiment"] in experiments]
    by_class = group(chosen, key=lambda r: group_key(r) + (r["prompt_length_class"],))
    rows = []
    for key, items in sorted(by_class.items(), key=lambda kv: _sort_key(kv[0])):
        row = base_columns(cfg, key[:-1], items)
        row["prompt_length_class"] = key[-1]
        for metric in SEQUENCE_METRICS:
            row.update(stat_columns(metric, items, metric))
        row.update(provenance_columns(items, key[:-1], mixed))
        rows.append(row)
    return rows


def _sort_key(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if v is None else f"{v:012d}" if isinstance(v, int) else str(v) for v in key)


def thread_optimum_rows(sweep_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model (and everything but threads): the thread count with the highest mean gen tok/s."""
    by_model: dict[tuple, list[dict]] = defaultdict(list)
    for row in sweep_rows:
        by_model[tuple(row[f] for f in GROUP_FIELDS if f != "threads")].append(row)
    out = []
    for key, rows in by_model.items():
        ranked = sorted((r for r in rows if r["gen_tokens_per_s_mean"] is not None),
                        key=lambda r: r["gen_tokens_per_s_mean"], reverse=True)
        row = {f: v for f, v in zip([f for f in GROUP_FIELDS if f != "threads"], key)}
        row["display_name"] = rows[0]["display_name"]
        row["threads_tested"] = ";".join(str(r["threads"]) for r in sorted(rows, key=lambda r: r["threads"]))
        if not ranked:
            row.update(best_threads=None, note="no thread count has a measured gen tok/s")
            out.append(row)
            continue
        best = ranked[0]
        row.update(best_threads=best["threads"], gen_tokens_per_s_n=best["gen_tokens_per_s_n"],
                   gen_tokens_per_s_mean=best["gen_tokens_per_s_mean"],
                   gen_tokens_per_s_ci95_low=best["gen_tokens_per_s_ci95_low"],
                   gen_tokens_per_s_ci95_high=best["gen_tokens_per_s_ci95_high"])
        if len(ranked) > 1:
            second = ranked[1]
            row.update(runner_up_threads=second["threads"], runner_up_gen_tokens_per_s_mean=second["gen_tokens_per_s_mean"],
                       runner_up_ci95_low=second["gen_tokens_per_s_ci95_low"],
                       runner_up_ci95_high=second["gen_tokens_per_s_ci95_high"])
            lows = (best["gen_tokens_per_s_ci95_low"], second["gen_tokens_per_s_ci95_high"])
            row["best_ci_clear_of_runner_up"] = None if None in lows else lows[0] > lows[1]
        row["note"] = None
        out.append(row)
    return out


def failure_rows(records: list[Loaded]) -> list[dict[str, Any]]:
    rows = []
    for item in records:
        rec = item.record
        if rec["status"] != "failed":
            continue
        failure = rec["failure"]
        rows.append({"experiment": rec["experiment"], "device": rec["device"], "model_id": rec["model_id"],
                     "model_source": rec["model_source"], "prompt_id": rec["prompt_id"],
                     "repetition": rec["repetition"], "is_warmup": rec["is_warmup"],
                     "threads": rec["knobs"]["threads"], "n_predict": rec["knobs"]["n_predict"],
                     "reason": failure["reason"], "message": failure["message"],
                     "exit_code": failure["exit_code"], "signal": failure["signal"],
                     "started_at": rec["started_at"], "record_id": rec["record_id"], "source": item.origin})
    return rows


# --- the study's two axes ------------------------------------------------------------------------

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


def ratio_statement(num: ModelSpec | None, den: ModelSpec | None, num_id: str, den_id: str, metric: str,
                    ratio: float | None, low: float | None, high: float | None) -> str:
    if ratio is None:
        return ""
    name = lambda spec, mid: spec.display_name if spec else mid  # noqa: E731
    ci = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else " (no CI)"
    return f"{name(num, num_id)} {METRIC_LABELS.get(metric, metric)} = {ratio:.2f}x {name(den, den_id)}{ci}"


METRIC_LABELS = {"gen_tokens_per_s": "gen tok/s", "prefill_tokens_per_s": "prefill tok/s",
                 "peak_rss_bytes": "peak RSS", "joules_per_token": "J/token"}


def axes_rows(cfg: Config, groups: dict[tuple, list[Loaded]], mixed: dict[tuple, str]) -> list[dict[str, Any]]:
    model_index = GROUP_FIELDS.index("model_id")
    by_context: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for key in groups:
        by_context[key[:model_index] + key[model_index + 1:]][key[model_index]] = key
    rows = []
    for context, keys in sorted(by_context.items(), key=lambda kv: _sort_key(kv[0])):
        for axis, num_id, den_id in axis_pairs(cfg):
            if num_id not in keys or den_id not in keys:
                continue
            num_items, den_items = groups[keys[num_id]], groups[keys[den_id]]
            for metric in AXIS_METRICS:
                num_vals, den_vals = values_of(num_items, metric), values_of(den_items, metric)
                if not num_vals and not den_vals:
                    continue
                result = ratio_ci(num_vals, den_vals)
                notes = [n for n in (result.note, null_note(num_items, metric) if not num_vals else None,
                                     null_note(den_items, metric) if not den_vals else None) if n]
                row = dict(zip(CONTEXT_FIELDS, context))
                row.update(axis=axis, axis_rule=AXIS_RULES[axis], metric=metric, numerator_model=num_id,
                           denominator_model=den_id, numerator_n=len(num_vals),
                           numerator_mean=mean_ci(num_vals).mean, denominator_n=len(den_vals),
                           denominator_mean=mean_ci(den_vals).mean, ratio=result.ratio, ci95_low=result.ci_low,
                           ci95_high=result.ci_high, ci_method=RATIO_CI_METHOD,
                           statement=ratio_statement(cfg.models.models.get(num_id), cfg.models.models.get(den_id),
                                                     num_id, den_id, metric, result.ratio, result.ci_low,
                                                     result.ci_high),
                           note="; ".join(notes) or None,
                           mixed_provenance=";".join(sorted({mixed[k] for k in (keys[num_id], keys[den_id])
                                                             if k in mixed})))
                rows.append(row)
    return rows


# --- roofline ------------------------------------------------------------------------------------

def roofline_rows(cfg: Config, per_model: list[dict[str, Any]], groups: dict[tuple, list[Loaded]]) -> list[dict]:
    gguf = rl.find_gguf_py()
    rows = []
    for summary in per_model:
        key = tuple(summary[f] for f in GROUP_FIELDS)
        row = {f: summary[f] for f in GROUP_FIELDS}
        row["display_name"] = summary["display_name"]
        spec = cfg.models.models.get(summary["model_id"])
        device = cfg.devices.devices.get(summary["device"])
        problem = _roofline_problem(spec, device, summary)
        weights = None
        if problem is None:
            weights = rl.weight_bytes(spec, _model_path(groups[key]), _file_bytes(summary), gguf)
            problem = None if weights else "no model file and no model_file_bytes in the records"
        if problem is not None:
            row["note"] = problem
            rows.append(row)
            continue
        hp = spec.tiny_hparams if summary["replica_scale"] == "tiny" else spec.hparams
        context = summary["prompt_tokens_mean"] + summary["gen_tokens_mean"] / 2.0
        result = rl.roofline(hp, weights, context, bandwidth_for(device, groups[key]),
                             summary["gen_tokens_per_s_mean"])
        row.update(vars(result))
        row["hparams"] = "tiny_hparams" if summary["replica_scale"] == "tiny" else "hparams"
        rows.append(row)
    return rows


def bandwidth_for(device: Any, items: list[Loaded]) -> Bandwidth:
    """The device's datasheet bandwidth; where devices.yaml has none for a CPU-backend device (a
    generic host), the median of the bandwidth its runs measured on the host (moebench.bandwidth),
    with that as its source. A GPU's bound is never taken from host memory."""
    spec = device.memory_bandwidth
    if spec.gb_per_s is not None or device.backend != "cpu":
        return spec
    measured = [m for m in ((i.record["provenance"].get("host") or {}).get("memory_bandwidth") for i in items)
                if m and m.get("gb_per_s")]
    if not measured:
        return spec
    return Bandwidth(gb_per_s=float(statistics.median(m["gb_per_s"] for m in measured)),
                     source=f"measured on the run's host ({measured[0]['method']}; median over {len(measured)} records); "
                            f"devices.yaml: {spec.source}")


def _roofline_problem(spec: ModelSpec | None, device: Any, summary: dict[str, Any]) -> str | None:
    if spec is None:
        return f"model {summary['model_id']} is not in models.yaml"
    if device is None:
        return f"device {summary['device']} is not in devices.yaml"
    if summary["prompt_tokens_mean"] is None or summary["gen_tokens_mean"] is None:
        return "no measured prompt/gen token counts: " + (summary["prompt_tokens_note"] or summary["gen_tokens_note"] or "")
    return None


def _model_path(items: list[Loaded]) -> Path | None:
    for item in items:
        path = item.record["provenance"].get("model_path")
        if path and Path(path).is_file():
            return Path(path)
    return None


def _file_bytes(summary: dict[str, Any]) -> int | None:
    value = summary["model_file_bytes"]
    return value if isinstance(value, int) else None


# --- writing -----------------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Path:
    """Columns in first-seen order; None is an empty cell. Written to a temp file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(name for row in rows for name in row))
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    partial.replace(path)
    return path


def sweep_experiments(cfg: Config, knob: str, seen: set[str]) -> set[str]:
    return {name for name in seen if name in cfg.experiments.experiments
            and getattr(cfg.experiments.experiments[name].sweep, knob)}


def summarize(cfg: Config, records: list[Loaded], raw_dir: Path, allow_mixed: bool
              ) -> tuple[dict[str, list[dict[str, Any]]], dict[tuple, str]]:
    """All summary tables, in memory."""
    groups = dict(sorted(group(records).items(), key=lambda kv: _sort_key(kv[0])))
    mixed = check_mixed(groups, raw_dir, allow_mixed)
    experiments = {r.record["experiment"] for r in records}
    per_model = per_model_rows(cfg, groups, mixed)
    thread_sweeps = sweep_experiments(cfg, "threads", experiments)
    sweep_rows = [r for r in per_model if r["experiment"] in thread_sweeps]
    tables = {
        "per_model_summary": per_model,
        "sequence_length_summary": sequence_rows(cfg, records, sweep_experiments(cfg, "n_predict", experiments), mixed),
        "cpu_thread_sweep_summary": sweep_rows,
        "thread_optimum_summary": thread_optimum_rows(sweep_rows),
        "failures": failure_rows(records),
        "axes_summary": axes_rows(cfg, groups, mixed),
        "roofline_summary": roofline_rows(cfg, per_model, groups),
    }
    return tables, mixed


def analyze(cfg: Config, raw_dir: Path, output_dir: Path, allow_mixed: bool = False) -> AnalysisResult:
    """raw_dir/*.jsonl -> output_dir/benchmark_results.csv and output_dir/summary_tables/*.csv."""
    raw_dir, output_dir = Path(raw_dir), Path(output_dir)
    files, records = load_records(raw_dir)
    tables, mixed = summarize(cfg, records, raw_dir, allow_mixed)
    result = AnalysisResult(raw_dir=raw_dir, output_dir=output_dir, files=files, records=records, tables=tables,
                            allow_mixed=allow_mixed, mixed_cells=[key_label(k) for k in mixed])
    result.paths["benchmark_results"] = write_csv(output_dir / "benchmark_results.csv",
                                                  [flatten(item) for item in records])
    for name, rows in tables.items():
        result.paths[name] = write_csv(output_dir / "summary_tables" / f"{name}.csv", rows,
                                       None if rows else _empty_columns(name))
    return result


def _empty_columns(name: str) -> list[str]:
    """Header of a table with no rows, so a reader still sees what it would hold."""
    return {"failures": ["experiment", "device", "model_id", "prompt_id", "reason", "message"],
            "thread_optimum_summary": [f for f in GROUP_FIELDS if f != "threads"] + ["best_threads", "note"],
            "axes_summary": list(CONTEXT_FIELDS) + ["axis", "metric", "numerator_model", "denominator_model", "ratio",
                                                    "ci95_low", "ci95_high", "ci_method", "note"],
            }.get(name, list(GROUP_FIELDS))
