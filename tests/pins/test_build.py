"""build.py on the real pinned tree: bit-for-bit across directories, a checked no-op, tamper refusal.

The kit's own build (`pinned_bin_dir`, `.moebench/build/cpu-offline`) is never modified here; the one
extra build these tests make is the same pin built in a temporary directory, shared by the module.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from moebench.pins import build as build_module
from moebench.pins.build import build, build_dir_for, load_manifest, verify_binaries
from moebench.config import load_config
from moebench.errors import IntegrityError, UserError
from moebench.verify.hashes import verify

pytestmark = pytest.mark.slow

DEVICE, PIN = "cpu", "offline"
SHORT_COMMIT = "f7cd133"


@pytest.fixture(scope="module")
def kit_manifest(pinned_bin_dir) -> dict:
    return load_manifest(DEVICE, PIN)


@pytest.fixture
def second_build(second_cpu_build):
    """The same pin built again in another absolute directory (conftest.second_cpu_build)."""
    return second_cpu_build


def copy_build(work_root: Path) -> Path:
    """manifest.json and bin/ of the kit's build, copied under `work_root` (enough for build() and verify)."""
    src, dst = build_dir_for(DEVICE, PIN), build_dir_for(DEVICE, PIN, work_root)
    dst.mkdir(parents=True)
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    shutil.copytree(src / "bin", dst / "bin")
    return dst


def flip_byte(path: Path, offset: int) -> str:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    return hashlib.sha256(bytes(data)).hexdigest()


def refuse_full_build(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("build() started a full build")

    monkeypatch.setattr(build_module, "_full_build", refuse)


def test_two_directories_give_bit_identical_binaries(kit_manifest, second_build):
    work_root, manifest = second_build
    other_dir = build_dir_for(DEVICE, PIN, work_root)
    assert other_dir != build_dir_for(DEVICE, PIN) and manifest["prefix_map"]["from"] == str(other_dir)
    # same toolchain and recipe (the fingerprint leaves the build directory out), else the test proves nothing
    assert manifest["toolchain_id"] == kit_manifest["toolchain_id"]
    assert manifest["compiler"] == kit_manifest["compiler"]
    assert manifest["fingerprint"] == kit_manifest["fingerprint"]
    assert set(manifest["binaries"]) == set(kit_manifest["binaries"]) >= {"llama-bench", "llama-cli", "llama-quantize"}
    different = {name: (entry["sha256"], kit_manifest["binaries"][name]["sha256"])
                 for name, entry in manifest["binaries"].items()
                 if entry["sha256"] != kit_manifest["binaries"][name]["sha256"]}
    assert not different, f"binaries differ between {other_dir} and the kit's build: {different}"
    # and the files on disk are what the manifests say
    assert verify_binaries(manifest, other_dir) == verify_binaries(kit_manifest)
    assert str(other_dir).encode() not in (other_dir / "bin" / "llama-cli").read_bytes()


def test_second_build_is_a_checked_no_op(pinned_bin_dir, kit_manifest, monkeypatch):
    before = {path.name: path.stat().st_mtime_ns for path in pinned_bin_dir.iterdir()}
    manifest_file = build_dir_for(DEVICE, PIN) / "manifest.json"
    manifest_mtime = manifest_file.stat().st_mtime_ns
    refuse_full_build(monkeypatch)
    manifest = build(load_config(), DEVICE, PIN, progress=False)
    assert manifest == kit_manifest == json.loads(manifest_file.read_text())
    assert manifest["built_at"] == kit_manifest["built_at"]
    assert {path.name: path.stat().st_mtime_ns for path in pinned_bin_dir.iterdir()} == before
    assert manifest_file.stat().st_mtime_ns == manifest_mtime


def test_tampered_binary_is_refused_by_build_and_verify(tmp_path, kit_manifest, monkeypatch):
    build_dir = copy_build(tmp_path)
    target = build_dir / "bin" / "llama-cli"
    recorded = kit_manifest["binaries"]["llama-cli"]["sha256"]
    tampered = flip_byte(target, 4096)
    refuse_full_build(monkeypatch)  # a changed binary is never silently rebuilt

    with pytest.raises(IntegrityError) as caught:
        build(load_config(), DEVICE, PIN, work_root=tmp_path, progress=False)
    assert caught.value.where == str(target)
    assert f"sha256 is {tampered}, build manifest records {recorded}" in caught.value.one_line()

    with pytest.raises(IntegrityError) as caught:
        verify_binaries(load_manifest(DEVICE, PIN, tmp_path), build_dir)
    assert caught.value.where == str(target)

    checks = {check.item: check for check in verify(load_config(), DEVICE, PIN, work_root=tmp_path)}
    failed = [check for check in checks.values() if not check.ok]
    pinned = load_config().lock.binaries.get(f"{DEVICE}/{PIN}/{load_manifest(DEVICE, PIN, tmp_path)['toolchain_id']}")
    expected = ["llama-cli (manifest)"] + (["llama-cli (lock)"] if pinned else [])  # lock.yaml pins this toolchain
    assert [check.item for check in failed] == expected
    for check in failed:
        line = check.message()
        assert str(target) in line and tampered in line and recorded in line
    assert checks["llama-bench (manifest)"].ok and checks["source tree"].ok


def test_manifest_records_what_the_lock_and_provenance_need(kit_manifest, pinned_bin_dir):
    cfg = load_config()
    pin = cfg.pin(PIN)
    manifest = kit_manifest
    assert manifest["commit"] == pin.commit and manifest["source_tree_hash"] == pin.tree_hash
    assert manifest["archive_sha256"] == pin.sources.pypi_sdist.sha256
    assert manifest["compiler"]["c_version"] and manifest["compiler"]["cxx_version"]
    assert manifest["toolchain_id"].startswith(("gcc-", "clang-")) and f"cmake-{manifest['cmake_version']}_" in \
        manifest["toolchain_id"]
    flags = manifest["cmake_flags"]
    assert "-DCMAKE_BUILD_TYPE=Release" in flags and "-DGGML_NATIVE=OFF" in flags
    assert not any("march=native" in flag for flag in flags)
    assert any(flag.startswith("-DCMAKE_C_FLAGS=-ffile-prefix-map=") for flag in flags)
    assert manifest["source_date_epoch"] == 315532800 and manifest["env"]["SOURCE_DATE_EPOCH"] == "315532800"
    for name in ("llama-bench", "llama-cli", "llama-quantize"):
        entry = manifest["binaries"][name]
        assert len(entry["sha256"]) == 64 and (pinned_bin_dir / name).stat().st_size == entry["size_bytes"]


def test_build_info_carries_the_pinned_commit(pinned_bin_dir):
    """The git shim answers llama.cpp's build-info: the binaries name the pin although the copy has no .git."""
    strings = subprocess.run(["strings", str(pinned_bin_dir / "llama-cli")], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert SHORT_COMMIT in strings
    version = subprocess.run([str(pinned_bin_dir / "llama-cli"), "--version"], capture_output=True, text=True,
                             timeout=30)
    assert f"({SHORT_COMMIT})" in version.stdout + version.stderr


def test_a_build_directory_with_whitespace_is_refused_up_front(tmp_path, monkeypatch):
    refuse_full_build(monkeypatch)
    with pytest.raises(UserError) as caught:
        build(load_config(), DEVICE, PIN, work_root=tmp_path / "with space", progress=False)
    assert caught.value.where == str(build_dir_for(DEVICE, PIN, tmp_path / "with space"))
    assert "MOEBENCH_HOME" in caught.value.fix and not (tmp_path / "with space").exists()
