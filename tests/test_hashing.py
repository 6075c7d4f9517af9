"""hashing.git_tree_hash must equal git's own tree id; sha256_files must equal hashlib."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from moebench.hashing import (differing_paths, git_tree_hash, sha256_file, sha256_files, tree_entries,
                              tree_hash_of_entries)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CEILING_DIRECTORIES": str(repo.parent)}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_tree(root: Path) -> None:
    """Every case git's tree format distinguishes: nesting, modes, a symlink, '/'-sorted names."""
    (root / "a" / "deep").mkdir(parents=True)
    (root / "a" / "deep" / "f.c").write_text("int main(void) { return 0; }\n")
    (root / "a-b").write_text("sorts before 'a/' as a file, after 'a' as a directory name\n")
    (root / "a.txt").write_text("'.' sorts before '/'\n")
    (root / "a0").write_text("'0' sorts after '/'\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a/deep/f.c")
    (root / "empty.bin").write_bytes(b"")
    (root / "bin.dat").write_bytes(bytes(range(256)) * 7)


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    make_tree(root)
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "tree")
    return root


def test_tree_hash_equals_git(repo):
    assert git_tree_hash(repo) == git(repo, "rev-parse", "HEAD^{tree}")


def test_tree_hash_sees_a_changed_mode_and_content(repo):
    before = git_tree_hash(repo)
    (repo / "run.sh").chmod(0o644)
    after_mode = git_tree_hash(repo)
    assert after_mode != before
    (repo / "run.sh").chmod(0o755)
    (repo / "a" / "deep" / "f.c").write_text("int main(void) { return 1; }\n")
    assert git_tree_hash(repo) not in (before, after_mode)


def test_excluded_and_untracked_paths(repo):
    """An excluded generated file and an empty directory do not change the hash (git records neither)."""
    expected = git(repo, "rev-parse", "HEAD^{tree}")
    (repo / "a" / "generated.cpp").write_text("int build_number = 7;\n")
    (repo / "empty-dir").mkdir()
    assert git_tree_hash(repo, exclude=["a/generated.cpp"]) == expected
    assert git_tree_hash(repo) != expected


def test_sha256_files_equals_hashlib(tmp_path):
    sizes = [0, 1, 4095, 8 * 1024 * 1024 + 17, 300_000]
    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(size))
        files.append(path)
    digests = sha256_files(files)
    assert list(digests) == files
    for path in files:
        assert digests[path] == hashlib.sha256(path.read_bytes()).hexdigest() == sha256_file(path)


def test_a_flat_listing_hashes_to_git_s_tree(repo):
    entries = tree_entries(repo)
    listed = git(repo, "ls-tree", "-r", "HEAD").splitlines()
    assert entries == {line.split("\t")[1]: (line.split()[0], line.split()[2]) for line in listed}
    assert tree_hash_of_entries(entries) == git(repo, "rev-parse", "HEAD^{tree}") == git_tree_hash(repo)


def test_a_gitlink_left_out_gives_git_s_tree_without_it(repo):
    """A submodule's gitlink (mode 160000) in the commit: the tree without it is what every channel hashes."""
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{'4' * 40},vendor/sub")
    with_link = git(repo, "write-tree")
    (repo / "vendor" / "sub").mkdir(parents=True)  # what a checkout leaves: an empty directory
    assert git_tree_hash(repo) == git(repo, "rev-parse", "HEAD^{tree}") != with_link
    (repo / "vendor" / "sub" / "README").write_text("an initialised submodule\n")
    assert git_tree_hash(repo, exclude=["vendor/sub"]) == git(repo, "rev-parse", "HEAD^{tree}")


def test_differing_paths_say_what_differs(repo):
    pinned = tree_entries(repo)
    (repo / "run.sh").chmod(0o644)
    (repo / "a.txt").write_text("changed\n")
    (repo / "a0").unlink()
    (repo / "new.h").write_text("")
    assert differing_paths(tree_entries(repo), pinned) == [
        "a.txt (other content)", "a0 (missing)", "new.h (not in the pinned tree)", "run.sh (mode 100644, pinned 100755)"]
    assert len(differing_paths(tree_entries(repo), pinned, limit=2)) == 2


def test_token_fingerprint_is_the_sha256_of_the_decimal_ids():
    import hashlib

    from moebench.hashing import token_ids_sha256

    assert token_ids_sha256([128000, 9906, 1917]) == hashlib.sha256(b"128000,9906,1917").hexdigest()
    assert token_ids_sha256([1, 23]) != token_ids_sha256([12, 3])
