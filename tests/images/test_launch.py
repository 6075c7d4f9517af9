"""`--in-image` as a user runs it, and every way it refuses: one line, exit 2, lock.yaml untouched."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from moebench.config import REPO_ROOT, load_config
from moebench.errors import IntegrityError, UserError
from moebench.images import engine
from moebench.images.launch import pinned_image

INVOKE = str(REPO_ROOT / ".venv" / "bin" / "invoke")
LOCK = REPO_ROOT / "configs" / "lock.yaml"


def invoke(*args: str, env: dict[str, str] | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([INVOKE, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def assert_one_line_exit_2(done: subprocess.CompletedProcess, *needles: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(fix: " in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("args", [("image.build", "--image", "cpu"), ("image.verify", "--image", "cpu"),
                                  ("reproduce", "--device", "cpu", "--smoke", "--in-image"),
                                  ("run", "--device", "cpu", "--smoke", "--in-image")])
def test_no_engine_is_one_line(args):
    before = LOCK.read_bytes()
    done = invoke(*args, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert_one_line_exit_2(done, "container engine", "dockerd")
    assert LOCK.read_bytes() == before


def test_tag_only_base_is_one_line():
    done = invoke("image.build", "--image", "cuda")
    assert_one_line_exit_2(done, "images.cuda.base", "tag without a digest", "sha256")


def test_a_device_without_a_pinned_image_is_one_line():
    done = invoke("run", "--device", "cuda_sm90", "--smoke", "--in-image")
    assert_one_line_exit_2(done, "images.cuda", "image.build --image cuda")


def test_verify_refuses_an_image_digest_the_lock_does_not_pin():
    other = "sha256:" + "0" * 64
    done = invoke("verify", "--device", "cpu", "--models", "none",
                  env={"MOEBENCH_IMAGE": "cpu", "MOEBENCH_IMAGE_DIGEST": other})
    assert_one_line_exit_2(done, other, load_config().lock.images["cpu"].id, "images.cpu.id")


def test_no_disk_space_for_an_image_is_one_line(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(small)], check=True)
    try:
        before = LOCK.read_bytes()
        done = invoke("image.build", "--image", "cpu", "--no-load", env={"MOEBENCH_HOME": str(small)})
        assert_one_line_exit_2(done, "GiB free", "MOEBENCH_HOME")
        assert LOCK.read_bytes() == before and not any(small.rglob("*.tar"))
    finally:
        subprocess.run(["umount", str(small)], check=True)


@pytest.fixture(scope="module")
def cpu_image_loaded(engine_client) -> None:
    """moebench/cpu:local in the engine: built from the lock as a user would where it is not loaded yet
    (the image tests build it too, beside these, in a pytest worker of their own)."""
    try:
        engine_client.images.get(engine.local_tag("cpu"))
    except Exception:  # noqa: BLE001 - the engine's NotFound: build it as a user would
        built = invoke("image.build", "--image", "cpu")
        if built.returncode == 2 and "DRIFT:" in built.stderr:  # the mirror moved on: no pinned image to run in
            pytest.skip(built.stderr.strip().splitlines()[-1])
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]


@pytest.mark.slow
def test_an_absent_image_and_a_local_image_of_another_digest_are_refused(engine_client, cpu_image_loaded,
                                                                         tmp_config_dir):
    with pytest.raises(UserError, match="not in the local engine") as caught:
        engine.image_by_tag(engine_client, "never-built")
    assert "invoke image.build --image never-built" in caught.value.fix
    lock = tmp_config_dir / "lock.yaml"
    pinned = load_config().lock.images["cpu"].id
    lock.write_text(lock.read_text().replace(f"id: {pinned}", "id: sha256:" + "e" * 64))
    with pytest.raises(IntegrityError) as caught:
        pinned_image(load_config(tmp_config_dir), engine_client, "cpu")
    assert pinned in caught.value.one_line() and "sha256:" + "e" * 64 in caught.value.one_line()


@pytest.mark.slow
def test_in_image_smoke_records_the_locked_image_and_binaries(engine_client, cpu_image_loaded, tmp_path):
    """`invoke reproduce --device cpu --smoke --in-image`: the build happens in the image, under /moebench."""
    cfg = load_config()
    image_id = cfg.lock.images["cpu"].id
    raw, results = tmp_path / "raw", tmp_path / "results"
    done = invoke("reproduce", "--device", "cpu", "--smoke", "--in-image", "--raw-dir", str(raw),
                  "--output-dir", str(results))
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert f"in image cpu ({image_id})" in done.stdout
    records = [json.loads(line) for path in sorted(raw.glob("run_*.jsonl")) for line in path.read_text().splitlines()]
    assert len(records) == 32 and all(r["status"] == "ok" for r in records)
    for record in records:
        prov = record["provenance"]
        assert prov["image_digest"] == image_id and "image_digest" not in prov["null_reasons"]
        pinned = cfg.lock.binaries[f"cpu/offline/{prov['toolchain_id']}"]
        assert prov["binary_sha256"] == pinned[prov["binary_name"]]
    manifest = json.loads((REPO_ROOT / ".moebench" / "build" / "image-cpu" / "cpu-offline" / "manifest.json").read_text())
    assert manifest["prefix_map"]["from"] == "/moebench-work/build/image-cpu/cpu-offline"  # the fixed path
    assert image_id in (results / "REPORT.md").read_text()
    assert all(path.stat().st_uid == os.getuid() for path in raw.iterdir())
