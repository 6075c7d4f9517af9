"""The fault suite: each case provokes one real fault on the kit's pinned llama.cpp and a tiny replica
(real processes, files, signals, mounts) and reports what was expected, what was observed, and three
counts that must stay zero: records lost, llama.cpp processes left running, tracebacks shown.
The last test writes benchmarks/results/fault_suite.json and checks the totals.

Harness cases run `runner_support.py` as a subprocess (its stdout/stderr are what a user sees);
in-process cases call the stage the way tasks.py does, where an exception other than a UserError
would be a traceback. Records lost = records the harness said it wrote (its progress lines) minus
the records readable afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from moebench.run import children, engines
from moebench.errors import UserError
from moebench.run.records import read_records

from runner_support import MODEL, assert_kit_provenance, run_smoke, swap_model, write_experiment_overrides

pytestmark = pytest.mark.slow
SUPPORT = Path(__file__).resolve().parents[1] / "runner_support.py"
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "fault_suite.json"
LONG = 2000  # tokens: a cell that is still running when the case acts on it
NON_UTF8_MODEL = "olmoe-1b-7b-0924-instruct-q4km"  # its tiny replica emits bytes that are not UTF-8
PROGRESS = re.compile(r"^\[\d+/\d+\] ", re.MULTILINE)
CASES: dict[str, dict] = {}
STARTED = time.monotonic()
LLAMA_NAMES = ("llama-cli", "llama-server", "llama-quantize")
CASE_MARK = "MOEBENCH_FAULT_CASE"


# --- the collector ------------------------------------------------------------------------------

def report(case: str, expected: str, observed: str, *, written: int = 0, readable: int = 0,
           orphans: int = 0, output: str = "") -> None:
    CASES[case] = {"case": case, "expected": expected, "observed": observed,
                   "records_lost": max(written - readable, 0), "orphans": orphans,
                   "tracebacks": output.count("Traceback")}


def written_in(output: str) -> int:
    return len(PROGRESS.findall(output))


def llama_orphans(since: float, mark: str, grace_s: float = 5.0) -> int:
    """llama.cpp processes of this case (they inherit its MOEBENCH_FAULT_CASE mark) still alive
    after `grace_s` (the kernel's parent-death signal and the harness's own kill are immediate)."""
    def alive() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["name", "create_time", "status"]):
            info = proc.info
            if info["name"] not in LLAMA_NAMES or info["status"] == psutil.STATUS_ZOMBIE \
                    or info["create_time"] < since - 1:
                continue
            with contextlib.suppress(psutil.Error):
                if proc.environ().get(CASE_MARK) == mark:
                    found.append(proc)
        return found
    deadline = time.monotonic() + grace_s
    while (found := alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in found:  # never leave them for the next case (they are this case's own)
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(found)



@pytest.fixture
def marks(monkeypatch):
    """A mark in the environment that every process this case starts inherits."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv(CASE_MARK, mark)
    return mark


def harness(kit, out: Path, mode: str, resume: bool = False, env: dict | None = None) -> subprocess.Popen:
    cfg_dir, bin_dir, model = kit
    return subprocess.Popen([sys.executable, str(SUPPORT), str(cfg_dir), str(out), mode,
                             "resume" if resume else "new", str(bin_dir), str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(SUPPORT.parent.parent), **(env or {})})


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the harness exited {proc.returncode} early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def lines_in(out: Path) -> int:
    return len(out.read_bytes().splitlines()) if out.exists() else 0


def one_error_line(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def smoke(kit, tmp_path, mode, capsys, model=MODEL, **overrides):
    """An in-process smoke run: (summary or the UserError, readable records, captured output)."""
    write_experiment_overrides(kit[0], **{"repetitions": 2, "warmup_runs": 0, **overrides})
    out = tmp_path / "out.jsonl"
    try:
        result = run_smoke(kit[0], out, mode, model=model)
    except UserError as exc:
        result = exc
    captured = capsys.readouterr()
    text = captured.out + captured.err + (exc_line(result) if isinstance(result, UserError) else "")
    return result, (list(read_records(out)) if out.exists() else []), text


def exc_line(exc: UserError) -> str:
    return exc.one_line() + "\n"


def set_generation(cfg_dir: Path, **values) -> None:
    path = cfg_dir / "experiments.yaml"
    data = yaml.safe_load(path.read_text())
    data["generation"].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@contextlib.contextmanager
def tmpfs(path: Path, size: str, options: str = ""):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs mount needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# --- 1. no child outlives the harness --------------------------------------------------------------

@pytest.mark.parametrize("mode,guard", [("server", "pdeathsig"), ("cli", "pdeathsig"), ("server", "watchdog")])
def test_kill_9_of_the_harness_leaves_no_llama_cpp(kit, tmp_path, marks, mode, guard):
    """pdeathsig: Linux's PR_SET_PDEATHSIG; watchdog: the watcher process macOS relies on."""
    write_experiment_overrides(kit[0], repetitions=4, warmup_runs=0, n_predict=LONG)
    out, since = tmp_path / "out.jsonl", time.time()
    proc = harness(kit, out, mode, env={"MOEBENCH_CHILD_WATCHDOG": "1" if guard == "watchdog" else "0"})
    me = psutil.Process(proc.pid)

    def kids() -> list[psutil.Process]:
        found = []
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.name() in LLAMA_NAMES:
                    found.append(child)
        return found
    wait_for(lambda: lines_in(out) >= 1 and kids(), proc)
    if mode == "server":
        assert children.pid_file_for(out).is_file()
    child = kids()[0]
    name, pid = child.name(), child.pid
    proc.kill()
    stdout, stderr = proc.communicate()
    gone = psutil.wait_procs([child], timeout=5)[0]
    assert gone, f"{name} {pid} outlived the harness"
    readable = len(list(read_records(out)))
    report(f"kill -9 of the harness ({mode} runner, {guard})", f"llama.cpp dies with the harness ({guard})",
           f"{name} pid {pid} gone within 5 s; {readable} records readable",
           written=written_in(stdout), readable=readable, orphans=llama_orphans(since, marks), output=stdout + stderr)


def test_a_stale_server_is_reported_at_the_next_run(kit, tmp_path, marks):
    """A server left by an earlier crash (started without the parent-death signal, as on a host
    where neither it nor the watchdog works) is named in one line with its `kill`; it is not killed."""
    write_experiment_overrides(kit[0], repetitions=1, warmup_runs=0)
    since = time.time()
    earlier = tmp_path / "earlier.jsonl"
    dead = subprocess.Popen(["true"])
    dead.wait()
    port = engines.free_port()
    server = subprocess.Popen(engines.server_args(kit[1] / "llama-server", kit[2], _knobs(), port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        started = psutil.Process(server.pid).create_time()
        children.pid_file_for(earlier).write_text(json.dumps({"pid": server.pid, "create_time": started,
                                                              "port": port, "harness_pid": dead.pid}))
        proc = harness(kit, tmp_path / "out.jsonl", "cli")
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert f"kill {server.pid}" in stderr and server.poll() is None
    finally:
        server.kill()
        server.wait()
    report("stale llama-server from an earlier crash", "reported in one line with its kill command, not killed",
           next(line for line in stderr.splitlines() if "left running" in line), written=written_in(stdout),
           readable=len(list(read_records(tmp_path / "out.jsonl"))), orphans=llama_orphans(since, marks),
           output=stdout + stderr)


def _knobs():
    from moebench.run.plan import Knobs
    return Knobs(threads=1, n_predict=8, ctx_size=512, batch_size=512, ubatch_size=512, seed=1, temperature=0.0,
                 ignore_eos=True, n_gpu_layers=0)


# --- 2. write errors -------------------------------------------------------------------------------

def test_disk_full_gives_one_line_and_resume_completes(kit, tmp_path, marks):
    write_experiment_overrides(kit[0], repetitions=12, warmup_runs=0, n_predict=4)
    since = time.time()
    with tmpfs(tmp_path / "small", "48k") as small:
        out = small / "out.jsonl"
        proc = harness(kit, out, "cli")
        stdout, stderr = proc.communicate(timeout=300)
        saved = list(read_records(out))
        copy = tmp_path / "out.jsonl"
        shutil.copy(out, copy)
    errors = one_error_line(stderr)
    assert proc.returncode == 2 and len(errors) == 1, stderr
    assert str(out) in errors[0] and f"{len(saved)} records are saved" in errors[0] and "--resume" in errors[0]
    assert 0 < len(saved) < 12 and copy.read_bytes().endswith(b"\n")
    resumed = harness(kit, copy, "cli", resume=True)
    r_out, r_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, r_err
    final = list(read_records(copy))
    assert len({r["cell_key"] for r in final}) == len(final) == 12
    report("disk full while writing records", "one line (file, records saved, --resume command), exit 2; "
           "resume on a bigger disk completes", f"exit 2, {errors[0][:160]}...; resumed to {len(final)} records",
           written=written_in(stdout), readable=len(saved), orphans=llama_orphans(since, marks),
           output=stdout + stderr + r_out + r_err)


def test_a_torn_tail_is_repaired_at_the_next_start(kit, tmp_path, marks):
    write_experiment_overrides(kit[0], repetitions=2, warmup_runs=0, n_predict=4)
    out, since = tmp_path / "out.jsonl", time.time()
    first = harness(kit, out, "cli")
    stdout, stderr = first.communicate(timeout=300)
    data = out.read_bytes()
    out.write_bytes(data[:-1] + data[-1:] + data.splitlines()[0][:37])  # a write cut off by a full disk
    write_experiment_overrides(kit[0], repetitions=3)
    resumed = harness(kit, out, "cli", resume=True)
    r_out, r_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, r_err
    assert out.read_bytes().endswith(b"\n") and all(json.loads(line) for line in out.read_bytes().splitlines())
    readable = list(read_records(out))
    assert len(readable) == 3
    report("torn last line (a write cut off)", "dropped at the next --resume, records before it kept",
           f"torn tail dropped, {len(readable)} whole records", written=written_in(stdout + r_out),
           readable=len(readable), orphans=llama_orphans(since, marks), output=stdout + stderr + r_out + r_err)


def test_read_only_results_directory_gives_one_line(kit, tmp_path, marks):
    since = time.time()
    write_experiment_overrides(kit[0], repetitions=1, warmup_runs=0)
    with tmpfs(tmp_path / "results", "1m", ",ro") as results:
        proc = harness(kit, results / "out.jsonl", "cli")
        stdout, stderr = proc.communicate(timeout=300)
    errors = one_error_line(stderr)
    assert proc.returncode == 2 and len(errors) == 1 and "Read-only file system" in errors[0], stderr
    report("read-only results/ as the output directory", "one line naming the file, exit 2", errors[0],
           written=written_in(stdout), orphans=llama_orphans(since, marks), output=stdout + stderr)


def test_read_only_results_for_analyze_in_reproduce(kit, tmp_path, marks, capsys):
    """`invoke reproduce` writes results/ after the runs: a read-only results/ is one line there too."""
    from moebench.analysis.tables import analyze
    from moebench.config import load_config
    from moebench.reproduce import StageTimes

    since = time.time()
    _, records, text = smoke(kit, tmp_path, "cli", capsys)
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(tmp_path / "out.jsonl", raw / "run_x.jsonl")
    with tmpfs(tmp_path / "results", "1m", ",ro") as results:
        with pytest.raises(UserError) as caught:
            StageTimes().timed("analyze", analyze, load_config(kit[0]), raw, results)
    line = caught.value.one_line()
    assert str(results) in line and "Read-only file system" in line
    assert len(list(read_records(raw / "run_x.jsonl"))) == len(records) == 2
    report("read-only results/ for analyze (reproduce)", "one line naming the file; the raw records untouched",
           line[:200], written=written_in(text), readable=len(records), orphans=llama_orphans(since, marks),
           output=text + capsys.readouterr().err)


def test_disk_full_during_replica_generation_leaves_no_half_file(tmp_path, pinned_bin_dir):
    from moebench.config import load_config
    from moebench.models.replica import make_replica, replica_filename

    with tmpfs(tmp_path / "models", "256k") as models:
        with pytest.raises(UserError) as caught:
            make_replica(load_config(), MODEL, "tiny", models, pinned_bin_dir / "llama-quantize", pin="offline")
        left = sorted(p.name for p in models.rglob("*"))
    assert not (models / replica_filename(MODEL)).exists() and left == [], left
    report("disk full during replica generation", "one line, nothing half-written left",
           caught.value.one_line()[:200], output="")


def test_disk_full_during_download_leaves_no_half_model(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
    from http.server import ThreadingHTTPServer

    from local_hub import COMMIT, FILENAME, FIXTURE, HubHandler, HubState, with_hub

    from moebench.config import load_config
    from moebench.hashing import sha256_file
    from moebench.models.download import download_model

    state = HubState(files={FILENAME: FIXTURE.read_bytes()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (HubHandler,), {"state": state}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    model = "olmoe-1b-7b-0924-instruct-q4km"
    cfg = with_hub(load_config(), model, revision=COMMIT, sha256=sha256_file(FIXTURE),
                   size_bytes=FIXTURE.stat().st_size)
    try:
        with tmpfs(tmp_path / "cache", "24k") as cache:
            with pytest.raises(UserError) as caught:
                download_model(cfg, model, out_dir=cache)
            complete = [p for p in cache.rglob(FILENAME)]
    finally:
        server.shutdown()
        server.server_close()
    assert complete == [] and "could not be written" in caught.value.one_line()
    report("disk full during download", "one line; only an .incomplete blob, never the model file",
           caught.value.one_line()[:200])


def test_disk_full_during_build_leaves_no_manifest(tmp_path, pinned_bin_dir):
    from moebench.pins.build import build, manifest_path
    from moebench.config import load_config

    with tmpfs(tmp_path / "work", "2m") as work:
        with pytest.raises(UserError) as caught:
            build(load_config(), "cpu", "offline", work_root=work, progress=False)
        assert not manifest_path("cpu", "offline", work).exists()
        left = list(work.rglob("*"))
    assert "could not write" in caught.value.one_line() and not [p for p in left if p.name == "manifest.json"]
    report("disk full during build", "one line; no manifest, the half build removed", caught.value.one_line()[:200])


# --- 3. the API key --------------------------------------------------------------------------------

def test_the_server_refuses_requests_without_the_runs_api_key(kit, tmp_path, marks):
    write_experiment_overrides(kit[0], repetitions=3, warmup_runs=0, n_predict=LONG)
    out, since = tmp_path / "out.jsonl", time.time()
    proc = harness(kit, out, "server")
    pid_file = children.pid_file_for(out)
    wait_for(lambda: pid_file.is_file() and lines_in(out) >= 1, proc)
    entry = json.loads(pid_file.read_text())
    cmdline = psutil.Process(entry["pid"]).cmdline()
    key = Path(cmdline[cmdline.index("--api-key-file") + 1]).read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{entry['port']}/completion", method="POST",
                                     data=json.dumps({"prompt": "hi", "n_predict": 1}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert refused.value.code == 401 and len(key) >= 32
    assert key not in out.read_text() and key[-4:] not in json.dumps([r["monitors"] for r in read_records(out)])
    readable = len(list(read_records(out)))
    report("local user drives llama-server without the key", "401; a random key per run, never recorded",
           f"HTTP {refused.value.code}; key absent from {readable} records", written=written_in(stdout),
           readable=readable, orphans=llama_orphans(since, marks), output=stdout + stderr)


# --- 4. llama.cpp faults ---------------------------------------------------------------------------

def _kill_first_cell(monkeypatch, mode: str, sig: int = signal.SIGKILL, after_s: float = 0.1) -> list[int]:
    engine_cls = engines.ENGINES[mode]
    original = engine_cls.run_cell
    hit: list[int] = []

    def run_cell(self, cell, model, prompt, hooks):
        if hit:
            return original(self, cell, model, prompt, hooks)

        def start(pid):
            hooks.start(pid)
            hit.append(pid)
            threading.Timer(after_s, os.kill, (pid, sig)).start()
        return original(self, cell, model, prompt, engines.MonitorHooks(start=start, stop=hooks.stop))

    monkeypatch.setattr(engine_cls, "run_cell", run_cell)
    return hit


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_kill_9_of_llama_cpp_mid_cell(kit, tmp_path, marks, monkeypatch, capsys, mode):
    since = time.time()
    killed = _kill_first_cell(monkeypatch, mode)
    summary, records, text = smoke(kit, tmp_path, mode, capsys, n_predict=LONG)
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
    report(f"kill -9 of llama.cpp mid-cell ({mode})", "a failure record (killed), the next cell runs",
           f"{[r['status'] for r in records]}, reason killed", written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


def test_oom_by_address_space_cap(kit, tmp_path, marks, monkeypatch, capsys):
    since = time.time()

    def cap(cell):
        if cell.repetition != 0:
            return None
        return lambda: resource.setrlimit(resource.RLIMIT_AS, (100_000_000, 100_000_000))
    monkeypatch.setattr(engines.CliEngine, "preexec_for_cell", staticmethod(cap))
    _, records, text = smoke(kit, tmp_path, "cli", capsys)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert records[0]["failure"]["reason"] in ("load_failed", "crash")  # context allocation fails or ggml aborts
    assert records[0]["failure"]["stderr_tail"]
    assert_kit_provenance(records[0], kit[1])
    report("OOM (prlimit --as 100 MB on one cell)", "a failure record, the next cell runs",
           f"first cell {records[0]['failure']['reason']}, second ok", written=written_in(text),
           readable=len(records), orphans=llama_orphans(since, marks), output=text)


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_a_hung_llama_cpp_times_out(kit, tmp_path, marks, monkeypatch, capsys, mode):
    """SIGSTOP: the process lives but answers nothing; generation.timeout_s ends the cell."""
    since = time.time()
    # the second cell generates LONG tokens within the timeout: 5.6 s on one core of the 2-core host
    # with Llama's 128,256-token vocabulary
    set_generation(kit[0], timeout_s=20)
    stopped = _kill_first_cell(monkeypatch, mode, signal.SIGSTOP, after_s=0.05)
    _, records, text = smoke(kit, tmp_path, mode, capsys, n_predict=LONG)
    assert len(stopped) == 1 and [r["status"] for r in records] == ["failed", "ok"], text
    assert records[0]["failure"]["reason"] == "timeout"
    report(f"hung llama.cpp ({mode}, SIGSTOP)", "timeout failure record after generation.timeout_s, next cell runs",
           "first cell timeout, second ok", written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_a_corrupt_gguf_gives_load_failed(kit, tmp_path, marks, monkeypatch, capsys, mode):
    since = time.time()
    broken = tmp_path / "corrupt.gguf"
    data = bytearray(kit[2].read_bytes())
    data[200_000:200_000 + 4096] = os.urandom(4096)
    broken.write_bytes(bytes(data[:400_000]))
    swap_model(monkeypatch, broken)
    _, records, text = smoke(kit, tmp_path, mode, capsys)
    assert [r["failure"]["reason"] for r in records] == ["load_failed", "load_failed"]
    report(f"corrupt GGUF ({mode})", "load_failed records naming the file's hash", "2 load_failed records",
           written=written_in(text), readable=len(records), orphans=llama_orphans(since, marks), output=text)


def test_the_model_file_swapped_during_a_run_stops_it(kit, tmp_path, marks, monkeypatch, capsys):
    since = time.time()
    model = tmp_path / "model.gguf"
    shutil.copy(kit[2], model)
    swap_model(monkeypatch, model)
    out = tmp_path / "out.jsonl"

    def swap_after_first_record():
        wait_for(lambda: lines_in(out) >= 1, timeout_s=120)
        other = tmp_path / "other.gguf"
        other.write_bytes(model.read_bytes()[:-1] + b"\x00")
        os.replace(other, model)
    thread = threading.Thread(target=swap_after_first_record)
    thread.start()
    result, records, text = smoke(kit, tmp_path, "cli", capsys, repetitions=4, n_predict=64)
    thread.join()
    assert isinstance(result, UserError) and "changed during the run" in result.one_line(), text
    assert 1 <= len(records) < 4 and "--resume" in result.one_line()
    report("model file swapped during a run", "the run stops before the next cell, one line, exit 2",
           result.one_line()[:200], written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


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


def test_oom_in_a_memory_cgroup(kit, tmp_path, marks, monkeypatch, capsys):
    procs = _memory_cgroup(f"moebench-suite-{os.getpid()}", 8 * 2**20)
    if procs is None:
        pytest.skip("no writable memory cgroup on this host")
    since = time.time()
    monkeypatch.setattr(engines.CliEngine, "preexec_for_cell", staticmethod(
        lambda cell: (lambda: procs.write_text(str(os.getpid()))) if cell.repetition == 0 else None))
    try:
        _, records, text = smoke(kit, tmp_path, "cli", capsys)
    finally:
        procs.parent.rmdir()
    assert [r["status"] for r in records] == ["failed", "ok"]
    failure = records[0]["failure"]
    assert failure["reason"] == "oom_killed" and failure["signal"] == signal.SIGKILL, failure
    assert records[0]["peak_rss_bytes"] is None or records[0]["peak_rss_bytes"] <= 8 * 2**20 + 64 * 2**20
    report("OOM kill in an 8 MiB memory cgroup", "oom_killed failure record, next cell runs",
           f"{[r['status'] for r in records]}", written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


# --- configuration and data faults -----------------------------------------------------------------

def test_a_tampered_lock_refuses_the_run(kit, tmp_path, marks, capsys):
    since = time.time()
    lock = kit[0] / "lock.yaml"
    data = yaml.safe_load(lock.read_text())
    data["replicas"]["tiny/offline"][MODEL] = "0" * 64
    lock.write_text(yaml.safe_dump(data, sort_keys=False))
    result, records, text = smoke(kit, tmp_path, "cli", capsys)
    assert isinstance(result, UserError) and records == []
    report("tampered lock (a replica hash changed)", "verification refuses the run in one line",
           result.one_line()[:200], orphans=llama_orphans(since, marks), output=text)


@pytest.mark.parametrize("edit", ["lock", "manifest"])
def test_a_file_edited_by_hand_gives_one_line(kit, tmp_path, marks, monkeypatch, capsys, edit):
    since = time.time()
    if edit == "lock":
        lock = kit[0] / "lock.yaml"
        lock.write_text(lock.read_text().replace("replicas:", "replicas: [oops", 1))
    else:
        home = tmp_path / "home" / "build" / "cpu-offline"
        home.mkdir(parents=True)
        (home / "manifest.json").write_text('{"schema_version": 1, "binaries": {"llama-cli": ')
        monkeypatch.setenv("MOEBENCH_HOME", str(tmp_path / "home"))
    result, records, text = smoke(kit, tmp_path, "cli", capsys)
    assert isinstance(result, UserError), result
    report(f"{edit} edited by hand (malformed)", "one line naming the file and the fix", result.one_line()[:200],
           orphans=llama_orphans(since, marks), output=text)


def test_malformed_records_in_data_raw_for_analyze(tmp_path):
    from moebench.analysis.tables import analyze
    from moebench.config import load_config

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "run_a.jsonl").write_bytes(b'{"schema_version": 1}\n\xff\xfe not json\n{"torn')
    with pytest.raises(UserError) as caught:
        analyze(load_config(), raw, tmp_path / "results")
    assert "run_a.jsonl" in caught.value.one_line()
    report("malformed records in data/raw (analyze)", "one line naming the file and line", caught.value.one_line()[:200])


def test_missing_monitors_give_null_with_reasons(kit, tmp_path, marks, capsys):
    since = time.time()
    devices = kit[0] / "devices.yaml"
    data = yaml.safe_load(devices.read_text())
    data["devices"]["cpu"]["monitors"] = ["psutil", "nvml", "tegrastats", "nvpmodel"]
    devices.write_text(yaml.safe_dump(data, sort_keys=False))
    _, records, text = smoke(kit, tmp_path, "cli", capsys)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(r["energy_joules"] is None and r["null_reasons"]["energy_joules"] for r in records)
    report("missing monitors (nvml, tegrastats, nvpmodel absent)", "records ok, the fields null with reasons",
           records[0]["null_reasons"]["energy_joules"][:160], written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_non_utf8_output_from_llama_cpp(kit, tmp_path, marks, capsys, tiny_replica_paths, mode):
    since = time.time()
    prompts = kit[0] / "prompts.yaml"
    data = yaml.safe_load(prompts.read_text())
    data["prompts"][0]["text"] = "Say hello"  # two tokens whose continuation is not UTF-8
    prompts.write_text(yaml.safe_dump(data, sort_keys=False))
    _, records, text = smoke(kit, tmp_path, mode, capsys, model=NON_UTF8_MODEL, n_predict=64)
    assert [r["status"] for r in records] == ["ok", "ok"], text
    if mode == "cli":  # the bytes themselves: proof the fault was there
        assert any(r["monitors"]["engine"]["stdout_utf8_valid"] is False for r in records)
    report(f"non-UTF-8 output from llama.cpp ({mode})", "records ok, nothing decoded strictly",
           f"2 ok records from the {NON_UTF8_MODEL} replica", written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


@pytest.mark.parametrize("mode", ["cli", "server"])
def test_a_prompt_longer_than_the_context(kit, tmp_path, marks, capsys, mode):
    since = time.time()
    set_generation(kit[0], ctx_size=64)
    prompts = kit[0] / "prompts.yaml"
    data = yaml.safe_load(prompts.read_text())
    assert data["prompts"][0]["id"] == "p01_short_fact"
    data["prompts"][0]["text"] = " ".join([data["prompts"][0]["text"]] * 8)
    prompts.write_text(yaml.safe_dump(data, sort_keys=False))
    _, records, text = smoke(kit, tmp_path, mode, capsys, n_predict=8)
    assert [r["status"] for r in records] == ["failed", "failed"], text
    report(f"prompt longer than the context ({mode}, ctx 64)", "failure records, the matrix goes on",
           f"{[r['failure']['reason'] for r in records]}", written=written_in(text), readable=len(records),
           orphans=llama_orphans(since, marks), output=text)


# --- signals, clock, concurrency -------------------------------------------------------------------

@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGINT)],
                         ids=["sigterm", "sigint_twice"])
def test_signals_stop_cleanly_and_resume_loses_nothing(kit, tmp_path, marks, signals):
    write_experiment_overrides(kit[0], repetitions=4, warmup_runs=0, n_predict=LONG)
    out, since = tmp_path / "out.jsonl", time.time()
    proc = harness(kit, out, "server")
    wait_for(lambda: lines_in(out) >= 1, proc)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.01)
    stdout, stderr = proc.communicate(timeout=300)
    # a second signal that lands once Python has put back the default handlers at exit ends the
    # process by that signal: the run's own exit is complete by then (its message is out)
    assert proc.returncode in (130, -signals[-1]), stderr
    assert "Resume with: invoke run" in stderr and "--resume" in stderr
    first = len(list(read_records(out)))
    resumed = harness(kit, out, "server", resume=True)
    r_out, r_err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, r_err
    keys = [r["cell_key"] for r in read_records(out)]
    assert len(keys) == len(set(keys)) == 4
    name = " then ".join(signal.Signals(s).name for s in signals)
    report(f"{name} mid-run", "exit 130 with the resume command; resume completes without duplicates",
           f"exit {proc.returncode}, {first} records kept, resumed to {len(keys)}", written=written_in(stdout),
           readable=first, orphans=llama_orphans(since, marks), output=stdout + stderr + r_out + r_err)


def test_a_clock_jump_mid_run(kit, tmp_path, marks):
    write_experiment_overrides(kit[0], repetitions=3, warmup_runs=0, n_predict=8)
    out, since = tmp_path / "out.jsonl", time.time()
    proc = harness(kit, out, "cli", env={"MOEBENCH_TEST_CLOCK_JUMP_S": "3600"})
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    records = list(read_records(out))
    starts = [r["started_at"] for r in records]
    assert len(records) == 3 and starts[1] < starts[0]  # the wall clock really went back
    assert all(r["gen_ms"] > 0 and r["wall_ms"] > 0 for r in records)
    report("wall clock stepped back 1 h mid-run", "durations from monotonic clocks stay positive; records valid",
           "started_at went back, all durations > 0", written=written_in(stdout), readable=len(records),
           orphans=llama_orphans(since, marks), output=stdout + stderr)


def test_a_concurrent_writer_is_refused(kit, tmp_path, marks):
    write_experiment_overrides(kit[0], repetitions=6, warmup_runs=0, n_predict=LONG)
    out, since = tmp_path / "out.jsonl", time.time()
    first = harness(kit, out, "cli")
    try:
        wait_for(lambda: lines_in(out) >= 1, first)
        second = harness(kit, out, "cli", resume=True)
        s_out, s_err = second.communicate(timeout=120)
        assert first.poll() is None, "the first run finished before the second one was refused"
    finally:
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=300)
    assert second.returncode == 2 and "another run" in s_err and first.returncode == 130, (s_err, stderr)
    records = list(read_records(out))
    assert len({r["run_id"] for r in records}) == 1 and len({r["cell_key"] for r in records}) == len(records)
    report("a concurrent writer on the same output", "the second run is refused in one line, exit 2",
           one_error_line(s_err)[0][:200], written=written_in(stdout), readable=len(records),
           orphans=llama_orphans(since, marks), output=stdout + stderr + s_out + s_err)


# --- the table -------------------------------------------------------------------------------------

def test_zz_write_the_fault_table():
    """Runs last (file order): writes the table and checks the three totals."""
    if len(CASES) < 25:
        pytest.skip(f"only {len(CASES)} cases ran in this session (select the whole module for the table)")
    rows = sorted(CASES.values(), key=lambda row: row["case"])
    totals = {name: sum(row[name] for row in rows) for name in ("records_lost", "orphans", "tracebacks")}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table = {"cases": len(rows), "totals": totals, "suite_seconds": round(time.monotonic() - STARTED, 1),
             "host_cpus": os.cpu_count(), "rows": rows}
    RESULTS.write_text(json.dumps(table, indent=2) + "\n")
    assert totals == {"records_lost": 0, "orphans": 0, "tracebacks": 0}, totals
