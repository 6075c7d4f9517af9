"""JSONL records -> results/benchmark_results.csv (one row per record) -> results/summary_tables/*.csv.

Records become one long pandas DataFrame (moebench.analysis.frame); every summary table is a
group-by of it. A summary cell is the set of measured (not warm-up, status ok) records of one
experiment, device, model, weight source, runner and knob setting. Warm-ups and failures are counted
beside the statistics, never inside them. Records from different binaries, llama.cpp commits or
model files are never pooled into one cell silently: that is refused unless `allow_mixed`, which
flags the cell.

Per metric a cell has n, mean, stddev, CV (stddev / mean), and the geometric mean with its 95%
interval (moebench.analysis.stats: Student-t on log values, never below zero; none below n=3, with the
reason); `warnings` holds the cell's noise warnings (CV of a prompt's repetitions above
stats.CV_WARN_THRESHOLD, or a first measured run that is an outlier).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from moebench.analysis.axes import axes_table
from moebench.analysis.frame import (GROUP_FIELDS, PINNED_FIELDS, Loaded, key_label, load_records, null_note,
                                     origins, rows_of, to_frame)
from moebench.analysis.roofline_table import roofline_table
from moebench.analysis.spread import spread_table
from moebench.analysis.warmup import warmup_table
from moebench.config import Config
from moebench.errors import UserError
from moebench.files import write_atomic
from moebench.analysis.stats import POSITIVE_CI_METHOD, positive_interval, run_warnings

SUMMARY_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "peak_rss_bytes", "joules_per_token",
                   "peak_temp_c", "prompt_tokens", "gen_tokens")
SEQUENCE_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "peak_rss_bytes", "prompt_tokens")
# Run-to-run noise is judged on what a run measures; token counts are fixed by the prompt and knobs.
WARN_METRICS = ("gen_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "peak_rss_bytes", "joules_per_token")
STAT_SUFFIXES = ("n", "mean", "stddev", "cv", "geomean", "ci95_low", "ci95_high", "note")
TABLES = ("per_model_summary", "sequence_length_summary", "cpu_thread_sweep_summary", "thread_optimum_summary",
          "failures", "axes_summary", "roofline_summary", "warmup_summary", "spread_summary")
FAILURE_COLUMNS = {"experiment": "experiment", "device": "device", "model_id": "model_id",
                   "model_source": "model_source", "prompt_id": "prompt_id", "repetition": "repetition",
                   "is_warmup": "is_warmup", "threads": "threads", "n_predict": "n_predict",
                   "failure_reason": "reason", "failure_message": "message", "failure_exit_code": "exit_code",
                   "failure_signal": "signal", "started_at": "started_at", "record_id": "record_id"}


@dataclass
class AnalysisResult:
    raw_dir: Path
    output_dir: Path
    files: list[Path]
    records: list[Loaded]
    frame: pd.DataFrame
    frames: dict[str, pd.DataFrame]
    paths: dict[str, Path] = field(default_factory=dict)
    allow_mixed: bool = False
    mixed_cells: list[str] = field(default_factory=list)

    @cached_property
    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Each summary table as a list of rows (dicts, None for a missing value)."""
        return {name: rows_of(frame) for name, frame in self.frames.items()}

    def describe(self) -> str:
        failed = int((self.frame["status"] == "failed").sum())
        warm = int(self.frame["is_warmup"].sum())
        mixed = f", {len(self.mixed_cells)} mixed-provenance cells (flagged)" if self.mixed_cells else ""
        return (f"{len(self.records)} records from {len(self.files)} files ({warm} warm-ups, {failed} failed){mixed}"
                f" -> {self.paths.get('benchmark_results', self.output_dir)} and "
                f"{len(self.frames)} summary tables in {self.output_dir / 'summary_tables'}")


# --- provenance of a cell ----------------------------------------------------------------------

def check_mixed(frame: pd.DataFrame, raw_dir: Path, allow_mixed: bool) -> pd.DataFrame:
    """Cells whose measured records differ in a pinned field: GROUP_FIELDS + mixed_provenance (the
    fields, `;`-joined). Raises unless allow_mixed, naming each value and the first record that has it."""
    measured = frame[frame["measured"]]
    cells = measured.groupby(list(GROUP_FIELDS), dropna=False, sort=True)
    columns = [f"prov_{name}" for name in PINNED_FIELDS]
    differs = cells[columns].nunique(dropna=False).gt(1)
    flagged = differs.any(axis=1).to_numpy()
    if flagged.any() and not allow_mixed:
        position = int(flagged.argmax())
        name = next(n for n, c in zip(PINNED_FIELDS, columns) if differs.iloc[position][c])
        cell = measured[cells.ngroup() == position].assign(origin=origins)
        shown = ", ".join(f"{value} ({origin})" for value, origin in
                          cell.drop_duplicates(f"prov_{name}")[[f"prov_{name}", "origin"]].itertuples(index=False))
        raise UserError(raw_dir, f"cell {key_label(differs.index[position])} mixes {name} values {shown}",
                        "analyze records of one binary, llama.cpp commit and model file at a time, "
                        "or pass --allow-mixed to pool them with a mixed_provenance column")
    fields = [";".join(n for n, c in zip(PINNED_FIELDS, columns) if row[c]) for _, row in differs.iterrows()]
    table = differs.index.to_frame(index=False).assign(mixed_provenance=fields)
    return table[flagged]


def joined(values: pd.Series) -> Any:
    """The one distinct value, or the distinct values `;`-joined (None as `null`) when they differ."""
    distinct = list(dict.fromkeys(None if pd.isna(v) else v for v in values.tolist()))
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else ";".join("null" if v is None else str(v) for v in distinct)


# --- one cell ----------------------------------------------------------------------------------

def metric_columns(cell: pd.DataFrame, measured: pd.DataFrame, metric: str) -> dict[str, Any]:
    summary = positive_interval(measured[metric].dropna().tolist())
    values = (summary.n, summary.mean, summary.stddev, summary.cv, summary.geomean, summary.ci_low, summary.ci_high,
              null_note(cell, metric) if summary.n == 0 else summary.note)
    return {f"{metric}_{suffix}": value for suffix, value in zip(STAT_SUFFIXES, values)}


def cell_columns(cell: pd.DataFrame, metrics: tuple[str, ...], maxima: bool) -> pd.Series:
    """Counts, per-metric statistics, warnings and provenance of one cell's records."""
    measured = cell[cell["measured"]].sort_values(["started_at", "source_file", "source_line"], kind="stable")
    row: dict[str, Any] = {"n_records": len(cell), "n_measured": len(measured),
                           "n_failed": int(((cell["status"] == "failed") & ~cell["is_warmup"]).sum()),
                           "n_warmup_excluded": int(cell["is_warmup"].sum())}
    warnings = []
    for metric in metrics:
        row.update(metric_columns(cell, measured, metric))
        if metric in WARN_METRICS:
            runs = measured.loc[measured[metric].notna(), ["prompt_id", metric]].itertuples(index=False, name=None)
            warnings += [f"{metric}: {w}" for w in run_warnings(list(runs))]
    row["ci_method"] = POSITIVE_CI_METHOD
    row["warnings"] = "; ".join(warnings) or None
    if maxima:
        row["peak_rss_bytes_max"] = _max(measured["peak_rss_bytes"])
        row["peak_temp_c_max"] = _max(measured["peak_temp_c"])
        row["model_file_bytes"] = joined(cell["model_file_bytes"].dropna())
    chosen = measured if len(measured) else cell
    row.update({f"prov_{name}": joined(chosen[f"prov_{name}"]) for name in PINNED_FIELDS})
    return pd.Series(row, dtype=object)


def _max(values: pd.Series) -> Any:
    values = values.dropna().tolist()
    return max(values) if values else None


def summarize_cells(cfg: Config, frame: pd.DataFrame, metrics: tuple[str, ...], mixed: pd.DataFrame,
                    extra: tuple[str, ...] = (), maxima: bool = False) -> pd.DataFrame:
    """One row per cell (GROUP_FIELDS + extra) of `frame`; `maxima` adds peak RSS and temperature
    maxima and the model file size."""
    by = [*GROUP_FIELDS, *extra]
    if frame.empty:
        return pd.DataFrame(columns=[*by, "display_name", "kind", *cell_columns(frame, metrics, maxima).index,
                                     "mixed_provenance"])
    table = (frame.groupby(by, dropna=False, sort=True)
             .apply(lambda cell: cell_columns(cell, metrics, maxima), include_groups=False).reset_index())
    models = cfg.models.models
    table.insert(len(by), "display_name", table["model_id"].map(lambda m: models[m].display_name if m in models else m))
    table.insert(len(by) + 1, "kind", table["model_id"].map(lambda m: models[m].kind if m in models else None))
    table = table.merge(mixed, on=list(GROUP_FIELDS), how="left")
    table["mixed_provenance"] = table["mixed_provenance"].fillna("")
    return table


# --- the sweeps and failures -------------------------------------------------------------------

def sweep_experiments(cfg: Config, knob: str, seen: set[str]) -> set[str]:
    return {name for name in seen if name in cfg.experiments.experiments
            and getattr(cfg.experiments.experiments[name].sweep, knob)}


OPTIMUM_COLUMNS = ["display_name", "threads_tested", "best_threads",
                   *(f"gen_tokens_per_s_{s}" for s in ("n", "mean", "geomean", "ci95_low", "ci95_high")),
                   "runner_up_threads", "runner_up_gen_tokens_per_s_mean", "runner_up_gen_tokens_per_s_geomean",
                   "runner_up_ci95_low", "runner_up_ci95_high", "best_ci_clear_of_runner_up", "note"]


def _optimum(rows: pd.DataFrame) -> pd.Series:
    """The thread count with the highest geometric-mean gen tok/s (the centre of its interval)."""
    row: dict[str, Any] = {"display_name": rows["display_name"].iloc[0],
                           "threads_tested": ";".join(str(t) for t in sorted(rows["threads"]))}
    ranked = (rows.assign(centre=pd.to_numeric(rows["gen_tokens_per_s_geomean"]))
              .dropna(subset=["centre"]).sort_values(["centre", "threads"], ascending=[False, True], kind="stable"))
    if ranked.empty:
        row["note"] = "no thread count has a measured gen tok/s"
        return pd.Series(row, dtype=object).reindex(OPTIMUM_COLUMNS)
    best = ranked.iloc[0]
    row["best_threads"] = best["threads"]
    row.update({f"gen_tokens_per_s_{s}": best[f"gen_tokens_per_s_{s}"]
                for s in ("n", "mean", "geomean", "ci95_low", "ci95_high")})
    if len(ranked) > 1:
        second = ranked.iloc[1]
        row.update(runner_up_threads=second["threads"],
                   runner_up_gen_tokens_per_s_mean=second["gen_tokens_per_s_mean"],
                   runner_up_gen_tokens_per_s_geomean=second["gen_tokens_per_s_geomean"],
                   runner_up_ci95_low=second["gen_tokens_per_s_ci95_low"],
                   runner_up_ci95_high=second["gen_tokens_per_s_ci95_high"])
        bounds = (best["gen_tokens_per_s_ci95_low"], second["gen_tokens_per_s_ci95_high"])
        row["best_ci_clear_of_runner_up"] = None if None in bounds else bool(bounds[0] > bounds[1])
    return pd.Series(row, dtype=object).reindex(OPTIMUM_COLUMNS)


def thread_optimum(sweep: pd.DataFrame) -> pd.DataFrame:
    by = [f for f in GROUP_FIELDS if f != "threads"]
    if sweep.empty:
        return pd.DataFrame(columns=[*by, *OPTIMUM_COLUMNS])
    return sweep.groupby(by, dropna=False, sort=True).apply(_optimum, include_groups=False).reset_index()


def failures(frame: pd.DataFrame) -> pd.DataFrame:
    failed = frame[frame["status"] == "failed"]
    return failed[list(FAILURE_COLUMNS)].rename(columns=FAILURE_COLUMNS).assign(source=origins(failed))


# --- all tables ----------------------------------------------------------------------------------

def summarize(cfg: Config, frame: pd.DataFrame, raw_dir: Path, allow_mixed: bool
              ) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """All summary tables, in memory, and the mixed-provenance cells."""
    mixed = check_mixed(frame, raw_dir, allow_mixed)
    experiments = set(frame["experiment"])
    per_model = summarize_cells(cfg, frame, SUMMARY_METRICS, mixed, maxima=True)
    sequence = frame[frame["experiment"].isin(sweep_experiments(cfg, "n_predict", experiments))]
    sweep = per_model[per_model["experiment"].isin(sweep_experiments(cfg, "threads", experiments))]
    frames = {
        "per_model_summary": per_model,
        "sequence_length_summary": summarize_cells(cfg, sequence, SEQUENCE_METRICS, mixed, ("prompt_length_class",)),
        "cpu_thread_sweep_summary": sweep,
        "thread_optimum_summary": thread_optimum(sweep),
        "failures": failures(frame),
        "axes_summary": axes_table(cfg, frame, per_model),
        "roofline_summary": roofline_table(cfg, frame, per_model),
        "warmup_summary": warmup_table(frame),
        "spread_summary": spread_table(cfg, frame),
    }
    return frames, mixed


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """The frame as CSV (missing values empty), written whole or not at all."""
    return write_atomic(path, frame.to_csv(index=False, lineterminator="\n"))


def analyze(cfg: Config, raw_dir: Path, output_dir: Path, allow_mixed: bool = False) -> AnalysisResult:
    """raw_dir/*.jsonl -> output_dir/benchmark_results.csv and output_dir/summary_tables/*.csv."""
    raw_dir, output_dir = Path(raw_dir), Path(output_dir)
    files, records = load_records(raw_dir)
    frame = to_frame(records)
    frames, mixed = summarize(cfg, frame, raw_dir, allow_mixed)
    result = AnalysisResult(raw_dir=raw_dir, output_dir=output_dir, files=files, records=records, frame=frame,
                            frames=frames, allow_mixed=allow_mixed,
                            mixed_cells=[key_label(tuple(r[f] for f in GROUP_FIELDS)) for r in rows_of(mixed)])
    result.paths["benchmark_results"] = write_csv(output_dir / "benchmark_results.csv", frame)
    for name, table in frames.items():
        result.paths[name] = write_csv(output_dir / "summary_tables" / f"{name}.csv", table)
    return result
