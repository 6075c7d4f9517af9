"""How a cell reaches llama.cpp: one llama-cli process per cell, or one request to a persistent
llama-server. Both take argument lists (never shell strings), are started through children.py (own
session, so a Ctrl-C on the terminal reaches only the harness; no child outlives the harness), and
turn every way a process can end into an outcome. llama-server gets a random API key per run.

What each runner measures (timings themselves always come from llama.cpp's own counters):
- cli: load_ms, prefill and generation from the perf footer; the harness's first stdout byte comes
  after process start, model load and llama-cli's warm-up run, so it is *not* a time to first
  token: it is kept as details.first_stdout_byte_ms and ttft_ms is null.
- server: ttft_ms = first streamed token received - request sent (HTTP, tokenization, prefill and
  the first sampling step); the model loads once per server start (details.server_start_ms).

The study's rates (prefill_ms, gen_ms) are llama.cpp's own prompt-only and decode-only counters,
which llama-cli prints; llama-server has none, so its records carry its slot timers as the
end-to-end e2e_prefill_ms and e2e_gen_ms and leave the study's fields null with the reason.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from moebench.run import children, parse, parse_router
from moebench.hashing import token_ids_sha256
from moebench.run.plan import Cell, Knobs

CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}
# The sampler chain a cell runs: "default" is llama.cpp's own chain (penalties, dry, top_k 40,
# typical, top_p, min_p, xtc, temperature), which at temperature 0 keeps the most likely token and
# is what llama.cpp's tools run unless told otherwise; "greedy" (top_k with k=1) decodes the same
# tokens with less work per token.
# Measured against llama-bench in one interleaved run (benchmarks/results/harness_vs_llama_bench*.json),
# the two differ by less than the run-to-run noise on the CPU and on an H200, so the harness keeps
# llama.cpp's chain and "greedy" exists to measure that.
SERVER_START_TIMEOUT_S = 600.0
# llama-server's timings are its slot's wall clock between sampled tokens (decode, sampling,
# detokenizing, streaming): what its client sees, kept as e2e_*; llama.cpp's decode-only and
# prompt-only counters, the study's metric, are printed by llama-cli and by no server endpoint.
SERVER_HAS_NO_DECODE_COUNTER = ("server runner: llama-server exposes no decode-only or prompt-only counter (its "
                                "timings are wall time with sampling and serving: e2e_prefill_ms, e2e_gen_ms); the "
                                "study's rates come from llama-cli's perf footer (runner cli)")
# llama-cli lists the prompt's token ids (--verbose-prompt) and logs each decode's ids (-lv 1): the
# record's token fingerprints (parse.parse_cli_tokens). Both go to stderr, outside the timed decodes.
TOKEN_LOG_ARGS = ("--verbose-prompt", "-lv", "1")
TOKEN_FIELDS = ("prompt_tokens_sha256", "gen_tokens_sha256")
CLI_HAS_NO_E2E_TIMER = ("cli runner: llama-cli times only llama.cpp's decode and prompt counters (gen_ms, "
                        "prefill_ms), no wall clock per token")


@dataclass
class Outcome:
    """One cell's result as the engine saw it; run/experiment.py turns it into a record."""

    measured: dict[str, Any] = field(default_factory=dict)
    null_reasons: dict[str, str] = field(default_factory=dict)
    failure: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


# --- how a process ended ------------------------------------------------------------------------

def memory_cgroup_counter(pid: int | str = "self") -> Path | None:
    """The file holding the oom_kill counter of the memory cgroup `pid` runs in (cgroup v2
    memory.events, v1 memory.oom_control), or None when there is none to read.

    Read per process, not for the harness: v1 counters are not hierarchical, so a llama.cpp moved
    into its own memory cgroup (a per-cell limit) is OOM-killed without the harness's counter moving."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            candidates = [Path(root) / path.lstrip("/") / "memory.events"
                          for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")]
        elif "memory" in controllers.split(","):
            candidates = [Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control"]
        else:
            continue
        for candidate in candidates:
            if candidate.is_file() and read_oom_kill(candidate) is not None:
                return candidate
    return None


def read_oom_kill(counter: Path | None) -> int | None:
    if counter is None:
        return None
    try:
        return parse_oom_kill_counter(counter.read_text())
    except OSError:
        return None


def oom_kill_count(pid: int | str = "self") -> int | None:
    """The kernel's oom_kill counter for the memory cgroup of `pid` (default: this process)."""
    return read_oom_kill(memory_cgroup_counter(pid))


def parse_oom_kill_counter(text: str) -> int | None:
    """`oom_kill N` from cgroup v2 memory.events or cgroup v1 memory.oom_control."""
    match = re.search(r"^oom_kill (\d+)$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def kernel_log_names_oom(pid: int) -> bool:
    """True when the kernel log (dmesg, where readable) says it OOM-killed `pid`."""
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and dmesg_names_oom(done.stdout, pid)


def dmesg_names_oom(text: str, pid: int) -> bool:
    return bool(re.search(rf"(Out of memory|oom-kill|Memory cgroup out of memory).*\b{pid}\b|Killed process {pid}\b", text))


def classify_exit(returncode: int, stderr: str, *, timed_out: bool, oom_before: int | None,
                  oom_after: int | None, oom_in_kernel_log: bool) -> dict[str, Any] | None:
    """None for a clean exit, else the failure object of the record (reason, exit code, signal)."""
    if returncode == 0 and not timed_out:
        return None
    sig = -returncode if returncode < 0 else None
    code = returncode if returncode >= 0 else None
    if timed_out:
        reason, message = "timeout", "the cell ran past generation.timeout_s and was killed"
    elif sig == signal.SIGKILL:
        oom = oom_in_kernel_log or (oom_before is not None and oom_after is not None and oom_after > oom_before)
        reason = "oom_killed" if oom else "killed"
        message = ("the kernel's OOM killer ended the process (cgroup oom_kill counter or kernel log)" if oom
                   else "killed by SIGKILL; the kernel did not report an OOM kill")
    elif sig is not None and sig in CRASH_SIGNALS:
        reason, message = "crash", f"died on {signal.Signals(sig).name}"
    elif sig is not None:
        reason, message = "killed", f"ended by {signal.Signals(sig).name}"
    elif parse.is_load_failure(stderr):
        reason, message = "load_failed", "llama.cpp could not load the model or create its context"
    else:
        reason, message = "nonzero_exit", f"exited with status {code}"
    return {"reason": reason, "message": message, "exit_code": code, "signal": sig,
            "stderr_tail": parse.tail(stderr)}


def failure(reason: str, message: str, stderr: str = "", exit_code: int | None = None,
            sig: int | None = None) -> dict[str, Any]:
    return {"reason": reason, "message": message, "exit_code": exit_code, "signal": sig,
            "stderr_tail": parse.tail(stderr)}


_kill_group = children.kill_group


# --- engines ------------------------------------------------------------------------------------

class Engine:
    """Runs cells; `abort()` may be called from a signal handler to stop the cell in flight."""

    mode = "engine"

    def __init__(self, binary: Path, workdir: Path, timeout_s: float, env: dict[str, str] | None = None,
                 sampler_chain: str = "default"):
        self.binary = binary
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.sampler_chain = sampler_chain  # "default" or "greedy", see the comment at the top
        # the device's `env` (devices.yaml) on top of ours, e.g. LLAMA_ROUTER_OVERHEAD=1 on *_patched
        self.env = {**os.environ, **env} if env else None
        self.aborted = False
        self._current: subprocess.Popen[Any] | None = None
        self.pid_file: Path | None = None  # where a persistent server announces itself (children.py)

    def abort(self) -> None:
        self.aborted = True
        if self._current is not None:
            _kill_group(self._current)

    def run_cell(self, cell: Cell, model: Path, prompt: str, monitors: "MonitorHooks") -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class MonitorHooks:
    start: Callable[[int | None], None]
    stop: Callable[[], None]


def greedy(knobs: Knobs, sampler_chain: str) -> bool:
    return knobs.temperature == 0 and sampler_chain == "greedy"


def cli_args(binary: Path, model: Path, prompt_file: Path, knobs: Knobs, sampler_chain: str = "default") -> list[str]:
    sampling = ["--samplers", "top_k", "--top-k", "1"] if greedy(knobs, sampler_chain) else []
    args = [str(binary), "-m", str(model), "-f", str(prompt_file), "--no-display-prompt", "--simple-io",
            "-n", str(knobs.n_predict), "--temp", str(knobs.temperature), *sampling, "--seed", str(knobs.seed),
            "-c", str(knobs.ctx_size), "-b", str(knobs.batch_size), "-ub", str(knobs.ubatch_size),
            "-t", str(knobs.threads), "-ngl", str(knobs.n_gpu_layers), *TOKEN_LOG_ARGS]
    return args + (["--ignore-eos"] if knobs.ignore_eos else [])


class CliEngine(Engine):
    """One llama-cli process per cell."""

    mode = "cli"
    # Test hook: cell -> preexec_fn (e.g. an address-space cap) or None. Never set by the kit itself.
    preexec_for_cell: Callable[[Cell], Callable[[], None] | None] | None = None
    # Arguments after the kit's own (benchmarks/bench_harness_vs_llama_bench.py switches llama-cli's
    # warm-up off with it); the kit's runs leave it empty.
    extra_args: tuple[str, ...] = ()

    def run_cell(self, cell: Cell, model: Path, prompt: str, monitors: MonitorHooks) -> Outcome:
        prompt_file = self.workdir / f"prompt-{cell.prompt_id}.txt"
        prompt_file.write_text(prompt, encoding="utf-8")
        args = cli_args(self.binary, model, prompt_file, cell.knobs, self.sampler_chain) + list(self.extra_args)
        preexec = type(self).preexec_for_cell(cell) if type(self).preexec_for_cell else None
        with tempfile.TemporaryFile(dir=self.workdir) as err:
            started = time.monotonic()
            proc = children.start(args, preexec=preexec, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=err, env=self.env)
            self._current = proc
            oom_counter = memory_cgroup_counter(proc.pid)
            oom_before = read_oom_kill(oom_counter)
            monitors.start(proc.pid)
            first_byte: list[float] = []
            stdout_chunks: list[bytes] = []
            reader = threading.Thread(target=_read_stdout, args=(proc, started, first_byte, stdout_chunks), daemon=True)
            reader.start()
            timed_out = threading.Event()
            timer = threading.Timer(self.timeout_s, lambda: (timed_out.set(), _kill_group(proc)))
            timer.start()
            try:
                _, status, rusage = os.wait4(proc.pid, 0)
            finally:
                timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
            children.forget(proc)
            wall_ms = (time.monotonic() - started) * 1000.0
            monitors.stop()
            self._current = None
            reader.join(timeout=5)
            err.seek(0)
            stderr = err.read().decode("utf-8", errors="replace")
        stdout = b"".join(stdout_chunks)
        outcome = Outcome(details={"rusage_maxrss_kib": rusage.ru_maxrss, "argv": args,
                                   "first_stdout_byte_ms": round(first_byte[0], 3) if first_byte else None,
                                   "stdout_bytes": len(stdout), "stdout_utf8_valid": _utf8_valid(stdout)})
        if self.aborted:
            outcome.interrupted = True
            return outcome
        outcome.failure = classify_exit(proc.returncode, stderr, timed_out=timed_out.is_set(), oom_before=oom_before,
                                        oom_after=read_oom_kill(oom_counter) if oom_before is not None else None,
                                        oom_in_kernel_log=proc.returncode == -signal.SIGKILL and kernel_log_names_oom(proc.pid))
        if outcome.failure is None:
            try:
                perf = parse.parse_cli_perf(stderr)
            except parse.ParseError as exc:
                outcome.failure = failure("parse_error", str(exc), stderr, proc.returncode)
                return outcome
            outcome.measured = {"prompt_tokens": perf.prompt_tokens, "prefill_ms": perf.prompt_ms,
                                "gen_tokens": perf.gen_tokens, "gen_ms": perf.gen_ms, "load_ms": perf.load_ms,
                                "e2e_prefill_ms": None, "e2e_gen_ms": None,
                                "wall_ms": round(wall_ms, 3), "ttft_ms": None}
            outcome.null_reasons.update({name: CLI_HAS_NO_E2E_TIMER for name in ("e2e_prefill_ms", "e2e_gen_ms")})
            try:
                ids = parse.parse_cli_tokens(stderr, perf.gen_tokens)
            except parse.ParseError as exc:
                outcome.null_reasons.update({name: f"llama-cli's token log: {exc}" for name in TOKEN_FIELDS})
            else:
                outcome.measured.update(fingerprints(ids.prompt_ids, perf.prompt_tokens, ids.gen_ids, perf.gen_tokens,
                                                     outcome.null_reasons))
            outcome.null_reasons["ttft_ms"] = (
                "cli runner: the first stdout byte follows process start, model load and llama-cli's warm-up, "
                "so it is not a time to first token (kept as monitors.engine.first_stdout_byte_ms)")
            try:
                router = parse_router.parse_router_overhead(stderr)
            except ValueError as exc:
                outcome.failure = failure("parse_error", str(exc), stderr, proc.returncode)
                return outcome
            if router is not None:  # a *_patched build run with LLAMA_ROUTER_OVERHEAD=1
                outcome.details["router_overhead"] = router
                outcome.measured["router_routing_ms"] = router["routing_ms"]
                outcome.measured["router_expert_ffn_ms"] = router["expert_ffn_ms"]
        return outcome


def fingerprints(prompt_ids: Any, prompt_tokens: int, gen_ids: Any, gen_tokens: int,
                 null_reasons: dict[str, str]) -> dict[str, str | None]:
    """The record's token fingerprints, each only when its ids are as many as the counters say
    (else null, with the reason put in `null_reasons`)."""
    out: dict[str, str | None] = {}
    for name, ids, count in (("prompt_tokens_sha256", prompt_ids, prompt_tokens),
                             ("gen_tokens_sha256", gen_ids, gen_tokens)):
        if ids is None or len(ids) != count:
            out[name] = None
            null_reasons[name] = (f"llama.cpp gave {'no' if ids is None else len(ids)} token ids where its counter "
                                  f"says {count}")
        else:
            out[name] = token_ids_sha256(ids)
    return out


def _utf8_valid(data: bytes) -> bool:
    """Tokens are bytes: a random-weight model readily emits sequences that are not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_stdout(proc: subprocess.Popen[bytes], started: float, first: list[float], chunks: list[bytes]) -> None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        if not first:
            first.append((time.monotonic() - started) * 1000.0)
        chunks.append(chunk)
    proc.stdout.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(binary: Path, model: Path, knobs: Knobs, port: int, api_key_file: Path | None = None) -> list[str]:
    """The key is passed as a file (mode 0600 in the run's private work directory): an --api-key on
    the command line would be readable by every local user in `ps`."""
    key = ["--api-key-file", str(api_key_file)] if api_key_file is not None else []
    return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", "1",
            "-c", str(knobs.ctx_size), "-b", str(knobs.batch_size), "-ub", str(knobs.ubatch_size),
            "-t", str(knobs.threads), "-ngl", str(knobs.n_gpu_layers), "--seed", str(knobs.seed), *key]


def new_api_key(workdir: Path) -> tuple[str, Path]:
    """A random key for this run's llama-server, in a file only this user can read; never recorded."""
    key = secrets.token_urlsafe(32)
    path = workdir / "api-key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key, path


class ServerEngine(Engine):
    """A persistent llama-server per (model, restart knobs); each cell is one streamed POST /completion."""

    mode = "server"
    # Streamed (the kit's way: it times the first token) or one JSON answer; the ablation measures both.
    stream = True

    def __init__(self, binary: Path, workdir: Path, timeout_s: float, env: dict[str, str] | None = None,
                 sampler_chain: str = "default"):
        super().__init__(binary, workdir, timeout_s, env, sampler_chain)
        self._key: tuple[Any, ...] | None = None
        self._oom_counter: Path | None = None
        self._port = 0
        self._log: Path | None = None
        self._start_ms: float | None = None
        self._start_failure: dict[str, Any] | None = None
        self._api_key, self._api_key_file = new_api_key(workdir)

    def _scrub(self, text: str) -> str:
        """llama-server logs the key's last characters; logs reach records as stderr tails."""
        return text.replace(self._api_key, "<api key>").replace(f"****{self._api_key[-4:]}", "****")

    def _stop_server(self) -> None:
        if self._current is not None:
            _kill_group(self._current, signal.SIGTERM)
            _kill_group(self._current, signal.SIGCONT)  # a stopped (hung) server must run to see the TERM
            try:
                self._current.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(self._current)
                self._current.wait()
            children.forget(self._current)
            children.remove_pid_file(self.pid_file)
        self._current, self._key = None, None

    def _ensure_server(self, model: Path, knobs: Knobs) -> None:
        key = (str(model), knobs.restart_key())
        if self._key == key and self._current is not None and self._current.poll() is None:
            return
        self._stop_server()
        self._port = free_port()
        self._log = self.workdir / f"server-{len(list(self.workdir.glob('server-*.log')))}.log"
        args = server_args(self.binary, model, knobs, self._port, self._api_key_file)
        started = time.monotonic()
        with open(self._log, "wb") as log:
            proc = children.start(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        if self.pid_file is not None:
            children.write_pid_file(self.pid_file, proc.pid, self._port)
        self._current, self._key, self._start_failure = proc, key, None
        self._oom_counter = memory_cgroup_counter(proc.pid)
        while time.monotonic() - started < SERVER_START_TIMEOUT_S and not self.aborted:
            if proc.poll() is not None:
                children.forget(proc)
                children.remove_pid_file(self.pid_file)
                self._start_failure = classify_exit(proc.returncode, self._scrub(self._log.read_text(errors="replace")),
                                                    timed_out=False, oom_before=None, oom_after=None,
                                                    oom_in_kernel_log=False)
                self._current, self._key = None, None
                return
            if self._health_ok():
                self._start_ms = (time.monotonic() - started) * 1000.0
                return
            time.sleep(0.05)
        self._stop_server()
        self._start_failure = failure("load_failed" if not self.aborted else "interrupted",
                                      f"llama-server did not become healthy within {SERVER_START_TIMEOUT_S} s")

    def _health_ok(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def run_cell(self, cell: Cell, model: Path, prompt: str, monitors: MonitorHooks) -> Outcome:
        self._ensure_server(model, cell.knobs)
        if self.aborted:
            return Outcome(interrupted=True)
        if self._start_failure is not None:
            return Outcome(failure=dict(self._start_failure, message="llama-server start: " + self._start_failure["message"]))
        proc = self._current
        assert proc is not None
        sampling = {"samplers": ["top_k"], "top_k": 1} if greedy(cell.knobs, self.sampler_chain) else {}
        body = json.dumps({"prompt": prompt, "n_predict": cell.knobs.n_predict, "seed": cell.knobs.seed,
                           "temperature": cell.knobs.temperature, **sampling, "ignore_eos": cell.knobs.ignore_eos,
                           "cache_prompt": False, "stream": self.stream, "return_tokens": True}).encode()
        oom_before = read_oom_kill(self._oom_counter)
        monitors.start(proc.pid)
        sent = time.monotonic()
        first_token_ms, final, error, streamed_ids = None, None, None, []
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self.timeout_s)
        try:
            conn.request("POST", "/completion", body=body, headers={"Content-Type": "application/json",
                                                                    "Authorization": f"Bearer {self._api_key}"})
            response = conn.getresponse()
            if response.status != 200:
                error = f"HTTP {response.status}: {response.read()[:500]!r}"
            elif not self.stream:
                final = json.loads(response.read())
            else:
                for raw in response:
                    chunk = parse.parse_sse_line(raw.decode("utf-8", errors="replace"))
                    if chunk is None:
                        continue
                    if chunk.get("tokens"):
                        streamed_ids += chunk["tokens"]
                        if first_token_ms is None:
                            first_token_ms = (time.monotonic() - sent) * 1000.0
                    if chunk.get("stop"):
                        final = chunk
                        break
                    if time.monotonic() - sent > self.timeout_s:
                        error = "timeout"
                        break
        except (OSError, http.client.HTTPException, parse.ParseError, json.JSONDecodeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        wall_ms = (time.monotonic() - sent) * 1000.0
        monitors.stop()
        outcome = Outcome(details={"server_start_ms": round(self._start_ms, 3) if self._start_ms else None,
                                   "server_argv": server_args(self.binary, model, cell.knobs, self._port,
                                                              self._api_key_file)})
        if self.aborted:
            outcome.interrupted = True
            return outcome
        if final is None:
            outcome.failure = self._request_failure(proc, error or "stream ended without a final chunk", oom_before)
            return outcome
        try:
            timings = parse.parse_server_timings(final)
        except parse.ParseError as exc:
            outcome.failure = failure("parse_error", str(exc))
            return outcome
        outcome.measured = {"prompt_tokens": timings.prompt_tokens, "prefill_ms": None,
                            "gen_tokens": timings.gen_tokens, "gen_ms": None, "load_ms": None,
                            "e2e_prefill_ms": timings.prompt_ms, "e2e_gen_ms": timings.gen_ms,
                            "wall_ms": round(wall_ms, 3),
                            "ttft_ms": round(first_token_ms, 3) if first_token_ms is not None else None}
        outcome.null_reasons.update({name: SERVER_HAS_NO_DECODE_COUNTER for name in ("prefill_ms", "gen_ms")})
        outcome.details["predicted_n"] = timings.predicted_n
        outcome.measured.update(self._fingerprints(model, cell, prompt, final, streamed_ids, timings,
                                                   outcome.null_reasons))
        if final.get("truncated"):
            # llama-server cuts a prompt that does not fit the context and carries on; llama-cli
            # refuses it. Either way the cell did not measure what it names.
            outcome.failure = failure("nonzero_exit", f"llama-server truncated the request: the prompt "
                                      f"({timings.prompt_tokens} tokens kept) and n_predict do not fit the context "
                                      f"of {cell.knobs.ctx_size} tokens")
            outcome.measured = {}
            return outcome
        outcome.null_reasons["load_ms"] = ("server runner: the model loads once per server start, not per cell "
                                           "(see monitors.engine.server_start_ms)")
        if first_token_ms is None:
            outcome.null_reasons["ttft_ms"] = ("llama-server streamed no token before its final chunk" if self.stream
                                               else "the request was not streamed: no first token to time")
        return outcome

    def _fingerprints(self, model: Path, cell: Cell, prompt: str, final: dict[str, Any], streamed_ids: list[int],
                      timings: parse.ServerTimings, null_reasons: dict[str, str]) -> dict[str, str | None]:
        """Prompt ids from /tokenize (the tokenizer /completion ran the prompt through), generated ids
        from the answer: streamed chunks carry theirs; b4404's server holds back the chunk (and its id)
        of a token whose text ends mid UTF-8 character, which the count check then catches."""
        generated = final.get("tokens") if not self.stream else streamed_ids
        prompt_ids: list[int] | None = None
        try:
            prompt_ids = self.tokenize(model, cell.knobs, prompt, add_special=True)
        except (OSError, RuntimeError, http.client.HTTPException, ValueError, KeyError) as exc:
            tokenize_error = f"llama-server's /tokenize failed: {exc}"
        sent = len(generated or [])
        out = fingerprints(prompt_ids, timings.prompt_tokens,
                           generated[:timings.gen_tokens] if generated and sent == timings.predicted_n else None,
                           timings.gen_tokens, null_reasons)
        if sent != timings.predicted_n:
            null_reasons["gen_tokens_sha256"] = (f"llama-server sent {sent} of its {timings.predicted_n} generated "
                                                 "token ids (a streamed token whose text ends mid UTF-8 character "
                                                 "comes without its chunk)")
        if prompt_ids is None:
            null_reasons["prompt_tokens_sha256"] = tokenize_error
        return out

    def tokenize(self, model: Path, knobs: Knobs, text: str, add_special: bool) -> list[int]:
        """The token ids llama-server's /tokenize gives `text`: the tokenizer a /completion prompt
        goes through (special-token text parsed), `add_special` adding BOS where the model wants it."""
        self._ensure_server(model, knobs)
        if self._start_failure is not None:
            raise RuntimeError(f"llama-server did not start for {model}: {self._start_failure['message']}")
        body = json.dumps({"content": text, "add_special": add_special}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=self.timeout_s)
        try:
            conn.request("POST", "/tokenize", body=body, headers={"Content-Type": "application/json",
                                                                  "Authorization": f"Bearer {self._api_key}"})
            response = conn.getresponse()
            payload = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"llama-server /tokenize answered HTTP {response.status}: {payload[:300]!r}")
        return [int(t) for t in json.loads(payload)["tokens"]]

    def _request_failure(self, proc: subprocess.Popen[Any], error: str, oom_before: int | None) -> dict[str, Any]:
        log = self._scrub(self._log.read_text(errors="replace")) if self._log else ""
        timed_out = error == "timeout" or "timed out" in error
        if timed_out:
            self._stop_server()
            return failure("timeout", "the request ran past generation.timeout_s; llama-server was stopped", log)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return failure("nonzero_exit", f"llama-server request failed while the server lives: {error}", log)
        children.forget(proc)
        children.remove_pid_file(self.pid_file)
        self._current, self._key = None, None
        result = classify_exit(proc.returncode, log, timed_out=False, oom_before=oom_before,
                               oom_after=read_oom_kill(self._oom_counter) if oom_before is not None else None,
                               oom_in_kernel_log=proc.returncode == -signal.SIGKILL and kernel_log_names_oom(proc.pid))
        return result or failure("crash", f"llama-server exited 0 during a request: {error}", log)

    def close(self) -> None:
        self._stop_server()


ENGINES: dict[str, type[Engine]] = {"cli": CliEngine, "server": ServerEngine}
BINARY_FOR_MODE = {"cli": "llama-cli", "server": "llama-server"}
