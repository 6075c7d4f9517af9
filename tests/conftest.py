"""Shared fixtures: a temporary copy of configs/, an isolated MOEBENCH_HOME, a local HTTP server."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from moebench.config import CONFIG_DIR, REPO_ROOT

# Tests mirror moebench/'s stages, one folder each; a stage's tests import helpers of another's by
# module name (test_analyze's records, test_attest's fake builds), so every folder is importable.
for _stage in sorted(p for p in Path(__file__).resolve().parent.iterdir() if p.is_dir() and p.name != "fixtures"):
    if str(_stage) not in sys.path:
        sys.path.append(str(_stage))


# The image builds: mostly one core each (mmdebstrap, dpkg under qemu-user, the engine's builder) and
# mostly waiting on apt and the engine, so they run beside everything else on a second worker
# (`invoke test`: pytest-xdist, --dist loadgroup). Whatever shares the kit's own work directory, models
# and lock (the in-image smoke, the llama.cpp builds) stays in the other group, one test at a time.
IMAGE_BUILD_MODULES = ("tests/images/test_aarch64.py", "tests/images/test_builder.py",
                       "tests/images/test_image_benchmarks.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = Path(item.path).relative_to(REPO_ROOT).as_posix()
        item.add_marker(pytest.mark.xdist_group("images" if module in IMAGE_BUILD_MODULES else "host"))


@pytest.fixture
def tmp_config_dir(tmp_path) -> Path:
    """configs/ copied to `<tmp>/kit/configs` (with scripts/ and docker/ beside it, which the configs
    name); lock edits in a test touch only the copy."""
    kit = tmp_path / "kit"
    shutil.copytree(CONFIG_DIR, kit / "configs")
    for sibling in ("scripts", "docker"):
        (kit / sibling).symlink_to(REPO_ROOT / sibling)
    return kit / "configs"


@pytest.fixture
def key_path(tmp_path) -> Path:
    """Where a test's lab keeps its Ed25519 signing key (attest creates it on first use)."""
    return tmp_path / "keys" / "lab.pem"


@pytest.fixture
def isolated_home(tmp_path, monkeypatch) -> Path:
    """MOEBENCH_HOME in a temporary directory: downloads, sources and builds of the test only."""
    home = tmp_path / "home"
    monkeypatch.setenv("MOEBENCH_HOME", str(home))
    return home


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass


@pytest.fixture
def http_dir(tmp_path):
    """(directory, base URL): files written to the directory are served at http://127.0.0.1:<port>/."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def apt_cache(tmp_path_factory):
    """MOEBENCH_APT_CACHE for the session, unless the caller set one: image builds after the first
    download nothing apt has already checked (rootfs.package_cache)."""
    if os.environ.get("MOEBENCH_APT_CACHE"):
        yield Path(os.environ["MOEBENCH_APT_CACHE"])
        return
    path = tmp_path_factory.mktemp("apt-cache")
    os.environ["MOEBENCH_APT_CACHE"] = str(path)
    try:
        yield path
    finally:
        os.environ.pop("MOEBENCH_APT_CACHE", None)


B4404_MIRROR_TAR = REPO_ROOT.parent / "shared" / "sources" / "llama.cpp-b4404.git.tar"
GITHUB_LLAMA_CPP = "https://github.com/ggerganov/llama.cpp.git"


@pytest.fixture(scope="session")
def b4404_mirror(tmp_path_factory) -> Path:
    """The bare repository of llama.cpp b4404 (the `paper` pin's commit alone), unpacked from the
    kit's shared sources (their README says how it was made)."""
    if not B4404_MIRROR_TAR.is_file():
        pytest.skip(f"{B4404_MIRROR_TAR} is not here: the b4404 repository comes with the kit's shared sources")
    root = tmp_path_factory.mktemp("b4404-mirror")
    subprocess.run(["tar", "-xf", str(B4404_MIRROR_TAR), "-C", str(root)], check=True)
    return root / "llama.cpp-b4404.git"


@pytest.fixture(scope="session")
def b4404_git_config(b4404_mirror, tmp_path_factory) -> Path:
    """A git configuration of the tests' own that serves the GitHub URL of lock.yaml from the mirror
    (`url.<mirror>.insteadOf`), as an air-gapped lab does; pointed at by GIT_CONFIG_GLOBAL."""
    config = tmp_path_factory.mktemp("b4404-gitconfig") / "gitconfig"
    config.write_text(f'[url "{b4404_mirror}"]\n\tinsteadOf = {GITHUB_LLAMA_CPP}\n')
    return config


@pytest.fixture(scope="session")
def pinned_bin_dir() -> Path:
    """bin/ of the kit's own cpu build of the offline pin: built on first use (minutes on 2 cores),
    then a content-checked no-op, so every slow test and `invoke reproduce` share one build."""
    from moebench.pins.build import build, build_dir_for
    from moebench.config import load_config

    build(load_config(), "cpu", "offline", progress=False)
    return build_dir_for("cpu", "offline") / "bin"


@pytest.fixture(scope="session")
def second_cpu_build(pinned_bin_dir, tmp_path_factory) -> tuple[Path, dict]:
    """(work root, manifest) of the same pin built again from clean state in another absolute directory:
    one full build (minutes on 2 cores), shared by every test that compares two builds."""
    from moebench.pins.build import build
    from moebench.config import load_config

    work_root = tmp_path_factory.mktemp("elsewhere") / "a" / "deeper" / "work-root"
    return work_root, build(load_config(), "cpu", "offline", work_root=work_root, progress=False)


@pytest.fixture(scope="session")
def tiny_replica_paths(pinned_bin_dir) -> dict[str, Path]:
    """model id -> the kit's tiny Q4_K_M replica, made with the pinned build (checked against lock.yaml)."""
    from moebench.config import load_config
    from moebench.models.replica import make_replicas

    return {result.model_id: result.path for result in make_replicas(load_config(), "tiny", pin="offline")}


@pytest.fixture
def kit(tmp_path, pinned_bin_dir, tiny_replica_paths):
    """(config dir, bin dir, model) for the runner's fault tests: a copied config over the kit's own
    build and tiny replica, with run/experiment.py checked to resolve exactly those (runner_support)."""
    from moebench.run import engines
    from runner_support import MODEL, config_dir, expect_kit_resolution

    cfg_dir = config_dir(tmp_path)
    for mode in engines.ENGINES:
        expect_kit_resolution(cfg_dir, mode, pinned_bin_dir, tiny_replica_paths[MODEL])
    return cfg_dir, pinned_bin_dir, tiny_replica_paths[MODEL]
