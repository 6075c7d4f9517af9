"""Fixtures for the image tests: the real container engine, root for mmdebstrap, clean work dirs.

Where no engine answers (or mmdebstrap cannot run as root, or aarch64 cannot be emulated), the tests
that need one skip with the reason; `.ci/run` starts dockerd, enables qemu-aarch64 and sets
MOEBENCH_REQUIRE_ENGINE=1, and then they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

from moebench.errors import UserError
from moebench.images import engine


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
    """`image.build --image <name>` from an empty work directory, loaded into the engine."""
    from moebench.config import load_config
    from moebench.images.builder import build_image

    with work_home(tmp_path_factory.mktemp(f"{name}-image-home")):
        result = build_image(load_config(), name)
    print(f"\n{name} image build: {result.id} in {result.seconds}")
    return result


def assert_is_the_pinned_image(result, name: str, engine_client):
    """The build's ID, layers and packages are lock.yaml's `images.<name>`, and so is the image the
    engine holds under its local tag; returns that engine image."""
    from moebench.config import load_config
    from moebench.images import engine

    pinned = load_config().lock.images[name]
    assert result.id == pinned.id, f"the {name} image built here differs from lock.yaml's images.{name}.id"
    assert result.layers == list(pinned.layers) and result.packages == dict(pinned.packages)
    image = engine_client.images.get(engine.local_tag(name))
    assert image.id == pinned.id
    return image
