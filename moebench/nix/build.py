"""`invoke nix.build`: build llama.cpp through the flake and hand the result to the kit like a kit build.

`nix build .#llama-cpp-<device>[-<pin>]` builds by the kit's recipe (nix/recipe.nix) from nix/pins.json;
its output holds bin/ and share/moebench/build-info.json (compilers, cmake, the flags it passed, the
tree hash it measured, where it compiled). Here the binaries are copied into the kit's build directory
for the device and pin, and a build manifest of the same schema as moebench.pins.build writes goes beside
them, so `invoke verify` and `invoke run` use a Nix build exactly like a kit build.

Nothing is taken on trust from build-info.json: its flags must be `moebench.pins.build.recipe`'s for the
directory it names, its tree hash the lock's (where pinned), its commit the pin's, its nixpkgs the
flake.lock's; any difference is refused, naming both values.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moebench.pins import build
from moebench.nix import pins as nixpins
from moebench import paths
from moebench.config import REPO_ROOT, Config
from moebench.errors import IntegrityError, UserError
from moebench.files import write_atomic
from moebench.hashing import sha256_file, sha256_files

FLAKE_LOCK = REPO_ROOT / "flake.lock"
BUILD_INFO = Path("share") / "moebench" / "build-info.json"
NIX_FEATURES = ("--extra-experimental-features", "nix-command flakes")
BUILD_INFO_KEYS = ("device", "pin", "commit", "nixpkgs_rev", "source_tree_hash", "build_dir", "compiler", "cmake",
                   "cmake_version", "cmake_flags", "env")


def nix_system() -> str:
    """This host as Nix names systems: x86_64-linux, aarch64-linux, aarch64-darwin."""
    machine = {"arm64": "aarch64", "amd64": "x86_64"}.get(platform.machine().lower(), platform.machine().lower())
    return f"{machine}-{'darwin' if sys.platform == 'darwin' else 'linux'}"


def nixpkgs_rev(lock: Path = FLAKE_LOCK) -> str:
    try:
        return json.loads(lock.read_text(encoding="utf-8"))["nodes"]["nixpkgs"]["locked"]["rev"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise UserError(lock, f"no nixpkgs revision ({exc.__class__.__name__}: {exc})",
                        "restore flake.lock from git") from None


def toolchain_id(system: str, rev: str) -> str:
    return f"nix-{system}-nixpkgs-{rev[:12]}"


def attribute(cfg: Config, device: str, pin: str) -> str:
    return f"llama-cpp-{device}" if pin == cfg.device(device).default_pin else f"llama-cpp-{device}-{pin}"


def _require_buildable(cfg: Config, device: str, system: str) -> None:
    entry = nixpins.generate(cfg)["devices"][device]
    if system not in entry["systems"]:
        why = entry["not_built_because"] or f"the flake builds it for {', '.join(entry['systems'])}"
        raise UserError(nixpins.PINS_JSON, f"no llama-cpp-{device} package for {system}: {why}",
                        f"build it with: invoke build --device {device}", key=f"devices.{device}.systems")


def nix_executable() -> str:
    nix = shutil.which("nix")
    if nix is None:
        raise UserError("nix", "not installed", "install Nix with flakes (https://nixos.org/download), then retry")
    return nix


def run_nix_build(attr: str, out_link: Path) -> Path:
    """`nix build <kit>#<attr>`; the store path it built (`out_link` keeps it from garbage collection)."""
    nix = nix_executable()
    out_link.parent.mkdir(parents=True, exist_ok=True)
    args = [nix, *NIX_FEATURES, "build", "--out-link", str(out_link), f"{REPO_ROOT}#{attr}"]
    print(f"$ {' '.join(args)}", file=sys.stderr, flush=True)
    if subprocess.run(args, cwd=REPO_ROOT, check=False).returncode != 0:
        raise UserError(f"{REPO_ROOT}#{attr}", "nix build failed (its log is above)",
                        "fix the error nix names; nix/pins.json and nix/*.nix must be tracked by git for the flake "
                        "to see them")
    if not out_link.exists():
        raise UserError(out_link, "nix build left no result link", "run the nix build command above by hand")
    return out_link.resolve()


def _read_build_info(result: Path) -> dict[str, Any]:
    path = result / BUILD_INFO
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        problem = f"the nix build wrote no readable build info ({exc})"
    else:
        missing = [key for key in BUILD_INFO_KEYS if key not in info]
        problem = f"build info lacks {', '.join(missing)}" if missing else ""
    if problem:
        raise UserError(path, problem, "rebuild with this checkout's flake: invoke nix.build")
    return info


def check_build_info(cfg: Config, device: str, pin: str, info: dict[str, Any], rev: str) -> None:
    """Refuse a result that was not built by the kit's recipe from the lock's pins."""
    where = f"build-info.json of {device}/{pin}"
    pinned = cfg.pin(pin)
    expected_flags = build.recipe(cfg.device(device), Path(info["build_dir"]), Path(info["build_dir"]) / "tools" / "git",
                                  {"compiler": info["compiler"]})["cmake_flags"]
    checks = [("device", device, info.get("device")), ("pin", pin, info.get("pin")),
              ("commit", pinned.commit, info.get("commit")), ("nixpkgs_rev", rev, info.get("nixpkgs_rev")),
              ("cmake_flags", expected_flags, info.get("cmake_flags"))]
    if pinned.tree_hash is not None:
        checks.append(("source_tree_hash", pinned.tree_hash, info.get("source_tree_hash")))
    for key, expected, actual in checks:
        if expected != actual:
            raise IntegrityError(where, f"{key} is {actual!r}, the kit expects {expected!r}",
                                 "rebuild from this checkout: invoke nix.pins, then invoke nix.build", key=key)


def _fingerprint(store_path: Path, info: dict[str, Any], binaries: dict[str, Any]) -> str:
    data = {"builder": "nix", "store_path": str(store_path), "cmake_flags": info["cmake_flags"],
            "binaries": {name: entry["sha256"] for name, entry in binaries.items()}}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def hand_off(cfg: Config, device: str, pin: str, result: Path, system: str | None = None,
             work_root: Path | None = None) -> dict[str, Any]:
    """Copy a nix build result into the kit's build directory and write its build manifest."""
    started = time.monotonic()
    result = result.resolve()
    info = _read_build_info(result)
    rev = nixpkgs_rev()
    check_build_info(cfg, device, pin, info, rev)
    build_dir = build.build_dir_for(device, pin, work_root)
    if build_dir.exists():
        shutil.rmtree(build_dir)
    (build_dir / "bin").mkdir(parents=True)
    wanted = [*build.REQUIRED_TARGETS, *build.OPTIONAL_TARGETS]
    missing = [name for name in build.REQUIRED_TARGETS if not (result / "bin" / name).is_file()]
    if missing:
        raise UserError(result / "bin", f"the nix build has no {', '.join(missing)}", "see the nix build log")
    for name in wanted:
        if (result / "bin" / name).is_file():
            shutil.copyfile(result / "bin" / name, build_dir / "bin" / name)
            (build_dir / "bin" / name).chmod(0o755)
    digests = sha256_files(sorted((build_dir / "bin").iterdir()))
    binaries = {path.name: {"path": f"bin/{path.name}", "sha256": digest, "size_bytes": path.stat().st_size}
                for path, digest in digests.items()}
    manifest = _manifest(cfg, device, pin, info, result, system or info.get("system") or nix_system(), rev, binaries)
    manifest["build_seconds"] = round(time.monotonic() - started, 1)
    text = json.dumps(manifest, indent=2) + "\n"
    write_atomic(build_dir / "manifest.json", text)
    return json.loads(text)


def _manifest(cfg: Config, device: str, pin: str, info: dict[str, Any], result: Path, system: str, rev: str,
              binaries: dict[str, Any]) -> dict[str, Any]:
    pinned = cfg.pin(pin)
    source = nixpins.generate(cfg)["pins"][pin]["source"]
    patch = cfg.device(device).patches.get(pin)
    backend = cfg.device(device).backend
    fixed = backend != "cuda" or (system.endswith("-linux") and info["build_dir"] == "/build/moebench")
    return {
        "schema_version": build.MANIFEST_SCHEMA_VERSION, "device": device, "pin": pin, "commit": pinned.commit,
        "build_number": pinned.build_number,
        "source_channel": {"sdist": "pypi_sdist", "archive": "archive", "git": "git"}[source["type"]],
        "source_tree_hash": info["source_tree_hash"], "archive_sha256": source.get("sha256"),
        "patch": patch, "patch_sha256": sha256_file(cfg.root.parent / patch) if patch else None,
        "compiler": info["compiler"], "cmake": info["cmake"], "cmake_version": info["cmake_version"],
        "cmake_flags": info["cmake_flags"], "toolchain_cmake_flags": info.get("toolchain_cmake_flags", []),
        "env": info["env"], "source_date_epoch": int(build.SOURCE_DATE_EPOCH),
        "prefix_map": {"from": info["build_dir"], "to": build.PREFIX_MAP_TARGET},
        "toolchain_id": toolchain_id(system, rev),
        "compile_path": {"path": info["build_dir"], "fixed": fixed, "why_not": None if fixed else (
            "a CUDA build is identical only to builds at the same path; this nix build did not compile at "
            "/build/moebench (Nix's fixed build path on Linux)")},
        "binaries": binaries, "failed_targets": info.get("failed_targets", {}), "jobs": info.get("jobs"),
        "fingerprint": _fingerprint(result, info, binaries),
        "builder": {"name": "nix", "flake_attribute": attribute(cfg, device, pin), "store_path": str(result),
                    "system": system, "nixpkgs_rev": rev},
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def nix_build(cfg: Config, device: str, pin: str, work_root: Path | None = None) -> dict[str, Any]:
    """`invoke nix.build`: build `llama-cpp-<device>[-<pin>]` with nix, then hand it to the kit."""
    nix_executable()
    system = nix_system()
    _require_buildable(cfg, device, system)
    nixpins.check_pins_file(cfg)  # the flake must build the pins the kit will verify against
    root = Path(work_root).resolve() if work_root is not None else paths.work_dir()
    result = run_nix_build(attribute(cfg, device, pin), root / "nix" / f"result-{device}-{pin}")
    return hand_off(cfg, device, pin, result, system, work_root)
