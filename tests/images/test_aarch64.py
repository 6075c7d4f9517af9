"""aarch64 under qemu-user, as far as it goes without a Jetson.

* The cpu-arm64 image, built from clean state, is the one lock.yaml pins. That build is
  benchmarks/bench_aarch64.py's quick run, so one emulated build checks both the image and the script.
* The jetson image's Dockerfile builds on its arm64 stand-in base (Debian, no CUDA) and its entry
  point, venv and the mounts of the host's Jetson tools work.
* An emulated Jetson (the jetson profile's monitors and power mode, CUDA off, profile only in a
  test copy of configs/) builds the pinned llama.cpp in the arm64 image and runs a smoke there with
  tegrastats and nvpmodel replayed: its binaries are the lock's aarch64 cpu binaries, and its records
  carry the replayed power mode and energy, and say they were replayed.

CI runs the first two (about 9 min under emulation on 2 cores). The smoke needs an aarch64 build of
llama.cpp (about 10 min more), so it runs where benchmarks/bench_aarch64.py sets MOEBENCH_AARCH64_SMOKE,
beside building the image twice and the binaries twice in two directories; its results are
committed in benchmarks/results/aarch64.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import assert_is_the_pinned_image, work_home
from jetson_replay import replay_declaration, write_stand_ins
from test_benchmarks import run_benchmark

from moebench import paths
from moebench.config import REPO_ROOT, load_config
from moebench.images.archive import KIT_MOUNT
from moebench.images.builder import build_image
from moebench.images.launch import (JETSON_HOST_FILES, MODELS_MOUNT, WORK_MOUNT, container_environment, pinned_image,
                                    run_container)
from moebench.pins.source import fetch_source

pytestmark = pytest.mark.slow

DEVICE = "jetson_emulated"
SMOKE_MODEL = "olmoe-1b-7b-0924-instruct-q4km"


@pytest.fixture(scope="module")
def arm64_quick_run(engine_client, can_debootstrap, can_emulate_aarch64, tmp_path_factory) -> dict:
    """`bench_aarch64.py --quick`: the cpu-arm64 image built once from clean state and loaded."""
    results = tmp_path_factory.mktemp("aarch64-results")
    run_benchmark("bench_aarch64.py", "--quick", "--results-dir", str(results), timeout=1800)
    return json.loads((results / "aarch64.json").read_text())


def test_arm64_image_is_the_one_the_lock_pins(arm64_quick_run, engine_client):
    assert arm64_quick_run["quick"] and set(arm64_quick_run) == {"benchmark", "host", "measured_at", "quick", "image"}
    assert arm64_quick_run["host"]["machine"] == "x86_64" and arm64_quick_run["host"]["qemu"]
    (build,) = arm64_quick_run["image"]["builds"]
    image = assert_is_the_pinned_image(SimpleNamespace(**build), "cpu-arm64", engine_client)
    assert build["against_lock"] in {"identical", "drift"}
    assert image.attrs["Architecture"] == "arm64"
    machine = engine_client.containers.run(image.id, entrypoint=["uname", "-m"], remove=True).decode().strip()
    assert machine == "aarch64"


def _stand_in_volumes(directory: Path) -> dict[str, dict[str, str]]:
    """The replaying stand-ins, bind-mounted read-only where the launcher mounts the host's tools."""
    stand_ins = write_stand_ins(directory)
    assert set(stand_ins) <= set(JETSON_HOST_FILES)
    return {str(script): {"bind": tool, "mode": "ro"} for tool, script in stand_ins.items()}


# The kit's own monitors in the image, on whatever answers at the host tools' paths; the second window
# is the one a measured cell gets (the first line before it holds the power at its start).
MONITOR_PROBE = ("import json, shutil, time; from moebench.run.monitors.nvpmodel import query_power_mode; "
                 "from moebench.run.monitors.tegrastats import TegrastatsMonitor; m = TegrastatsMonitor(); "
                 "[(m.start(None), time.sleep(0.6), m.stop()) for _ in range(2)]; r = m.result(); m.close(); "
                 "print(json.dumps({'tools': [shutil.which('tegrastats'), shutil.which('nvpmodel')], "
                 "'mode': query_power_mode()[0], 'tegrastats': r.as_dict()}))")


def test_jetson_dockerfile_on_the_arm64_standin(engine_client, can_debootstrap, can_emulate_aarch64,
                                                tmp_path_factory, tmp_path):
    cfg = load_config()
    with work_home(tmp_path_factory.mktemp("jetson-standin-home")):
        base = build_image(cfg, "jetson-standin-base", check_lock=False)
        assert_is_the_pinned_image(base, "jetson-standin-base", engine_client)
        standin = build_image(cfg, "jetson-standin")
    print(f"\njetson stand-in base {base.seconds}, jetson-standin {standin.seconds}")
    assert standin.base_digest == base.id and standin.layers[0] == base.layers[0]
    assert standin.packages == dict(cfg.lock.images["jetson-standin"].packages)
    assert engine_client.images.get(standin.id).attrs["Architecture"] == "arm64"
    kit = {str(REPO_ROOT): {"bind": KIT_MOUNT, "mode": "ro"}}
    listing = engine_client.containers.run(standin.id, command=["--list"], remove=True, volumes=kit).decode()
    assert "image.build" in listing and "reproduce" in listing
    probe = engine_client.containers.run(
        standin.id, entrypoint=["python", "-c", MONITOR_PROBE], remove=True,
        volumes={**kit, **_stand_in_volumes(tmp_path / "stand-ins")}).decode()
    found = json.loads(probe.strip().splitlines()[-1])
    assert found["tools"] == ["/usr/bin/tegrastats", "/usr/sbin/nvpmodel"]
    assert found["mode"] == {"power_mode": "15W", "mode_id": 0}
    assert found["tegrastats"]["details"]["lines_in_window"] >= 3
    assert 5.0 <= found["tegrastats"]["fields"]["power_w_mean"] <= 9.0  # VDD_IN's recorded range


def _add_emulated_jetson(config_dir: Path) -> None:
    """The test-only profile: the jetson profile (monitors, power mode, memory) with CUDA off, built with
    the cpu profile's flags in the arm64 image; two threads for a two-core emulating host, and no
    bandwidth bound (a datasheet's figure says nothing of an emulated CPU)."""
    path = config_dir / "devices.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jetson, cpu = data["devices"]["jetson"], data["devices"]["cpu"]
    data["devices"][DEVICE] = {
        **jetson, "description": "TEST ONLY: the jetson profile with CUDA off, in the cpu-arm64 image under "
                                 "qemu-user, tegrastats and nvpmodel replayed from tests/fixtures",
        "backend": "cpu", "default_pin": "offline", "threads": 2, "n_gpu_layers": 0,
        "cmake_flags": list(cpu["cmake_flags"]), "image": "cpu-arm64", "experiments": ["experiment_1_efficiency"],
        "memory_bandwidth": {"gb_per_s": None, "source": "qemu-user emulation: the Jetson's datasheet figure does "
                                                         "not bound an emulated CPU"}}
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def _run_kit(client, image_id: str, args: list[str], volumes: dict, environment: dict[str, str]) -> None:
    """`invoke <args>` in the image through the launcher's container runner; its output is the test's."""
    started = time.monotonic()
    code = run_container(client, image_id, args, volumes, environment)
    print(f"invoke {' '.join(args)}: exit {code} after {time.monotonic() - started:.1f} s", flush=True)
    assert code == 0, f"invoke {' '.join(args)} exited {code} in the arm64 image (its output is above)"


SMOKE_ENV = "MOEBENCH_AARCH64_SMOKE"


@pytest.mark.skipif(not os.environ.get(SMOKE_ENV), reason=(
    f"builds llama.cpp for aarch64 under emulation (~10 min on 2 cores), more than CI has: "
    f"benchmarks/bench_aarch64.py runs it with {SMOKE_ENV}=<directory for its records>"))
@pytest.mark.timeout(3000)
def test_emulated_jetson_smoke(engine_client, can_emulate_aarch64, tiny_replica_paths, tmp_config_dir, tmp_path):
    cfg = load_config()
    pinned_id = pinned_image(cfg, engine_client, "cpu-arm64").id  # built from the lock if absent, else checked
    _add_emulated_jetson(tmp_config_dir)
    fetch_source(cfg, "offline")  # on the host, hash-checked, as the launcher does: the image needs no network
    raw = Path(os.environ[SMOKE_ENV]).resolve()
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "smoke.jsonl").unlink(missing_ok=True)
    volumes = {str(REPO_ROOT): {"bind": KIT_MOUNT, "mode": "rw"},
               str(tmp_config_dir): {"bind": f"{KIT_MOUNT}/configs", "mode": "ro"},
               str(paths.work_dir()): {"bind": WORK_MOUNT, "mode": "rw"},
               str(paths.models_dir()): {"bind": MODELS_MOUNT, "mode": "ro"},
               str(raw): {"bind": f"{KIT_MOUNT}/data/raw", "mode": "rw"},
               **_stand_in_volumes(tmp_path / "stand-ins")}
    environment = {**container_environment("cpu-arm64", pinned_id),
                   "MOEBENCH_MONITOR_REPLAY": replay_declaration(), "OMP_WAIT_POLICY": "PASSIVE"}
    _run_kit(engine_client, pinned_id, ["build", f"--device={DEVICE}", "--jobs=2"], volumes, environment)
    _run_kit(engine_client, pinned_id, ["run", f"--device={DEVICE}", "--smoke", f"--only-models={SMOKE_MODEL}",
                                        "--output=/moebench/data/raw/smoke.jsonl"], volumes, environment)

    manifest = json.loads((paths.work_dir() / "build" / "image-cpu-arm64" / f"{DEVICE}-offline" /
                           "manifest.json").read_text())
    assert manifest["toolchain_id"].endswith("_aarch64-linux-gnu")
    pinned_binaries = cfg.lock.binaries[f"cpu/offline/{manifest['toolchain_id']}"]
    assert {name: entry["sha256"] for name, entry in manifest["binaries"].items()} == dict(pinned_binaries), \
        "the emulated Jetson's build (cpu flags) differs from lock.yaml's aarch64 cpu binaries"

    records = [json.loads(line) for line in (raw / "smoke.jsonl").read_text().splitlines()]
    measured = [r for r in records if not r["is_warmup"]]
    assert measured and all(r["failure"] is None and r["gen_tokens"] > 0 for r in records)
    for record in measured:
        prov = record["provenance"]
        assert prov["power_mode"] == "15W" and prov["image_digest"] == pinned_id
        assert prov["host"]["machine"] == "aarch64" and prov["toolchain_id"] == manifest["toolchain_id"]
        assert prov["monitor_replay"] == json.loads(replay_declaration())
        assert record["monitors"]["nvpmodel"]["details"]["at_start"] == {"power_mode": "15W", "mode_id": 0}
        # VDD_IN in the recording is 5.0, 7.0, 9.0 and 5.2 W: the mean power of any window lies within
        assert record["energy_joules"] > 0 and 5.0 <= record["power_w_mean"] <= 9.0
        assert record["joules_per_token"] == pytest.approx(record["energy_joules"] / record["gen_tokens"], rel=0.02)
        assert 46.0 <= record["peak_temp_c"] <= 50.6
