"""Records: validation against schema/record-v1.json, the null-reason rule, and the JSONL writer.

A record is written only after it validates; each one is a single append of one line, flushed and
fsynced, so a crash loses at most the cell in flight and never leaves a half-valid file. The output
is guarded by an exclusive lock on `<output>.lock` so two runs cannot interleave lines. A write the
disk refuses (full, read-only, I/O error) is cut back to the last whole record where the disk allows
it, else the torn tail is dropped at the next --resume; either way an OutputWriteError says how many
records the file holds.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from moebench.errors import OutputWriteError, UserError, describe_os_error, is_write_error

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "record-v1.json"

MEASUREMENT_FIELDS = (
    "prompt_tokens", "prefill_ms", "prefill_tokens_per_s", "gen_tokens", "gen_ms", "gen_tokens_per_s",
    "ttft_ms", "load_ms", "wall_ms", "peak_rss_bytes", "cpu_percent_mean", "cpu_percent_peak",
    "model_file_bytes", "energy_joules", "joules_per_token", "power_w_mean", "peak_temp_c",
    "gpu_util_percent_mean", "router_routing_ms", "router_expert_ffn_ms",
)
# What a runner's user sees end to end (sampling and serving included), beside the study's rates;
# absent in records made before they existed, so checked only where present.
E2E_FIELDS = ("e2e_prefill_ms", "e2e_prefill_tokens_per_s", "e2e_gen_ms", "e2e_gen_tokens_per_s")
# The token fingerprints (prompt ids, decoded generated ids): absent in records made before them.
TOKEN_FIELDS = ("prompt_tokens_sha256", "gen_tokens_sha256")
PROVENANCE_OPTIONAL = (
    "binary_sha256", "binary_name", "llama_cpp_commit", "llama_cpp_pin", "source_tree_hash", "source_channel",
    "compiler", "build_flags", "toolchain_id", "image_digest", "power_mode", "clocks", "model_sha256",
    "model_path", "host", "kit_commit", "kit_dirty", "config_sha256",
)


class RecordError(ValueError):
    """A record the kit built is invalid: a bug, never written."""


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def null_reason_problems(record: dict[str, Any]) -> list[str]:
    """Null measurement or provenance fields that lack a reason."""
    problems = [f"{name} is null without null_reasons.{name}"
                for name in MEASUREMENT_FIELDS
                if record.get(name) is None and not record.get("null_reasons", {}).get(name)]
    problems += [f"{name} is null without null_reasons.{name}" for name in E2E_FIELDS + TOKEN_FIELDS
                 if name in record and record[name] is None and not record.get("null_reasons", {}).get(name)]
    provenance = record.get("provenance") or {}
    problems += [f"provenance.{name} is null without provenance.null_reasons.{name}"
                 for name in PROVENANCE_OPTIONAL
                 if provenance.get(name) is None and not provenance.get("null_reasons", {}).get(name)]
    return problems


def validate_record(record: dict[str, Any]) -> None:
    """Raise RecordError unless the record matches the schema and every null has its reason."""
    errors = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '<record>'}: {e.message}" for e in errors]
    problems += null_reason_problems(record)
    if problems:
        raise RecordError("invalid record: " + "; ".join(problems[:5]))


def is_records_file(relative: str) -> bool:
    """Whether the file at `relative` (a path below a raw directory, `/`-separated) holds records: any
    `*.jsonl` at the top and `run_*.jsonl` in subfolders, where `invoke fleet.reproduce` puts each host's
    runs beside other files. One rule for a raw directory on disk and for a bundle's `data/raw/`."""
    parts = relative.split("/")
    return parts[-1].endswith(".jsonl") and (len(parts) == 1 or parts[-1].startswith("run_"))


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record of a JSONL file; a torn last line (a crash mid-write) is skipped."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n") and line.strip():
                yield json.loads(line)


class RecordWriter:
    """Exclusive, append-only, fsynced JSONL writer with the resume index of the cells it holds."""

    def __init__(self, path: Path, resume: bool):
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self.saved = 0  # complete records in the file
        self._lock_fd: int | None = None
        self._fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._acquire_lock()
            self.done_keys = self._open_existing(resume)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fsync_dir(path.parent)
        except OSError as exc:
            self.close()
            if not is_write_error(exc):
                raise
            where = exc.filename or path
            raise OutputWriteError(where, f"cannot write the run's output ({describe_os_error(exc)}); "
                                   f"{_count_readable(path)} records are saved in {path}",
                                   "free space or make the output writable, or give another --output") from None
        except BaseException:
            self.close()
            raise

    def _acquire_lock(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(self.path, "another run is writing this output (its lock is held)",
                                "wait for it to finish, or give a different --output") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd

    def _open_existing(self, resume: bool) -> set[str]:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return set()
        if not resume:
            raise UserError(self.path, "output already holds records",
                            "use --resume to continue it, or give a different --output")
        self._drop_torn_tail()
        keys = [record["cell_key"] for record in read_records(self.path)]
        self.saved = len(keys)
        return set(keys)

    def _drop_torn_tail(self) -> None:
        """A line without its newline is a write the crash interrupted; it never validated as written."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
                os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        validate_record(record)
        line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(line)
            while view:  # a full disk takes part of the line, then refuses the rest
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            if not is_write_error(exc):
                raise
            torn = self._cut_back(size)
            raise OutputWriteError(self.path, f"writing record {self.saved + 1} failed ({describe_os_error(exc)}); "
                                   f"{self.saved} records are saved{torn}",
                                   "free space or make the output writable") from None
        self.saved += 1
        self.done_keys.add(record["cell_key"])

    def _cut_back(self, size: int) -> str:
        """Drop the part of the failed line that reached the file; '' or why it is still there."""
        try:
            os.ftruncate(self._fd, size)
            os.fsync(self._fd)
            return ""
        except OSError:
            return " (the torn last line is dropped by --resume)"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _count_readable(path: Path) -> int:
    try:
        return sum(1 for _ in read_records(path))
    except (OSError, ValueError):
        return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
