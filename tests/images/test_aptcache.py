"""The shared package cache hands apt only files whose SHA-256 is the verified index's for their name."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from moebench.images import aptcache

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "apt"


def _deb(tmp_path: Path, package: str, version: str) -> Path:
    """A real package built by dpkg-deb."""
    tree = tmp_path / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
                                             "Maintainer: moebench <moebench@localhost>\nDescription: test\n")
    (tree / "usr" / "share" / package).mkdir(parents=True)
    (tree / "usr" / "share" / package / "data").write_text(package * 100)
    deb = tmp_path / "cache" / aptcache.archive_name(package, version, "all")
    deb.parent.mkdir(exist_ok=True)
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_archive_names_are_apt_s():
    assert aptcache.archive_name("git", "1:2.39.5-0+deb12u3", "amd64") == "git_1%3a2.39.5-0+deb12u3_amd64.deb"
    assert aptcache.archive_name("libc6", "2.36-9+deb12u13", "amd64") == "libc6_2.36-9+deb12u13_amd64.deb"


def test_hashes_come_from_the_index_stanzas():
    text = (FIXTURES / "bookworm_main_binary-amd64_Packages").read_text()
    hashes = aptcache.expected_hashes(text)
    assert hashes["git_1%3a2.39.5-0+deb12u3_amd64.deb"] == next(
        line.split(": ")[1] for line in text.split("Package: git\n")[1].splitlines() if line.startswith("SHA256: "))
    assert hashes["ca-certificates_20230311+deb12u1_all.deb"]
    assert len(hashes) == 4


def test_only_files_with_the_index_s_hash_for_their_name_are_used(tmp_path):
    good, corrupted, renamed = (_deb(tmp_path, name, "1.0") for name in ("alpha", "beta", "gamma"))
    index = {deb.name: hashlib.sha256(deb.read_bytes()).hexdigest() for deb in (good, corrupted)}
    index[renamed.name] = index[good.name]  # another package's bytes under gamma's name
    data = bytearray(corrupted.read_bytes())
    data[-10] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    archives = tmp_path / "archives"
    archives.mkdir()
    used, refused = aptcache.copy_verified(good.parent, archives, index)
    assert used == [good.name] and refused == [corrupted.name, renamed.name]
    assert [p.name for p in archives.iterdir()] == [good.name]


def test_a_finished_build_replaces_what_the_cache_held(tmp_path):
    deb = _deb(tmp_path, "alpha", "1.0")
    cache = tmp_path / "kept"
    cache.mkdir()
    (cache / deb.name).write_bytes(b"corrupted")
    aptcache.keep(deb.parent, cache)
    assert (cache / deb.name).read_bytes() == deb.read_bytes() and [p.name for p in cache.iterdir()] == [deb.name]
