"""Lifetime of the llama.cpp processes the harness starts: none may outlive it.

Every llama-cli and llama-server starts in its own session (so a Ctrl-C on the terminal reaches
only the harness, and the harness can kill the whole group) and:

* on Linux with a parent-death signal: prctl(PR_SET_PDEATHSIG, SIGKILL), set between fork and exec.
  The kernel sends it when the *thread* that forked the child exits, so children are forked from
  the harness's main thread only (`start` refuses otherwise); the main thread lives as long as
  the harness, and a kill -9 of the harness kills the child with it.
* on macOS (no PR_SET_PDEATHSIG) a watchdog: a small `python -c` process that polls its parent (the
  harness) once a second and kills the child's process group when the harness is gone. A thread
  in the harness would die with it on a kill -9, so the watchdog is a process of its own. It works
  on Linux too: MOEBENCH_CHILD_WATCHDOG=1 uses it instead of the parent-death signal (the fault
  suite checks the macOS mechanism that way).
* on every exit path the harness itself kills the group: the engine's close() (try/finally), an
  atexit hook, and the pid file below for the one case nothing can catch (a kill -9 where neither
  mechanism exists).

A llama-server also leaves a pid file (pid, start time, port, harness pid) next to the run's output
while it lives; the next run reports a server that is still alive after its harness died, with the
`kill` that ends it. Nothing is killed unasked.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import psutil

from moebench.files import write_atomic

PR_SET_PDEATHSIG = 1
PID_FILE_SUFFIX = ".llama-server.pid"
_live: dict[int, subprocess.Popen[Any]] = {}

# The macOS watchdog: argv[1] = harness pid, argv[2] = process group to kill when it is gone.
WATCHDOG = """\
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while os.getppid() == parent:
    try:
        os.killpg(group, 0)
    except OSError:
        sys.exit(0)
    time.sleep(1)
try:
    os.killpg(group, signal.SIGKILL)
except OSError:
    pass
"""


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl


_PRCTL = _libc_prctl()


def _use_watchdog() -> bool:
    return _PRCTL is None or os.environ.get("MOEBENCH_CHILD_WATCHDOG") == "1"


def _child_setup(parent_pid: int, extra: Callable[[], None] | None, pdeathsig: bool) -> Callable[[], None]:
    """Runs in the child between fork and exec: new session, parent-death signal, then `extra`."""
    def setup() -> None:
        os.setsid()
        if pdeathsig and _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the harness died before prctl took effect
                os._exit(1)
        if extra is not None:
            extra()
    return setup


def start(args: list[str], *, preexec: Callable[[], None] | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """Popen `args` as a child that cannot outlive this process (see the module doc)."""
    watchdog = _use_watchdog()
    if not watchdog and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("llama.cpp children are started from the main thread: PR_SET_PDEATHSIG follows "
                           "the thread that forks")
    proc = subprocess.Popen(args, preexec_fn=_child_setup(os.getpid(), preexec, not watchdog), **popen)
    _live[proc.pid] = proc
    if watchdog:
        subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()), str(proc.pid)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    return proc


def kill_group(proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def forget(proc: subprocess.Popen[Any]) -> None:
    """The child was reaped: its pid may be reused, so the exit hook must not signal it."""
    _live.pop(proc.pid, None)


@atexit.register
def kill_all() -> None:
    """Every child still running when the harness exits (an exception, sys.exit) is killed."""
    for proc in list(_live.values()):
        if proc.poll() is None:
            kill_group(proc)
            proc.wait()
        forget(proc)


# --- the server's pid file -------------------------------------------------------------------------

def pid_file_for(output: Path) -> Path:
    return output.with_name(f".{output.name}{PID_FILE_SUFFIX}")


def write_pid_file(path: Path, pid: int, port: int) -> None:
    """Best effort: a pid file that cannot be written (full or read-only disk) only loses the report."""
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        return
    data = json.dumps({"pid": pid, "create_time": started, "port": port, "harness_pid": os.getpid(),
                       "harness_create_time": psutil.Process().create_time()})
    try:
        write_atomic(path, data + "\n")
    except OSError:
        return


def remove_pid_file(path: Path | None) -> None:
    if path is not None:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass


def stale_servers(directory: Path) -> list[str]:
    """One line per llama-server that a dead harness left running (its pid file in `directory`)."""
    lines = []
    for path in sorted(directory.glob(f".*{PID_FILE_SUFFIX}")):
        try:
            entry = json.loads(path.read_text())
            pid, started, harness = int(entry["pid"]), float(entry["create_time"]), int(entry["harness_pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(harness, entry.get("harness_create_time")):
            continue  # a run in progress (this one, or another on the same directory)
        if _alive(pid, started):
            lines.append(f"warning: llama-server pid {pid} (port {entry.get('port')}) left running by an earlier "
                         f"run that did not exit cleanly ({path}); end it with: kill {pid}")
        else:
            remove_pid_file(path)
    return lines


def _alive(pid: int, create_time: float | None = None) -> bool:
    """`pid` runs and, when its start time is known, is the same process (pids are reused)."""
    try:
        proc = psutil.Process(pid)
        same = create_time is None or abs(proc.create_time() - float(create_time)) < 0.01
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
