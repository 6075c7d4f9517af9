"""verify/record.py records what a build verified; lockfile.py stays the one writer of lock.yaml, on no import circle.

The recording tests fetch test_source's synthetic pin (served over local HTTP into an isolated
MOEBENCH_HOME) and hand `record_source_pins` the manifest fields a build copies from that fetch.
The layering tests read the source of every moebench module with ast.
"""

from __future__ import annotations

import ast
import importlib
from typing import NamedTuple

import pytest
from test_source import PIN, served  # noqa: F401 - `served` is a fixture

from moebench.pins import source
from moebench.verify import record as pins
from moebench.config import REPO_ROOT

LOCKFILE = "moebench.pins.lockfile"
LOCKFILE_MAY_IMPORT = {"moebench.config", "moebench.errors"}
MAY_USE_LOCK_WRITERS = {LOCKFILE, "moebench.verify.record", "moebench.reproduce"}


def source_manifest(tree: source.SourceTree) -> dict:
    """The build manifest fields record_source_pins reads, as build() copies them from the fetch."""
    return {"pin": PIN, "source_tree_hash": tree.tree_hash, "archive_sha256": tree.archive_sha256,
            "source_channel": tree.channel}


# --- record_source_pins ----------------------------------------------------------------------------

def test_null_tree_hash_is_recorded_once(served):
    served.pin(tree_hash=None)
    tree = source.fetch_source(served.config(), PIN, progress=False)
    lines = pins.record_source_pins(served.config(), source_manifest(tree))
    listing = served.config_dir / "trees" / f"{PIN}-{tree.commit[:12]}.tsv"
    assert lines == [f"recorded llama_cpp.{PIN}.tree_hash = {served.tree_hash} in {served.config_dir / 'lock.yaml'}",
                     f"recorded the listing of llama_cpp.{PIN}'s tree in {listing}"]
    cfg = served.config()
    assert cfg.pin(PIN).tree_hash == served.tree_hash
    assert source.pinned_listing(cfg, PIN, cfg.pin(PIN)) is not None  # it hashes to the recorded tree_hash
    recorded = served.lock_bytes()
    assert pins.record_source_pins(cfg, source_manifest(tree)) == []
    assert served.lock_bytes() == recorded


def test_unpinned_archive_proven_by_the_pinned_tree_hash_is_recorded(served):
    served.pin_archive(sha256=None)
    tree = source.fetch_source(served.config(), PIN, channel="archive", progress=False)
    lines = pins.record_source_pins(served.config(), source_manifest(tree))
    assert lines[1:] == [f"recorded llama_cpp.{PIN}.sources.archive.sha256 = {served.sha256} in "
                         f"{served.config_dir / 'lock.yaml'} (its tree matches the pinned tree_hash)"]
    assert lines[0].startswith(f"recorded the listing of llama_cpp.{PIN}'s tree")
    pin = served.config().pin(PIN)
    assert pin.sources.archive.sha256 == served.sha256 and pin.tree_hash == served.tree_hash


def test_archive_is_not_recorded_on_a_first_sighting_of_its_tree(served):
    """With tree_hash null as well, nothing proved the archive: only the tree hash is recorded."""
    served.pin_archive(sha256=None, tree_hash=None)
    manifest = {"pin": PIN, "source_tree_hash": served.tree_hash, "archive_sha256": served.sha256,
                "source_channel": "archive"}
    lines = pins.record_source_pins(served.config(), manifest)
    assert [line.split(" = ")[0] for line in lines] == [f"recorded llama_cpp.{PIN}.tree_hash"]
    assert served.config().pin(PIN).sources.archive.sha256 is None


@pytest.mark.parametrize("archive_sha256", ["pinned", None])
def test_pins_already_set_are_left_untouched(served, archive_sha256):
    """A manifest whose hashes differ from the pins (another tree) changes nothing: pins are never
    overwritten, and a null archive sha256 is not proven by a tree other than the pinned one."""
    served.pin_archive(sha256=served.sha256 if archive_sha256 else None)
    before = served.lock_bytes()
    other = {"pin": PIN, "source_tree_hash": "1" * 40, "archive_sha256": "2" * 64, "source_channel": "archive"}
    assert pins.record_source_pins(served.config(), other) == []
    assert served.lock_bytes() == before


# --- layering: read with ast -----------------------------------------------------------------------

class Module(NamedTuple):
    name: str
    package: str
    tree: ast.Module


def moebench_modules() -> dict[str, Module]:
    modules = {}
    for path in sorted((REPO_ROOT / "moebench").rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        package = name if is_package else name.rpartition(".")[0]
        modules[name] = Module(name, package, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return modules


def absolute_module(node: ast.ImportFrom, package: str) -> str:
    """The module a `from ... import` reads from, relative imports resolved against `package`."""
    if node.level == 0:
        return node.module or ""
    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_moebench_modules(module: Module, known: set[str]) -> set[str]:
    """Every moebench module `module` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            origin = absolute_module(node, module.package)
            found |= {f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin for alias in node.names}
    return {name for name in found if name.split(".")[0] == "moebench"}


def lock_writers(modules: dict[str, Module]) -> set[str]:
    tree = modules[LOCKFILE].tree
    return {"update_yaml"} | {node.name for node in tree.body
                              if isinstance(node, ast.FunctionDef) and node.name.startswith("record_")}


def writer_uses(module: Module, writers: set[str]) -> list[str]:
    """'line: name' for each lockfile writer `module` imports by name or reaches as `<lockfile>.<writer>`."""
    lockfile_names = {LOCKFILE}
    uses = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            origin = absolute_module(node, module.package)
            if origin == LOCKFILE:
                uses += [f"{node.lineno}: {alias.name}" for alias in node.names if alias.name in writers | {"*"}]
            elif origin == LOCKFILE.rpartition(".")[0]:
                lockfile_names |= {alias.asname or alias.name for alias in node.names if alias.name == "lockfile"}
        elif isinstance(node, ast.Import):
            lockfile_names |= {alias.asname for alias in node.names if alias.name == LOCKFILE and alias.asname}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and node.attr in writers and ast.unparse(node.value) in lockfile_names:
            uses.append(f"{node.lineno}: {ast.unparse(node)}")
    return uses


def test_every_moebench_module_imports():
    for name in moebench_modules():
        importlib.import_module(name)


def test_lockfile_imports_only_config_and_errors_and_is_on_no_import_circle():
    modules = moebench_modules()
    graph = {name: imported_moebench_modules(module, set(modules)) for name, module in modules.items()}
    assert graph[LOCKFILE] and graph[LOCKFILE] <= LOCKFILE_MAY_IMPORT, graph[LOCKFILE]
    reachable, todo = set(), list(graph[LOCKFILE])
    while todo:
        name = todo.pop()
        if name not in reachable:
            reachable.add(name)
            todo += graph.get(name, ())
    assert LOCKFILE not in reachable, f"{LOCKFILE} imports itself back through {sorted(reachable)}"


def test_only_lockfile_pins_and_reproduce_use_the_lock_writers():
    modules = moebench_modules()
    writers = lock_writers(modules)
    assert {"update_yaml", "record_tree_hash", "record_archive_sha256", "record_binaries", "record_replicas",
            "record_model_hub", "record_image"} <= writers
    offenders = {name: uses for name, module in modules.items()
                 if name not in MAY_USE_LOCK_WRITERS and (uses := writer_uses(module, writers))}
    assert offenders == {}, f"only {sorted(MAY_USE_LOCK_WRITERS)} may write lock.yaml"
    assert writer_uses(modules["moebench.verify.record"], writers), "the check must see verify/record.py's own writes"


@pytest.mark.parametrize("snippet, found", [
    ("from moebench.pins import lockfile\nlockfile.record_tree_hash('p', 'h')", True),
    ("from moebench.pins import lockfile as lock\nlock.update_yaml(path, change)", True),
    ("import moebench.pins.lockfile\nmoebench.pins.lockfile.record_binaries(d, p, t, h)", True),
    ("import moebench.pins.lockfile as lf\nlf.record_image('n', {})", True),
    ("from moebench.pins.lockfile import record_replicas", True),
    ("def f():\n    from . import lockfile\n    lockfile.record_archive_sha256('p', 's')", True),
    ("from moebench.pins.lockfile import lock_file\nlock_file()", False),
    ("from moebench.models.download import record_hash\nrecord_hash('s', 'm', 'x')", False),
])
def test_writer_check_sees_every_import_form(snippet, found):
    writers = lock_writers(moebench_modules())
    module = Module("moebench.pins.example", "moebench.pins", ast.parse(snippet))  # `from .` is pins/
    assert bool(writer_uses(module, writers)) is found
