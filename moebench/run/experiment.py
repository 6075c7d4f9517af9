"""Run one experiment matrix: plan -> engine (cli or server) -> monitors -> validated records.

Safety: records are validated before they are written and fsynced one by one; a crashed, killed,
timed-out or OOM-killed llama.cpp becomes a failure record and the matrix goes on; Ctrl-C or SIGTERM
(once or more) aborts the cell in flight, writes nothing for it and says how to resume; `resume`
skips recorded cells; a second run on the same output is refused by a lock. A full disk, a write
error or a read-only output stops the run with one line (the file, the records saved, the resume
command); a model file that changes during the run stops it the same way. No llama.cpp process
outlives the harness (children.py).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moebench.run import children, engines, plan as planning, provenance
from moebench.config import Config, Device
from moebench.errors import IntegrityError, OutputWriteError, UserError
from moebench.hashing import sha256_file
from moebench.run.monitors import create_monitors, merge_results
from moebench.paths import raw_dir
from moebench.run.records import RecordWriter, read_records

# Each device profile names its runner (devices.yaml `runner`, with the measurement that chose it);
# MOEBENCH_RUNNER overrides it, except on a *_patched device, whose patch instruments llama-cli.
PATCHED_RUNNER_MODE = "cli"
# Each rate of a record: (its token count, its timer). The study's rates are llama.cpp's counters;
# the e2e_* ones llama-server's slot timers.
RATES = {"prefill_tokens_per_s": ("prompt_tokens", "prefill_ms"), "gen_tokens_per_s": ("gen_tokens", "gen_ms"),
         "e2e_prefill_tokens_per_s": ("prompt_tokens", "e2e_prefill_ms"),
         "e2e_gen_tokens_per_s": ("gen_tokens", "e2e_gen_ms")}


@dataclass
class ModelRow:
    ok: int = 0
    failed: int = 0
    gen_tps: list[float] = field(default_factory=list)
    prefill_tps: list[float] = field(default_factory=list)
    peak_rss: list[int] = field(default_factory=list)


@dataclass
class RunSummary:
    output: Path
    runner_mode: str
    cells_total: int = 0
    cells_skipped: int = 0
    cells_written: int = 0
    interrupted: bool = False
    models: dict[str, ModelRow] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(row.failed for row in self.models.values())

    def describe(self) -> str:
        state = "interrupted" if self.interrupted else "complete"
        return (f"{self.cells_written} records written, {self.cells_skipped} resumed, {self.failed} failed, "
                f"{state} -> {self.output}")

    def add(self, record: dict[str, Any]) -> None:
        if record["is_warmup"]:
            return
        row = self.models.setdefault(record["model_id"], ModelRow())
        if record["status"] != "ok":
            row.failed += 1
            return
        row.ok += 1
        for values, name in ((row.gen_tps, "gen_tokens_per_s"), (row.prefill_tps, "prefill_tokens_per_s"),
                             (row.peak_rss, "peak_rss_bytes")):
            if record[name] is not None:
                values.append(record[name])

    def render(self) -> str:
        header = f"{'model':<34} {'ok':>4} {'failed':>6} {'gen tok/s':>10} {'prefill tok/s':>14} {'peak RSS MiB':>13}"
        lines = [header, "-" * len(header)]
        mean = lambda v: f"{statistics.fmean(v):.1f}" if v else "-"  # noqa: E731
        for model, row in self.models.items():
            rss = f"{max(row.peak_rss) / 2**20:.1f}" if row.peak_rss else "-"
            lines.append(f"{model:<34} {row.ok:>4} {row.failed:>6} {mean(row.gen_tps):>10} "
                         f"{mean(row.prefill_tps):>14} {rss:>13}")
        return "\n".join(lines)


def utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def output_path(directory: Path, stamp: str, device: str, experiment: str) -> Path:
    """The one naming of run files: `run_<UTC stamp>_<device>_<experiment>.jsonl`."""
    return directory / f"run_{stamp}_{device}_{experiment}.jsonl"


def default_output_path(device: str, experiment: str) -> Path:
    return output_path(raw_dir(), utc_stamp(), device, experiment)


# --- what to run: binaries, models, verification (each replaceable in tests) -----------------

def resolve_binary(device: str, pin: str, name: str) -> tuple[Path, dict[str, Any] | None, str | None]:
    """(binary path, build manifest or None, reason when there is no manifest)."""
    try:
        from moebench.pins.build import binary_path, load_manifest
    except ImportError as exc:
        raise UserError("moebench.pins.build", f"the build stage is not available ({exc})", "install the kit fully") from None
    path = Path(binary_path(device, pin, name))
    if not path.is_file():
        raise UserError(path, f"{name} is not built for device {device!r} pin {pin!r}",
                        f"run: invoke build --device {device} --pin {pin}")
    return path, load_manifest(device, pin), None


def resolve_model_path(cfg: Config, model_id: str, source: str, scale: str | None) -> Path:
    try:
        from moebench.models import registry  # type: ignore[attr-defined]
    except ImportError:
        registry = None
    if registry is not None and hasattr(registry, "resolve"):
        resolved = registry.resolve(cfg, model_id, source, scale)
        return Path(getattr(resolved, "path", resolved))
    if source == "replica":
        from moebench.models.replica import replica_dir, replica_filename
        return replica_dir(scale) / replica_filename(model_id)
    raise UserError("moebench.models", "no model registry to resolve real model paths",
                    "use --models replica, or install the kit fully")


def check_verified(cfg: Config, device: str, pin: str, models_source: str, scale: str | None,
                   model_ids: list[str] | None = None) -> tuple[bool, str | None]:
    """(verified, reason when not); only the models the run uses are hashed."""
    try:
        from moebench.verify.hashes import verify_and_report
    except ImportError as exc:
        return False, f"moebench.verify.hashes is not available ({exc})"
    models = f"replica-{scale}" if models_source == "replica" else "real"
    if verify_and_report(cfg, device, pin, models, model_ids):
        return True, None
    return False, "invoke verify reported a hash mismatch (see its table)"


# --- the run ------------------------------------------------------------------------------------

@dataclass
class _Context:
    cfg: Config
    device: str
    dev: Device  # the profile of `device`, resolved once at run_experiment's entry
    run_id: str
    runner_mode: str
    models_source: str
    replica_scale: str | None
    run_provenance: dict[str, Any]
    models: dict[str, tuple[Path | None, str | None, int | None, str | None]]
    router_overhead: bool = False  # a *_patched device: llama-cli times the router node by node
    resume_command: str = ""
    output: Path | None = None
    model_stats: dict[str, tuple[int, ...]] = field(default_factory=dict)
    order: dict[str, Any] = field(default_factory=lambda: {"mode": "fixed", "seed": None})
    positions: dict[str, int] = field(default_factory=dict)  # cell_key -> index in the planned order


def run_experiment(cfg: Config, device: str, experiment: str, output: Path, smoke: bool = False,
                   only_models: tuple[str, ...] | list[str] | None = None, threads_override: int | None = None,
                   resume: bool = False, allow_unverified: bool = False, models_source: str = "replica",
                   replica_scale: str | None = "tiny", pin: str | None = None,
                   runner_mode: str | None = None, order: str = "interleaved",
                   order_seed: int | None = None) -> RunSummary:
    """Run every cell of the plan into `output` (JSONL) in `order` (plan.py: `interleaved`, seeded by
    `order_seed` or a fresh seed, or `fixed`); a resumed run keeps the order and seed its records
    state. See the module doc for the guarantees."""
    dev = cfg.device(device)
    pin = pin or dev.default_pin
    cfg.pin(pin)
    mode = _runner_mode(dev, device, runner_mode)
    if models_source not in ("real", "replica"):
        raise UserError("--models", f"unknown model source {models_source!r}", "use real or replica")
    scale = replica_scale if models_source == "replica" else None
    order, order_seed = _planned_order(output, resume, order, order_seed)
    the_plan = planning.expand(cfg, dev, experiment, smoke=smoke, only_models=only_models,
                               threads_override=threads_override, order=order, seed=order_seed)
    binary_name = engines.BINARY_FOR_MODE[mode]
    binary, manifest, manifest_reason = resolve_binary(device, pin, binary_name)
    verified, verify_reason = check_verified(cfg, device, pin, models_source, scale,
                                             sorted({cell.model_id for cell in the_plan.cells}))
    if manifest is not None:
        listed = (manifest.get("binaries") or {}).get(binary_name, {}).get("sha256")
        if listed is not None and listed != sha256_file(binary):
            verified, verify_reason = False, f"{binary} does not match the SHA-256 its build manifest lists"
    if not verified and not allow_unverified:
        raise IntegrityError("invoke verify", verify_reason or "verification failed",
                             "rebuild or re-fetch what it names, or pass --allow-unverified (recorded in every record)")
    if not verified:
        print(f"warning: running unverified ({verify_reason}); every record says so", file=sys.stderr)

    summary = RunSummary(output=output, runner_mode=mode, cells_total=len(the_plan.cells))
    resume_command = _resume_command(device, experiment, output, smoke, only_models, threads_override,
                                     models_source, scale, pin, the_plan)
    if output.parent.is_dir():
        for line in children.stale_servers(output.parent):
            print(line, file=sys.stderr)
    with _Interrupt() as interrupt:
        try:
            with RecordWriter(output, resume=resume) as writer:
                _check_resume_matches(output, writer, device, experiment, models_source, scale)
                todo = [cell for cell in the_plan.cells if cell.cell_key not in writer.done_keys]
                summary.cells_skipped = len(the_plan.cells) - len(todo)
                if summary.cells_skipped:
                    for record in read_records(output):
                        summary.add(record)
                ctx = _Context(cfg=cfg, device=device, run_id=_run_id(device, experiment), runner_mode=mode,
                               models_source=models_source, replica_scale=scale,
                               dev=dev, run_provenance=provenance.collect_run_provenance(
                                   cfg, device=dev, pin=pin, manifest=manifest, manifest_reason=manifest_reason,
                                   binary_name=binary_name, binary_path=binary, command_line=list(sys.argv),
                                   allow_unverified=allow_unverified, verified=verified),
                               models={m: _model_file(cfg, m, models_source, scale) for m in dict.fromkeys(c.model_id for c in todo)},
                               router_overhead=dev.patched, resume_command=resume_command, output=output,
                               order={"mode": the_plan.order, "seed": the_plan.seed},
                               positions={c.cell_key: i for i, c in enumerate(the_plan.cells)})
                ctx.model_stats = {m: _stat_key(path) for m, (path, *_) in ctx.models.items() if path is not None}
                seeded = f", seed {the_plan.seed}" if the_plan.seed is not None else ""
                print(f"{experiment} on {device}: {len(todo)} cells to run ({summary.cells_skipped} already recorded), "
                      f"runner {mode}, order {the_plan.order}{seeded}, output {output}", flush=True)
                _run_cells(ctx, todo, writer, summary, binary, float(_timeout(cfg, experiment)), interrupt)
        except OutputWriteError as exc:
            raise OutputWriteError(exc.where, exc.problem, f"{exc.fix}, then resume: {resume_command}") from None
        print(summary.render())
        if summary.interrupted:
            print(f"interrupted: nothing partial was written. Resume with: {resume_command}", file=sys.stderr)
    return summary


def _planned_order(output: Path, resume: bool, order: str, seed: int | None) -> tuple[str, int | None]:
    """The order and seed to plan with: a resumed run's from its records (an explicit other one is
    refused: the cells left would run in another order than planned), else the ones asked for, with
    a fresh seed for an interleaved run that names none."""
    recorded = next((r.get("order") or {"mode": "fixed", "seed": None}
                     for r in (read_records(output) if resume and output.is_file() else ())), None)
    if recorded is not None:
        asked_seed = seed if seed is not None else recorded["seed"]
        if (order, asked_seed) != (recorded["mode"], recorded["seed"]):
            planned_seed = recorded["seed"]
            planned = recorded["mode"] + (f", seed {planned_seed}" if planned_seed is not None else "")
            flags = f"--order={recorded['mode']}" + (f" --order-seed={planned_seed}" if planned_seed is not None else "")
            raise UserError(output, f"its records were planned in order {planned}; this run asks for {order}"
                            + (f", seed {seed}" if seed is not None else ""),
                            f"resume with {flags}, or give a new --output")
        return recorded["mode"], recorded["seed"]
    if order == "interleaved" and seed is None:
        seed = secrets.randbelow(2**31)
    return order, seed


def _resume_command(device: str, experiment: str, output: Path, smoke: bool, only_models: Any,
                    threads_override: int | None, models_source: str, scale: str | None, pin: str,
                    the_plan: planning.Plan) -> str:
    """The `invoke run` that continues this run into the same output, in its planned order."""
    parts = ["invoke", "run", f"--device={device}", f"--experiment={experiment}", f"--pin={pin}",
             f"--models={models_source}", f"--order={the_plan.order}"]
    parts += [f"--order-seed={the_plan.seed}"] if the_plan.seed is not None else []
    parts += [f"--scale={scale}"] if scale else []
    parts += ["--smoke"] if smoke else []
    parts += [f"--only-models={','.join(only_models)}"] if only_models else []
    parts += [f"--threads-override={threads_override}"] if threads_override else []
    return " ".join(parts + ["--resume", f"--output={output}"])


def _stat_key(path: Path) -> tuple[int, ...]:
    """What changes when a file is replaced or rewritten in place (its hash is taken once, at the start)."""
    st = path.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _check_model_unchanged(ctx: _Context, model_id: str, saved: int) -> None:
    path, sha, _, _ = ctx.models[model_id]
    if path is None:
        return
    try:
        now = _stat_key(path)
    except OSError:
        now = ()
    if now != ctx.model_stats.get(model_id):
        raise IntegrityError(path, f"the model file changed during the run (it hashed to {sha} when the run started); "
                             f"the run stopped before its next cell, {saved} records are saved in {ctx.output}",
                             f"put the pinned file back (invoke verify checks it), then resume: {ctx.resume_command}")


def _runner_mode(dev: Any, device: str, requested: str | None) -> str:
    """cli or server; a *_patched device runs the cli runner, as its patch instruments llama-cli only."""
    mode = requested or os.environ.get("MOEBENCH_RUNNER") or dev.runner
    if mode not in engines.ENGINES:
        raise UserError("MOEBENCH_RUNNER", f"unknown runner {mode!r}", f"use one of: {', '.join(engines.ENGINES)}")
    if dev.patched and mode != PATCHED_RUNNER_MODE:
        raise UserError("MOEBENCH_RUNNER", f"device {device!r} measures router overhead with its patched llama-cli "
                        f"({', '.join(dev.patches.values())}); the {mode} runner would not run it",
                        "unset MOEBENCH_RUNNER or set it to cli")
    return mode


def _timeout(cfg: Config, experiment: str) -> float:
    return float(cfg.experiment(experiment).generation.get("timeout_s", cfg.experiments.generation.timeout_s))


def _run_id(device: str, experiment: str) -> str:
    return f"{utc_stamp()}-{device}-{experiment}-{secrets.token_hex(3)}"


def _check_resume_matches(output: Path, writer: RecordWriter, device: str, experiment: str,
                          models_source: str, scale: str | None) -> None:
    if not writer.done_keys:
        return
    for record in read_records(output):
        seen = (record["device"], record["experiment"], record["model_source"], record["replica_scale"])
        if seen != (device, experiment, models_source, scale):
            raise UserError(output, f"it holds records of {seen}, this run is {(device, experiment, models_source, scale)}",
                            "resume with the same --device/--experiment/--models/--scale, or give a new --output")
        return


def _model_file(cfg: Config, model_id: str, source: str, scale: str | None
                ) -> tuple[Path | None, str | None, int | None, str | None]:
    """(path, sha256 of the bytes used, size, reason when missing); a missing file fails its cells, not the run."""
    path = resolve_model_path(cfg, model_id, source, scale)
    if not path.is_file():
        hint = f"invoke models.replica --scale {scale}" if source == "replica" else "invoke models.download"
        return None, None, None, f"model file {path} does not exist (run: {hint})"
    return path, sha256_file(path), path.stat().st_size, None


class _Interrupt:
    """SIGINT/SIGTERM abort the cell in flight; the loop then stops without writing it. The handlers
    stay in place until the engine has stopped its children and the summary is printed, so a second
    Ctrl-C during that cleanup changes nothing; after an interrupted run they stay for good: the
    process is on its way out, and a Ctrl-C pressed twice must not end it in a traceback."""

    def __init__(self) -> None:
        self.engine: engines.Engine | None = None
        self.hit = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupt":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.hit = True
        if self.engine is not None:
            self.engine.abort()

    def __exit__(self, *exc: object) -> None:
        if self.hit:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _run_cells(ctx: _Context, todo: list[planning.Cell], writer: RecordWriter, summary: RunSummary,
               binary: Path, timeout_s: float, interrupt: _Interrupt) -> None:
    monitors = create_monitors(ctx.dev.monitors)
    with tempfile.TemporaryDirectory(prefix="moebench-run-") as work:
        engine = engines.ENGINES[ctx.runner_mode](binary, Path(work), timeout_s, env=ctx.dev.env)
        engine.pid_file = children.pid_file_for(writer.path)
        interrupt.engine = engine
        started = time.monotonic()
        try:
            for index, cell in enumerate(todo, 1):
                if interrupt.hit:
                    break
                _check_model_unchanged(ctx, cell.model_id, writer.saved)
                record = _run_one(ctx, engine, monitors, cell)
                if record is None or interrupt.hit:
                    break
                writer.append(record)
                summary.cells_written += 1
                summary.add(record)
                _progress(index, len(todo), started, record)
            summary.interrupted = interrupt.hit
        finally:
            engine.close()
            interrupt.engine = None
            for monitor in monitors:
                monitor.close()


def _progress(index: int, total: int, started: float, record: dict[str, Any]) -> None:
    elapsed = time.monotonic() - started
    eta = elapsed / index * (total - index)
    status = record["status"] if record["failure"] is None else f"FAILED {record['failure']['reason']}"
    rate = f"{record['gen_tokens_per_s']:.1f} tok/s" if record["gen_tokens_per_s"] is not None else "-"
    warm = " (warm-up)" if record["is_warmup"] else ""
    print(f"[{index}/{total}] {record['model_id']} {record['prompt_id']} rep {record['repetition']}{warm} "
          f"t={record['knobs']['threads']} n={record['knobs']['n_predict']}: {status}, {rate}, "
          f"ETA {eta / 60:.1f} min", flush=True)


def _run_one(ctx: _Context, engine: engines.Engine, monitors: list[Any], cell: planning.Cell) -> dict[str, Any] | None:
    model_path, model_sha, model_bytes, model_reason = ctx.models[cell.model_id]
    started_at = provenance.utc_now()
    prompt = ctx.cfg.prompt(cell.prompt_id).text.rstrip("\n")  # llama-cli -f drops a trailing newline
    if model_path is None:
        outcome = engines.Outcome(failure=engines.failure("load_failed", model_reason or "model missing"))
        results = {m.name: m.unavailable("the cell did not start: model file missing") for m in monitors}
    else:
        started: list[bool] = []
        hooks = engines.MonitorHooks(start=lambda pid: started.append(True) or [m.start(pid) for m in monitors],
                                     stop=lambda: [m.stop() for m in monitors])
        outcome = engine.run_cell(cell, model_path, prompt, hooks)
        if outcome.interrupted:
            return None
        results = ({m.name: m.result() for m in monitors} if started else
                   {m.name: m.unavailable("the cell never reached llama.cpp (see failure)") for m in monitors})
    return build_record(ctx, cell, outcome, results, started_at, model_path, model_sha, model_bytes, model_reason)


def build_record(ctx: _Context, cell: planning.Cell, outcome: engines.Outcome, results: dict[str, Any],
                 started_at: str, model_path: Path | None, model_sha: str | None, model_bytes: int | None,
                 model_reason: str | None) -> dict[str, Any]:
    fields, reasons = merge_results(results, ctx.device)
    measured = dict(outcome.measured)
    reasons.update(outcome.null_reasons)
    failed_reason = (f"cell failed ({outcome.failure['reason']}): {outcome.failure['message']}"
                     if outcome.failure else None)
    for name in ("prompt_tokens", "prefill_ms", "gen_tokens", "gen_ms", "load_ms", "wall_ms", "ttft_ms",
                 "e2e_prefill_ms", "e2e_gen_ms", *engines.TOKEN_FIELDS):
        measured.setdefault(name, None)
        if measured[name] is None and name not in reasons:
            reasons[name] = failed_reason or f"{ctx.runner_mode} runner did not report {name}"
    rates = {name: _rate(measured[count], measured[timer]) for name, (count, timer) in RATES.items()}
    for name, value in rates.items():
        if value is None:
            reasons.setdefault(name, reasons.get(RATES[name][1]) or failed_reason
                               or "its token count or time is missing or zero")
    energy = fields.get("energy_joules")
    gen_tokens = measured["gen_tokens"]
    joules_per_token = round(energy / gen_tokens, 6) if energy is not None and gen_tokens else None
    if joules_per_token is None:
        reasons["joules_per_token"] = (reasons.get("energy_joules") and f"no energy: {reasons['energy_joules']}") \
            or failed_reason or "no generated tokens"
    if model_bytes is None:
        reasons["model_file_bytes"] = model_reason or "model file missing"
    for name in ("router_routing_ms", "router_expert_ffn_ms"):
        measured.setdefault(name, None)
        if measured[name] is None and name not in reasons:
            reasons[name] = failed_reason or (
                "the patched llama-cli printed no router_overhead line" if ctx.router_overhead else
                "only the *_patched devices measure router overhead; this binary is unpatched")
    failure = outcome.failure
    monitors_obj = {name: result.as_dict() for name, result in results.items()}
    monitors_obj["engine"] = outcome.details
    record = {
        "schema_version": 1,
        "record_id": hashlib.sha256(f"{ctx.run_id}|{cell.cell_key}|{started_at}".encode()).hexdigest()[:16],
        "run_id": ctx.run_id,
        "cell_key": cell.cell_key,
        "experiment": cell.experiment,
        "device": ctx.device,
        "model_id": cell.model_id,
        "model_source": ctx.models_source,
        "replica_scale": ctx.replica_scale,
        "prompt_id": cell.prompt_id,
        "prompt_length_class": cell.prompt_length_class,
        "repetition": cell.repetition,
        "is_warmup": cell.is_warmup,
        "order": {**ctx.order, "position": ctx.positions.get(cell.cell_key)},
        "runner_mode": ctx.runner_mode,
        "knobs": cell.knobs.as_dict(),
        "status": "failed" if failure else "ok",
        "failure": failure,
        "started_at": started_at,
        "provenance": provenance.for_model(ctx.run_provenance, model_path=model_path, model_sha256=model_sha,
                                           model_source=ctx.models_source, reason=model_reason,
                                           tokenizer=provenance.tokenizer_statement(
                                               ctx.cfg.models.models[cell.model_id], ctx.models_source)),
        "monitors": monitors_obj,
        **measured,
        **rates,
        **fields,
        "joules_per_token": joules_per_token,
        "model_file_bytes": model_bytes,
    }
    record["null_reasons"] = {name: reason for name, reason in reasons.items() if record.get(name) is None}
    return record


def _rate(tokens: int | None, ms: float | None) -> float | None:
    return round(tokens * 1000.0 / ms, 4) if tokens and ms else None
