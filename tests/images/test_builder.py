"""The cpu image, built from clean state, is the one lock.yaml pins (or differs from it only by drift
of the mirror, reported as such); a second build from clean state gives the same ID, layers and
archive bytes, fetched from a snapshot-style mirror through `rootfs.fetch_mirrors` and past a
corrupted file in the shared package cache; one package version changed gives another ID. The
Dockerfile recipe, built FROM the locally built stand-in base, installs exactly the lock's apt versions."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import assert_is_the_pinned_image, build_from_clean_state, publish_mirror, work_home

from moebench.config import REPO_ROOT, load_config
from moebench.images import aptcache
from moebench.images.builder import build_image, image_dir, lock_comparison

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_cpu_build(tmp_path_factory, engine_client, can_debootstrap):
    return build_from_clean_state(tmp_path_factory, "cpu")


def test_cpu_image_is_the_one_the_lock_pins(first_cpu_build, engine_client):
    assert_is_the_pinned_image(first_cpu_build, "cpu", engine_client)
    done = subprocess.run([str(REPO_ROOT / ".venv" / "bin" / "invoke"), "image.verify", "--image", "cpu"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    if lock_comparison("cpu", load_config().lock.images["cpu"], first_cpu_build).verdict == "drift":
        assert done.returncode == 2 and first_cpu_build.id in done.stderr, done.stdout + done.stderr
    else:
        assert done.returncode == 0 and "IDENTICAL" in done.stdout, done.stdout + done.stderr


def test_a_second_build_from_a_snapshot_mirror_past_a_corrupted_cache_is_byte_identical(
        first_cpu_build, tmp_config_dir, tmp_path_factory, http_dir):
    cache = aptcache.package_cache("amd64")
    debs = sorted(cache.glob("*.deb"))
    mirror, url = http_dir
    publish_mirror(debs, mirror, "bookworm", "amd64", load_config().lock.images["cpu"].rootfs.mirrors)
    libc = next(deb for deb in debs if deb.name.startswith("libc6_"))
    data = bytearray(libc.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same name and size: apt alone would take it
    libc.write_bytes(bytes(data))
    lock = tmp_config_dir / "lock.yaml"
    text, count = re.subn(r"(\n  cpu:\n(?:    .*\n)*?    rootfs:\n)", rf"\g<1>      fetch_mirrors:\n"
                          rf"      - deb [trusted=yes] {url} bookworm main\n", lock.read_text(), 1)
    assert count == 1
    lock.write_text(text)
    with work_home(tmp_path_factory.mktemp("image-home-2")):
        second = build_image(load_config(tmp_config_dir), "cpu", load=False, check_lock=False)
        log = (image_dir("cpu") / "build.log").read_text()
    print(f"\ncpu image build 2 from {url}: {second.id} in {second.seconds}")
    command = next(line for line in log.splitlines() if line.startswith("$ mmdebstrap"))
    assert command.endswith(f"deb [trusted=yes] {url} bookworm main") and "deb.debian.org" not in command
    refused = re.search(r"refused \(not in the index, or another SHA-256\): (.*)", log)
    assert refused and refused.group(1).split(", ") == [libc.name], log[-3000:]
    assert (second.id, second.layers, second.archive_sha256) == (first_cpu_build.id, first_cpu_build.layers,
                                                                 first_cpu_build.archive_sha256)
    assert libc.read_bytes() != bytes(data), "the cache keeps the corrupted file"


def _other_version(package: str, current: str) -> str | None:
    done = subprocess.run(["apt-cache", "madison", package], capture_output=True, text=True)
    versions = [line.split("|")[1].strip() for line in done.stdout.splitlines() if "|" in line]
    return next((version for version in versions if version != current), None)


def test_one_package_version_changed_gives_another_image(first_cpu_build, tmp_config_dir, tmp_path_factory):
    current = first_cpu_build.packages["ca-certificates"]
    other = _other_version("ca-certificates", current)
    if other is None:
        pytest.skip("the apt mirror serves one version of ca-certificates only")
    lock = tmp_config_dir / "lock.yaml"
    text, count = re.subn(rf"(\n      ca-certificates: ){re.escape(current)}\n", rf"\g<1>{other}\n", lock.read_text(), 1)
    assert count == 1
    lock.write_text(text)
    with work_home(tmp_path_factory.mktemp("image-home-3")):
        variant = build_image(load_config(tmp_config_dir), "cpu", load=False, check_lock=False)
    print(f"\ncpu image with ca-certificates {other}: {variant.id} in {variant.seconds}")
    assert variant.packages["ca-certificates"] == other
    assert variant.id != first_cpu_build.id and variant.layers[0] != first_cpu_build.layers[0]


def test_toolchain_dockerfile_on_the_standin_base(engine_client, can_debootstrap, tmp_path_factory):
    cfg = load_config()
    with work_home(tmp_path_factory.mktemp("image-home-standin")):
        base = build_image(cfg, "standin-base", check_lock=False)
        assert_is_the_pinned_image(base, "standin-base", engine_client)
        standin = build_image(cfg, "toolchain-standin")
    print(f"\nstand-in base {base.seconds}, toolchain-standin {standin.seconds}")
    assert standin.base_digest == base.id and standin.layers[0] == base.layers[0]
    assert standin.packages == dict(cfg.lock.images["toolchain-standin"].packages)
    output = engine_client.containers.run(
        standin.id, command=["--list"], remove=True, user="0:0",
        volumes={str(REPO_ROOT): {"bind": "/moebench", "mode": "ro"}}).decode()
    assert "image.build" in output and "reproduce" in output
    versions = engine_client.containers.run(standin.id, entrypoint=["sh", "-c", "gcc --version; cmake --version; "
                                                                   "python3 -c 'import docker, yaml, scipy'"],
                                            remove=True).decode()
    assert "gcc" in versions and "cmake version" in versions
