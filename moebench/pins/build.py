"""Build the pinned llama.cpp deterministically and describe the result in a manifest.

The recipe, fixed so two builds of the same tree with the same toolchain give the same bytes
wherever they run:

* the verified source tree is copied to `<build_dir>/src` (llama.cpp writes
  common/build-info.cpp into its source dir; the verified tree stays untouched) and re-hashed
  there, so the manifest's tree hash is the tree that was compiled; a device `patch` is applied
  to the copy only;
* fixed cmake flags (`BASE_CMAKE_FLAGS` + the device's `cmake_flags`), Release, static libraries;
* `-ffile-prefix-map=<build_dir>=/moebench/build` (and `-fdebug-prefix-map`) so no absolute
  path of the build directory reaches a binary;
* CUDA builds (compile_place): `--objdir-as-tempdir` for every nvcc call, and the compilers see the
  build at one fixed path (in an image the work directory is at /moebench-work; on a bare host a
  private mount namespace binds it at /moebench-build/<device>-<pin>), because nvcc writes the
  object directory into device code where no prefix map reaches; nvcc's version enters the
  toolchain id;
* `SOURCE_DATE_EPOCH=315532800` (1980-01-01T00:00:00Z): the commit date is not known offline
  (an sdist carries no git metadata), so one constant stands in for it; the earliest date zip
  can store, so no tool rejects it. `LC_ALL=C`, `TZ=UTC`;
* build-info: llama.cpp's cmake/build-info.cmake asks git for `rev-parse --short HEAD` and
  `rev-list --count HEAD`. A generated `git` shim (first on PATH, and `-DGIT_EXECUTABLE`)
  answers with the pinned commit and build number (0 when the lock has none), so the binaries
  report the pinned commit although the copy has no .git, and a kit checkout that happens to
  contain the build directory cannot leak its own commit into them.

A second `build()` with nothing changed is a no-op: the fingerprint (tree hash, flags, toolchain
versions, device, pin, patch) must equal the manifest's and every binary must still hash to its
manifest SHA-256. A binary that does not is never silently rebuilt: `build()` refuses with an
IntegrityError, because a changed binary is evidence that something besides this kit writes
there; delete the build directory to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moebench import paths
from moebench.config import Config, Device
from moebench.errors import ConfigError, IntegrityError, OutputWriteError, UserError, WRITE_ERRNOS, is_write_error
from moebench.files import write_atomic
from moebench.hashing import git_tree_hash, sha256_file, sha256_files
from moebench.pins.source import fetch_source

MANIFEST_SCHEMA_VERSION = 1
RECIPE_VERSION = 2  # bump when the recipe below changes: every existing build is then rebuilt
SOURCE_DATE_EPOCH = "315532800"
PREFIX_MAP_TARGET = "/moebench/build"
BASE_CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_CURL=OFF", "-DGGML_CCACHE=OFF")
REQUIRED_TARGETS = ("llama-bench", "llama-cli", "llama-quantize")
OPTIONAL_TARGETS = ("llama-server",)


def build_dir_for(device: str, pin: str, work_root: Path | None = None) -> Path:
    return paths.build_dir(device, pin, work_root)


def manifest_path(device: str, pin: str, work_root: Path | None = None) -> Path:
    return build_dir_for(device, pin, work_root) / "manifest.json"


def load_manifest(device: str, pin: str, work_root: Path | None = None) -> dict[str, Any]:
    """The build manifest of `device`/`pin`; UserError naming the fix when there is none."""
    path = manifest_path(device, pin, work_root)
    if not path.is_file():
        raise UserError(path, f"no build of pin {pin!r} for device {device!r}",
                        f"run: invoke build --device {device} --pin {pin}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(path, f"build manifest is not valid JSON ({exc})",
                        f"delete {path.parent} and run: invoke build --device {device} --pin {pin}") from None
    if manifest.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise UserError(path, f"manifest schema_version {manifest.get('schema_version')!r}, "
                              f"this kit reads {MANIFEST_SCHEMA_VERSION}",
                        f"run: invoke build --device {device} --pin {pin}")
    return manifest


def binary_path(device: str, pin: str, name: str, work_root: Path | None = None) -> Path:
    """Absolute path of one built binary (llama-cli, llama-bench, llama-quantize, llama-server)."""
    manifest = load_manifest(device, pin, work_root)
    entry = manifest["binaries"].get(name)
    if entry is None:
        why = manifest.get("failed_targets", {}).get(name, "it is not one of the built targets")
        raise UserError(manifest_path(device, pin, work_root), f"{name} was not built ({why})",
                        f"fix the build, then run: invoke build --device {device} --pin {pin}", key="binaries")
    return build_dir_for(device, pin, work_root) / entry["path"]


def verify_binaries(manifest: dict[str, Any], build_dir: Path | None = None) -> dict[str, str]:
    """Re-hash every binary of a manifest; IntegrityError naming the first that differs."""
    root = Path(build_dir) if build_dir else build_dir_for(manifest["device"], manifest["pin"])
    files = {name: root / entry["path"] for name, entry in manifest["binaries"].items()}
    missing = [path for path in files.values() if not path.is_file()]
    if missing:
        raise UserError(missing[0], "built binary is missing",
                        f"delete {root} and run: invoke build --device {manifest['device']} --pin {manifest['pin']}")
    digests = sha256_files(files.values())
    for name, path in files.items():
        expected = manifest["binaries"][name]["sha256"]
        if digests[path] != expected:
            raise IntegrityError(path, f"sha256 is {digests[path]}, build manifest records {expected}",
                                 f"something modified the binary after it was built; inspect it, then delete {root} "
                                 f"and run: invoke build --device {manifest['device']} --pin {manifest['pin']}")
    return {name: digests[path] for name, path in files.items()}


# --- toolchain -------------------------------------------------------------------------------------

def _first_line(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError(args[0], "not installed", "install a C/C++ compiler, cmake and make (see README)") from None
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else ""


def _tool(env_name: str, default: str) -> str:
    name = os.environ.get(env_name, default)
    found = shutil.which(name)
    if found is None:
        raise UserError(name, f"compiler not found ({env_name}={name})", "install gcc/g++ (or set CC/CXX)")
    return found


def _version_digest(*version_lines: str) -> str:
    return hashlib.sha256("\n".join(version_lines).encode()).hexdigest()[:8]


def _nvcc() -> tuple[str, str, str]:
    """(path, release such as 13.0.88, full `nvcc --version` text) of the CUDA compiler cmake will use."""
    path = os.environ.get("CUDACXX") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(path).is_file():
        raise UserError("nvcc", "the CUDA compiler is not installed (no CUDACXX, no nvcc on PATH, no /usr/local/cuda)",
                        "install the CUDA toolkit, or set CUDACXX to its nvcc")
    text = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    release = re.search(r"\bV(\d+(?:\.\d+)+)", text)
    return path, release.group(1) if release else "unknown", text


def toolchain(cuda: bool = False) -> dict[str, Any]:
    """Compilers, cmake and target triple as this build will use them (cheap: a few --version calls);
    with `cuda`, nvcc too: its release and a hash of its full version text enter the toolchain id."""
    cc, cxx = _tool("CC", "cc"), _tool("CXX", "c++")
    cc_version = _first_line([cc, "--version"])
    cmake = shutil.which("cmake")
    if cmake is None:
        raise UserError("cmake", "not installed", "install cmake (>= 3.14)")
    cmake_version = _first_line([cmake, "--version"]).removeprefix("cmake version ").strip()
    family = "clang" if "clang" in cc_version.lower() else "gcc"
    number = _first_line([cc, "-dumpfullversion" if family == "gcc" else "-dumpversion"])
    machine = _first_line([cc, "-dumpmachine"]) or f"{platform.machine()}-unknown"
    cxx_version = _first_line([cxx, "--version"])
    tools = {
        "compiler": {"c": cc, "c_version": cc_version, "cxx": cxx, "cxx_version": cxx_version},
        "cmake": cmake, "cmake_version": cmake_version,
        # the distribution's full version lines enter as a short hash: two packagings of one gcc
        # release (12.2.0-14 vs 12.2.0-14+deb12u1) must not share a binaries pin in lock.yaml
        "toolchain_id": f"{family}-{number}-{_version_digest(cc_version, cxx_version, cmake_version)}"
                        f"_cmake-{cmake_version}_{machine}",
    }
    if cuda:
        nvcc, release, text = _nvcc()
        tools["compiler"].update({"cuda": nvcc, "cuda_version": text})
        tools["toolchain_id"] += f"_nvcc-{release}-{_version_digest(text)}"
    return tools


# --- where the compilers see the build --------------------------------------------------------------

FIXED_CUDA_ROOT = Path("/moebench-build")
# Runs as `sh -c BIND_AND_EXEC sh <fixed> <real> <command...>` inside a private mount namespace.
BIND_AND_EXEC = 'mkdir -p "$1" && mount --bind "$2" "$1" && shift 2 && exec "$@"'


@dataclass(frozen=True)
class CompilePlace:
    """The path the compilers see, the command prefix that puts the build there, and why it is not fixed."""

    path: Path
    wrapper: tuple[str, ...] = ()
    not_fixed_because: str | None = None


def compile_place(backend: str, build_dir: Path) -> CompilePlace:
    """CPU builds are path-independent through the prefix maps alone. nvcc writes its object directory
    into device code, so a CUDA build is compiled at one fixed path: in an image the work directory
    already is one (/moebench-work); on a bare host the build directory is bound at
    /moebench-build/<device>-<pin> in a private mount namespace, which needs root."""
    if backend != "cuda" or paths.running_image():
        return CompilePlace(build_dir)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return CompilePlace(build_dir, not_fixed_because=(
            "a CUDA build compiled at its own path is identical only to builds at that same path: run it as root "
            f"(the kit binds it at {FIXED_CUDA_ROOT}) or in the cuda image to get the lock's binaries"))
    fixed = FIXED_CUDA_ROOT / build_dir.name
    return CompilePlace(fixed, ("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", BIND_AND_EXEC, "sh",
                                str(fixed), str(build_dir)))


# --- the recipe ------------------------------------------------------------------------------------

def _compile_flags(build_dir: Path) -> str:
    return f"-ffile-prefix-map={build_dir}={PREFIX_MAP_TARGET} -fdebug-prefix-map={build_dir}={PREFIX_MAP_TARGET}"


def recipe(device: Device, build_dir: Path, shim: Path, tools: dict[str, Any]) -> dict[str, Any]:
    """cmake flags and environment of a build of the profile `device` in `build_dir` (everything but
    the tree and toolchain)."""
    flags = _compile_flags(build_dir)
    cmake_flags = [*BASE_CMAKE_FLAGS, *device.cmake_flags, f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}",
                   f"-DGIT_EXECUTABLE={shim}"]
    if device.backend == "cuda":
        # nvcc names its temporary files after its pid and writes those names into the fatbinary
        # and the host stubs; --objdir-as-tempdir keeps them in the object's directory under fixed
        # names, and the fixed compile path (compile_root) makes that directory the same everywhere
        cmake_flags.append(f"-DCMAKE_CUDA_FLAGS=--objdir-as-tempdir -Xcompiler={flags.replace(' ', ',')}")
        cmake_flags.append(f"-DCMAKE_CUDA_COMPILER={tools['compiler']['cuda']}")
    env = {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "LC_ALL": "C", "TZ": "UTC", "CFLAGS": flags, "CXXFLAGS": flags}
    return {"cmake_flags": cmake_flags, "env": env}


def _patch_of(cfg: Config, device: Device, pin_name: str) -> tuple[Path | None, str | None]:
    """The device's patch for `pin_name` and its SHA-256; (None, None) for an unpatched device."""
    device_name = device.name
    if not device.patched:
        return None, None
    if pin_name not in device.patches:
        raise ConfigError(cfg.root / "devices.yaml", f"{device_name} has no router-overhead patch for pin {pin_name!r}",
                          f"build it at {' or '.join(device.patches)}, or add patches.{pin_name} (a patch that "
                          f"applies to that pin's tree)", key=f"devices.{device_name}.patches")
    path = cfg.root.parent / device.patches[pin_name]
    return path, sha256_file(path)


def fingerprint(tree_hash: str, pin_commit: str, build_number: int, device_name: str, pin_name: str,
                cmake_flags: list[str], env: dict[str, str], tools: dict[str, Any], patch_sha256: str | None) -> str:
    """SHA-256 over everything that decides the build's output; equal fingerprints mean nothing to do.

    Flags containing the build directory enter with it replaced by the prefix-map target, so the
    fingerprint (like the binaries) does not depend on where the build lives."""
    def portable(value: str) -> str:
        return re.sub(r"-f(file|debug)-prefix-map=[^= ,]+=", r"-f\1-prefix-map=<build_dir>=", value) \
            if "prefix-map" in value else ("-DGIT_EXECUTABLE=<shim>" if value.startswith("-DGIT_EXECUTABLE=") else value)

    data = {"recipe_version": RECIPE_VERSION, "tree_hash": tree_hash, "commit": pin_commit, "build_number": build_number,
            "device": device_name, "pin": pin_name, "cmake_flags": [portable(f) for f in cmake_flags],
            "env": {k: portable(v) for k, v in env.items()}, "compiler": tools["compiler"],
            "cmake_version": tools["cmake_version"], "patch_sha256": patch_sha256,
            "targets": [*REQUIRED_TARGETS, *OPTIONAL_TARGETS]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# The shim's text is part of every build's recipe (the fingerprint, nix/pins.json), so it stays byte for
# byte as first pinned, the module name it gives included.
GIT_SHIM = """#!/bin/sh
# Generated by moebench.build: answers llama.cpp's build-info queries with the pinned commit.
case "$*" in
  "rev-parse --short HEAD") echo "{short}" ;;
  "rev-parse HEAD") echo "{commit}" ;;
  "rev-list --count HEAD") echo "{build_number}" ;;
  "--version") echo "git version 2.0.0.moebench-shim" ;;
  *) echo "moebench git shim: unsupported: git $*" >&2; exit 1 ;;
esac
"""


def write_git_shim(directory: Path, commit: str, build_number: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shim = directory / "git"
    shim.write_text(GIT_SHIM.format(short=commit[:7], commit=commit, build_number=build_number), encoding="utf-8")
    shim.chmod(0o755)
    return shim


def _run(args: list[str], cwd: Path, env: dict[str, str], log: Path, what: str, progress: bool) -> int:
    """Run a build step, every line to `log`, cmake's percentage lines to stderr when `progress`."""
    last_percent = None
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            match = re.match(r"\[\s*(\d+)%\]", line)
            if progress and match and match.group(1) != last_percent:
                last_percent = match.group(1)
                print(f"  {what}: {line.rstrip()}", file=sys.stderr, flush=True)
        return proc.wait()


def _tail(log: Path, lines: int = 15) -> str:
    return "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


def build(cfg: Config, device_name: str, pin_name: str, jobs: int | None = None, work_root: Path | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Build llama-bench, llama-cli, llama-quantize (and llama-server when it builds) of `pin_name` for
    `device_name`; returns the manifest (also written to `<build_dir>/manifest.json`)."""
    pin = cfg.pin(pin_name)
    build_dir = build_dir_for(device_name, pin_name, work_root)
    if any(char.isspace() for char in str(build_dir)):
        # cmake splits CMAKE_C_FLAGS at whitespace: the prefix-map flag would break in two
        raise UserError(build_dir, "the build directory's path contains whitespace, which the recipe's "
                                   "-ffile-prefix-map flag cannot carry",
                        "set MOEBENCH_HOME to a directory whose path has no spaces")
    tree = fetch_source(cfg, pin_name, progress=progress)
    device = cfg.device(device_name)  # resolved once: the recipe and the patch take the profile
    backend = device.backend
    tools = toolchain(cuda=backend == "cuda")
    build_number = pin.build_number or 0
    place = compile_place(backend, build_dir)
    shim = place.path / "tools" / "git"
    plan = recipe(device, place.path, shim, tools)
    patch_path, patch_sha = _patch_of(cfg, device, pin_name)
    print_ = fingerprint(tree.tree_hash, pin.commit, build_number, device_name, pin_name, plan["cmake_flags"],
                         plan["env"], tools, patch_sha)
    existing = _existing_manifest(device_name, pin_name, work_root)
    if existing is not None and existing.get("fingerprint") == print_:
        verify_binaries(existing, build_dir)  # refuses on a tampered binary (see module docstring)
        _say(progress, f"build {build_dir} is up to date ({len(existing['binaries'])} binaries verified)")
        return existing
    try:
        return _full_build(cfg, device_name, pin_name, tree, tools, plan, patch_path, patch_sha, print_, build_dir,
                           place, jobs or os.cpu_count() or 1, progress)
    except OSError as exc:
        if not _disk_refused(exc):
            raise
        # the manifest is written last (atomically): without it the half build is never used; it is
        # removed to give the space back
        shutil.rmtree(build_dir, ignore_errors=True)
        raise OutputWriteError(build_dir, f"the build could not write its files ({_os_reason(exc)}); the half build "
                               "was removed and no manifest names it",
                               f"free space (or make it writable), then run: invoke build --device {device_name} "
                               f"--pin {pin_name}") from None


def _disk_refused(exc: OSError) -> bool:
    """A write error, also inside shutil.copytree's collected errors (which lose the errno)."""
    if is_write_error(exc):
        return True
    reasons = [str(why) for *_, why in exc.args[0]] if isinstance(exc, shutil.Error) and exc.args and \
        isinstance(exc.args[0], list) else []
    return any(f"[Errno {code}]" in why for why in reasons for code in WRITE_ERRNOS)


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        return str(exc.args[0][0][-1])
    return exc.strerror or str(exc)


def _existing_manifest(device: str, pin: str, work_root: Path | None) -> dict[str, Any] | None:
    try:
        return load_manifest(device, pin, work_root)
    except UserError:
        return None


def _full_build(cfg: Config, device_name: str, pin_name: str, tree, tools: dict[str, Any], plan: dict[str, Any],
                patch_path: Path | None, patch_sha: str | None, print_: str, build_dir: Path, place: CompilePlace,
                jobs: int, progress: bool) -> dict[str, Any]:
    pin = cfg.pin(pin_name)
    started = time.monotonic()
    if build_dir.exists():
        shutil.rmtree(build_dir)
    src, cmake_dir, bin_dir, log = build_dir / "src", build_dir / "cmake", build_dir / "bin", build_dir / "build.log"
    build_dir.mkdir(parents=True)
    _say(progress, f"building {pin_name} ({pin.commit[:12]}) for {device_name} in {build_dir}"
                   + (f", compiled at {place.path}" if place.path != build_dir else ""))
    if place.not_fixed_because:
        _say(progress, f"warning: {place.not_fixed_because}")
    shutil.copytree(tree.path, src, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    compiled_tree = git_tree_hash(src, exclude=pin.unhashed_paths)
    if compiled_tree != tree.tree_hash:
        raise IntegrityError(src, f"copied tree hashes to {compiled_tree}, the verified source has {tree.tree_hash}",
                             f"the source tree changed during the copy; run: invoke verify, then build again")
    for generated in pin.generated_files:
        (src / generated).unlink(missing_ok=True)
    if patch_path is not None:
        _apply_patch(patch_path, src, build_dir, log)
    write_git_shim(build_dir / "tools", pin.commit, pin.build_number or 0)
    shim_dir = place.path / "tools"
    env = {**os.environ, **plan["env"], "PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_CEILING_DIRECTORIES": str(place.path)}
    cmake, at = tools["cmake"], place.path
    configure = [*place.wrapper, cmake, "-S", str(at / "src"), "-B", str(at / "cmake"), *plan["cmake_flags"]]
    if _run(configure, build_dir, env, log, "configure", progress) != 0:
        raise UserError(log, f"cmake configure failed:\n{_tail(log)}", "install the missing dependency named above")
    required = [*place.wrapper, cmake, "--build", str(at / "cmake"), "--target", *REQUIRED_TARGETS, "-j", str(jobs)]
    if _run(required, build_dir, env, log, "build", progress) != 0:
        raise UserError(log, f"build failed:\n{_tail(log)}", "see the log; a compiler or cmake too old is the usual cause")
    failed: dict[str, str] = {}
    for target in OPTIONAL_TARGETS:
        if _run([*place.wrapper, cmake, "--build", str(at / "cmake"), "--target", target, "-j", str(jobs)], build_dir,
                env, log, target, progress) != 0:
            failed[target] = f"the {target} target failed to build; see {log}"
    bin_dir.mkdir()
    binaries = {}
    for name in (*REQUIRED_TARGETS, *(t for t in OPTIONAL_TARGETS if t not in failed)):
        shutil.copy2(cmake_dir / "bin" / name, bin_dir / name)
    digests = sha256_files(bin_dir / name for name in sorted(p.name for p in bin_dir.iterdir()))
    for path, digest in digests.items():
        binaries[path.name] = {"path": f"bin/{path.name}", "sha256": digest, "size_bytes": path.stat().st_size}
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION, "device": device_name, "pin": pin_name, "commit": pin.commit,
        "build_number": pin.build_number, "source_channel": tree.channel, "source_tree_hash": compiled_tree,
        "archive_sha256": tree.archive_sha256, "patch": str(patch_path.relative_to(cfg.root.parent)) if patch_path else None,
        "patch_sha256": patch_sha, "compiler": tools["compiler"], "cmake": tools["cmake"],
        "cmake_version": tools["cmake_version"], "cmake_flags": plan["cmake_flags"],
        "env": {**plan["env"], "PATH_prepend": str(shim_dir)}, "source_date_epoch": int(SOURCE_DATE_EPOCH),
        "prefix_map": {"from": str(place.path), "to": PREFIX_MAP_TARGET}, "toolchain_id": tools["toolchain_id"],
        "compile_path": {"path": str(place.path), "fixed": place.not_fixed_because is None,
                         "why_not": place.not_fixed_because},
        "binaries": binaries, "failed_targets": failed, "jobs": jobs, "fingerprint": print_,
        "build_seconds": round(time.monotonic() - started, 1),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = json.dumps(manifest, indent=2) + "\n"
    write_atomic(build_dir / "manifest.json", text)
    _say(progress, _summary(manifest))
    return json.loads(text)


def _apply_patch(patch: Path, src: Path, build_dir: Path, log: Path) -> None:
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(build_dir)}  # never resolve paths against an outer repo
    done = subprocess.run(["git", "apply", "-p1", "--whitespace=nowarn", str(patch)], cwd=src, env=env,
                          capture_output=True, text=True, check=False)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ git apply {patch}\n{done.stdout}{done.stderr}")
    if done.returncode != 0:
        raise UserError(patch, f"patch does not apply to the pinned tree: {done.stderr.strip()[-300:]}",
                        "rebase the patch onto the pinned commit")


def _summary(manifest: dict[str, Any]) -> str:
    lines = [f"built {manifest['pin']} ({manifest['commit'][:12]}) for {manifest['device']} in "
             f"{manifest['build_seconds']} s with {manifest['toolchain_id']}",
             f"{'binary':<16} {'size_bytes':>12}  sha256", f"{'-' * 16} {'-' * 12}  {'-' * 64}"]
    lines += [f"{name:<16} {entry['size_bytes']:>12}  {entry['sha256']}" for name, entry in manifest["binaries"].items()]
    lines += [f"{name:<16} {'not built':>12}  {why}" for name, why in manifest["failed_targets"].items()]
    return "\n".join(lines)
