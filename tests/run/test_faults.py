"""Fault tests on the kit's pinned llama.cpp build and a tiny replica: a truncated model becomes
failure records naming its hash; Ctrl-C loses nothing and duplicates nothing. Binaries and models
are resolved by run/experiment.py itself (runner_support). The fault suite (test_fault_suite.py) holds the
other faults (kill -9, OOM, hangs, disk full, signals, a concurrent writer, ...) and their table."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moebench.run.records import read_records

from runner_support import assert_kit_provenance, run_smoke, swap_model, write_experiment_overrides

pytestmark = pytest.mark.slow
SUPPORT = Path(__file__).resolve().parents[1] / "runner_support.py"
# Tokens per cell where a cell must still be running when the test acts on it: about 0.4 s of
# generation for the tiny replica on one idle core, and the prompt plus this fit the 4096 context.
LONG = 2000



def _run(kit, tmp_path, mode, **smoke):
    cfg_dir = kit[0]
    write_experiment_overrides(cfg_dir, **{"repetitions": 2, "warmup_runs": 0, **smoke})
    out = tmp_path / "out.jsonl"
    summary = run_smoke(cfg_dir, out, mode)
    return summary, list(read_records(out))


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_truncated_model_gives_load_failed(kit, tmp_path, monkeypatch, mode):
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(kit[2].read_bytes()[:400_000])
    swap_model(monkeypatch, broken)
    summary, records = _run(kit, tmp_path, mode)
    assert [r["failure"]["reason"] for r in records] == ["load_failed", "load_failed"]
    assert "load" in records[0]["failure"]["stderr_tail"]
    assert summary.failed == 2
    from moebench.hashing import sha256_file
    assert {r["provenance"]["model_sha256"] for r in records} == {sha256_file(broken)}
    assert {r["provenance"]["model_path"] for r in records} == {str(broken)}


def _harness(kit, out, mode, resume=False):
    cfg_dir, bin_dir, model = kit
    return subprocess.Popen([sys.executable, str(SUPPORT), str(cfg_dir), str(out), mode,
                             "resume" if resume else "new", str(bin_dir), str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SUPPORT.parent.parent)})


def _wait_for_records(out: Path, n: int, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_bytes().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited {proc.returncode} before {n} records: {proc.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError(f"{out} did not reach {n} records")


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_sigint_then_resume_loses_nothing_and_duplicates_nothing(kit, tmp_path, mode):
    write_experiment_overrides(kit[0], repetitions=4, warmup_runs=1, n_predict=LONG)
    out = tmp_path / "out.jsonl"
    proc = _harness(kit, out, mode)
    _wait_for_records(out, 2, proc)
    time.sleep(0.1)  # inside the third cell (each takes longer than this)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    first = list(read_records(out))
    assert 2 <= len(first) < 5 and all(r["status"] == "ok" for r in first)
    refused = _harness(kit, out, mode)
    _, stderr = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "--resume" in stderr
    resumed = _harness(kit, out, mode, resume=True)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert f"({len(first)} already recorded)" in stdout
    records = list(read_records(out))
    keys = [r["cell_key"] for r in records]
    assert len(keys) == len(set(keys)) == 5  # 1 warm-up + 4 repetitions
    assert keys[:len(first)] == [r["cell_key"] for r in first]
    assert all(json.loads(line) for line in out.read_text().splitlines())
    assert len({r["run_id"] for r in records}) == 2  # the interrupted run and the resumed one
    for record in records:
        assert_kit_provenance(record, kit[1])
