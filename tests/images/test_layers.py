"""A layer's bytes depend on the tree's content only: not on mtimes, listing order or build host files."""

from __future__ import annotations

import io
import os
import tarfile

from moebench.images.layers import write_layer

SDE = 315532800


def _tree(root, order, mtime):
    for name in order:
        path = root / "usr" / "share" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"content of {name}\n")
        os.utime(path, (mtime, mtime))
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    os.link(root / "usr" / "share" / "a", root / "usr" / "bin" / "hardlink")
    os.symlink("../share/b", root / "usr" / "bin" / "symlink")
    for runtime in ("etc/hostname", "etc/resolv.conf", "dev/null-ish", "tmp/leftover"):
        (root / runtime).parent.mkdir(parents=True, exist_ok=True)
        (root / runtime).write_text(f"{root.name}\n")  # differs between the two trees
    return root


def _layer(root, only=None):
    sink = io.BytesIO()
    diff_id, size = write_layer(root, sink, SDE, only)
    assert size == len(sink.getvalue())
    return diff_id, sink.getvalue()


def test_same_content_gives_the_same_layer_whatever_the_mtimes_and_creation_order(tmp_path):
    first = _layer(_tree(tmp_path / "one", ["a", "b", "c"], 1_700_000_000))
    second = _layer(_tree(tmp_path / "two", ["c", "a", "b"], 1_800_000_000))
    assert first == second
    members = tarfile.open(fileobj=io.BytesIO(first[1])).getmembers()
    names = [m.name for m in members]
    assert names == sorted(names, key=lambda n: n.split("/")) and "etc/hostname" not in names
    assert "tmp" in names and "tmp/leftover" not in names and "dev/null-ish" not in names
    assert {m.mtime for m in members} == {SDE} and {m.uname for m in members} == {""}
    assert any(m.islnk() for m in members) and any(m.issym() for m in members)


def test_a_changed_byte_changes_the_layer(tmp_path):
    before = _layer(_tree(tmp_path / "one", ["a", "b"], 1_700_000_000))
    tree = _tree(tmp_path / "two", ["a", "b"], 1_700_000_000)
    (tree / "usr" / "share" / "b").write_text("content of B\n")
    assert _layer(tree)[0] != before[0]


def test_a_file_older_than_the_epoch_keeps_its_mtime(tmp_path):
    tree = _tree(tmp_path / "one", ["a"], 1_700_000_000)
    os.utime(tree / "usr" / "share" / "a", (1000, 1000))
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(_layer(tree)[1])).getmembers()}
    assert members["usr/share/a"].mtime == 1000


def test_a_subtree_layer_holds_the_subtree_and_its_parents_only(tmp_path):
    tree = _tree(tmp_path / "one", ["a"], 1_700_000_000)
    (tree / "opt" / "moebench" / "venv").mkdir(parents=True)
    (tree / "opt" / "moebench" / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(_layer(tree, "opt/moebench")[1])).getmembers()]
    assert names == ["opt", "opt/moebench", "opt/moebench/venv", "opt/moebench/venv/pyvenv.cfg"]
