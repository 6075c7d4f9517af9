"""A real OpenSSH server on 127.0.0.1 for the fleet tests: Debian's /usr/sbin/sshd, run as the current user
on a free port with a throwaway host key, and a throwaway client key as the only authorized key."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


class SshdUnavailable(Exception):
    """Why no sshd could be started here."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sshd:
    port: int
    client_key: Path
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "moebench-test", "-f", str(path)],
                   check=True, capture_output=True)


def start_sshd(root: Path, timeout_s: float = 10) -> Sshd:
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        raise SshdUnavailable(f"{SSHD} or ssh-keygen not installed (apt-get install openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    _keygen(root / "host_key")
    _keygen(root / "client_key")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "StrictModes no", "PubkeyAuthentication yes",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "UsePAM no", "Subsystem sftp internal-sftp", "LogLevel VERBOSE", "",
    ]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = root / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-p", str(port)], stdout=out, stderr=out)
    server = Sshd(port, root / "client_key", process, log)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SshdUnavailable(f"sshd exited with {process.returncode}: {log.read_text()[-500:].strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise SshdUnavailable(f"sshd did not listen on 127.0.0.1:{port} within {timeout_s} s: {log.read_text()[-500:]}")
