"""The study's own llama.cpp (pin `paper`, b4404, 0827b2c1), fetched through the kit's real channels.

The source is the shared bare repository of exactly that commit (../shared/sources, see its README),
served the way an air-gapped lab serves a mirror: git's `url.<mirror>.insteadOf` for the GitHub URL
of lock.yaml, in a GIT_CONFIG_GLOBAL of the test's own (the user's git configuration is never read
or written). Commit 0827b2c1 holds a submodule gitlink, which the tree hash leaves out in every
channel: the git channel proves it against git's own objects, and a `git archive` of the commit (what
GitHub serves) must give the same tree hash, or be refused with the paths that differ.
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from moebench.pins import source
from moebench.config import REPO_ROOT, load_config
from moebench.errors import IntegrityError

GITHUB = "https://github.com/ggerganov/llama.cpp.git"
COMMIT = "0827b2c1da299805288abbd556d869318f2b121e"
GIT_TREE = "918f53479d4e99db98fe7da7792e0abdb3a4ea96"  # git rev-parse 0827b2c1^{tree}, gitlink included


@pytest.fixture
def mirror(b4404_mirror) -> Path:
    return b4404_mirror


@pytest.fixture
def insteadof(b4404_git_config, tmp_path, monkeypatch) -> Path:
    """GIT_CONFIG_GLOBAL: a copy of the tests' insteadOf file (some tests add to it), and a fresh home."""
    config = tmp_path / "gitconfig"
    config.write_text(b4404_git_config.read_text())
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("MOEBENCH_HOME", str(tmp_path / "home"))
    return config


def test_the_paper_pin_comes_through_the_git_channel_and_is_proven(insteadof, mirror):
    cfg = load_config()
    pin = cfg.pin("paper")
    assert (pin.commit, pin.sources.git.url) == (COMMIT, GITHUB)
    tree = source.fetch_source(cfg, "paper", progress=False)
    assert (tree.channel, tree.tree_hash) == ("git", pin.tree_hash)
    # what the kit's definition means, by git itself: the commit's tree without its gitlink
    ls = subprocess.run(["git", "ls-tree", "-r", COMMIT], cwd=mirror, capture_output=True, text=True, check=True)
    gitlinks = {line.split("\t")[1]: line.split()[2] for line in ls.stdout.splitlines() if line.startswith("160000")}
    assert gitlinks == dict(pin.gitlinks) and subprocess.run(
        ["git", "rev-parse", f"{COMMIT}^{{tree}}"], cwd=mirror, capture_output=True, text=True).stdout.strip() == GIT_TREE
    index = insteadof.parent / "index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "read-tree", COMMIT], cwd=mirror, env=env, check=True)
    subprocess.run(["git", "rm", "-q", "--cached", *gitlinks], cwd=mirror, env=env, check=True)
    files_only = subprocess.run(["git", "write-tree"], cwd=mirror, env=env, capture_output=True, text=True, check=True)
    assert files_only.stdout.strip() == pin.tree_hash != GIT_TREE
    assert source.pinned_listing(cfg, "paper", pin) is not None  # configs/trees/ holds this very tree


def test_gitlinks_other_than_the_pin_s_are_refused(insteadof, tmp_config_dir):
    lock = tmp_config_dir / "lock.yaml"
    data = yaml.safe_load(lock.read_text())
    data["llama_cpp"]["paper"]["gitlinks"] = {}
    lock.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(load_config(tmp_config_dir), "paper", progress=False)
    line = caught.value.one_line()
    assert "ggml/src/ggml-kompute/kompute" in line and "lock.yaml lists none" in line
    assert "llama_cpp.paper.gitlinks" in line


def test_a_checkout_rewritten_by_git_names_the_paths_and_the_setting(insteadof):
    with open(insteadof, "a") as config:
        config.write("[core]\n\tautocrlf = true\n")  # LF -> CRLF on checkout of every text file
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(load_config(), "paper", progress=False)
    line = caught.value.one_line()
    assert "differing paths: .clang-format (other content)" in line and "core.autocrlf" in line


def _git_archive(mirror: Path, out: Path, change: tuple[str, bytes] | None = None) -> Path:
    """`git archive` of the commit as GitHub serves it (prefix llama.cpp-<commit>/), optionally with
    one member's content replaced."""
    data = subprocess.run(["git", "archive", "--format=tar", f"--prefix=llama.cpp-{COMMIT}/", COMMIT], cwd=mirror,
                          capture_output=True, check=True).stdout
    if change is not None:
        rebuilt = io.BytesIO()
        with tarfile.open(fileobj=io.BytesIO(data)) as tar, tarfile.open(fileobj=rebuilt, mode="w") as new:
            for member in tar:
                content = tar.extractfile(member).read() if member.isreg() else None
                if member.name == f"llama.cpp-{COMMIT}/{change[0]}":
                    content, member.size = change[1], len(change[1])
                new.addfile(member, io.BytesIO(content) if content is not None else None)
        data = rebuilt.getvalue()
    out.write_bytes(gzip.compress(data, mtime=0))
    return out


def _archive_config(config_dir: Path, url: str) -> None:
    lock = config_dir / "lock.yaml"
    data = yaml.safe_load(lock.read_text())
    pin = data["llama_cpp"]["paper"]
    pin["default_source"] = "archive"
    pin["sources"]["archive"]["url"] = url
    assert pin["sources"]["archive"]["sha256"] is None  # GitHub's own bytes cannot be measured here
    lock.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_git_archive_of_the_commit_has_the_same_tree_hash(mirror, http_dir, tmp_config_dir, isolated_home):
    served, url = http_dir
    _git_archive(mirror, served / f"{COMMIT}.tar.gz")
    _archive_config(tmp_config_dir, f"{url}/{COMMIT}.tar.gz")
    cfg = load_config(tmp_config_dir)
    tree = source.fetch_source(cfg, "paper", progress=False)
    assert (tree.channel, tree.tree_hash) == ("archive", cfg.pin("paper").tree_hash)
    assert not any((tree.path / "ggml/src/ggml-kompute/kompute").iterdir())  # the gitlink: an empty directory


def test_an_archive_of_another_tree_is_refused_naming_the_paths(mirror, http_dir, tmp_config_dir, isolated_home):
    served, url = http_dir
    _git_archive(mirror, served / f"{COMMIT}.tar.gz", change=("README.md", b"# not b4404\n"))
    _archive_config(tmp_config_dir, f"{url}/{COMMIT}.tar.gz")
    cfg = load_config(tmp_config_dir)
    with pytest.raises(IntegrityError) as caught:
        source.fetch_source(cfg, "paper", progress=False)
    line = caught.value.one_line()
    assert f"lock pins {cfg.pin('paper').tree_hash}" in line and "first differing paths: README.md (other content)" in line
    assert not source.tree_dir("paper", COMMIT).exists()


@pytest.mark.parametrize("pin", ["offline", "paper"])
def test_each_pin_s_router_overhead_patch_applies(pin, request):
    cfg = load_config()
    if pin == "paper":
        request.getfixturevalue("insteadof")
    tree = source.fetch_source(cfg, pin, progress=False)
    for device in ("cpu_patched", "cuda_patched", "jetson_patched", "m2_patched"):
        patch = REPO_ROOT / cfg.device(device).patches[pin]
        done = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(patch)], cwd=tree.path, capture_output=True,
                              text=True)
        assert done.returncode == 0 and "FAILED" not in done.stdout, f"{device} at {pin}: {done.stdout}"
