"""Jetson power mode from `nvpmodel -q`, read at the start and end of each cell (never set)."""

from __future__ import annotations

import re
import shutil
import subprocess

from moebench.run.monitors.base import Monitor, MonitorResult

_MODE = re.compile(r"NV Power Mode:\s*(?P<name>\S.*?)\s*$", re.MULTILINE)
_ID = re.compile(r"^\s*(?P<id>\d+)\s*$", re.MULTILINE)


def parse_nvpmodel_query(text: str) -> dict[str, object] | None:
    """`nvpmodel -q` prints `NV Power Mode: <name>` and then the mode id on its own line."""
    match = _MODE.search(text)
    if not match:
        return None
    mode_id = _ID.search(text[match.end():])
    return {"power_mode": match.group("name"), "mode_id": int(mode_id.group("id")) if mode_id else None}


def query_power_mode(binary: str = "nvpmodel", timeout_s: float = 10.0) -> tuple[dict[str, object] | None, str | None]:
    """(parsed mode, None) or (None, reason it could not be read)."""
    path = shutil.which(binary)
    if path is None:
        return None, f"{binary} not found on PATH (not a Jetson, or JetPack tools missing)"
    try:
        done = subprocess.run([path, "-q"], capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{binary} -q failed: {exc}"
    parsed = parse_nvpmodel_query(done.stdout)
    if parsed is None:
        return None, f"{binary} -q exited {done.returncode} without an 'NV Power Mode' line"
    return parsed, None


class NvpmodelMonitor(Monitor):
    """Owns no record field; puts the power mode at cell start and end into the record's monitors."""

    name = "nvpmodel"
    owns = ()

    def __init__(self, binary: str = "nvpmodel"):
        self.binary = binary

    def start(self, pid: int | None) -> None:
        self._start = query_power_mode(self.binary)

    def stop(self) -> None:
        self._stop = query_power_mode(self.binary)

    def result(self) -> MonitorResult:
        (start, start_reason), (stop, stop_reason) = self._start, self._stop
        details: dict[str, object] = {"available": start is not None, "at_start": start, "at_end": stop}
        if start is None:
            details["reason"] = start_reason or stop_reason
        elif stop is not None and start != stop:
            details["changed_during_cell"] = True
        return MonitorResult(details=details)
