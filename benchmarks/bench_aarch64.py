"""aarch64 from clean state under qemu-user emulation: is it bit for bit, and what does it cost?

1. The cpu-arm64 image, built --runs times, each in a new empty work directory (image IDs, layer
   digests, archive SHA-256s, stage times); the first build is loaded into the engine.
2. `invoke build --device cpu` inside that image, --runs times, each with a new empty work
   directory mounted at a different path in the container (/moebench-work, then deeper ones), so
   the compilers see different build directories: binary SHA-256s, toolchain id, build time.
3. `invoke models.replica --scale tiny` inside the image with the first build's llama-quantize:
   the replicas' SHA-256s against lock.yaml's replicas.tiny/offline (written on x86_64).
4. The emulated Jetson smoke of tests/images/test_aarch64.py (too long for CI), from an empty work
   directory: pass or fail, its time, and its records' throughput, replayed energy and power mode.

Writes benchmarks/results/aarch64.json with the host's facts. Needs root, mmdebstrap, a container
engine and the qemu-aarch64 binfmt handler; about 45 min on a 2-core x86_64 host.

--image-only runs step 1 alone, for re-pinning the image after one of its inputs changed (e.g.
configs/requirements.lock): it replaces the `image` section of the existing results with its own
host facts and time, and names the image the other, earlier sections were measured in.
--quick runs step 1 once and writes its section alone (does the script still run?).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import add_quick_and_results_dir

from moebench.config import REPO_ROOT, load_config
from moebench.hashing import sha256_file
from moebench.images import engine
from moebench.images.archive import KIT_MOUNT
from moebench.images.builder import build_image, lock_comparison
from moebench.images.launch import MODELS_MOUNT, WORK_MOUNT, container_environment, run_container
from moebench.pins.source import fetch_source

IMAGE = "cpu-arm64"
# where each binary build's work directory is mounted in the container: different paths and depths
WORK_PATHS = (WORK_MOUNT, "/srv/lab-b/a/much/deeper/work", "/opt/lab-c/w")


def first_line(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else None


def host_facts() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None)
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu,
            "logical_cores": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
            "qemu": first_line(["qemu-aarch64-static", "--version"]),
            "mmdebstrap": first_line(["mmdebstrap", "--version"]),
            "docker_engine": engine.connect().version().get("Version")}


def image_builds(cfg, runs: int) -> list[dict[str, Any]]:
    builds = []
    for run in range(runs):
        with tempfile.TemporaryDirectory(prefix=f"arm64-image-{run}-") as home:
            os.environ["MOEBENCH_HOME"] = home
            started = time.monotonic()
            result = build_image(cfg, IMAGE, load=run == 0, check_lock=False)
            builds.append({"work_dir": home, "id": result.id, "layers": result.layers,
                           "archive_sha256": result.archive_sha256, "seconds": result.seconds,
                           "total_seconds": round(time.monotonic() - started, 1),
                           "against_lock": lock_comparison(IMAGE, cfg.lock.images[IMAGE], result).verdict,
                           "packages": result.packages})
            print(f"image build {run + 1}: {result.id} in {builds[-1]['total_seconds']} s", flush=True)
    return builds


def in_image(image_id: str, args: list[str], work: Path, work_path: str,
             models: str | None = None) -> tuple[int, float]:
    """`invoke <args>` in the image with `work` mounted at `work_path`: (exit code, wall seconds)."""
    volumes = {str(REPO_ROOT): {"bind": KIT_MOUNT, "mode": "ro"}, str(work): {"bind": work_path, "mode": "rw"}}
    if models is not None:
        volumes[models] = {"bind": MODELS_MOUNT, "mode": "rw"}
    environment = {**container_environment(IMAGE, image_id), "MOEBENCH_HOME": work_path, "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.monotonic()
    code = run_container(engine.connect(), image_id, args, volumes, environment)
    return code, round(time.monotonic() - started, 1)


def binary_build(cfg, image_id: str, work: Path, work_path: str) -> dict[str, Any]:
    os.environ["MOEBENCH_HOME"] = str(work)
    fetch_source(cfg, "offline")  # on the host, hash-checked, as the launcher does
    code, seconds = in_image(image_id, ["build", "--device=cpu", "--pin=offline", "--jobs=2"], work, work_path)
    if code:
        raise SystemExit(f"invoke build exited {code} in image {image_id}")
    manifest = json.loads((work / "build" / f"image-{IMAGE}" / "cpu-offline" / "manifest.json").read_text())
    return {"work_dir": str(work), "path_in_container": f"{work_path}/build/image-{IMAGE}/cpu-offline",
            "toolchain_id": manifest["toolchain_id"], "build_seconds": manifest["build_seconds"],
            "container_seconds": seconds, "binaries": {n: e["sha256"] for n, e in sorted(manifest["binaries"].items())}}


def replicas(cfg, image_id: str, work: Path) -> dict[str, Any]:
    """Each tiny replica written in the image; one model per run, since the kit stops at the first replica
    that differs from the lock (leaving it in .incoming, where it is hashed too)."""
    models: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="arm64-models-") as out:
        for model_id, pinned in cfg.lock.replicas["tiny/offline"].items():
            code, seconds = in_image(image_id, ["models.replica", "--scale=tiny", "--device=cpu", "--pin=offline",
                                                f"--models={model_id}"], work, WORK_MOUNT, out)
            made = [sha256_file(p) for p in Path(out).rglob(f"{model_id}*.gguf")]
            models[model_id] = {"exit_code": code, "seconds": seconds, "sha256": made[0] if len(made) == 1 else made,
                                "lock_sha256": pinned, "equal_to_lock": made == [pinned]}
    return {"models": models, "all_equal_to_lock": all(m["equal_to_lock"] for m in models.values())}


SMOKE_TEST = "tests/images/test_aarch64.py::test_emulated_jetson_smoke"
RECORD_FIELDS = ("is_warmup", "gen_tokens", "gen_tokens_per_s", "prefill_tokens_per_s", "energy_joules",
                 "power_w_mean", "joules_per_token", "peak_temp_c")


def smoke(home: Path) -> dict[str, Any]:
    """The emulated Jetson smoke (tests/images/test_aarch64.py) from an empty work and models directory:
    whether it passed, how long it took, and what its records say."""
    records_dir = home / "records"
    env = {**os.environ, "MOEBENCH_HOME": str(home / "work"), "MOEBENCH_MODELS": str(home / "models"),
           "MOEBENCH_AARCH64_SMOKE": str(records_dir), "OMP_WAIT_POLICY": "PASSIVE"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", SMOKE_TEST],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    seconds = round(time.monotonic() - started, 1)
    print(done.stdout[-3000:], done.stderr[-2000:], flush=True)
    path = records_dir / "smoke.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return {"test": SMOKE_TEST, "passed": done.returncode == 0, "seconds": seconds,
            "pytest_summary": (done.stdout.strip().splitlines() or [""])[-1],
            "records": [{**{name: r[name] for name in RECORD_FIELDS},
                         **{name: r["provenance"].get(name) for name in ("power_mode", "monitor_replay",
                                                                         "toolchain_id", "binary_sha256")},
                         "machine": r["provenance"]["host"]["machine"]} for r in records]}


def image_section(cfg, images: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": IMAGE, "lock_id": cfg.lock.images[IMAGE].id, "builds": images,
            "identical": len({(b["id"], tuple(b["layers"]), b["archive_sha256"]) for b in images}) == 1,
            "equal_to_lock": all(b["id"] == cfg.lock.images[IMAGE].id for b in images)}


def replace_image_section(path: Path, image: dict[str, Any], host: dict[str, Any], measured_at: str) -> dict[str, Any]:
    """The existing results with a re-measured image section; the binaries, replicas and smoke stay those
    measured earlier, in the image that section replaces (whose ID it keeps as `replaces`)."""
    if not path.is_file():
        raise SystemExit(f"{path}: no earlier results to update (fix: run without --image-only first)")
    body = json.loads(path.read_text())
    earlier = body["image"]
    replaces = earlier.get("replaces") or {  # a second re-measure still names the image the rest ran in
        "lock_id": earlier["lock_id"], "measured_at": body["measured_at"],
        "sections_measured_in_it": [k for k in ("binaries", "replicas", "emulated_jetson_smoke") if k in body]}
    body["image"] = {**image, "host": host, "measured_at": measured_at, "replaces": replaces}
    return body


def write_results(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "builds"} if isinstance(v, dict) else v
                      for k, v in body.items()}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, choices=range(1, len(WORK_PATHS) + 1))
    parser.add_argument("--image-only", action="store_true",
                        help="step 1 only: replace the image section of the existing results")
    add_quick_and_results_dir(parser, "step 1 once, written alone")
    a = parser.parse_args()
    if a.quick:
        a.runs = 1
    out = a.results_dir / "aarch64.json"
    cfg = load_config()
    host, measured_at = host_facts(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    images = image_builds(cfg, a.runs)
    if a.image_only:
        write_results(out, replace_image_section(out, image_section(cfg, images), host, measured_at))
        return
    body: dict[str, Any] = {"benchmark": "aarch64_emulated", "host": host, "measured_at": measured_at,
                            "quick": a.quick, "image": image_section(cfg, images)}
    if a.quick:
        write_results(out, body)
        return
    image_id = images[0]["id"]
    with tempfile.TemporaryDirectory(prefix="arm64-builds-") as root:
        builds = [binary_build(cfg, image_id, Path(root) / f"work-{run}", WORK_PATHS[run]) for run in range(a.runs)]
        key = f"cpu/offline/{builds[0]['toolchain_id']}"
        pinned = cfg.lock.binaries.get(key)
        body["binaries"] = {"lock_key": key, "builds": builds,
                            "identical": len({json.dumps(b["binaries"]) for b in builds}) == 1,
                            "equal_to_lock": None if pinned is None else all(b["binaries"] == dict(pinned)
                                                                             for b in builds)}
        body["replicas"] = replicas(cfg, image_id, Path(root) / "work-0")
        body["emulated_jetson_smoke"] = smoke(Path(root) / "smoke")
    write_results(out, body)


if __name__ == "__main__":
    main()
