"""Do two builds of one device and pin (CUDA above all), on two fresh machines and from two clone directories, give
the same bytes?

Two steps, because one machine cannot stand in for two:

  build    on a GPU machine, in a clone of the kit at a path of its own on each machine: build --device
           there (its work directory inside that clone) and write what came out (binary and object
           SHA-256s, nvcc's version, the toolchain id, the compile path, the build time) to --out.
  compare  here: read two such files and write benchmarks/results/reproducibility_<device>_<pin>.json: the verdict
           per binary, the objects that differ, and (with --objects-a/--objects-b, copies of the first
           differing object from each build) diffoscope's account of where the bytes differ.

The source needs no network: --source-tar is the verified tree of the pin with its marker, as the kit
keeps them under MOEBENCH_HOME/src, so the build re-checks it exactly as it would a fresh fetch.
Without it the build fetches the source as `invoke build` does (the kit's own copy, else the network).
CI runs both steps on the CPU host (`build --device cpu` twice: the kit's own build and its no-op
rebuild), whose comparison must say identical (tests/test_benchmarks.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from _common import RESULTS

KIT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    build = sub.add_parser("build")
    build.add_argument("--source-tar", type=Path, help="tar of MOEBENCH_HOME/src/<pin>-<commit> + marker")
    build.add_argument("--device", default="cuda_sm90")
    build.add_argument("--pin", default="offline")
    build.add_argument("--label", required=True)
    build.add_argument("--out", type=Path, required=True)
    compare = sub.add_parser("compare")
    compare.add_argument("a", type=Path)
    compare.add_argument("b", type=Path)
    compare.add_argument("--objects-a", type=Path, help="the first differing object as build A made it")
    compare.add_argument("--objects-b", type=Path, help="the same object as build B made it")
    compare.add_argument("--results-dir", type=Path, default=RESULTS,
                         help="where reproducibility_<device>_<pin>.json goes (default benchmarks/results)")
    return parser.parse_args()


def build_step(a: argparse.Namespace) -> None:
    from moebench import paths
    from moebench.pins.build import build, build_dir_for
    from moebench.config import load_config
    from moebench.hashing import sha256_files

    if a.source_tar is not None:
        paths.sources_dir().mkdir(parents=True, exist_ok=True)
        with tarfile.open(a.source_tar) as tar:
            tar.extractall(paths.sources_dir(), filter="tar")
    started = time.monotonic()
    manifest = build(load_config(), a.device, a.pin)
    seconds = time.monotonic() - started
    cmake_dir = build_dir_for(a.device, a.pin) / "cmake"
    objects = sorted(cmake_dir.rglob("*.o"))
    digests = sha256_files(objects)
    result = {
        "label": a.label, "kit_dir": str(KIT), "build_dir": str(build_dir_for(a.device, a.pin)), "device": a.device,
        "pin": a.pin, "host": platform.node(), "toolchain_id": manifest["toolchain_id"],
        "nvcc_version": manifest["compiler"].get("cuda_version"), "compile_path": manifest["compile_path"],
        "build_seconds": round(seconds, 1), "jobs": manifest["jobs"],
        "binaries": {name: entry["sha256"] for name, entry in manifest["binaries"].items()},
        "objects": {str(path.relative_to(cmake_dir)): digests[path] for path in objects},
        "cmake_flags": manifest["cmake_flags"],
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "objects"}, indent=2))


def diffoscope_summary(first: Path, second: Path) -> str:
    if shutil.which("diffoscope") is None:
        return "diffoscope is not installed here (apt-get install diffoscope)"
    done = subprocess.run(["diffoscope", "--no-progress", "--max-report-size", "200000", str(first), str(second)],
                          capture_output=True, text=True)
    return done.stdout[:20000] or "diffoscope found no difference"


def compare_step(a: argparse.Namespace) -> None:
    first, second = json.loads(a.a.read_text()), json.loads(a.b.read_text())
    binaries = {name: {"a": sha, "b": second["binaries"].get(name),
                       "verdict": "IDENTICAL" if sha == second["binaries"].get(name) else "DIFFERENT"}
                for name, sha in first["binaries"].items()}
    differing = sorted(name for name, sha in first["objects"].items() if second["objects"].get(name) != sha)
    result = {
        "question": f"are two {first['device']} builds of pin {first['pin']}, on two fresh machines from two clone "
                    "paths, byte-identical?",
        "device": first["device"], "pin": first["pin"],
        "same_toolchain": first["toolchain_id"] == second["toolchain_id"],
        "toolchain_id": first["toolchain_id"], "nvcc_version": first["nvcc_version"],
        "builds": [{k: v for k, v in side.items() if k not in ("objects", "binaries")} for side in (first, second)],
        "binaries": binaries,
        "objects_compared": len(first["objects"]), "objects_differing": differing,
        "identical": all(entry["verdict"] == "IDENTICAL" for entry in binaries.values()) and not differing,
    }
    if differing and a.objects_a and a.objects_b:
        result["diffoscope_first_differing_object"] = {"object": differing[0],
                                                       "report": diffoscope_summary(a.objects_a, a.objects_b)}
    a.results_dir.mkdir(parents=True, exist_ok=True)
    if (first["device"], first["pin"]) != (second["device"], second["pin"]):
        raise SystemExit(f"{a.a} builds {first['device']}/{first['pin']}, {a.b} {second['device']}/{second['pin']}: "
                         "compare two builds of one device and pin")
    out = a.results_dir / f"reproducibility_{first['device']}_{first['pin']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, entry in binaries.items():
        print(f"{entry['verdict']:<10} {name:<15} {entry['a']}")
    print(f"{len(differing)} of {len(first['objects'])} objects differ -> {out}")


if __name__ == "__main__":
    args = parse_args()
    if args.step == "build":
        build_step(args)
    else:
        compare_step(args)
