"""Fault tests on the kit's pinned llama.cpp build and a tiny replica: every failure becomes a
record and the matrix goes on; Ctrl-C loses nothing and duplicates nothing; a second run on an
output is refused. Binaries and models are resolved by run.py itself (runner_support)."""

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from moebench import engines
from moebench.errors import UserError
from moebench.records import read_records

from runner_support import (MODEL, assert_kit_provenance, config_dir, expect_kit_resolution, run_smoke, swap_model,
                            write_experiment_overrides)

pytestmark = pytest.mark.slow
SUPPORT = Path(__file__).resolve().parent / "runner_support.py"
# Tokens per cell where a cell must still be running when the test acts on it: about 0.4 s of
# generation for the tiny replica on one idle core, and the prompt plus this fit the 4096 context.
LONG = 2000


@pytest.fixture
def kit(tmp_path, pinned_bin_dir, tiny_replica_paths):
    """(config dir, bin dir, model): a copied config over the kit's own build and replica."""
    cfg_dir = config_dir(tmp_path)
    for mode in engines.ENGINES:
        expect_kit_resolution(cfg_dir, mode, pinned_bin_dir, tiny_replica_paths[MODEL])
    return cfg_dir, pinned_bin_dir, tiny_replica_paths[MODEL]


def _run(kit, tmp_path, mode, **smoke):
    cfg_dir = kit[0]
    write_experiment_overrides(cfg_dir, **{"repetitions": 2, "warmup_runs": 0, **smoke})
    out = tmp_path / "out.jsonl"
    summary = run_smoke(cfg_dir, out, mode)
    return summary, list(read_records(out))


def _kill_first_cell(monkeypatch, mode: str, after_s: float = 0.1) -> list[int]:
    """SIGKILL the llama.cpp process of the first cell `after_s` after the cell starts (when the
    runner starts its monitors on it); the pids killed are returned in the list."""
    engine_cls = engines.ENGINES[mode]
    original = engine_cls.run_cell
    killed: list[int] = []

    def run_cell(self, cell, model, prompt, hooks):
        if killed:
            return original(self, cell, model, prompt, hooks)

        def start(pid):
            hooks.start(pid)
            killed.append(pid)
            threading.Timer(after_s, os.kill, (pid, signal.SIGKILL)).start()

        return original(self, cell, model, prompt, engines.MonitorHooks(start=start, stop=hooks.stop))

    monkeypatch.setattr(engine_cls, "run_cell", run_cell)
    return killed


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_kill_9_mid_cell_gives_a_failure_record_and_the_next_cell_runs(kit, tmp_path, monkeypatch, mode):
    killed = _kill_first_cell(monkeypatch, mode)
    summary, records = _run(kit, tmp_path, mode, n_predict=LONG)
    assert len(killed) == 1
    assert [r["status"] for r in records] == ["failed", "ok"], "the first cell ended before the kill"
    failure = records[0]["failure"]
    assert failure["reason"] == "killed" and failure["signal"] == signal.SIGKILL
    assert records[0]["gen_tokens_per_s"] is None and "killed" in records[0]["null_reasons"]["gen_tokens_per_s"]
    # llama.cpp counts n_predict - 1 decode steps: the first token is sampled from the prompt's logits
    assert records[1]["gen_tokens"] == LONG - 1 and records[1]["runner_mode"] == mode
    for record in records:
        assert_kit_provenance(record, kit[1])
    assert summary.failed == 1 and not summary.interrupted


def test_address_space_cap_gives_load_failed_then_the_matrix_goes_on(kit, tmp_path, monkeypatch):
    """A per-process address-space limit (what `prlimit --as` sets) on the first cell only."""
    def cap(cell):
        if cell.repetition != 0:
            return None
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (100_000_000, 100_000_000))
    monkeypatch.setattr(engines.CliEngine, "preexec_for_cell", staticmethod(cap))
    _, records = _run(kit, tmp_path, "cli")
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert records[0]["failure"]["reason"] in ("load_failed", "crash")  # context allocation fails or ggml aborts
    assert records[0]["failure"]["stderr_tail"]
    assert_kit_provenance(records[0], kit[1])


def _memory_cgroup(tmp_name: str, limit_bytes: int) -> Path | None:
    """A new memory cgroup below this process's, limited to `limit_bytes` without swap; its
    cgroup.procs file, or None where this host gives no writable memory cgroup."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            base, limits = Path("/sys/fs/cgroup/memory"), {"memory.limit_in_bytes": limit_bytes,
                                                            "memory.memsw.limit_in_bytes": limit_bytes}
        elif controllers == "":
            base = next((Path(root) for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
                         if (Path(root) / "cgroup.controllers").is_file()), None)
            if base is None or "memory" not in (base / path.lstrip("/") / "cgroup.subtree_control").read_text():
                continue
            limits = {"memory.max": limit_bytes, "memory.swap.max": 0}
        else:
            continue
        group = base / path.lstrip("/") / tmp_name
        try:
            group.mkdir()
            for name, value in limits.items():
                if (group / name).exists():
                    (group / name).write_text(str(value))
        except OSError:
            if group.is_dir():
                group.rmdir()
            continue
        return group / "cgroup.procs"
    return None


def test_memory_cgroup_limit_gives_oom_killed_then_the_matrix_goes_on(kit, tmp_path, monkeypatch):
    """A real kernel OOM kill: the first cell's llama-cli runs in a memory cgroup of 8 MiB."""
    procs = _memory_cgroup(f"moebench-test-{os.getpid()}", 8 * 2**20)
    if procs is None:
        pytest.skip("no writable memory cgroup on this host (needs root and cgroup v1 memory or a v2 "
                    "memory subtree); the address-space cap test covers the allocation-failure path")

    def into_cgroup(cell):
        return (lambda: procs.write_text(str(os.getpid()))) if cell.repetition == 0 else None
    monkeypatch.setattr(engines.CliEngine, "preexec_for_cell", staticmethod(into_cgroup))
    try:
        _, records = _run(kit, tmp_path, "cli")
    finally:
        procs.parent.rmdir()
    assert [r["status"] for r in records] == ["failed", "ok"]
    failure = records[0]["failure"]
    assert failure["reason"] == "oom_killed" and failure["signal"] == signal.SIGKILL, failure
    assert records[0]["peak_rss_bytes"] is None or records[0]["peak_rss_bytes"] <= 8 * 2**20 + 64 * 2**20


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


def test_a_second_concurrent_run_is_refused(kit, tmp_path):
    # enough cells that the first run still holds the lock when the second one reaches it
    write_experiment_overrides(kit[0], repetitions=12, warmup_runs=0, n_predict=LONG)
    out = tmp_path / "out.jsonl"
    first = _harness(kit, out, "cli")
    try:
        _wait_for_records(out, 1, first)
        with pytest.raises(UserError, match="another run"):
            run_smoke(kit[0], out, "cli", resume=True)
        assert first.poll() is None, "the first run finished before the second one was refused"
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=300)
    assert first.returncode == 130, stderr
    records = list(read_records(out))
    assert 1 <= len(records) < 12 and all(r["status"] == "ok" for r in records)
    assert len({r["run_id"] for r in records}) == 1  # nothing from the refused run
    assert len({r["cell_key"] for r in records}) == len(records)
