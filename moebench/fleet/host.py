"""One host of the fleet over SSH (Fabric): connect, sync the kit at a commit, run the kit's commands there
with every output line prefixed by the host's name, fetch files back.

Credentials never pass through the kit: Fabric (paramiko) takes them from the ssh agent, ~/.ssh/config and
the host's `identity_file` path; what is sent, shown and logged is the command line and fleet.yaml's env,
which load_fleet refuses to let carry a secret.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TextIO

from moebench.config import FleetHost

REMOTE_BUNDLE = ".git/moebench-sync.bundle"
REMOTE_SHALLOW = ".git/moebench-sync.shallow"
# Run by the kit's own venv there: where its build manifest is, and what each binary hashes to now.
MANIFEST_SCRIPT = """\
import json, sys
from moebench.pins.build import manifest_path
from moebench.hashing import sha256_file
path = manifest_path(sys.argv[1], sys.argv[2])
manifest = json.loads(path.read_text()) if path.is_file() else None
on_disk = {name: sha256_file(path.parent / entry["path"]) if (path.parent / entry["path"]).is_file() else None
           for name, entry in (manifest or {}).get("binaries", {}).items()}
print(json.dumps({"path": str(path), "manifest": manifest, "on_disk": on_disk}))
"""


class HostFailure(Exception):
    """A host that could not do its part: which step, and why, in words."""

    def __init__(self, step: str, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"{step}: {reason}")


@dataclass(frozen=True)
class Snapshot:
    """What is sent: a git bundle of HEAD (tracked files at this commit, with their history) and, when the
    local clone is shallow, its shallow boundary, without which the host could not take the bundle."""

    commit: str
    bundle: Path
    shallow: Path | None
    dirty: bool


def snapshot(repo: Path, into: Path) -> Snapshot:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD")
    bundle = into / "kit.bundle"
    git("bundle", "create", "-q", str(bundle), "HEAD")
    shallow = None
    if git("rev-parse", "--is-shallow-repository") == "true":
        shallow = Path(repo, git("rev-parse", "--git-path", "shallow"))
    return Snapshot(commit, bundle, shallow, dirty=bool(git("status", "--porcelain", "--untracked-files=no")))


class PrefixedLines:
    """A stream for Fabric's out_stream/err_stream: each complete line goes to `sink` as `[host] line`
    (one lock for all hosts, so lines never interleave mid-line) and to the host's log."""

    def __init__(self, name: str, sink: TextIO, log: TextIO, lock: threading.Lock):
        self.name, self.sink, self.log, self.lock = name, sink, log, lock
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self.line(line)
        return len(text)

    def line(self, text: str) -> None:
        text = text.rstrip("\r").rsplit("\r", 1)[-1]  # a progress bar's last state
        with self.lock:
            print(f"[{self.name}] {text}", file=self.sink, flush=True)
            self.log.write(text + "\n")
            self.log.flush()

    def flush(self) -> None:
        if self._buffer:
            self.line(self._buffer)
            self._buffer = ""


def connection_problem(exc: BaseException, timeout_s: float) -> str:
    """Why a connection failed, in words: unreachable, refused, no answer, authentication refused."""
    from paramiko.ssh_exception import AuthenticationException, NoValidConnectionsError, SSHException

    if isinstance(exc, AuthenticationException):
        return f"authentication refused ({exc})"
    if isinstance(exc, NoValidConnectionsError):
        return "unreachable: " + "; ".join(f"{addr[0]}:{addr[1]} {err.strerror or err}"
                                           for addr, err in exc.errors.items())
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"unreachable: no answer within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return f"unreachable: address not resolved ({exc.strerror or exc})"
    if isinstance(exc, OSError):
        return f"unreachable: {exc.strerror or exc}"
    if isinstance(exc, SSHException):
        return f"SSH failed: {exc}"
    return f"{type(exc).__name__}: {exc}"


def remote_kit(kit_path: str) -> str:
    """The kit's path as the SSH session (which starts in the home directory) reaches it."""
    return kit_path[2:] if kit_path.startswith("~/") else kit_path


class Host:
    """One SSH connection to one fleet host; commands run in its kit with its env."""

    def __init__(self, name: str, spec: FleetHost, sink: TextIO, log: TextIO, lock: threading.Lock):
        self.name, self.spec = name, spec
        self.kit = remote_kit(spec.kit_path)
        self.out = PrefixedLines(name, sink, log, lock)
        self.conn: Any = None

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.out.flush()
        if self.conn is not None:
            self.conn.close()

    def open(self) -> None:
        from fabric import Connection

        keys = {"key_filename": [os.path.expanduser(self.spec.identity_file)]} if self.spec.identity_file else {}
        self.conn = Connection(self.spec.address, user=self.spec.user, port=self.spec.port,
                               connect_timeout=self.spec.connect_timeout_s, connect_kwargs=keys)
        try:
            self.conn.open()
        except Exception as exc:  # noqa: BLE001 - every way a connection fails becomes the host's reason
            raise HostFailure("connect", connection_problem(exc, self.spec.connect_timeout_s)) from None

    def command(self, args: list[str], env: dict[str, str] | None = None, in_kit: bool = True) -> str:
        env = {**self.spec.env, **(env or {})}
        line = shlex.join([*(["env", *(f"{k}={v}" for k, v in env.items())] if env else []), *args])
        return f"cd {shlex.quote(self.kit)} && {line}" if in_kit else line

    def run(self, step: str, args: list[str], env: dict[str, str] | None = None, in_kit: bool = True) -> None:
        """Run with output streamed as `[host] line`; a non-zero exit is a HostFailure of `step`."""
        self.out.line(f"$ {shlex.join(args)}")
        result = self.conn.run(self.command(args, env, in_kit), warn=True, pty=False, in_stream=False,
                               out_stream=self.out, err_stream=self.out)
        self.out.flush()
        if result.exited != 0:
            raise HostFailure(step, f"`{shlex.join(args)}` exited with {result.exited}")

    def capture(self, args: list[str], env: dict[str, str] | None = None, in_kit: bool = True) -> tuple[int, str]:
        """(exit status, stdout) of a command whose output is data, not progress."""
        result = self.conn.run(self.command(args, env, in_kit), warn=True, hide=True, pty=False, in_stream=False)
        return result.exited, result.stdout

    def sync(self, snap: Snapshot) -> None:
        """The kit there at `snap.commit`: fetched from the bundle, checked out detached."""
        self.run("sync", ["mkdir", "-p", self.kit], in_kit=False)
        self.run("sync", ["git", "init", "-q"])
        self.conn.put(str(snap.bundle), remote=posixpath.join(self.kit, REMOTE_BUNDLE))
        if snap.shallow is not None:
            self.conn.put(str(snap.shallow), remote=posixpath.join(self.kit, REMOTE_SHALLOW))
            self.run("sync", ["sh", "-c", f"cat {REMOTE_SHALLOW} >> .git/shallow && rm {REMOTE_SHALLOW}"])
        self.run("sync", ["git", "fetch", "-q", REMOTE_BUNDLE, "HEAD"])
        self.run("sync", ["git", "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", snap.commit])
        self.run("sync", ["rm", "-f", REMOTE_BUNDLE])

    def fetch(self, remote_dir: str, pattern: str, local_dir: Path) -> list[Path]:
        """Copy the files of the kit's `remote_dir` matching `pattern` into `local_dir`."""
        sftp = self.conn.sftp()
        where = posixpath.join(self.kit, remote_dir)
        try:
            names = sorted(name for name in sftp.listdir(where) if fnmatch(name, pattern))
        except FileNotFoundError:
            return []
        local_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            self.conn.get(posixpath.join(where, name), local=str(local_dir / name))
        return [local_dir / name for name in names]

    def manifest(self, device: str, pin: str, image: str | None) -> dict[str, Any]:
        """{path, manifest (None when there is no build), on_disk: binary -> SHA-256 there now}."""
        env = {"MOEBENCH_IMAGE": image} if image else None  # the build made in the image lives apart
        code, out = self.capture([".venv/bin/python", "-c", MANIFEST_SCRIPT, device, pin], env)
        if code != 0:
            raise HostFailure("manifest", f"the kit there cannot read its build manifest (exit {code}; "
                                          "run invoke fleet.reproduce first)")
        return json.loads(out.strip().splitlines()[-1])
