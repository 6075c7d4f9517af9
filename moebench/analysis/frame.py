"""JSONL records -> one long pandas DataFrame, one row per record: the table every summary is a group-by of.

Columns are the record's scalars, its knobs, its failure, its provenance (prefixed `prov_`), its null
reasons (JSON text) and where it came from (`source_file`, relative to the raw directory, and
`source_line`; `fleet_host`, the first subfolder of the raw directory, where `invoke fleet.reproduce`
puts each host's records); `measured` says whether it counts in statistics (status ok and not a
warm-up). The frame is written as-is to results/benchmark_results.csv.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from moebench.errors import UserError
from moebench.run.records import (E2E_FIELDS, MEASUREMENT_FIELDS, TOKEN_FIELDS, RecordError, is_records_file,
                                  validate_record)

GROUP_FIELDS = ("experiment", "device", "model_id", "model_source", "replica_scale", "runner_mode", "threads",
                "n_predict")
CONTEXT_FIELDS = tuple(f for f in GROUP_FIELDS if f != "model_id")
# Two records are a pair across models (or runs) when their context and these match (measured_pairs).
PAIR_FIELDS = ("prompt_id", "repetition", "occurrence")
PINNED_FIELDS = ("binary_sha256", "llama_cpp_commit", "model_sha256")
KNOBS = ("threads", "n_predict", "ctx_size", "batch_size", "ubatch_size", "n_gpu_layers", "seed", "temperature",
         "ignore_eos")
PROVENANCE_COLUMNS = ("binary_sha256", "binary_name", "llama_cpp_commit", "llama_cpp_pin", "source_tree_hash",
                      "source_channel", "compiler", "toolchain_id", "image_digest", "power_mode", "model_sha256",
                      "model_path", "kit_commit", "kit_dirty", "verified", "allow_unverified", "started_at")
HOST_COLUMNS = ("cpu_model", "physical_cores", "logical_cores", "ram_bytes", "os", "machine")
# integers in schema/record-v1.json and in the knobs: nullable Int64, so a missing value stays empty
# in the CSV instead of turning the column into floats
INTEGER_COLUMNS = ("repetition", "threads", "n_predict", "ctx_size", "batch_size", "ubatch_size", "n_gpu_layers",
                   "seed", "prompt_tokens", "gen_tokens", "peak_rss_bytes", "model_file_bytes", "failure_exit_code",
                   "failure_signal", "prov_host_physical_cores", "prov_host_logical_cores", "prov_host_ram_bytes",
                   "source_line", "order_seed", "order_position")
FLOAT_COLUMNS = tuple(f for f in MEASUREMENT_FIELDS if f not in INTEGER_COLUMNS) + E2E_FIELDS + (
    "temperature", "prov_host_memory_bandwidth_gb_per_s")


@dataclass(frozen=True)
class Loaded:
    record: dict[str, Any]
    path: Path
    line: int
    source: str = ""  # the path relative to the raw directory

    @property
    def origin(self) -> str:
        return f"{self.source or self.path.name}:{self.line}"

    @property
    def fleet_host(self) -> str | None:
        parts = Path(self.source).parts
        return parts[0] if len(parts) > 1 else None


def is_measured(record: dict[str, Any]) -> bool:
    return record["status"] == "ok" and not record["is_warmup"]


# --- loading -----------------------------------------------------------------------------------

def load_records(raw_dir: Path) -> tuple[list[Path], list[Loaded]]:
    """Every record of raw_dir/*.jsonl and of raw_dir/<subfolders>/run_*.jsonl (a fleet's hosts),
    schema-validated; any bad line is an error naming file and line."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(raw_dir, "raw data directory does not exist", "give --raw-dir the folder of run_*.jsonl files")
    relative = {path: path.relative_to(raw_dir).as_posix() for path in raw_dir.rglob("*.jsonl")}
    files = sorted((path for path, name in relative.items() if is_records_file(name)),
                   key=lambda path: ("/" in relative[path], path))  # the top's files first
    loaded: list[Loaded] = []
    for path in files:
        loaded += _load_file(path, path.relative_to(raw_dir).as_posix())
    if not loaded:
        raise UserError(raw_dir, "no records (*.jsonl files with at least one line)",
                        "run an experiment first (invoke run) or point --raw-dir at its output")
    return files, loaded


def _load_file(path: Path, source: str) -> list[Loaded]:
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
            out.append(Loaded(record, path, number, source))
    return out


# --- the frame ---------------------------------------------------------------------------------

def record_row(item: Loaded) -> dict[str, Any]:
    """One row: scalars, knobs, failure, provenance and null reasons, flat."""
    rec = item.record
    row: dict[str, Any] = {name: rec[name] for name in (
        "record_id", "run_id", "cell_key", "experiment", "device", "model_id", "model_source", "replica_scale",
        "prompt_id", "prompt_length_class", "repetition", "is_warmup", "runner_mode", "status", "started_at")}
    row["measured"] = is_measured(rec)
    row.update({knob: rec["knobs"][knob] for knob in KNOBS})
    row.update({name: rec[name] for name in MEASUREMENT_FIELDS})
    # end-to-end rates: shown beside the study's, never used by a statistic (absent in older records)
    row.update({name: rec.get(name) for name in E2E_FIELDS})
    row.update({name: rec.get(name) for name in TOKEN_FIELDS})  # token fingerprints (absent in older records)
    order = rec.get("order") or {}
    row.update({"order_mode": order.get("mode"), "order_seed": order.get("seed"), "order_position": order.get("position")})
    failure = rec["failure"] or {}
    row.update({f"failure_{name}": failure.get(name) for name in ("reason", "message", "exit_code", "signal")})
    prov = rec["provenance"]
    row.update({f"prov_{name}": prov.get(name) for name in PROVENANCE_COLUMNS})
    row["prov_build_flags"] = " ".join(prov["build_flags"]) if prov.get("build_flags") else None
    host = prov.get("host") or {}
    row.update({f"prov_host_{name}": host.get(name) for name in HOST_COLUMNS})
    bandwidth = host.get("memory_bandwidth") or {}
    row["prov_host_memory_bandwidth_gb_per_s"] = bandwidth.get("gb_per_s")
    row["prov_host_memory_bandwidth_method"] = bandwidth.get("method")
    row["prov_gpu_name"] = (prov.get("gpu") or {}).get("name")
    row["prov_null_reasons"] = json.dumps(prov.get("null_reasons") or {}, sort_keys=True)
    row["null_reasons"] = json.dumps(rec["null_reasons"], sort_keys=True)
    row["source_file"] = item.source or item.path.name
    row["source_line"] = item.line
    row["fleet_host"] = item.fleet_host
    row["machine"], row["machine_basis"] = machine_of(rec)
    row["machine_kind"] = machine_kind(rec)
    return row


def machine_of(record: dict[str, Any]) -> tuple[str, str]:
    """The replicate unit a record belongs to (spread.py separates within- from between-unit spread):
    one boot of one machine where the record names them, else its run."""
    host = record["provenance"].get("host") or {}
    if host.get("host_id") and host.get("boot_id"):
        return f"{host['host_id']}/{host['boot_id'][:8]}", "host"
    return record["run_id"], "run"


def machine_kind(record: dict[str, Any]) -> str:
    """What kind of machine made a record: its GPU where it used one, on its CPU. Machines are replicates
    of one another only within a kind: an H100 host and an H200 host running the same binary are two
    configurations, whose difference is not the spread between machines of either."""
    prov = record["provenance"]
    cpu = (prov.get("host") or {}).get("cpu_model") or "CPU not recorded"
    gpu = (prov.get("gpu") or {}).get("name")
    return f"{gpu} on {cpu}" if gpu else cpu


def to_frame(records: list[Loaded]) -> pd.DataFrame:
    """The long frame of `records`, in load order (file name, then line)."""
    frame = pd.DataFrame([record_row(item) for item in records], dtype=object)
    return frame.astype({name: "Int64" for name in INTEGER_COLUMNS} | {name: "float64" for name in FLOAT_COLUMNS}
                        | {"is_warmup": bool, "measured": bool})


def origins(frame: pd.DataFrame) -> pd.Series:
    """`file:line` of each row. Both sides as str: pandas 3.0 refuses to add its str dtype to an
    object column, which an empty selection (no failures) has."""
    return frame["source_file"].astype(str) + ":" + frame["source_line"].astype(str)


def measured_pairs(frame: pd.DataFrame, metrics: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Measured rows with the columns that pair them: GROUP_FIELDS, PAIR_FIELDS and `metrics`.

    `occurrence` numbers the records of one cell, prompt and repetition in the order they ran: 0
    unless runs were pooled (--allow-mixed, or a run repeated into the same folder), whose records
    then pair in that order instead of every one with every other."""
    measured = frame[frame["measured"]].sort_values(["started_at", "source_file", "source_line"], kind="stable")
    occurrence = measured.groupby([*GROUP_FIELDS, "prompt_id", "repetition"], dropna=False, sort=False).cumcount()
    return measured.assign(occurrence=occurrence)[[*GROUP_FIELDS, *PAIR_FIELDS, *metrics]]


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as a list of dicts of Python values (no numpy scalars), missing values as None."""
    plain = frame.astype(object).where(frame.notna(), None)
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
            for row in plain.to_dict("records")]


def key_label(key: tuple[Any, ...], fields: tuple[str, ...] = GROUP_FIELDS) -> str:
    shown = (None if isinstance(v, float) and v != v else v for v in key)  # NaN: a missing key value
    return "(" + ", ".join(f"{f}={v}" for f, v in zip(fields, shown)) + ")"


def null_note(cell: pd.DataFrame, metric: str) -> str | None:
    """Why a cell has no value (or fewer values) of `metric`: its failures or its records' null reasons."""
    measured = cell[cell["measured"]]
    if measured.empty:
        failed = cell[(cell["status"] == "failed") & ~cell["is_warmup"]]
        reasons = sorted(set(failed["failure_reason"].dropna()))
        return f"no successful measured records ({len(failed)} failed: {', '.join(reasons) or 'none run'})"
    missing = measured.loc[measured[metric].isna(), "null_reasons"]
    reasons = sorted({json.loads(text).get(metric, "null without a reason") for text in missing})
    return " | ".join(reasons) or None
