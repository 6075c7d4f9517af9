"""Fault tests on the real llama.cpp binaries and a tiny model: every failure becomes a record and
the matrix goes on; Ctrl-C loses nothing and duplicates nothing; a second run on an output is refused."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from moebench import engines, run
from moebench.config import load_config
from moebench.errors import UserError
from moebench.records import read_records

from runner_support import config_dir, have_binaries, patch_resolvers, tiny_model, write_experiment_overrides

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not have_binaries() or tiny_model() is None,
                                 reason="needs llama.cpp binaries (MOEBENCH_TEST_BIN) and a tiny model")]
SUPPORT = Path(__file__).resolve().parent / "runner_support.py"
LONG = 1000  # tokens: long enough for a tiny model's cell to be killed mid-generation


def _run(tmp_path, monkeypatch, mode, model=None, **smoke):
    cfg_dir = config_dir(tmp_path)
    write_experiment_overrides(cfg_dir, **{"repetitions": 2, "warmup_runs": 0, **smoke})
    patch_resolvers(monkeypatch, model or tiny_model())
    out = tmp_path / "out.jsonl"
    summary = run.run_experiment(load_config(cfg_dir), "cpu", "experiment_1_efficiency", out, smoke=True,
                                 only_models=["llama-3.2-1b-instruct-q4km"], threads_override=2,
                                 allow_unverified=True, runner_mode=mode)
    return summary, list(read_records(out))


def _kill_first(name: str, stop: threading.Event) -> None:
    me = psutil.Process()
    while not stop.is_set():
        for child in me.children(recursive=True):
            try:
                if child.name() == name and time.time() - child.create_time() > 0.3:
                    child.kill()
                    return
            except psutil.Error:
                pass
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_kill_9_mid_cell_gives_a_failure_record_and_the_next_cell_runs(tmp_path, monkeypatch, mode):
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first, args=(engines.BINARY_FOR_MODE[mode], stop), daemon=True)
    killer.start()
    try:
        summary, records = _run(tmp_path, monkeypatch, mode, n_predict=LONG)
    finally:
        stop.set()
    assert [r["status"] for r in records] == ["failed", "ok"]
    failure = records[0]["failure"]
    assert failure["reason"] == "killed" and failure["signal"] == signal.SIGKILL
    assert records[0]["gen_tokens_per_s"] is None and "killed" in records[0]["null_reasons"]["gen_tokens_per_s"]
    assert records[1]["gen_tokens"] > 0


def test_address_space_cap_gives_load_failed_then_the_matrix_goes_on(tmp_path, monkeypatch):
    def cap(cell):
        if cell.repetition != 0:
            return None
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (100_000_000, 100_000_000))
    monkeypatch.setattr(engines.CliEngine, "preexec_for_cell", staticmethod(cap))
    _, records = _run(tmp_path, monkeypatch, "cli")
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert records[0]["failure"]["reason"] in ("load_failed", "crash")  # context allocation fails or ggml aborts
    assert records[0]["failure"]["stderr_tail"]


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_truncated_model_gives_load_failed(tmp_path, monkeypatch, mode):
    broken = tmp_path / "truncated.gguf"
    broken.write_bytes(tiny_model().read_bytes()[:400_000])
    summary, records = _run(tmp_path, monkeypatch, mode, model=broken)
    assert [r["failure"]["reason"] for r in records] == ["load_failed", "load_failed"]
    assert "load" in records[0]["failure"]["stderr_tail"]
    assert summary.failed == 2


def _harness(cfg_dir, out, mode, resume=False):
    return subprocess.Popen([sys.executable, str(SUPPORT), str(cfg_dir), str(out), mode,
                             "resume" if resume else "new", str(tiny_model())],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SUPPORT.parent.parent)})


def _wait_for_records(out: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{out} did not reach {n} records")


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_sigint_then_resume_loses_nothing_and_duplicates_nothing(tmp_path, mode):
    cfg_dir = config_dir(tmp_path)
    write_experiment_overrides(cfg_dir, repetitions=4, warmup_runs=1, n_predict=LONG)
    out = tmp_path / "out.jsonl"
    proc = _harness(cfg_dir, out, mode)
    _wait_for_records(out, 2)
    time.sleep(0.3)  # inside the next cell
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "--resume" in stderr
    first = list(read_records(out))
    assert 2 <= len(first) < 5 and all(r["status"] == "ok" for r in first)
    refused = _harness(cfg_dir, out, mode)
    assert refused.wait(timeout=120) == 2 and "--resume" in refused.stderr.read()
    resumed = _harness(cfg_dir, out, mode, resume=True)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    records = list(read_records(out))
    keys = [r["cell_key"] for r in records]
    assert len(keys) == len(set(keys)) == 5  # 1 warm-up + 4 repetitions
    assert keys[:len(first)] == [r["cell_key"] for r in first]
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_a_second_concurrent_run_is_refused(tmp_path, monkeypatch):
    cfg_dir = config_dir(tmp_path)
    write_experiment_overrides(cfg_dir, repetitions=3, warmup_runs=0, n_predict=LONG)
    out = tmp_path / "out.jsonl"
    first = _harness(cfg_dir, out, "cli")
    try:
        _wait_for_records(out, 1)
        patch_resolvers(monkeypatch, tiny_model())
        with pytest.raises(UserError, match="another run"):
            run.run_experiment(load_config(cfg_dir), "cpu", "experiment_1_efficiency", out, smoke=True,
                               only_models=["llama-3.2-1b-instruct-q4km"], threads_override=2, resume=True,
                               allow_unverified=True, runner_mode="cli")
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    assert len(list(read_records(out))) == 3
