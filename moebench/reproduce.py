"""`invoke reproduce`: every stage in order, in one resumable command.

build (then the source pins lock.yaml has null are recorded) -> models -> verify -> run (each
experiment the device lists) -> analyze -> figures -> report.
Which run files belong to this reproduction is kept in a small state file next to the raw data, so a
second invocation resumes the same JSONL files instead of starting new ones: after an interruption
it runs the cells still missing, after a complete reproduction none (it re-analyzes and re-reports), so
a repeated command never records a cell twice. A fresh reproduction takes a new --raw-dir.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from moebench.config import Config, load_config
from moebench.errors import IntegrityError, OutputWriteError, describe_os_error, is_write_error
from moebench.files import write_atomic
from moebench.run.experiment import output_path, run_experiment, utc_stamp


@dataclass
class StageTimes:
    rows: list[tuple[str, float, str]] = field(default_factory=list)

    def timed(self, name: str, fn, *args, **kwargs):
        print(f"== {name}", flush=True)
        start = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except OSError as exc:
            if not is_write_error(exc):
                raise
            raise OutputWriteError(exc.filename or name, f"the {name} stage could not write "
                                   f"({describe_os_error(exc)})", "free space or make it writable, then run the same "
                                   "command again: finished stages are not repeated") from None
        self.rows.append((name, time.monotonic() - start, ""))
        return result

    def note(self, text: str) -> None:
        name, seconds, _ = self.rows[-1]
        self.rows[-1] = (name, seconds, text)

    def render(self) -> str:
        width = max(len(name) for name, _, _ in self.rows)
        lines = [f"{'stage':<{width}}  {'seconds':>8}  result", f"{'-' * width}  {'-' * 8}  ------"]
        lines += [f"{name:<{width}}  {seconds:8.1f}  {note}" for name, seconds, note in self.rows]
        total = sum(seconds for _, seconds, _ in self.rows)
        return "\n".join(lines + [f"{'total':<{width}}  {total:8.1f}"])


def _state_path(raw_dir: Path, device: str, smoke: bool, models_source: str, scale: str) -> Path:
    variant = f"{device}_{models_source}-{scale}{'_smoke' if smoke else ''}"
    return raw_dir / f".reproduce_{variant}.json"


def _run_outputs(state_file: Path, device: str, experiments: tuple[str, ...]) -> dict[str, Path]:
    """Output file per experiment: the recorded reproduction's if there is one, else new ones."""
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        if set(state["outputs"]) == set(experiments):
            print(f"resuming the {'complete' if state.get('complete') else 'unfinished'} reproduction recorded in "
                  f"{state_file} (recorded cells are skipped)")
            return {name: Path(path) for name, path in state["outputs"].items()}
    stamp = utc_stamp()
    outputs = {name: output_path(state_file.parent, stamp, device, name) for name in experiments}
    _write_state(state_file, outputs, complete=False)
    return outputs


def _write_state(state_file: Path, outputs: dict[str, Path], complete: bool) -> None:
    """Written whole or not at all: a torn state file would start a second reproduction."""
    try:
        write_atomic(state_file, json.dumps({"outputs": {k: str(v) for k, v in outputs.items()}, "complete": complete},
                                            indent=2))
    except OSError as exc:
        if not is_write_error(exc):
            raise
        raise OutputWriteError(state_file, f"cannot record the reproduction's state ({describe_os_error(exc)})",
                               "free space or make --raw-dir writable, then run the same command again") from None


# Every pin runs the same replica files: the lock's `replicas.<scale>/offline`, written by the offline pin's
# gguf-py and llama-quantize, so two pins' runs differ in llama.cpp alone, never in their model files.
REPLICA_PIN = "offline"


def replica_quantizer(cfg: Config, device: str, pin: str, scale: str) -> str | None:
    """The device whose offline build must be made first to write missing replicas: none when every
    replica is there and pinned, or when this run's own build is the offline pin's; else the portable cpu
    build (a GPU build of another pin has no offline llama-quantize)."""
    from moebench.models.replica import stale_replicas

    if pin == REPLICA_PIN or not stale_replicas(cfg, scale, REPLICA_PIN):
        return None
    return "cpu"


def replica_jobs() -> int:
    """Replicas written at once: one per four cores (each runs llama-quantize on every core), at least one."""
    return max(1, (os.cpu_count() or 1) // 4)


def reproduce(cfg: Config, device: str, *, smoke: bool, pin: str, models_source: str | None,
              replica_scale: str, raw_dir: Path, output_dir: Path) -> StageTimes:
    from moebench.verify import record as pins
    from moebench.pins.build import build
    from moebench.models.download import download_models
    from moebench.models.replica import make_replicas
    from moebench.verify.hashes import verify_and_report

    dev = cfg.device(device)
    source = models_source or ("replica" if dev.backend == "cpu" else "real")
    stages = StageTimes()

    manifest = stages.timed("build", build, cfg, device, pin)
    stages.note(f"{len(manifest['binaries'])} binaries, {manifest['toolchain_id']}")
    recorded = pins.record_source_pins(cfg, manifest)
    for line in recorded:
        print(line)
    if recorded:
        cfg = load_config(cfg.root)  # the stages below check against the pins just recorded
    if source == "replica":
        quantizer = replica_quantizer(cfg, device, pin, replica_scale)
        if quantizer is not None:
            built = stages.timed(f"build {quantizer}-{REPLICA_PIN} (its llama-quantize writes the replicas)", build,
                                 cfg, quantizer, REPLICA_PIN)
            stages.note(f"{len(built['binaries'])} binaries, {built['toolchain_id']}")
        models = stages.timed("models", make_replicas, cfg, replica_scale, pin=REPLICA_PIN,
                              device=quantizer or device, jobs=replica_jobs())
        stages.note(f"{len(models)} {replica_scale} replicas")
    else:
        models = stages.timed("models", download_models, cfg, None)
        stages.note(f"{len(models)} real models")
    if not stages.timed("verify", verify_and_report, cfg, device, pin, f"replica-{replica_scale}" if source == "replica" else "real"):
        raise IntegrityError("invoke verify", "a source, binary or model hash does not match its pin",
                             "see the table above; rebuild (invoke build) or re-fetch the named file")
    stages.note("all hashes match")

    state_file = _state_path(raw_dir, device, smoke, source, replica_scale)
    outputs = _run_outputs(state_file, device, dev.experiments)
    for experiment, output in outputs.items():
        summary = stages.timed(f"run {experiment}", run_experiment, cfg, device, experiment, output,
                               smoke=smoke, only_models=None, threads_override=None, resume=output.exists(),
                               allow_unverified=False, models_source=source, replica_scale=replica_scale, pin=pin)
        stages.note(summary.describe())
        if summary.interrupted:
            print(stages.render())
            print(f"interrupted: run the same command again to resume ({state_file})")
            return stages
    _write_state(state_file, outputs, complete=True)

    report_records(cfg, raw_dir, output_dir, stages=stages)
    print(stages.render())
    return stages


def report_records(cfg: Config, raw_dir: Path, output_dir: Path, *, allow_mixed: bool = False,
                   stages: StageTimes | None = None) -> StageTimes:
    """The last three stages of a reproduction, on records made here or brought from another host:
    analyze -> figures -> REPORT.md, each timed."""
    from moebench.analysis.tables import analyze
    from moebench.analysis.figures import render_figures
    from moebench.analysis.report import write_report

    stages = stages or StageTimes()
    analysis = stages.timed("analyze", analyze, cfg, raw_dir, output_dir, allow_mixed)
    stages.note(analysis.describe())
    figures = stages.timed("figures", render_figures, output_dir / "summary_tables", output_dir / "figures",
                           output_dir / "figures_pub")
    stages.note(f"{len(figures)} files")
    report = stages.timed("report", write_report, cfg, analysis, output_dir)
    stages.note(str(report))
    return stages
