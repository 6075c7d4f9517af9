"""SHA-256 of files and a git-compatible tree hash of directories.

Files are read with hashlib in large buffers (hashlib releases the GIL, so a thread pool hashes
several files at once); this is several times faster than spawning coreutils sha256sum. The tree
hash is git's own tree object id, so a source tree extracted from any channel (git, a GitHub
archive, a PyPI sdist) is proven identical to what the lock names, and for a git checkout the value
can be cross-checked with git's own objects.

A tree hash covers files and symlinks only. A submodule's gitlink (mode 160000) names a commit of
another repository, whose files no checkout, GitHub archive or sdist carries; the kit's tree hash
of a commit with gitlinks is therefore git's tree id of that commit *with the gitlinks removed*, the
same value whatever the channel. The lock lists each pin's gitlinks (`llama_cpp.<pin>.gitlinks`),
which are left out of the hashed paths, so even a checkout whose submodules were initialised hashes
the same. `tree_entries` and `tree_hash_of_entries` give the same value from a flat listing, from
which the paths that make two trees differ can be named.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

CHUNK_BYTES = 8 * 1024 * 1024
HASH_WORKERS = max(2, min(8, os.cpu_count() or 2))


def token_ids_sha256(ids: Iterable[int]) -> str:
    """A token sequence's fingerprint: SHA-256 of its ids in decimal, comma-separated, no spaces
    (`128000,9906,1917`), which anyone can recompute from a tokenizer's output in any language."""
    return hashlib.sha256(",".join(str(int(i)) for i in ids).encode("ascii")).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(CHUNK_BYTES)
        view = memoryview(buffer)
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def sha256_files(paths: Iterable[Path]) -> dict[Path, str]:
    """Hash many files in parallel; returns path -> hex digest."""
    paths = list(paths)
    with ThreadPoolExecutor(max_workers=HASH_WORKERS) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths)))


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_object_id(kind: str, payload: bytes) -> bytes:
    return hashlib.sha1(f"{kind} {len(payload)}\0".encode() + payload).digest()


def git_tree_hash(root: Path, exclude: Iterable[str] = ()) -> str:
    """git's tree object id for the files under `root` (ignoring `.git` and the `exclude` paths)."""
    return tree_hash_of_entries(tree_entries(root, exclude))


def tree_entries(root: Path, exclude: Iterable[str] = ()) -> dict[str, tuple[str, str]]:
    """{path relative to `root`: (git mode, blob id)} of every file and symlink the tree hash covers."""
    root = root.resolve()
    excluded = frozenset(root / rel for rel in exclude)
    entries: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d != ".git" and here / d not in excluded
                             and not (here / d).is_symlink())
        links = [d for d in os.listdir(here) if (here / d).is_symlink() and (here / d).is_dir()]
        for name in sorted({*filenames, *links}):
            path = here / name
            if name == ".git" or path in excluded:
                continue
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entry = ("120000", _git_object_id("blob", os.readlink(path).encode()).hex())
            else:
                entry = ("100755" if info.st_mode & stat.S_IXUSR else "100644",
                         _git_object_id("blob", path.read_bytes()).hex())
            entries[path.relative_to(root).as_posix()] = entry
    return entries


def tree_hash_of_entries(entries: dict[str, tuple[str, str]]) -> str:
    """git's root tree id of a flat listing (`tree_entries`, or `git ls-tree -r` without gitlinks)."""
    root: dict = {}
    for path, entry in entries.items():
        node = root
        *parents, name = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = entry

    def tree_id(node: dict) -> bytes:
        rows = []
        for name, child in node.items():
            if isinstance(child, dict):
                rows.append((name.encode() + b"/", b"40000 " + name.encode() + b"\0" + tree_id(child)))
            else:
                mode, oid = child
                rows.append((name.encode(), mode.encode() + b" " + name.encode() + b"\0" + bytes.fromhex(oid)))
        return _git_object_id("tree", b"".join(body for _, body in sorted(rows)))

    return tree_id(root).hex()


def differing_paths(measured: dict[str, tuple[str, str]], reference: dict[str, tuple[str, str]],
                    limit: int = 5) -> list[str]:
    """The first `limit` paths where two listings differ, each with what differs."""
    lines = []
    for path in sorted(set(measured) | set(reference)):
        if path not in reference:
            lines.append(f"{path} (not in the pinned tree)")
        elif path not in measured:
            lines.append(f"{path} (missing)")
        elif measured[path][0] != reference[path][0]:
            lines.append(f"{path} (mode {measured[path][0]}, pinned {reference[path][0]})")
        elif measured[path][1] != reference[path][1]:
            lines.append(f"{path} (other content)")
        if len(lines) == limit:
            break
    return lines
