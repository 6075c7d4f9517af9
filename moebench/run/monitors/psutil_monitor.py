"""RSS and CPU of the llama.cpp process tree, sampled in a thread (default 20 Hz, at least 10 Hz).

RSS is summed over the process and all its descendants at each sample; on Linux the kernel's own
high-water mark (VmHWM of /proc/<pid>/status, summed over the tree) is read too, so a transient peak
between samples is not missed: peak_rss_bytes is the larger of the two (basis in details); CPU % comes from the
tree's cumulative user+system CPU time between samples (100 % = one core busy), which unlike
psutil's cpu_percent() needs no priming call and so is valid from the second sample on.

Finding the descendants means scanning every process of the host, by far the dearest part of a
sample; llama.cpp starts no children of its own, so the tree is re-scanned only every
`TREE_REFRESH_SAMPLES` samples (0.5 s) while the known processes are read at every sample. This is
what keeps the sampler's cost on llama.cpp's throughput low (benchmarks/bench_sampler_overhead.py).
"""

from __future__ import annotations

import time

import psutil

from moebench.run.monitors.base import Monitor, MonitorResult, Sampler

DEFAULT_INTERVAL_S = 0.05
TREE_REFRESH_SAMPLES = 10


class PsutilMonitor(Monitor):
    name = "psutil"
    owns = ("peak_rss_bytes", "cpu_percent_mean", "cpu_percent_peak")

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S):
        if interval_s > 0.1:
            raise ValueError("psutil sampling must be at least 10 Hz (interval_s <= 0.1)")
        self.interval_s = interval_s
        self._root: psutil.Process | None = None
        self._sampler: Sampler | None = None
        self._reason: str | None = None

    def start(self, pid: int | None) -> None:
        self._rss: list[int] = []
        self._cpu: list[tuple[float, float]] = []  # (monotonic time, tree CPU seconds)
        self._cpu_seen: dict[int, float] = {}
        self._hwm_seen: dict[int, int] = {}
        self._tree: list[psutil.Process] = []
        self._samples_taken = 0
        self._reason = None
        self._sampler = None
        if pid is None:
            self._reason = "no llama.cpp process to sample"
            return
        try:
            self._root = psutil.Process(pid)
        except psutil.Error:
            self._reason = "the llama.cpp process exited before sampling started"
            return
        self._sampler = Sampler(self._sample, self.interval_s)
        self._sampler.start()

    def _sample(self) -> bool:
        assert self._root is not None
        if self._samples_taken % TREE_REFRESH_SAMPLES == 0:
            try:
                self._tree = [self._root] + self._root.children(recursive=True)
            except psutil.Error:
                return False
        self._samples_taken += 1
        procs = self._tree
        rss = 0
        alive = False
        for proc in procs:
            try:
                with proc.oneshot():
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                self._cpu_seen[proc.pid] = times.user + times.system
                hwm = _vm_hwm_bytes(proc.pid)
                if hwm is not None:
                    self._hwm_seen[proc.pid] = max(hwm, self._hwm_seen.get(proc.pid, 0))
                alive = True
            except psutil.Error:
                continue
        if not alive:
            return False
        self._rss.append(rss)
        self._cpu.append((time.monotonic(), sum(self._cpu_seen.values())))
        return True

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()

    def result(self) -> MonitorResult:
        if self._reason:
            return self.unavailable(self._reason)
        result = MonitorResult()
        sampler = self._sampler
        assert sampler is not None
        result.details = {
            "available": True,
            "samples": len(self._rss),
            "interval_s": self.interval_s,
            "achieved_hz": sampler.achieved_hz(),
            "window_s": round(sampler.stopped - sampler.started, 4),
        }
        sampled = max(self._rss) if self._rss else None
        hwm = sum(self._hwm_seen.values()) if self._hwm_seen else None
        result.details.update({"sampled_peak_rss_bytes": sampled, "vm_hwm_bytes": hwm,
                               "peak_rss_basis": "max(sampled RSS, kernel VmHWM)" if hwm else "sampled RSS"})
        peak = max(v for v in (sampled, hwm) if v is not None) if (sampled or hwm) else None
        result.set("peak_rss_bytes", peak, "the process exited before the first RSS sample")
        rates = [100.0 * (c1 - c0) / (t1 - t0)
                 for (t0, c0), (t1, c1) in zip(self._cpu, self._cpu[1:]) if t1 > t0]
        short = f"fewer than 2 CPU samples: the process lived less than one {self.interval_s} s interval"
        if rates:
            (t_first, c_first), (t_last, c_last) = self._cpu[0], self._cpu[-1]
            result.set("cpu_percent_mean", round(100.0 * (c_last - c_first) / (t_last - t_first), 2), short)
            result.set("cpu_percent_peak", round(max(rates), 2), short)
        else:
            result.set("cpu_percent_mean", None, short)
            result.set("cpu_percent_peak", None, short)
        return result


def _vm_hwm_bytes(pid: int) -> int | None:
    """The kernel's peak-RSS mark of a process (Linux only)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
