"""The one interface every probe implements; the runner only ever sees this.

A monitor is started on the llama.cpp process of one cell (`start(pid)`), stopped when the cell
ends, and reports `MonitorResult`: record fields it measured, a reason for each field it owns but
could not measure, and details (sample counts, rates, raw extremes) kept in the record's `monitors`.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

# Record fields monitors may fill; a field no active monitor owns gets a reason from the runner.
MONITOR_FIELDS = (
    "peak_rss_bytes", "cpu_percent_mean", "cpu_percent_peak", "energy_joules", "power_w_mean",
    "peak_temp_c", "gpu_util_percent_mean",
)


@dataclass
class MonitorResult:
    fields: dict[str, Any] = field(default_factory=dict)
    null_reasons: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"fields": dict(self.fields), "null_reasons": dict(self.null_reasons), "details": dict(self.details)}

    def set(self, name: str, value: Any, reason: str) -> None:
        """Record a measured value, or null with `reason` when the value is None."""
        self.fields[name] = value
        if value is None:
            self.null_reasons[name] = reason


class Monitor(ABC):
    """start(pid) -> stop() -> result(); one instance serves many cells, one cell at a time."""

    name: str = "monitor"
    owns: tuple[str, ...] = ()

    @abstractmethod
    def start(self, pid: int | None) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def result(self) -> MonitorResult: ...

    def close(self) -> None:
        """Release what the monitor holds across cells (a background process, a library handle)."""

    def unavailable(self, reason: str) -> MonitorResult:
        result = MonitorResult(details={"available": False})
        for name in self.owns:
            result.set(name, None, reason)
        return result


class Sampler:
    """Calls `sample()` every `interval_s` in a daemon thread until stopped; records the achieved rate."""

    def __init__(self, sample: Callable[[], bool], interval_s: float):
        self._sample = sample
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.count = 0
        self.started = 0.0
        self.stopped = 0.0

    def start(self) -> None:
        self._stop.clear()
        self.count = 0
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="moebench-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._sample():
                break
            self.count += 1
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.stopped = time.monotonic()

    def achieved_hz(self) -> float | None:
        duration = self.stopped - self.started
        return round(self.count / duration, 2) if duration > 0 and self.count > 1 else None
