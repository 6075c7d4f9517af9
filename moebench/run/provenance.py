"""Provenance: collected once per run, stamped on every record (schema $defs/provenance).

Everything is read from the system or the build manifest; what cannot be read is null with the
reason in `null_reasons`. Model fields are per record (`for_model`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from moebench.run.bandwidth import measure_memory_bandwidth
from moebench.config import REPO_ROOT, Config, Device, ModelSpec
from moebench.errors import UserError
from moebench.hashing import sha256_file
from moebench.run.monitors.nvml import gpu_identity
from moebench.run.monitors.nvpmodel import query_power_mode

def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Where runs write: records appended to a committed results folder change the checkout, not the kit.
RUN_OUTPUT_DIRS = ("results", "data")


def _git(root: Path, *args: str) -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def kit_state(root: Path = REPO_ROOT) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, reason when unknown) of the kit's own git checkout. Dirty means a tracked file
    outside RUN_OUTPUT_DIRS differs from the commit: a second run into a committed results folder
    (or a resumed one) must not mark its records as made by changed code."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return None, None, "the kit is not a git checkout here, or git is missing"
    outputs = [f":(exclude){name}" for name in RUN_OUTPUT_DIRS]
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs)
    return commit.strip(), (bool(status.strip()) if status is not None else None), None


def image_digest() -> tuple[str | None, str | None]:
    """The image ID the launcher read from the engine; `invoke verify` has checked it against the lock."""
    value = os.environ.get("MOEBENCH_IMAGE_DIGEST")
    if value:
        return value.strip(), None
    return None, "not running in a moebench image: run on the bare host (`--in-image` sets MOEBENCH_IMAGE_DIGEST)"


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, check=False)
        return done.stdout.strip() or None
    return platform.processor() or None


def host_info() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "ram_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def machine_identity() -> dict[str, Any]:
    """Which machine, and which boot of it, made a record: the unit the analysis separates between-machine
    from within-run spread by. `host_id` is a SHA-256 prefix of /etc/machine-id (the hostname where there
    is none), so no name leaves the lab; `boot_id` changes at every start, so a fresh cloud machine
    cloned from one image (the same machine-id) still counts as another machine."""
    machine_id = Path("/etc/machine-id")
    text = machine_id.read_text(errors="replace").strip() if machine_id.is_file() else ""
    basis, value = ("machine-id", text) if text else ("hostname", socket.gethostname())
    boot = Path("/proc/sys/kernel/random/boot_id")
    boot_id = boot.read_text().strip() if boot.is_file() else f"boot-time-{int(psutil.boot_time())}"
    return {"host_id": hashlib.sha256(value.encode()).hexdigest()[:16], "host_id_basis": basis, "boot_id": boot_id}


@functools.cache
def host_memory_bandwidth() -> dict[str, Any]:
    """Measured once per process, before any model is loaded (moebench.run.bandwidth says how)."""
    return measure_memory_bandwidth(psutil.cpu_count(logical=False) or 1)


def clocks() -> tuple[dict[str, Any] | None, str | None]:
    """jetson_clocks --show on a Jetson; the cpufreq governor and limits elsewhere on Linux."""
    tool = shutil.which("jetson_clocks")
    if tool:
        done = subprocess.run([tool, "--show"], capture_output=True, text=True, check=False, timeout=30)
        if done.returncode == 0 and done.stdout.strip():
            return {"jetson_clocks_show": done.stdout.strip().splitlines()}, None
        return None, f"jetson_clocks --show exited {done.returncode} (it needs root)"
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    if cpufreq.is_dir():
        read = lambda name: (cpufreq / name).read_text().strip() if (cpufreq / name).is_file() else None  # noqa: E731
        return {"cpu0_scaling_governor": read("scaling_governor"), "cpu0_scaling_min_freq_khz": read("scaling_min_freq"),
                "cpu0_scaling_max_freq_khz": read("scaling_max_freq")}, None
    return None, "no jetson_clocks and no Linux cpufreq interface on this host"


REPLAY_ENV = "MOEBENCH_MONITOR_REPLAY"


def monitor_replay() -> dict[str, str] | None:
    """{tool: recorded output it replays}, when whoever put the hardware tools on PATH says they replay
    recordings (the emulated Jetson smoke does, for tegrastats and nvpmodel); None on real hardware.

    The kit cannot tell a replaying stand-in from NVIDIA's tool by its output, which is the point of
    a replay; so the stand-ins are declared, and every record then says its power numbers were replayed."""
    raw = os.environ.get(REPLAY_ENV)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) and isinstance(v, str)
                                                           for k, v in value.items()):
        raise UserError(REPLAY_ENV, f"is not a JSON object of tool name -> replayed file ({raw[:80]!r})",
                        'set it as {"tegrastats": "tests/fixtures/tegrastats/orin_nano.txt"}, or unset it')
    return dict(sorted(value.items()))


def compiler_versions(compiler: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The build manifest's compiler version lines, C / C++ [/ nvcc's release line], or (None, reason).

    Version lines, not paths: `/usr/bin/cc` says nothing of which compiler it is; these lines are the
    ones the toolchain id is derived from."""
    if not compiler:
        return None, "the build manifest has no compiler"
    wanted = ["c_version", "cxx_version"] + (["cuda_version"] if compiler.get("cuda") else [])
    missing = [key for key in wanted if not str(compiler.get(key) or "").strip()]
    if missing:
        return None, (f"the build manifest records no compiler.{', compiler.'.join(missing)} (written by an older "
                      "moebench); rebuild with `invoke build` to record the compilers' version lines")
    lines = [str(compiler["c_version"]).strip(), str(compiler["cxx_version"]).strip()]
    if compiler.get("cuda"):
        lines.append(_nvcc_release_line(str(compiler["cuda_version"])))
    return " / ".join(lines), None


def _nvcc_release_line(version_text: str) -> str:
    """`Cuda compilation tools, release 13.0, V13.0.88` out of nvcc's --version banner."""
    lines = [line.strip() for line in version_text.splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("Cuda compilation tools")),
                next((line for line in lines if "release" in line), lines[0]))


def collect_run_provenance(cfg: Config, *, device: Device, pin: str, manifest: dict[str, Any] | None,
                           manifest_reason: str | None, binary_name: str, binary_path: Path,
                           command_line: list[str], allow_unverified: bool, verified: bool) -> dict[str, Any]:
    """Every provenance field except the model's; `for_model` completes it per record. `device` is
    the run's resolved profile."""
    reasons: dict[str, str] = {}
    prov: dict[str, Any] = {"binary_name": binary_name, "llama_cpp_pin": pin}
    prov["binary_sha256"] = sha256_file(binary_path)
    build = manifest or {}
    no_manifest = manifest_reason or "no build manifest"
    prov["llama_cpp_commit"] = build.get("commit")
    prov["source_tree_hash"] = build.get("source_tree_hash")
    prov["source_channel"] = build.get("source_channel")
    prov["compiler"], reason = compiler_versions(build.get("compiler"))
    _reason(reasons, "compiler", no_manifest if manifest is None else reason)
    prov["build_flags"] = list(build["cmake_flags"]) if build.get("cmake_flags") is not None else None
    prov["toolchain_id"] = build.get("toolchain_id")
    for name in ("llama_cpp_commit", "source_tree_hash", "source_channel", "build_flags", "toolchain_id"):
        if prov[name] is None:
            reasons[name] = no_manifest if manifest is None else f"the build manifest has no {name}"
    prov["image_digest"], reason = image_digest()
    _reason(reasons, "image_digest", reason)
    mode, reason = query_power_mode()
    prov["power_mode"] = str(mode["power_mode"]) if mode else None
    _reason(reasons, "power_mode", reason)
    prov["clocks"], reason = clocks()
    _reason(reasons, "clocks", reason)
    replay = monitor_replay()
    if replay is not None:
        prov["monitor_replay"] = replay
    prov["host"] = {**host_info(), **machine_identity(), "memory_bandwidth": host_memory_bandwidth()}
    if "nvml" in device.monitors:
        prov["gpu"], reason = gpu_identity()
    else:
        prov["gpu"], reason = None, f"device {device.name} has no nvml monitor (configs/devices.yaml)"
    _reason(reasons, "gpu", reason)
    prov["kit_commit"], prov["kit_dirty"], reason = kit_state()
    _reason(reasons, "kit_commit", reason)
    _reason(reasons, "kit_dirty", reason)
    prov["config_sha256"] = dict(cfg.file_sha256)
    prov["started_at"] = utc_now()
    prov["command_line"] = list(command_line)
    prov["allow_unverified"] = allow_unverified
    prov["verified"] = verified
    prov["null_reasons"] = reasons
    return prov


REAL_MODEL_TOKENIZER = "real (the model file's own)"


def tokenizer_statement(spec: ModelSpec, model_source: str) -> str:
    """Whose tokenizer the model file carries: a real file its own, a replica the one models.yaml
    names (`real (llama.cpp models/ggml-vocab-llama-bpe.gguf)`, `approximate (...)`, `synthetic`)."""
    return REAL_MODEL_TOKENIZER if model_source == "real" else spec.tokenizer.statement


def for_model(run_provenance: dict[str, Any], *, model_path: Path | None, model_sha256: str | None,
              model_source: str, tokenizer: str, reason: str | None = None) -> dict[str, Any]:
    prov = dict(run_provenance)
    prov["null_reasons"] = dict(run_provenance["null_reasons"])
    prov["model_path"] = str(model_path) if model_path else None
    prov["model_sha256"] = model_sha256
    prov["model_source"] = model_source
    prov["tokenizer"] = tokenizer
    for name in ("model_path", "model_sha256"):
        if prov[name] is None:
            prov["null_reasons"][name] = reason or "model not resolved"
    return prov


def _reason(reasons: dict[str, str], name: str, reason: str | None) -> None:
    if reason:
        reasons[name] = reason
