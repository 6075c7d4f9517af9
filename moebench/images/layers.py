"""Turn a directory tree into an image layer whose bytes depend only on the tree's content.

A layer's digest is the SHA-256 of its uncompressed tar (Docker's `diff_id`), so two builds name
the same layer only when the tar streams are identical. `tarfile.add` would put the build's
clock and the directory's listing order into that stream; here members are written in sorted
order, every mtime is clamped to SOURCE_DATE_EPOCH (as `tar --clamp-mtime` does), owners are
numeric with no user or group names, and only integral mtimes enter the headers (a float
mtime would add a PAX record). Runtime files the engine provides itself (/dev, /proc, /sys,
/run, /tmp contents, /etc/hostname, /etc/hosts, /etc/resolv.conf) are left out: they would
otherwise carry the build host's name and resolver into the image.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterator

# Directories kept (as empty directories) but whose contents never enter a layer.
EMPTIED_DIRS = ("dev", "proc", "sys", "run", "tmp")
# Files the container engine bind-mounts at run time; the build host's copies would leak into the layer.
RUNTIME_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it to `sink`."""

    def __init__(self, sink: BinaryIO):
        self.sink = sink
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.sink.write(data)

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256.hexdigest()}"


def tree_members(root: Path, only: str | None = None) -> Iterator[str]:
    """Relative POSIX paths under `root` in sorted, depth-first order (parents before children).

    With `only` (a relative path such as "opt/moebench"), just that subtree and its parent
    directories: the members of a layer that adds one directory to an earlier layer."""
    if only is not None:
        parts = Path(only).parts
        for depth in range(1, len(parts)):
            yield "/".join(parts[:depth])
        yield from _walk(root, "/".join(parts))
        return
    for entry in sorted(os.listdir(root)):
        yield from _walk(root, entry)


def _walk(root: Path, rel: str) -> Iterator[str]:
    if rel in RUNTIME_FILES:
        return
    yield rel
    path = root / rel
    if path.is_dir() and not path.is_symlink() and rel not in EMPTIED_DIRS:
        for entry in sorted(os.listdir(path)):
            yield from _walk(root, f"{rel}/{entry}")


def write_layer(root: Path, sink: BinaryIO, source_date_epoch: int, only: str | None = None) -> tuple[str, int]:
    """Write the tar of `root` (or of its subtree `only`) to `sink`; returns (diff_id, size in bytes)."""
    writer = HashingWriter(sink)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[arg-type]
        for rel in tree_members(root, only):
            path = root / rel
            info = tar.gettarinfo(str(path), arcname=rel)
            info.mtime = min(int(info.mtime), source_date_epoch)
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return writer.digest, writer.size
