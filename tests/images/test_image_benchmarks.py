"""The image benchmarks in their quick mode (see tests/test_benchmarks.py): standin-base twice from
clean state, and the cpu-arm64 image once under qemu-user; each build says how it relates to the lock."""

from __future__ import annotations

import json

import pytest
from test_benchmarks import run_benchmark

pytestmark = pytest.mark.slow


def test_image_reproducibility_quick(engine_client, can_debootstrap, tmp_path):
    run_benchmark("bench_image_reproducibility.py", "--quick", "--results-dir", str(tmp_path))
    body = json.loads((tmp_path / "image_reproducibility.json").read_text())
    assert body["image"] == "standin-base" and len(body["builds"]) == 2 and body["identical"]
    assert {build["against_lock"] for build in body["builds"]} <= {"identical", "drift"}
    assert body["equal_to_lock"] == (body["builds"][0]["against_lock"] == "identical")


def test_aarch64_quick(engine_client, can_debootstrap, can_emulate_aarch64, tmp_path):
    run_benchmark("bench_aarch64.py", "--quick", "--results-dir", str(tmp_path), timeout=1800)
    body = json.loads((tmp_path / "aarch64.json").read_text())
    assert body["quick"] and set(body) == {"benchmark", "host", "measured_at", "quick", "image"}
    assert body["host"]["machine"] == "x86_64" and body["host"]["qemu"]
    assert body["image"]["builds"][0]["against_lock"] in {"identical", "drift"}
