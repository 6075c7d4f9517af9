"""(d) What do the foundation's guarantees cost? (i) a fresh deterministic build of the offline pin in a
temporary work root (the whole build() call: source check, copy, re-hash, configure, compile, manifest);
(ii) the no-op rebuild of the kit's build (fingerprint plus re-hash of every binary), median of --noop-reps;
(iii) verify throughput: the same files (source archive, the binaries, the tiny replicas and a random file
of --big-file-gib GiB) hashed with moebench.hashing.sha256_files (threads), with sha256_file one by one,
and with coreutils sha256sum (one process, the same files as arguments).

The page cache cannot be dropped without root, so every file is read once before timing and all three
hashers run warm: the figures are hashing throughput, not disk throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import add_quick_and_results_dir, stats

from moebench import paths
from moebench.pins.build import build, build_dir_for, load_manifest, toolchain
from moebench.config import load_config
from moebench.hashing import HASH_WORKERS, sha256_file, sha256_files

DEVICE, PIN = "cpu", "offline"
GIB = 1 << 30


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop-reps", type=int, default=5)
    parser.add_argument("--hash-reps", type=int, default=3, help="timed passes of each hasher (median reported)")
    parser.add_argument("--big-file-gib", type=float, default=1.0)
    parser.add_argument("--skip-fresh-build", action="store_true", help="leave out (i) (minutes on 2 cores)")
    add_quick_and_results_dir(parser, "one pass of (ii) and (iii), a 1 MiB random file and no fresh build: does the "
                                      "script still run?")
    a = parser.parse_args()
    if a.quick:
        a.noop_reps, a.hash_reps, a.big_file_gib, a.skip_fresh_build = 1, 1, 1 / 1024, True
    return a


def fresh_build(kit_manifest: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="moebench-bench-build-") as work:
        load_before = os.getloadavg()
        started = time.monotonic()
        manifest = build(load_config(), DEVICE, PIN, work_root=Path(work), progress=False)
        seconds = time.monotonic() - started
    identical = {name: entry["sha256"] == kit_manifest["binaries"][name]["sha256"]
                 for name, entry in manifest["binaries"].items()}
    return {"build_call_s": seconds, "manifest_build_seconds": manifest["build_seconds"], "jobs": manifest["jobs"],
            "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": os.getloadavg(),
            "binaries_identical_to_kit_build": identical}


def noop_rebuild(reps: int) -> dict:
    build(load_config(), DEVICE, PIN, progress=False)  # a real no-op before timing (and proof there is a build)
    times = []
    for _ in range(reps):
        started = time.monotonic()
        build(load_config(), DEVICE, PIN, progress=False)
        times.append(time.monotonic() - started)
    return {**stats(times), "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times}


def hash_set(big_file: Path) -> list[Path]:
    binaries = sorted((build_dir_for(DEVICE, PIN) / "bin").iterdir())
    replicas = sorted((paths.models_dir() / "replica-tiny").glob("*.gguf"))
    return [*sorted(paths.downloads_dir().glob("*.tar.gz")), *binaries, *replicas, big_file]


def write_random(path: Path, size: int) -> None:
    chunk = 64 << 20
    with open(path, "wb") as handle:
        for offset in range(0, size, chunk):
            handle.write(os.urandom(min(chunk, size - offset)))


def coreutils_sha256sum(files: list[Path]) -> dict[Path, str]:
    out = subprocess.run(["sha256sum", "--", *map(str, files)], capture_output=True, text=True, check=True).stdout
    return {Path(line[66:]): line[:64] for line in out.splitlines()}


def throughput(files: list[Path], reps: int) -> dict:
    total = sum(path.stat().st_size for path in files)
    for path in files:  # warm the page cache for every hasher alike
        with open(path, "rb", buffering=0) as handle:
            while handle.read(16 << 20):
                pass
    hashers = {
        "hashlib_threads": lambda: sha256_files(files),
        "hashlib_one_by_one": lambda: {path: sha256_file(path) for path in files},
        "coreutils_sha256sum": lambda: coreutils_sha256sum(files),
    }
    results, digests = {}, {}
    for name, run in hashers.items():
        times = []
        for _ in range(reps):
            started = time.monotonic()
            digests[name] = run()
            times.append(time.monotonic() - started)
        median = statistics.median(times)
        results[name] = {**stats(times), "median_s": median, "gb_per_s": total / median / 1e9, "times_s": times}
    assert len({json.dumps({str(k): v for k, v in d.items()}, sort_keys=True) for d in digests.values()}) == 1, \
        "the hashers disagree"
    return {"files": len(files), "bytes": total, "warm_page_cache": True, "hash_workers": HASH_WORKERS,
            "hashers": results}


def host_meta() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    sha256sum_version = subprocess.run(["sha256sum", "--version"], capture_output=True, text=True).stdout
    return {"host": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(), "sha_ni": " sha_ni" in flags,
            "python": sys.version.split()[0], "openssl": ssl.OPENSSL_VERSION,
            "sha256sum": sha256sum_version.splitlines()[0] if sha256sum_version else None,
            "toolchain": {k: v for k, v in toolchain().items() if k != "cmake"}}


def main() -> None:
    a = parse_args()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    kit_manifest = load_manifest(DEVICE, PIN)
    body: dict = {}
    body["fresh_build"] = None if a.skip_fresh_build else fresh_build(kit_manifest)
    body["noop_rebuild"] = noop_rebuild(a.noop_reps)
    with tempfile.TemporaryDirectory(prefix="moebench-bench-hash-") as work:
        big = Path(work) / "random.bin"
        write_random(big, int(a.big_file_gib * GIB))
        body["verify_throughput"] = throughput(hash_set(big), a.hash_reps)
    meta = {**host_meta(), "kit_build_fingerprint": kit_manifest["fingerprint"], "started_at": started_at,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "argv": sys.argv[1:],
            "quick": a.quick}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    out = a.results_dir / "build_verify.json"
    out.write_text(json.dumps({"benchmark": "build_verify", "meta": meta, **body}, indent=2) + "\n")
    print(summary(body))
    print(f"wrote {out}")


def summary(body: dict) -> str:
    lines = [f"{'measurement':<34} {'value':>12}", f"{'-' * 34} {'-' * 12}"]
    if body["fresh_build"]:
        lines.append(f"{'fresh build, whole build() call':<34} {body['fresh_build']['build_call_s']:>10.1f} s")
    noop = body["noop_rebuild"]
    label = f"no-op rebuild (median of {noop['n']})"
    lines.append(f"{label:<34} {noop['median_s']:>10.3f} s")
    vt = body["verify_throughput"]
    for name, entry in vt["hashers"].items():
        lines.append(f"{name:<34} {entry['gb_per_s']:>7.2f} GB/s")
    lines.append(f"({vt['files']} files, {vt['bytes'] / 1e9:.2f} GB, page cache warm, "
                 f"{vt['hash_workers']} hash threads)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
