"""NVIDIA GPU power, energy, temperature and utilization through NVML (the `pynvml` module).

Used only when the module imports and a GPU answers; otherwise every field it owns is null with the
reason. Energy comes from the board's own energy counter (nvmlDeviceGetTotalEnergyConsumption,
Volta and later) when it exists, else from integrating sampled power. It is the GPU board's energy,
not the host's.
"""

from __future__ import annotations

import os
import time
from typing import Any

from moebench.run.monitors.base import Monitor, MonitorResult, Sampler

DEFAULT_INTERVAL_S = 0.05
NO_PYNVML = ("pynvml is not importable: nvidia-ml-py is in configs/requirements.lock, "
             "so scripts/bootstrap.sh installs it hash-checked")


def _gpu_index() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_identity(nvml: Any = None) -> tuple[dict[str, Any] | None, str | None]:
    """Which GPU the run used, as NVML names it: (fields, None) or (None, why not).

    The name selects the datasheet bandwidth of the roofline (devices.yaml `gpu_memory_bandwidth`):
    one device profile (say sm_90) covers GPUs whose memory differs by half. The bus width and the
    maximum memory clock are the driver's own figures, kept so the datasheet number can be checked
    against them (peak = 2 transfers per clock x width / 8, for HBM and GDDR alike)."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[import-not-found]
        except ImportError:
            return None, NO_PYNVML
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError subclasses vary by driver; all mean "no usable GPU"
        return None, f"NVML could not start: {exc}"
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(_gpu_index())
        fields: dict[str, Any] = {"index": _gpu_index(), "name": _text(nvml.nvmlDeviceGetName(handle))}
        optional = {"driver_version": lambda: _text(nvml.nvmlSystemGetDriverVersion()),
                    "cuda_driver_version": lambda: nvml.nvmlSystemGetCudaDriverVersion(),
                    "memory_total_bytes": lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "memory_bus_width_bits": lambda: int(nvml.nvmlDeviceGetMemoryBusWidth(handle)),
                    "max_memory_clock_mhz": lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM)),
                    "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0}
        for key, read in optional.items():
            try:
                fields[key] = read()
            except Exception as exc:
                fields[key] = None
                fields.setdefault("null_reasons", {})[key] = f"NVML: {exc}"
        return fields, None
    except Exception as exc:
        return None, f"NVML could not open GPU {_gpu_index()}: {exc}"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass


class NvmlMonitor(Monitor):
    name = "nvml"
    owns = ("energy_joules", "power_w_mean", "peak_temp_c", "gpu_util_percent_mean")

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, nvml: Any = None):
        self.interval_s = interval_s
        self._nvml = nvml
        self._handle = None
        self._reason = self._open()

    def _open(self) -> str | None:
        if self._nvml is None:
            try:
                import pynvml  # type: ignore[import-not-found]
            except ImportError:
                return NO_PYNVML
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(_gpu_index())
        except Exception as exc:  # NVMLError subclasses vary by driver; all mean "no usable GPU"
            return f"NVML could not open GPU {_gpu_index()}: {exc}"
        return None

    def _energy_mj(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception:
            return None

    def start(self, pid: int | None) -> None:
        self._samples: list[tuple[float, float, float | None, float | None]] = []
        if self._reason:
            return
        self._energy_start = self._energy_mj()
        self._sampler = Sampler(self._sample, self.interval_s)
        self._sampler.start()

    def _sample(self) -> bool:
        nvml, handle = self._nvml, self._handle
        try:
            power_mw = float(nvml.nvmlDeviceGetPowerUsage(handle))
        except Exception:
            return False
        try:
            temp = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except Exception:
            temp = None
        try:
            util = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            util = None
        self._samples.append((time.monotonic(), power_mw, temp, util))
        return True

    def stop(self) -> None:
        if self._reason:
            return
        self._sampler.stop()
        self._energy_stop = self._energy_mj()

    def result(self) -> MonitorResult:
        if self._reason:
            return self.unavailable(self._reason)
        window_s = self._sampler.stopped - self._sampler.started
        result = MonitorResult(details={"available": True, "samples": len(self._samples),
                                        "achieved_hz": self._sampler.achieved_hz(), "window_s": round(window_s, 4)})
        joules, basis = None, None
        few = "fewer than 2 NVML samples in the cell window"
        if self._energy_start is not None and self._energy_stop is not None:
            if self._energy_stop > self._energy_start:
                joules, basis = (self._energy_stop - self._energy_start) / 1000.0, "nvmlDeviceGetTotalEnergyConsumption delta"
            else:  # the counter ticks more coarsely than this cell lasted: zero would be a false reading
                few = (f"the NVML energy counter did not advance in the {window_s:.3f} s cell window "
                       f"and fewer than 2 power samples were taken")
        if joules is None and len(self._samples) >= 2:
            pairs = zip(self._samples, self._samples[1:])
            joules = sum(p0 * (t1 - t0) for (t0, p0, _, _), (t1, _, _, _) in pairs) / 1000.0
            basis = "sampled power integrated between samples"
        result.details["energy_basis"] = basis
        result.set("energy_joules", round(joules, 4) if joules is not None else None, few)
        result.set("power_w_mean", round(joules / window_s, 4) if joules is not None and window_s > 0 else None, few)
        temps = [s[2] for s in self._samples if s[2] is not None]
        result.set("peak_temp_c", max(temps) if temps else None, "NVML returned no GPU temperature")
        utils = [s[3] for s in self._samples if s[3] is not None]
        result.set("gpu_util_percent_mean", round(sum(utils) / len(utils), 2) if utils else None,
                   "NVML returned no GPU utilization")
        return result

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._handle = None
