"""Fixtures for the image tests: the real container engine, root for mmdebstrap, clean work dirs.

Where no engine answers (or mmdebstrap cannot run as root, or aarch64 cannot be emulated), the tests
that need one skip with the reason; `.ci/run` starts dockerd, enables qemu-aarch64 and sets
MOEBENCH_REQUIRE_ENGINE=1, and then they fail instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from moebench.errors import UserError
from moebench.images import engine


@pytest.fixture(scope="session", autouse=True)
def shared_apt_cache(apt_cache) -> Path:
    """Every image build of the session takes its .debs from one cache (conftest.apt_cache)."""
    return apt_cache


def _unavailable(reason: str) -> None:
    if os.environ.get("MOEBENCH_REQUIRE_ENGINE"):
        pytest.fail(f"MOEBENCH_REQUIRE_ENGINE is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine_client():
    """A client of the running engine (dockerd or podman's socket)."""
    try:
        return engine.connect()
    except UserError as exc:
        _unavailable(f"no container engine: {exc.one_line()}")


@pytest.fixture(scope="session")
def can_debootstrap() -> None:
    if os.geteuid() != 0:
        _unavailable("building a root filesystem needs root (mmdebstrap --mode=root)")
    if shutil.which("mmdebstrap") is None:
        _unavailable("mmdebstrap is not installed (apt-get install mmdebstrap)")


QEMU_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")


@pytest.fixture(scope="session")
def can_emulate_aarch64() -> None:
    """aarch64 binaries run here through qemu-user, in chroots and containers too (binfmt flag F: the
    kernel opens the interpreter at registration, so it need not exist inside the root filesystem)."""
    if not QEMU_AARCH64.is_file():
        _unavailable("no qemu-aarch64 binfmt handler (apt-get install qemu-user-static binfmt-support; "
                     "update-binfmts --enable qemu-aarch64)")
    lines = QEMU_AARCH64.read_text().splitlines()
    flags = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("flags:")), "")
    if lines[0] != "enabled" or "F" not in flags:
        _unavailable(f"the qemu-aarch64 binfmt handler is {lines[0]} with flags {flags!r}, containers need it "
                     "enabled with F (update-binfmts --enable qemu-aarch64)")


@contextlib.contextmanager
def work_home(path: Path):
    """MOEBENCH_HOME set to `path` for the duration: a build from clean state, isolated from the kit's."""
    before = os.environ.get("MOEBENCH_HOME")
    os.environ["MOEBENCH_HOME"] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("MOEBENCH_HOME", None)
        else:
            os.environ["MOEBENCH_HOME"] = before


def build_from_clean_state(tmp_path_factory, name: str):
    """`image.build --image <name>` from an empty work directory, loaded into the engine; a build whose
    packages are not the lock's completes too, for `assert_is_the_pinned_image` to classify."""
    from moebench.config import load_config
    from moebench.images.builder import build_image

    with work_home(tmp_path_factory.mktemp(f"{name}-image-home")):
        result = build_image(load_config(), name, check_lock=False)
    print(f"\n{name} image build: {result.id} in {result.seconds}")
    return result


class MirrorDrift(UserWarning):
    """The mirror no longer serves some pinned versions: the lock needs a re-pin, the kit is not at fault."""


def assert_is_the_pinned_image(result, name: str, engine_client):
    """The engine holds the build under its local tag, and the build is lock.yaml's `images.<name>`
    (ID, layers, packages); returns that engine image.

    Where the mirror has moved on (drift.py), the report (each package pinned -> served, the re-pin
    command) is a warning in the summary instead, and only a real difference fails."""
    from moebench.config import load_config
    from moebench.images import engine
    from moebench.images.builder import lock_comparison

    cfg = load_config()
    pinned = cfg.lock.images[name]
    image = engine_client.images.get(engine.local_tag(name))
    assert image.id == result.id, f"the engine's {engine.local_tag(name)} is not the image just built"
    comparison = lock_comparison(name, pinned, result)
    print("\n".join(comparison.lines()))
    if comparison.verdict == "drift":
        warnings.warn(MirrorDrift("\n".join(comparison.lines())), stacklevel=2)
        return image
    assert comparison.verdict == "identical", "\n".join(comparison.lines())
    assert result.layers == list(pinned.layers) and result.packages == dict(pinned.packages)
    return image


def publish_mirror(debs: list[Path], root: Path, suite: str, architecture: str, real_mirrors: tuple[str, ...]) -> None:
    """A Debian mirror of `debs` under `root`, as a snapshot.debian.org date serves one: the pool, a
    Packages index of the real mirrors' own stanzas for those files (their Priority, which mmdebstrap's
    minbase selection reads, is the archive's, not the package's; a file the real mirrors no longer
    list gets its own control fields), and an unsigned Release file (its source line says [trusted=yes])."""
    from moebench.images import drift

    real = {}
    for line in real_mirrors:
        for url in drift.SourceLine.parse(line).index_urls(architecture):
            for stanza in drift.fetch_index(url).decode().split("\n\n"):
                fields = dict(item.split(": ", 1) for item in stanza.splitlines() if ": " in item and item[0] != " ")
                if "Package" in fields:
                    real[(fields["Package"], fields["Version"], fields["Architecture"])] = stanza
    pool = root / "pool"
    pool.mkdir(parents=True)
    stanzas = []
    for deb in sorted(debs):
        shutil.copyfile(deb, pool / deb.name)
        key = tuple(subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True,
                                   check=True).stdout.strip() for field in ("Package", "Version", "Architecture"))
        stanza = real.get(key) or subprocess.run(["dpkg-deb", "--field", str(deb)], capture_output=True, text=True,
                                                 check=True).stdout
        kept = [line for line in stanza.strip().splitlines()
                if not line.startswith(("Filename:", "Size:", "MD5sum:", "SHA256:"))]
        data = deb.read_bytes()
        stanzas.append("\n".join([*kept, f"Filename: pool/{deb.name}", f"Size: {len(data)}",
                                  f"MD5sum: {hashlib.md5(data).hexdigest()}",
                                  f"SHA256: {hashlib.sha256(data).hexdigest()}"]) + "\n")
    index = "\n".join(stanzas).encode()
    relative = f"main/binary-{architecture}/Packages"
    (root / "dists" / suite / relative).parent.mkdir(parents=True)
    (root / "dists" / suite / relative).write_bytes(index)
    (root / "dists" / suite / "Release").write_text(
        f"Origin: moebench-test\nSuite: {suite}\nCodename: {suite}\nDate: Sat, 01 Jan 2000 00:00:00 UTC\n"
        f"Architectures: {architecture}\nComponents: main\n"
        f"SHA256:\n {hashlib.sha256(index).hexdigest()} {len(index)} {relative}\n")
