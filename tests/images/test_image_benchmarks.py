"""The image benchmark in its quick mode (see tests/test_benchmarks.py): standin-base twice from clean
state, each build saying how it relates to the lock. bench_aarch64.py's quick run is the clean-state
build of tests/images/test_aarch64.py."""

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
