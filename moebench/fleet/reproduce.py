"""`invoke fleet.*`: the kit on a lab's other machines (configs/fleet.yaml), over SSH with Fabric.

reproduce: for every host at once (one thread and one SSH connection each), sync the kit at this commit
(a git bundle of HEAD: tracked files only, never the working tree's other files), run scripts/bootstrap.sh
and `invoke reproduce --device <its device>` (`--in-image` where the host says so) there, output streamed
as `[host] line`, then fetch its records and build manifest into <raw-dir>/<host>/ and analyze them all
together. The host runs into its own folder, data/raw/fleet-<commit> (results/fleet-<commit>), so a repeated
command resumes that reproduction there. A host that fails (unreachable, authentication refused, a
failed step) is reported in the final table with its reason; the others finish, and their records are
fetched and analyzed. `invoke fleet.status` and `fleet.verify` live in moebench.fleet.inspect.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, TextIO

from moebench.config import REPO_ROOT, Config, Fleet, FleetHost
from moebench.errors import ConfigError
from moebench.fleet.host import Host, HostFailure, Snapshot, snapshot

DASH = "—"


@dataclass
class HostOutcome:
    name: str
    device: str
    step: str = "connect"
    error: str | None = None
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)

    def begin(self, step: str) -> None:
        """Close the step under way (its seconds) and start `step`."""
        now = time.monotonic()
        self.step_seconds[self.step] = now - self._since
        self.step, self._since = step, now

    def __post_init__(self) -> None:
        self._since = time.monotonic()

    def timings(self) -> str:
        return ", ".join(f"{step} {seconds:.1f}" for step, seconds in self.step_seconds.items())

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FleetRun:
    commit: str
    outcomes: list[HostOutcome]
    analysis: Any = None
    report: Path | None = None

    @property
    def failed(self) -> list[HostOutcome]:
        return [o for o in self.outcomes if not o.ok]


def render_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(DASH if v is None else v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    return "\n".join(lines + ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells])


def select(fleet: Fleet, names: tuple[str, ...], fleet_file: Path | None) -> dict[str, FleetHost]:
    unknown = [n for n in names if n not in fleet.hosts]
    if unknown:
        raise ConfigError(fleet_file or "configs/fleet.yaml", f"no host {unknown[0]!r}",
                          f"use one of: {', '.join(fleet.hosts)}", key="hosts")
    return {n: fleet.hosts[n] for n in (names or tuple(fleet.hosts))}


def each_host(hosts: dict[str, FleetHost], work: Callable[[str, FleetHost], Any]) -> list[Any]:
    """`work(name, spec)` for every host at once, results in fleet.yaml's order."""
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        futures = [pool.submit(work, name, spec) for name, spec in hosts.items()]
        return [f.result() for f in futures]


# --- reproduce --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    smoke: bool
    pin: str | None
    models: str | None
    scale: str

    def remote_dirs(self, commit: str) -> tuple[str, str]:
        return f"data/raw/fleet-{commit[:12]}", f"results/fleet-{commit[:12]}"

    def reproduce_args(self, spec: FleetHost, commit: str) -> list[str]:
        raw, results = self.remote_dirs(commit)
        args = [".venv/bin/invoke", "reproduce", "--device", spec.device, "--scale", self.scale,
                "--raw-dir", raw, "--output-dir", results]
        args += ["--smoke"] if self.smoke else []
        args += ["--pin", self.pin] if self.pin else []
        args += ["--models", self.models] if self.models else []
        return args + (["--in-image"] if spec.in_image else [])


def reproduce_host(cfg: Config, name: str, spec: FleetHost, snap: Snapshot, options: Options, raw_dir: Path,
                   sink: TextIO, lock: threading.Lock) -> HostOutcome:
    outcome = HostOutcome(name, spec.device)
    started = time.monotonic()
    local = raw_dir / name
    local.mkdir(parents=True, exist_ok=True)
    with open(local / "fleet.log", "a", encoding="utf-8") as log, Host(name, spec, sink, log, lock) as host:
        host.out.line(f"== fleet.reproduce of kit commit {snap.commit} at "
                      f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        try:
            host.open()
            outcome.begin("sync")
            host.sync(snap)
            outcome.begin("bootstrap")
            host.run("bootstrap", ["scripts/bootstrap.sh"])
            outcome.begin("reproduce")
            try:
                host.run("reproduce", options.reproduce_args(spec, snap.commit))
            except HostFailure:
                bring_home(cfg, host, spec, options, snap.commit, local, outcome, quietly=True)
                raise
            outcome.begin("fetch")
            bring_home(cfg, host, spec, options, snap.commit, local, outcome)
            outcome.begin("done")
        except HostFailure as exc:
            outcome.step, outcome.error = exc.step, exc.reason
        except Exception as exc:  # noqa: BLE001 - one host's failure never stops the others
            outcome.error = f"{type(exc).__name__}: {exc}"
        if outcome.error:
            host.out.line(f"failed at {outcome.step}: {outcome.error}")
    outcome.seconds = time.monotonic() - started
    return outcome


def bring_home(cfg: Config, host: Host, spec: FleetHost, options: Options, commit: str, local: Path,
               outcome: HostOutcome, quietly: bool = False) -> None:
    """Fetch the host's records and build manifest; `quietly` after a failed run, whose own failure is the
    one to report (what it recorded, failure records included, still comes home)."""
    try:
        outcome.files = host.fetch(options.remote_dirs(commit)[0], "run_*.jsonl", local)
        outcome.manifest = fetch_manifest(cfg, host, spec, options, local)
    except Exception as exc:  # noqa: BLE001
        if not quietly:
            raise
        host.out.line(f"could not fetch what the failed run left: {exc}")


def fetch_manifest(cfg: Config, host: Host, spec: FleetHost, options: Options, local: Path) -> Path | None:
    pin = options.pin or cfg.device(spec.device).default_pin
    image = cfg.device(spec.device).image if spec.in_image else None
    found = host.manifest(spec.device, pin, image)
    if found["manifest"] is None:
        return None
    path = local / "manifests" / f"{spec.device}-{pin}{f'-image-{image}' if image else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found["manifest"], indent=2) + "\n", encoding="utf-8")
    return path


def reproduce_fleet(cfg: Config, fleet: Fleet, names: tuple[str, ...] = (), *, smoke: bool = False,
                    pin: str | None = None, models: str | None = None, scale: str = "tiny",
                    raw_dir: Path = Path("data/raw"), output_dir: Path = Path("results"), allow_mixed: bool = False,
                    fleet_file: Path | None = None, repo: Path = REPO_ROOT, sink: TextIO = sys.stdout) -> FleetRun:
    from moebench.analysis.tables import analyze
    from moebench.analysis.figures import render_figures
    from moebench.analysis.report import write_report

    hosts = select(fleet, names, fleet_file)
    options = Options(smoke=smoke, pin=pin, models=models, scale=scale)
    raw_dir, output_dir, lock = Path(raw_dir), Path(output_dir), threading.Lock()
    with tempfile.TemporaryDirectory(prefix="moebench-fleet-") as tmp:
        snap = snapshot(repo, Path(tmp))
        if snap.dirty:
            print(f"warning: the checkout has uncommitted changes to tracked files; the hosts get commit "
                  f"{snap.commit} without them", file=sink, flush=True)
        print(f"fleet: {', '.join(hosts)} at kit commit {snap.commit}", file=sink, flush=True)
        outcomes = each_host(hosts, lambda n, s: reproduce_host(cfg, n, s, snap, options, raw_dir, sink, lock))
    run = FleetRun(snap.commit, outcomes)
    print(render_table(["host", "device", "where", "result", "files", "seconds", "by step (s)"],
                       [[o.name, o.device, where(hosts[o.name]), outcome_text(o), len(o.files), f"{o.seconds:.1f}",
                         o.timings()] for o in outcomes]), file=sink, flush=True)
    if not any(o.files for o in outcomes):
        print("no host brought records home: nothing to analyze", file=sink, flush=True)
        return run
    run.analysis = analyze(cfg, raw_dir, output_dir, allow_mixed=allow_mixed)
    render_figures(output_dir / "summary_tables", output_dir / "figures", output_dir / "figures_pub")
    run.report = add_fleet_section(write_report(cfg, run.analysis, output_dir), run, hosts)
    print(f"{run.analysis.describe()}\nreport: {run.report}", file=sink, flush=True)
    return run


def where(spec: FleetHost) -> str:
    return "image" if spec.in_image else "bare host"


def outcome_text(outcome: HostOutcome) -> str:
    return "ok" if outcome.ok else f"failed at {outcome.step}: {outcome.error}"


def add_fleet_section(report: Path, run: FleetRun, hosts: dict[str, FleetHost]) -> Path:
    """REPORT.md with a Fleet section: every host, how it went, and the records it brought home."""
    frame = run.analysis.frame
    rows = []
    for o in run.outcomes:
        mine = frame[frame["fleet_host"] == o.name]
        files = ", ".join(f"`{name}`" for name in sorted(set(mine["source_file"]))) or DASH
        rows.append(f"| {o.name} | {o.device} | {where(hosts[o.name])} | {outcome_text(o).replace('|', '/')} | "
                    f"{len(mine)} | {int(mine['measured'].sum())} | {files} |")
    others = int((~frame["fleet_host"].isin([o.name for o in run.outcomes])).sum())
    lines = ["## Fleet", "",
             f"`invoke fleet.reproduce` ran kit commit `{run.commit}` on {len(run.outcomes)} host(s); each host's "
             f"records were fetched into `{run.analysis.raw_dir}/<host>/` and analyzed together.", "",
             "| host | device | where | result | records | measured | files |",
             "| --- | --- | --- | --- | --- | --- | --- |", *rows]
    if others:
        lines += ["", f"Also analyzed: {others} records of `{run.analysis.raw_dir}` that this run did not fetch "
                      "(its own files, or folders of other hosts or earlier runs)."]
    from moebench.analysis.report import put_section

    put_section(report.parent, "## Fleet", "\n".join(lines))
    return report
