"""nix/pins.json: the pins and cmake flags the flake builds from, generated from lock.yaml and devices.yaml.

The flake cannot read YAML, so `invoke nix.pins` writes what it needs as one JSON file with sorted keys
and stable bytes. `check()` proves, without nixpkgs, that the flake still agrees with the kit:

* flake.nix and nix/*.nix parse (`nix-instantiate --parse`);
* nix/pins.json equals the JSON generated now from configs/ (byte for byte);
* nix/recipe.nix, evaluated by Nix for every device and pin, gives the same cmake flags, environment
  and git shim as `moebench.pins.build.recipe` for the same build directory.

Nix runs here with `--store dummy://`: evaluating a pure expression needs no store, no daemon and no root.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

from moebench.pins import build
from moebench.config import REPO_ROOT, Config
from moebench.errors import UserError
from moebench.files import write_atomic
from moebench.hashing import sha256_file

PINS_JSON = REPO_ROOT / "nix" / "pins.json"
RECIPE_NIX = REPO_ROOT / "nix" / "recipe.nix"
FLAKE_NIX = REPO_ROOT / "flake.nix"
PINS_SCHEMA_VERSION = 1
# Which Nix systems build a backend. CUDA only on x86_64-linux: nixpkgs' aarch64 CUDA is Jetson's (L4T),
# which the kit builds on the device itself (`invoke build --device jetson`), not through the flake.
NIX_SYSTEMS = {"cpu": ["aarch64-linux", "x86_64-linux"], "cuda": ["x86_64-linux"], "metal": ["aarch64-darwin"]}
JETSON_CUDA_ARCHS = {"72", "87"}
NIX_EVAL_OPTIONS = ("--store", "dummy://")
# The build directory and nvcc both recipes are evaluated with: any fixed strings prove they treat them alike.
CHECK_BUILD_DIR = "/moebench-nix-check/build"
CHECK_CUDA_COMPILER = "/moebench-nix-check/nvcc"


def _source(cfg: Config, pin_name: str) -> dict[str, Any]:
    """What the flake fetches: the pin's sdist or archive where its SHA-256 is pinned, else git at the commit."""
    pin = cfg.pin(pin_name)
    sdist, archive, git = pin.sources.pypi_sdist, pin.sources.archive, pin.sources.git
    if pin.default_source == "pypi_sdist" and sdist is not None:
        return {"type": "sdist", "url": sdist.url, "sha256": sdist.sha256, "subdir": sdist.subdir}
    if pin.default_source == "archive" and archive is not None and archive.sha256 is not None:
        return {"type": "archive", "url": archive.url, "sha256": archive.sha256, "subdir": archive.subdir}
    if git is None:
        raise UserError(cfg.root / "lock.yaml", f"pin {pin_name!r} has no pinned archive SHA-256 and no git source",
                        "add sources.git or record the archive's sha256 (invoke build, then invoke lock)",
                        key=f"llama_cpp.{pin_name}.sources")
    return {"type": "git", "url": git.url, "rev": pin.commit}


def _systems(backend: str, cmake_flags: tuple[str, ...]) -> tuple[list[str], str | None]:
    archs = {arch for flag in cmake_flags if flag.startswith("-DCMAKE_CUDA_ARCHITECTURES=")
             for arch in flag.split("=", 1)[1].split(";")}
    if backend == "cuda" and archs and archs <= JETSON_CUDA_ARCHS:
        return [], "nixpkgs' CUDA for Jetson (L4T, sm_87) is not used; the kit builds it on the Jetson itself"
    return list(NIX_SYSTEMS[backend]), None


def generate(cfg: Config) -> dict[str, Any]:
    """The content of nix/pins.json for these configs."""
    pins = {name: {"commit": pin.commit, "build_number": pin.build_number, "tree_hash": pin.tree_hash,
                   "generated_files": list(pin.generated_files), "gitlinks": dict(sorted(pin.gitlinks.items())),
                   "source": _source(cfg, name)}
            for name, pin in cfg.lock.llama_cpp.items()}
    devices = {}
    for name, device in cfg.devices.devices.items():
        systems, why = _systems(device.backend, device.cmake_flags)
        devices[name] = {"backend": device.backend, "cmake_flags": [*build.BASE_CMAKE_FLAGS, *device.cmake_flags],
                         "default_pin": device.default_pin, "systems": systems, "not_built_because": why,
                         "patches": {pin: {"path": patch, "sha256": sha256_file(cfg.root.parent / patch)}
                                     for pin, patch in sorted(device.patches.items())}}
    return {"schema_version": PINS_SCHEMA_VERSION,
            "generated_by": "invoke nix.pins, from configs/lock.yaml and configs/devices.yaml; do not edit",
            "source_date_epoch": build.SOURCE_DATE_EPOCH, "prefix_map_target": build.PREFIX_MAP_TARGET,
            "targets": {"required": list(build.REQUIRED_TARGETS), "optional": list(build.OPTIONAL_TARGETS)},
            "git_shim_template": build.GIT_SHIM, "pins": pins, "devices": devices}


def render(cfg: Config) -> bytes:
    return (json.dumps(generate(cfg), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_pins(cfg: Config, path: Path = PINS_JSON) -> Path:
    return write_atomic(path, render(cfg))


def check_pins_file(cfg: Config, path: Path = PINS_JSON) -> str:
    """One line when `path` is what configs/ generate; UserError naming the first differing key otherwise."""
    if not path.is_file():
        raise UserError(path, "missing", "run: invoke nix.pins")
    if path.read_bytes() == render(cfg):
        return f"ok: {path.name} matches configs/lock.yaml and configs/devices.yaml"
    try:
        committed = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        committed = None
    key = _first_difference(committed, generate(cfg)) if committed is not None else "(not valid JSON)"
    raise UserError(path, f"differs from what configs/lock.yaml and configs/devices.yaml generate at {key}",
                    "run: invoke nix.pins")


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key, object()) != b.get(key, object()):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    return where or "(top level)"


# --- Nix evaluation --------------------------------------------------------------------------------

def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if found is None:
        raise UserError("nix-instantiate", "not installed", "install Nix (on Debian: apt-get install nix-bin)")
    return found


def parse(paths: list[Path]) -> str:
    """`nix-instantiate --parse` every file; UserError naming the first that does not parse."""
    tool = nix_instantiate()
    for path in paths:
        done = subprocess.run([tool, *NIX_EVAL_OPTIONS, "--parse", str(path)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            raise UserError(path, f"does not parse: {done.stderr.strip().splitlines()[-1] if done.stderr else ''}",
                            "fix the Nix syntax")
    names = [path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path) for path in paths]
    return f"ok: {', '.join(names)} parse"


# Called by nix-instantiate with --argstr values: every device at every pin, through recipe.nix.
EVAL_ALL = """{ pinsFile, recipeFile, buildDir, cudaCompiler }:
let pins = builtins.fromJSON (builtins.readFile pinsFile);
in builtins.mapAttrs (device: _: builtins.mapAttrs (pin: _:
     import recipeFile { inherit pins device pin buildDir cudaCompiler; }) pins.pins) pins.devices
"""


def nix_recipes(pins_file: Path = PINS_JSON, recipe_file: Path = RECIPE_NIX, build_dir: str = CHECK_BUILD_DIR,
                cuda_compiler: str = CHECK_CUDA_COMPILER) -> dict[str, dict[str, Any]]:
    """recipe.nix evaluated by Nix: device -> pin -> {cmakeFlags, env, gitShim}."""
    args = [nix_instantiate(), *NIX_EVAL_OPTIONS, "--eval", "--strict", "--json",
            "--argstr", "pinsFile", str(Path(pins_file).resolve()), "--argstr", "recipeFile",
            str(Path(recipe_file).resolve()), "--argstr", "buildDir", build_dir,
            "--argstr", "cudaCompiler", cuda_compiler, "--expr", EVAL_ALL]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UserError(recipe_file, f"does not evaluate: {done.stderr.strip()[-400:]}", "fix the Nix expression")
    return json.loads(done.stdout)


def kit_recipes(cfg: Config, build_dir: str = CHECK_BUILD_DIR,
                cuda_compiler: str = CHECK_CUDA_COMPILER) -> dict[str, dict[str, Any]]:
    """The same table from moebench.pins.build: device -> pin -> {cmakeFlags, env, gitShim}."""
    tools = {"compiler": {"cuda": cuda_compiler}}
    table: dict[str, dict[str, Any]] = {}
    for device, profile in cfg.devices.devices.items():
        table[device] = {}
        for pin_name, pin in cfg.lock.llama_cpp.items():
            plan = build.recipe(profile, Path(build_dir), Path(build_dir) / "tools" / "git", tools)
            shim = build.GIT_SHIM.format(short=pin.commit[:7], commit=pin.commit, build_number=pin.build_number or 0)
            table[device][pin_name] = {"cmakeFlags": plan["cmake_flags"], "env": plan["env"], "gitShim": shim}
    return table


def recipe_differences(kit: dict[str, dict[str, Any]], nix: dict[str, dict[str, Any]]) -> list[str]:
    """One line per device/pin/part where the two recipes differ, naming both values."""
    lines = []
    for device in sorted(set(kit) | set(nix)):
        for pin in sorted(set(kit.get(device, {})) | set(nix.get(device, {}))):
            ours, theirs = kit.get(device, {}).get(pin), nix.get(device, {}).get(pin)
            if ours is None or theirs is None:
                lines.append(f"{device}/{pin}: only in {'recipe.nix' if ours is None else 'moebench.pins.build'}")
                continue
            for part in ("cmakeFlags", "env", "gitShim"):
                if ours[part] != theirs[part]:
                    lines.append(f"{device}/{pin} {part}{_where_they_differ(ours[part], theirs[part])}")
    return lines


def _where_they_differ(ours: Any, theirs: Any) -> str:
    """`[i]` or `.KEY` of the first difference, with the kit's value and recipe.nix's."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        key = next(k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k))
        return f".{key}: moebench.pins.build {ours.get(key)!r}, recipe.nix {theirs.get(key)!r}"
    if isinstance(ours, list) and isinstance(theirs, list):
        i = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        get = lambda values: values[i] if i < len(values) else "(nothing)"  # noqa: E731
        return f"[{i}]: moebench.pins.build {get(ours)!r}, recipe.nix {get(theirs)!r}"
    return f": moebench.pins.build {ours!r}, recipe.nix {theirs!r}"


def check(cfg: Config) -> Iterator[str]:
    """`invoke nix.check`: one line per check as it passes; UserError (naming the file) on the first that fails."""
    yield parse([FLAKE_NIX, *sorted((REPO_ROOT / "nix").glob("*.nix"))])
    yield check_pins_file(cfg)
    differences = recipe_differences(kit_recipes(cfg), nix_recipes())
    if differences:
        raise UserError(RECIPE_NIX, f"{len(differences)} differences from moebench.pins.build.recipe; {differences[0]}",
                        "make nix/recipe.nix build what moebench/pins/build.py builds")
    count = len(cfg.devices.devices) * len(cfg.lock.llama_cpp)
    yield (f"ok: recipe.nix gives moebench.pins.build's cmake flags, environment and git shim "
           f"for all {count} device/pin pairs")
