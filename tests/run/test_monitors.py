import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from moebench.run import engines
from moebench.run.monitors import create_monitors, merge_results
from moebench.run.monitors.base import MonitorResult
from moebench.run.monitors.nvml import NvmlMonitor, gpu_identity
from moebench.run.monitors.nvpmodel import parse_nvpmodel_query
from moebench.run.monitors.psutil_monitor import PsutilMonitor
from moebench.run.monitors.tegrastats import TegrastatsMonitor, energy_joules, parse_tegrastats_line

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def test_tegrastats_lines():
    lines = (FIX / "tegrastats" / "orin_nano.txt").read_text().splitlines()
    samples = [parse_tegrastats_line(line) for line in lines]
    first = samples[0]
    assert (first.ram_used_mb, first.ram_total_mb) == (2448, 7620)
    assert first.cpu_percent == (12.0, 9.0, 15.0, 8.0, 10.0, 7.0)
    assert first.temps_c["cpu"] == 47.5 and first.temps_c["tj"] == 48.218
    assert first.rails_mw == {"VDD_IN": 5000, "VDD_CPU_GPU_CV": 812, "VDD_SOC": 1446}
    assert samples[1].gpu_util_percent == 88.0
    assert samples[3].cpu_percent[1] is None and "soc2" not in samples[3].temps_c  # off core, -256C sensor
    assert parse_tegrastats_line("garbage") is None


def test_energy_integral():
    power = [(0.0, 5000), (1.0, 7000), (2.0, 9000), (3.0, 5200)]
    assert energy_joules(power, 0.0, 3.0) == pytest.approx(21.0)  # 5 + 7 + 9 J
    assert energy_joules(power, 0.5, 1.5) == pytest.approx(6.0)  # 0.5 s at 5 W + 0.5 s at 7 W
    assert energy_joules(power, -1.0, 2.0) is None  # window starts before the first reading
    assert energy_joules(power, 1.0, 4.0) is None  # and ends after the last


def test_tegrastats_monitor_with_a_fake_tool(tmp_path):
    """The fake replays the fixture lines at the requested interval, like tegrastats does."""
    fake = tmp_path / "tegrastats"
    lines = (FIX / "tegrastats" / "orin_nano.txt").read_text().splitlines()
    fake.write_text("#!" + sys.executable + "\nimport sys, time, itertools\nlines = " + repr(lines) +
                    "\nfor line in itertools.cycle(lines):\n    print(line, flush=True); time.sleep(0.05)\n")
    fake.chmod(0o755)
    monitor = TegrastatsMonitor(binary=str(fake), interval_ms=50)
    try:
        monitor.start(None)
        time.sleep(0.3)  # the first cell waits for the tool to start
        monitor.stop()
        monitor.start(None)
        time.sleep(0.4)
        monitor.stop()
        result = monitor.result()
    finally:
        monitor.close()
    assert result.fields["energy_joules"] is not None and result.fields["energy_joules"] > 0
    assert 5.0 <= result.fields["power_w_mean"] <= 9.0
    assert result.fields["peak_temp_c"] <= 50.6
    assert result.details["lines_in_window"] >= 4


def test_missing_tools_give_null_with_reason():
    for monitor in (TegrastatsMonitor(binary="no-such-tegrastats"),):
        monitor.start(None)
        monitor.stop()
        result = monitor.result()
        assert all(v is None for v in result.fields.values())
        assert set(result.null_reasons) == set(monitor.owns)


def test_nvml_without_library_or_gpu():
    class Broken:
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")
    monitor = NvmlMonitor(nvml=Broken())
    monitor.start(123)
    monitor.stop()
    result = monitor.result()
    assert result.fields["energy_joules"] is None and "NVML could not open" in result.null_reasons["energy_joules"]


class FakeNvml:
    """Answers like pynvml for one GPU at 100 W, 55 °C, 80 % busy; its energy counter advances by
    `energy_step_mj` per read (0: a counter that has not ticked yet)."""
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, energy_step_mj: int):
        self.energy_step_mj, self.energy_mj = energy_step_mj, 1_000_000

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetPowerUsage(self, h): return 100_000
    def nvmlDeviceGetTemperature(self, h, kind): return 55
    def nvmlDeviceGetUtilizationRates(self, h):
        return type("U", (), {"gpu": 80})()
    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self.energy_mj += self.energy_step_mj
        return self.energy_mj


def test_nvml_with_a_fake_library():
    monitor = NvmlMonitor(nvml=FakeNvml(energy_step_mj=5000), interval_s=0.02)
    monitor.start(1)
    time.sleep(0.1)
    monitor.stop()
    result = monitor.result()
    assert result.fields["energy_joules"] == 5.0  # one counter step of 5000 mJ between start and stop
    assert result.fields["peak_temp_c"] == 55 and result.fields["gpu_util_percent_mean"] == 80
    assert result.details["energy_basis"].startswith("nvmlDeviceGetTotalEnergyConsumption")


def test_nvml_counter_that_did_not_tick_is_not_a_zero_reading():
    """A cell shorter than the energy counter's update period must not report 0 J (seen on an H100:
    cells of a few ms read a zero delta, which averaged into a meaningless J/token)."""
    monitor = NvmlMonitor(nvml=FakeNvml(energy_step_mj=0), interval_s=10.0)  # no second power sample either
    monitor.start(1)
    monitor.stop()
    result = monitor.result()
    assert result.fields["energy_joules"] is None
    assert "did not advance" in result.null_reasons["energy_joules"]
    slow = NvmlMonitor(nvml=FakeNvml(energy_step_mj=0), interval_s=0.02)  # enough power samples: integrate them
    slow.start(1)
    time.sleep(0.1)
    slow.stop()
    integrated = slow.result()
    assert integrated.details["energy_basis"] == "sampled power integrated between samples"
    assert integrated.fields["energy_joules"] > 0


def test_nvpmodel_parse():
    assert parse_nvpmodel_query((FIX / "nvpmodel" / "orin_nano_15w.txt").read_text()) == {"power_mode": "15W", "mode_id": 0}
    assert parse_nvpmodel_query((FIX / "nvpmodel" / "orin_nano_maxn_super.txt").read_text())["power_mode"] == "MAXN_SUPER"
    assert parse_nvpmodel_query("nvpmodel: command not found") is None


def test_psutil_samples_a_process_tree_at_10hz_or_more():
    code = "import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'x = bytearray(50_000_000); import time; time.sleep(1)']); time.sleep(1.2); c.wait()"
    proc = subprocess.Popen([sys.executable, "-c", code])
    monitor = PsutilMonitor()
    monitor.start(proc.pid)
    proc.wait()
    monitor.stop()
    result = monitor.result()
    assert result.fields["peak_rss_bytes"] > 50_000_000  # the child's buffer counts
    assert result.details["achieved_hz"] >= 10
    assert result.fields["cpu_percent_mean"] is not None


def test_psutil_on_a_vanished_process():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    monitor = PsutilMonitor()
    monitor.start(proc.pid)
    monitor.stop()
    result = monitor.result()
    assert result.fields["peak_rss_bytes"] is None and result.null_reasons["peak_rss_bytes"]


def test_factory_and_merge():
    monitors = create_monitors(["psutil", "nvpmodel"])
    assert [m.name for m in monitors] == ["psutil", "nvpmodel"]
    fields, reasons = merge_results({"psutil": MonitorResult(fields={"peak_rss_bytes": 5})}, "cpu")
    assert fields["peak_rss_bytes"] == 5 and fields["energy_joules"] is None
    assert "no monitor active on device 'cpu'" in reasons["energy_joules"]


def test_oom_counter_and_classification():
    before = engines.parse_oom_kill_counter((FIX / "cgroup" / "v1_memory.oom_control.before").read_text())
    after = engines.parse_oom_kill_counter((FIX / "cgroup" / "v1_memory.oom_control.after").read_text())
    assert (before, after) == (0, 1)
    v2 = [engines.parse_oom_kill_counter((FIX / "cgroup" / f"v2_memory.events.{w}").read_text()) for w in ("before", "after")]
    assert v2 == [0, 1]
    oom = engines.classify_exit(-9, "", timed_out=False, oom_before=before, oom_after=after, oom_in_kernel_log=False)
    assert oom["reason"] == "oom_killed" and oom["signal"] == 9
    plain = engines.classify_exit(-9, "", timed_out=False, oom_before=0, oom_after=0, oom_in_kernel_log=False)
    assert plain["reason"] == "killed"
    assert engines.classify_exit(-9, "", timed_out=False, oom_before=None, oom_after=None,
                                 oom_in_kernel_log=True)["reason"] == "oom_killed"
    assert engines.dmesg_names_oom("[ 12.3] Out of memory: Killed process 4242 (llama-cli)", 4242)
    assert engines.classify_exit(-6, "", timed_out=False, oom_before=0, oom_after=0, oom_in_kernel_log=False)["reason"] == "crash"
    assert engines.classify_exit(1, "main: error: unable to load model", timed_out=False, oom_before=0,
                                 oom_after=0, oom_in_kernel_log=False)["reason"] == "load_failed"
    assert engines.classify_exit(2, "boom", timed_out=False, oom_before=0, oom_after=0,
                                 oom_in_kernel_log=False)["reason"] == "nonzero_exit"
    assert engines.classify_exit(-9, "", timed_out=True, oom_before=0, oom_after=0,
                                 oom_in_kernel_log=False)["reason"] == "timeout"
    assert engines.classify_exit(0, "", timed_out=False, oom_before=0, oom_after=0, oom_in_kernel_log=False) is None


H200_IDENTITY = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "nvml" / "h200_gpu_identity.json").read_text())


class RecordedH200Nvml:
    """Answers pynvml's identity calls with what the H200 answered (fixtures/nvml); NVML_CLOCK_MEM is
    pynvml's constant. `broken` names calls that raise, as a driver without that query does."""
    NVML_CLOCK_MEM = 2

    def __init__(self, broken=()):
        self.broken = set(broken)
        self.shut_down = False

    def _answer(self, call, value):
        if call in self.broken:
            raise RuntimeError("Not Supported")
        return value

    def nvmlInit(self): pass
    def nvmlShutdown(self): self.shut_down = True
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return H200_IDENTITY["name"].encode()  # pynvml < 12 answers bytes
    def nvmlSystemGetDriverVersion(self): return self._answer("driver", H200_IDENTITY["driver_version"])
    def nvmlSystemGetCudaDriverVersion(self): return H200_IDENTITY["cuda_driver_version"]

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=H200_IDENTITY["memory_total_bytes"], used=0, free=0)

    def nvmlDeviceGetMemoryBusWidth(self, h): return self._answer("bus", H200_IDENTITY["memory_bus_width_bits"])

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        assert kind == self.NVML_CLOCK_MEM
        return H200_IDENTITY["max_memory_clock_mhz"]

    def nvmlDeviceGetEnforcedPowerLimit(self, h): return int(H200_IDENTITY["power_limit_w"] * 1000)  # mW


def test_gpu_identity_replays_the_h200_answer_and_shuts_nvml_down(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = RecordedH200Nvml()
    fields, reason = gpu_identity(nvml)
    assert reason is None and fields == H200_IDENTITY and nvml.shut_down


def test_gpu_identity_keeps_what_answers_and_names_what_did_not(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    fields, reason = gpu_identity(RecordedH200Nvml(broken={"bus"}))
    assert reason is None and fields["index"] == 3 and fields["name"] == "NVIDIA H200"
    assert fields["memory_bus_width_bits"] is None
    assert fields["null_reasons"] == {"memory_bus_width_bits": "NVML: Not Supported"}
    assert fields["max_memory_clock_mhz"] == 3201


def test_gpu_identity_without_a_gpu_is_null_with_the_reason():
    class NoDriver(RecordedH200Nvml):
        def nvmlInit(self): raise RuntimeError("Driver Not Loaded")
    assert gpu_identity(NoDriver()) == (None, "NVML could not start: Driver Not Loaded")
