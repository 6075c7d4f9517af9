"""Jetson power, temperature and GPU load from `tegrastats`.

One tegrastats process runs for the whole matrix (started on the first cell, so no cell pays its
start-up); a reader thread timestamps every line on arrival. A cell's energy is the integral of the
VDD_IN rail (total module input power) over the cell's window, power held constant from one line to
the next; it is reported only when lines bracket the whole window.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

from moebench.run.monitors.base import Monitor, MonitorResult

DEFAULT_INTERVAL_MS = 100
ENERGY_RAIL = "VDD_IN"
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
_INVALID_TEMP_C = -40.0  # disabled sensors read -256C


@dataclass(frozen=True)
class TegrastatsSample:
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    cpu_percent: tuple[float | None, ...] = ()
    gpu_util_percent: float | None = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, int] = field(default_factory=dict)


def parse_tegrastats_line(line: str) -> TegrastatsSample | None:
    """One tegrastats line; None when it carries none of the known fields."""
    ram = _RAM.search(line)
    cpu = _CPU.search(line)
    gpu = _GPU.search(line)
    cores: tuple[float | None, ...] = ()
    if cpu:
        cores = tuple(float(c.split("%")[0]) if "%" in c else None for c in cpu.group(1).split(","))
    temps = {name: float(value) for name, value in _TEMP.findall(line)
             if not name.endswith("FREQ") and float(value) > _INVALID_TEMP_C}
    rails = {name: int(current) for name, current, _average in _RAIL.findall(line)
             if name.startswith(("VDD", "VIN", "POM"))}
    if not (ram or cpu or gpu or temps or rails):
        return None
    return TegrastatsSample(
        ram_used_mb=int(ram.group(1)) if ram else None,
        ram_total_mb=int(ram.group(2)) if ram else None,
        cpu_percent=cores,
        gpu_util_percent=float(gpu.group(1)) if gpu else None,
        temps_c=temps,
        rails_mw=rails,
    )


def energy_joules(samples: list[tuple[float, int]], start: float, stop: float) -> float | None:
    """Integral of power (mW, held until the next sample) over [start, stop]; None if not bracketed."""
    if stop <= start or not samples or samples[0][0] > start or samples[-1][0] < stop:
        return None
    total_mj = 0.0
    for (t0, p0), (t1, _p1) in zip(samples, samples[1:] + [(float("inf"), 0)]):
        lo, hi = max(t0, start), min(t1, stop)
        if hi > lo:
            total_mj += p0 * (hi - lo)
    return total_mj / 1000.0


class TegrastatsMonitor(Monitor):
    name = "tegrastats"
    owns = ("energy_joules", "power_w_mean", "peak_temp_c", "gpu_util_percent_mean")

    def __init__(self, binary: str = "tegrastats", interval_ms: int = DEFAULT_INTERVAL_MS):
        self.binary = binary
        self.interval_ms = interval_ms
        self._proc: subprocess.Popen[str] | None = None
        self._lines: list[tuple[float, TegrastatsSample]] = []
        self._lock = threading.Lock()
        self._reason: str | None = None

    def _ensure_running(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        path = shutil.which(self.binary)
        if path is None:
            self._reason = f"{self.binary} not found on PATH (not a Jetson)"
            return
        self._proc = subprocess.Popen([path, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self._proc,), name="moebench-tegrastats", daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sample = parse_tegrastats_line(line)
            if sample is not None:
                with self._lock:
                    self._lines.append((time.monotonic(), sample))

    def start(self, pid: int | None) -> None:
        self._reason = None
        self._ensure_running()
        self._start = time.monotonic()
        with self._lock:
            # keep one line before the window: it holds the power at the window's start
            self._lines = self._lines[-1:]

    def stop(self) -> None:
        self._stop = time.monotonic()
        if self._reason is None:
            # wait for the first line after the window so the window's end is bracketed
            deadline = self._stop + 3 * self.interval_ms / 1000.0
            while time.monotonic() < deadline:
                with self._lock:
                    if self._lines and self._lines[-1][0] >= self._stop:
                        break
                time.sleep(self.interval_ms / 4000.0)

    def result(self) -> MonitorResult:
        if self._reason:
            return self.unavailable(self._reason)
        with self._lock:
            lines = list(self._lines)
        inside = [s for t, s in lines if self._start <= t <= self._stop]
        power = [(t, s.rails_mw[ENERGY_RAIL]) for t, s in lines if ENERGY_RAIL in s.rails_mw]
        window_s = self._stop - self._start
        result = MonitorResult(details={
            "available": True, "interval_ms": self.interval_ms, "lines_in_window": len(inside),
            "window_s": round(window_s, 4), "energy_rail": ENERGY_RAIL,
            "energy_basis": "VDD_IN integrated over the cell window (load, prefill and generation for cli cells)",
            "peak_ram_used_mb": max((s.ram_used_mb for s in inside if s.ram_used_mb is not None), default=None),
        })
        joules = energy_joules(power, self._start, self._stop)
        reason = (f"no {ENERGY_RAIL} reading brackets the cell window ({window_s:.3f} s, "
                  f"tegrastats interval {self.interval_ms} ms)")
        result.set("energy_joules", round(joules, 4) if joules is not None else None, reason)
        result.set("power_w_mean", round(joules / window_s, 4) if joules is not None and window_s > 0 else None, reason)
        temps = [max(s.temps_c.values()) for s in inside if s.temps_c]
        result.set("peak_temp_c", max(temps) if temps else None, "no tegrastats line with a temperature inside the cell window")
        gpu = [s.gpu_util_percent for s in inside if s.gpu_util_percent is not None]
        result.set("gpu_util_percent_mean", round(sum(gpu) / len(gpu), 2) if gpu else None,
                   "no tegrastats GR3D_FREQ reading inside the cell window")
        return result

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
