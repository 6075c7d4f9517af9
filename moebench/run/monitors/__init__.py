"""Probes behind one interface. `create_monitors(names)` maps devices.yaml `monitors` to instances;
the runner calls only start/stop/result/close and `merge_results` and never knows which are active."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from moebench.run.monitors.base import MONITOR_FIELDS, Monitor, MonitorResult

def _psutil() -> Monitor:
    from moebench.run.monitors.psutil_monitor import PsutilMonitor
    return PsutilMonitor()


def _tegrastats() -> Monitor:
    from moebench.run.monitors.tegrastats import TegrastatsMonitor
    return TegrastatsMonitor()


def _nvml() -> Monitor:
    from moebench.run.monitors.nvml import NvmlMonitor
    return NvmlMonitor()


def _nvpmodel() -> Monitor:
    from moebench.run.monitors.nvpmodel import NvpmodelMonitor
    return NvpmodelMonitor()


REGISTRY: dict[str, Callable[[], Monitor]] = {
    "psutil": _psutil, "tegrastats": _tegrastats, "nvml": _nvml, "nvpmodel": _nvpmodel,
}


def create_monitors(names: Iterable[str]) -> list[Monitor]:
    return [REGISTRY[name]() for name in names]


def merge_results(results: dict[str, MonitorResult], device: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Record fields from every monitor's result: the first measured value wins; a field nobody
    measured carries the reasons each owner gave, or says that no active monitor measures it."""
    fields: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name in MONITOR_FIELDS:
        values = [(m, r.fields[name]) for m, r in results.items() if r.fields.get(name) is not None]
        if values:
            fields[name] = values[0][1]
            continue
        fields[name] = None
        owner_reasons = [f"{m}: {r.null_reasons[name]}" for m, r in results.items() if name in r.null_reasons]
        reasons[name] = "; ".join(owner_reasons) or (
            f"no monitor active on device {device!r} measures {name} "
            f"(active: {', '.join(results) or 'none'}; see configs/devices.yaml monitors)")
    return fields, reasons


__all__ = ["MONITOR_FIELDS", "Monitor", "MonitorResult", "REGISTRY", "create_monitors", "merge_results"]
