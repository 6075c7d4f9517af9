"""A Debian root filesystem at exact package versions, with the kit's Python dependencies in a venv.

No base image is pulled: mmdebstrap assembles the OS from the Debian mirror, and with
SOURCE_DATE_EPOCH set it writes no build time into the files. Exact versions come from
`images.<name>.packages` in lock.yaml, handed to apt as pins of priority 1001 (apt_preferences(5):
above 1000 apt installs that version even where it is older than the candidate), so the mirror's
newest version never slips in. Whatever apt could not honour (a version the mirror no longer
has) shows up when the installed list is compared with the lock, and the build stops there.

The Python dependencies are the wheels of configs/requirements.lock, downloaded and hash-checked
on the host (the image's apt mirror needs no access to PyPI), and installed without byte-compiling
(`--no-compile`): CPython's marshal output can differ between runs, so .pyc files would make the
layer irreproducible; the image sets PYTHONDONTWRITEBYTECODE instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from moebench.config import ImagePin
from moebench.errors import UserError
from moebench.images import aptcache

VENV = "opt/moebench/venv"
PINS_FILE = "etc/apt/preferences.d/moebench-pins"
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def apt_pins(packages: dict[str, str | None]) -> str:
    """apt_preferences(5) stanzas that force each package with a recorded version to that version."""
    stanzas = [f"Package: {name}\nPin: version {version}\nPin-Priority: 1001\n"
               for name, version in sorted(packages.items()) if version is not None]
    return "\n".join(stanzas)


# mmdebstrap's own error lines that name their cause, and the fix for each; anything else is shown as
# the log's tail with mmdebstrap's last `E:` line first.
KNOWN_FAILURES = (
    ("install arch-test for foreign architecture support",
     "apt-get install arch-test qemu-user-static binfmt-support, then update-binfmts --enable qemu-aarch64"),
    ("No space left on device", "free disk space, or set MOEBENCH_HOME to a larger disk"),
    ("Unable to locate package", "the mirror does not have a package of the recipe's include list: check rootfs.mirrors"),
    ("Temporary failure resolving", "the mirror cannot be reached: check the network or rootfs.mirrors"),
)


def failure_reason(log_text: str) -> tuple[str | None, str]:
    """(the tool's own error line, the fix) read from a failed step's log: the line of a known cause,
    else the last `E:`/`error:` line (None where there is none)."""
    errors = [line.strip() for line in log_text.splitlines() if line.lstrip().startswith(("E:", "error:"))]
    reason = errors[-1] if errors else None
    for needle, fix in KNOWN_FAILURES:
        if needle in log_text:
            return next((line for line in errors if needle in line), reason), fix
    return reason, "see the log for the step's own messages"


def run_logged(args: list[str], log: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run one build step with its output appended to `log`; UserError with the tool's own reason on failure."""
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(args)}\n")
        out.flush()
        try:
            code = subprocess.call(args, stdout=out, stderr=subprocess.STDOUT, env=env)
        except FileNotFoundError:
            raise UserError(args[0], "not installed", "apt-get install mmdebstrap (and run as root)") from None
    if code != 0:
        text = log.read_text(encoding="utf-8", errors="replace")
        reason, fix = failure_reason(text)
        last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no output")
        raise UserError(log, f"{what} failed (exit {code}): {reason or last}", f"{fix}; the step's whole output "
                                                                              "is in this log")


def sources_list(mirrors: tuple[str, ...]) -> str:
    """/etc/apt/sources.list as mmdebstrap writes it for one-line `mirrors`: a blank line between them."""
    return "\n".join(f"{line}\n" for line in mirrors)


# Variables of the caller that mmdebstrap may see: where apt reaches the mirror, never what it installs.
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def mmdebstrap_environment(source_date_epoch: int) -> dict[str, str]:
    """The whole environment of the OS build, the same on every host: the caller's would reach the
    packages' maintainer scripts. PYTHONDONTWRITEBYTECODE matters most: without it, the Python that
    py3compile runs writes timestamp .pyc files of the modules it imports before py3compile writes
    its SOURCE_DATE_EPOCH (hash-based) ones, and the OS layer then depends on whether the caller
    happened to set it."""
    return {"PATH": CHROOT_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8", "TZ": "UTC",
            "SOURCE_DATE_EPOCH": str(source_date_epoch), "PYTHONDONTWRITEBYTECODE": "1",
            **{name: os.environ[name] for name in PROXY_VARIABLES if name in os.environ}}


def debootstrap(name: str, spec: ImagePin, target: Path, source_date_epoch: int, log: Path) -> None:
    """mmdebstrap the image's suite into `target` (which must not exist), pinned to the lock's versions.

    Packages come from `rootfs.fetch_mirrors` where the recipe names them (a snapshot mirror), and
    the image's sources.list is then rewritten to `rootfs.mirrors`, what it holds without them. With
    MOEBENCH_APT_CACHE set, verified .debs are taken from and added to that cache (aptcache.py)."""
    rootfs = spec.rootfs
    assert rootfs is not None
    if os.geteuid() != 0:
        raise UserError(f"images.{name}", "building a root filesystem needs root (mmdebstrap --mode=root)",
                        "run the image build as root, e.g. sudo .venv/bin/invoke image.build")
    staging = target.parent / "moebench-staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    pins = staging / "moebench-pins"
    pins.write_text(apt_pins(spec.packages), encoding="utf-8")
    args = ["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            f"--architectures={rootfs.architecture}", "--aptopt=Acquire::Retries \"3\"",
            f"--setup-hook=mkdir -p \"$1/etc/apt/preferences.d\" && cp {pins} \"$1/{PINS_FILE}\""]
    if rootfs.include:
        args.append(f"--include={','.join(rootfs.include)}")
    if rootfs.fetch_mirrors:
        (staging / "sources.list").write_text(sources_list(rootfs.mirrors), encoding="utf-8")
        args.append(f"--customize-hook=copy-in {staging / 'sources.list'} /etc/apt")
    cache, fetched = aptcache.package_cache(rootfs.architecture), staging / "fetched"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        fetched.mkdir()
        args += aptcache.hook_args(cache, fetched)
    args += [rootfs.suite, str(target), *(rootfs.fetch_mirrors or rootfs.mirrors)]
    run_logged(args, log, "mmdebstrap", mmdebstrap_environment(source_date_epoch))
    if cache is not None:
        aptcache.keep(fetched, cache)
    shutil.rmtree(staging)


# apt chowns these download directories to its sandbox user only in runs where it downloaded as
# that user, so their owner differs from build to build; they are empty, and apt recreates them.
APT_PARTIAL_DIRS = ("var/cache/apt/archives/partial", "var/lib/apt/lists/partial")


def drop_run_dependent_state(target: Path) -> None:
    """Remove what mmdebstrap's run leaves behind that is not a function of the package set."""
    (target / PINS_FILE).unlink(missing_ok=True)  # the pins did their work; the image is the same without them
    for directory in APT_PARTIAL_DIRS:
        if (target / directory).is_dir():
            (target / directory).rmdir()


def installed_packages(target: Path) -> dict[str, str]:
    """{package: version} of every package dpkg has installed in the root filesystem `target`."""
    done = subprocess.run(["dpkg-query", f"--admindir={target / 'var/lib/dpkg'}", "-W",
                           "-f=${db:Status-Abbrev}\t${Package}\t${Version}\n"],
                          capture_output=True, text=True, check=True)
    packages = {}
    for line in done.stdout.splitlines():
        status, name, version = line.split("\t")
        if status.startswith("ii"):
            packages[name] = version
    return dict(sorted(packages.items()))


def wheel_platforms(platform: str) -> list[str]:
    """Every manylinux tag an image whose newest is `platform` (manylinux_2_X_arch) accepts, newest first."""
    prefix, major, minor, arch = platform.split("_", 3)
    if prefix != "manylinux" or major != "2":
        raise UserError("lock.yaml", f"platform {platform!r} is not a manylinux_2_X_<arch> tag",
                        "set images.<name>.platform to e.g. manylinux_2_36_x86_64")
    tags = [f"manylinux_2_{glibc}_{arch}" for glibc in range(int(minor), 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    return tags + [f"{name}_{arch}" for glibc, name in legacy.items() if glibc <= int(minor)]


def download_wheels(requirements: Path, python: str, platform: str, target: Path, log: Path) -> None:
    """Fetch the hash-pinned wheels of `requirements` for the image's Python and platform into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    version = python.replace(".", "")
    args = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
            "--require-hashes", "--python-version", python, "--implementation", "cp", "--abi", f"cp{version}",
            "-r", str(requirements), "-d", str(target)]
    for tag in wheel_platforms(platform):
        args += ["--platform", tag]
    run_logged(args, log, "downloading the Python wheels")


def install_python_deps(target: Path, requirements: Path, wheels: Path, source_date_epoch: int, log: Path) -> None:
    """Create the venv in the root filesystem and install the locked wheels into it, without network."""
    staging = target / "tmp" / "moebench-wheels"
    shutil.copytree(wheels, staging)
    shutil.copy2(requirements, staging / "requirements.lock")
    env = {"PATH": CHROOT_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8", "TZ": "UTC",
           "SOURCE_DATE_EPOCH": str(source_date_epoch), "PYTHONDONTWRITEBYTECODE": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    try:
        run_logged(["chroot", str(target), "/usr/bin/python3", "-m", "venv", f"/{VENV}"], log, "python3 -m venv", env)
        run_logged(["chroot", str(target), f"/{VENV}/bin/pip", "install", "--no-index", "--find-links",
                    "/tmp/moebench-wheels", "--require-hashes", "--no-compile", "--no-cache-dir",
                    "-r", "/tmp/moebench-wheels/requirements.lock"], log, "pip install of the locked wheels", env)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for cache in sorted((target / VENV).rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)
