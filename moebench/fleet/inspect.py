"""`invoke fleet.status` and `invoke fleet.verify`: what is on each fleet host, found over SSH without
running the kit's stages there.

status: each host reachable?, its kit's commit (against the local HEAD), its venv, its last reproduction
(the state file `invoke reproduce` keeps in data/raw/fleet-<commit>/).
verify: each host's build manifest and its binaries re-hashed there by the kit's own venv, against the
manifest and lock.yaml's pin for the host's device, pin and toolchain: one table, host x binary, the
cross-lab identity view for one lab's own machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from moebench.config import REPO_ROOT, Config, Fleet, FleetHost
from moebench.fleet.reproduce import each_host, render_table, select
from moebench.fleet.host import Host, HostFailure

STATE_SCRIPT = "ls -1t data/raw/fleet-*/.reproduce_*.json 2>/dev/null | head -n 1"


def host_status(name: str, spec: FleetHost, local_commit: str, sink: TextIO, lock: threading.Lock) -> list[Any]:
    with Host(name, spec, sink, _Discard(), lock) as host:
        try:
            host.open()
        except HostFailure as exc:
            return [name, spec.device, f"no: {exc.reason}", None, None, None]
        code, commit = host.capture(["git", "rev-parse", "HEAD"])
        commit = commit.strip() if code == 0 else None
        shown = None if commit is None else commit[:12] + (" (= local HEAD)" if commit == local_commit else "")
        venv = "yes" if host.capture(["test", "-x", ".venv/bin/invoke"])[0] == 0 else "no"
        return [name, spec.device, "yes", shown or "no kit", venv, last_reproduction(host)]


def last_reproduction(host: Host) -> str | None:
    code, found = host.capture(["sh", "-c", STATE_SCRIPT])
    state_file = found.strip()
    if code != 0 or not state_file:
        return None
    code, text = host.capture(["cat", state_file])
    try:
        complete = json.loads(text).get("complete") if code == 0 else None
    except json.JSONDecodeError:
        complete = None
    variant = Path(state_file).stem.removeprefix(".reproduce_")
    state = {True: "complete", False: "unfinished"}.get(complete, "unreadable state")
    return f"{state}: {variant} at {Path(state_file).parent.name.removeprefix('fleet-')}"


def fleet_status(fleet: Fleet, names: tuple[str, ...] = (), fleet_file: Path | None = None, repo: Path = REPO_ROOT,
                 sink: TextIO = sys.stdout) -> list[list[Any]]:
    hosts, lock = select(fleet, names, fleet_file), threading.Lock()
    local = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    rows = each_host(hosts, lambda n, s: host_status(n, s, local, sink, lock))
    print(render_table(["host", "device", "reachable", "kit commit", "venv", "last reproduction"], rows),
          file=sink, flush=True)
    return rows


def host_binaries(cfg: Config, name: str, spec: FleetHost, pin: str | None, sink: TextIO,
                  lock: threading.Lock) -> list[list[Any]]:
    """Rows of the verify table for one host: one per binary, or one saying why there are none."""
    dev = cfg.device(spec.device)
    pin = pin or dev.default_pin
    with Host(name, spec, sink, _Discard(), lock) as host:
        try:
            host.open()
            found = host.manifest(spec.device, pin, dev.image if spec.in_image else None)
        except HostFailure as exc:
            return [[name, spec.device, None, None, None, f"failed at {exc.step}: {exc.reason}"]]
    manifest = found["manifest"]
    if manifest is None:
        return [[name, spec.device, None, None, None, f"no build at {found['path']} (run invoke fleet.reproduce)"]]
    locked = cfg.lock.binaries.get(f"{spec.device}/{pin}/{manifest['toolchain_id']}", {})
    rows = []
    for binary, entry in manifest["binaries"].items():
        now = found["on_disk"].get(binary)
        rows.append([name, spec.device, manifest["toolchain_id"], binary, now,
                     binary_verdict(now, entry["sha256"], locked.get(binary))])
    return rows


def binary_verdict(on_disk: str | None, manifest: str, pinned: str | None) -> str:
    if on_disk is None:
        return "MISSING on the host"
    if on_disk != manifest:
        return f"CHANGED since its build (manifest {manifest[:12]})"
    if pinned is None:
        return "not pinned in lock.yaml for this toolchain"
    return "= lock" if on_disk == pinned else f"DIFFERS from lock {pinned[:12]}"


def fleet_verify(cfg: Config, fleet: Fleet, names: tuple[str, ...] = (), pin: str | None = None,
                 fleet_file: Path | None = None, sink: TextIO = sys.stdout) -> bool:
    """Print host x binary -> SHA-256 there and its verdict against lock.yaml; True when every binary
    of every host equals its pin."""
    hosts, lock = select(fleet, names, fleet_file), threading.Lock()
    rows = [row for rows in each_host(hosts, lambda n, s: host_binaries(cfg, n, s, pin, sink, lock)) for row in rows]
    print(render_table(["host", "device", "toolchain", "binary", "sha256 (on the host)", "against lock.yaml"], rows),
          file=sink, flush=True)
    binaries = [row for row in rows if row[3] is not None]
    good = sum(row[5] == "= lock" for row in binaries)
    failed = len(rows) - len(binaries)
    print(f"{good} of {len(binaries)} binaries equal lock.yaml's pin"
          + (f"; {failed} host(s) without binaries to check" if failed else ""), file=sink, flush=True)
    return good == len(rows)


class _Discard:
    """A log for commands whose output is data: status and verify keep no log."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
