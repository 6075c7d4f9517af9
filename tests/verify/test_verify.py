"""verify.py: every re-hashed file is ok, or one FAIL line naming the file and both hashes; by default
one summary line per stage, the full table with --verbose or on failure.

Fast tests use the synthetic pin of test_source (served over local HTTP, fetched into an isolated
MOEBENCH_HOME) with a fake build beside it: a manifest and three small "binaries". Slow tests run on the
kit's own build; where they tamper, they tamper a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from test_source import PIN, flip_byte, make_kit, run_invoke, served  # noqa: F401 - `served` is a fixture

from moebench.pins import lockfile, source
from moebench.pins.build import MANIFEST_SCHEMA_VERSION, build_dir_for, load_manifest
from moebench.config import load_config
from moebench.hashing import git_tree_hash
from moebench.verify.hashes import Check, ModelFile, render_table, verify, verify_and_report, verify_stages

DEVICE = "cpu"
TOOLCHAIN_ID = "gcc-0.0.0_cmake-0.0.0_test-linux-gnu"
BINARIES = ("llama-bench", "llama-cli", "llama-quantize")
LOCK_KEY = f"{DEVICE}/{PIN}/{TOOLCHAIN_ID}"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_fake_build(build_dir: Path, tree: source.SourceTree) -> dict[str, str]:
    """A manifest and binaries as build() would leave them (only the fields verify reads are real)."""
    (build_dir / "bin").mkdir(parents=True)
    binaries = {}
    for index, name in enumerate(BINARIES):
        path = build_dir / "bin" / name
        path.write_bytes(b"\x7fELF" + bytes([index]) * 3000 + os.urandom(64))
        binaries[name] = {"path": f"bin/{name}", "sha256": sha256_of(path), "size_bytes": path.stat().st_size}
    manifest = {"schema_version": MANIFEST_SCHEMA_VERSION, "device": DEVICE, "pin": PIN, "commit": tree.commit,
                "source_tree_hash": tree.tree_hash, "archive_sha256": tree.archive_sha256,
                "toolchain_id": TOOLCHAIN_ID, "binaries": binaries, "failed_targets": {}}
    (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return {name: entry["sha256"] for name, entry in binaries.items()}


class FakeKit:
    """The synthetic pin fetched and 'built' in the isolated home, its binaries pinned in lock.yaml."""

    def __init__(self, served):
        self.served = served
        self.tree = source.fetch_source(served.config(), PIN, progress=False)
        self.build_dir = build_dir_for(DEVICE, PIN)
        assert self.build_dir.is_relative_to(served.home)
        self.hashes = write_fake_build(self.build_dir, self.tree)
        lockfile.record_binaries(DEVICE, PIN, TOOLCHAIN_ID, self.hashes, served.config_dir)

    def checks(self) -> dict[str, Check]:
        return {check.item: check for check in verify(self.served.config(), DEVICE, PIN)}

    def edit_lock(self, old: str, new: str) -> None:
        lock = self.served.config_dir / "lock.yaml"
        text = lock.read_text()
        assert text.count(old) == 1, old
        lock.write_text(text.replace(old, new))


@pytest.fixture
def kit(served) -> FakeKit:
    return FakeKit(served)


def one_char_changed(digest: str) -> str:
    return digest[:-1] + ("0" if digest[-1] != "0" else "1")


def test_untouched_fake_kit_verifies(kit):
    checks = kit.checks()
    assert list(checks) == ["source archive", "source tree", *(f"{name} ({what})" for name in BINARIES
                                                               for what in ("manifest", "lock"))]
    assert all(check.ok for check in checks.values()), [c.message() for c in checks.values() if not c.ok]
    assert checks["source tree"].actual == kit.served.tree_hash
    assert checks["source archive"].actual == kit.served.sha256


def _tamper(kit: FakeKit, what: str) -> tuple[list[str], str, str, list[str]]:
    """Apply one tampering; (items that must fail, file named, hash expected, [hash measured, other names])."""
    served = kit.served
    if what == "binary":
        path = kit.build_dir / "bin" / "llama-cli"
        flip_byte(path, 100)
        return ["llama-cli (manifest)", "llama-cli (lock)"], str(path), kit.hashes["llama-cli"], [sha256_of(path)]
    if what == "source archive":
        flip_byte(served.download)
        return ["source archive"], str(served.download), served.sha256, [sha256_of(served.download)]
    if what == "source tree file":
        flip_byte(kit.tree.path / "src" / "llama.cpp", 0)  # same size: only a full re-hash sees it
        actual = git_tree_hash(kit.tree.path, exclude=["common/build-info.cpp"])
        return ["source tree"], str(kit.tree.path), served.tree_hash, [actual, f"llama_cpp.{PIN}.tree_hash"]
    if what == "lock binaries pin":
        wrong = one_char_changed(kit.hashes["llama-cli"])
        kit.edit_lock(kit.hashes["llama-cli"], wrong)
        return (["llama-cli (lock)"], str(kit.build_dir / "bin" / "llama-cli"), wrong,
                [kit.hashes["llama-cli"], f"lock.yaml binaries.{LOCK_KEY}.llama-cli"])
    if what == "lock tree_hash":
        wrong = one_char_changed(served.tree_hash)
        kit.edit_lock(f"tree_hash: {served.tree_hash}", f"tree_hash: {wrong}")
        return ["source tree"], str(kit.tree.path), wrong, [served.tree_hash, f"lock.yaml llama_cpp.{PIN}.tree_hash"]
    if what == "lock archive sha256":
        wrong = one_char_changed(served.sha256)
        kit.edit_lock(served.sha256, wrong)
        return (["source archive"], str(served.download), wrong,
                [served.sha256, f"lock.yaml llama_cpp.{PIN}.sources.pypi_sdist.sha256"])
    raise AssertionError(what)


TAMPERINGS = ["binary", "source archive", "source tree file", "lock binaries pin", "lock tree_hash",
              "lock archive sha256"]


@pytest.mark.parametrize("what", TAMPERINGS)
def test_one_tampered_byte_is_one_fail_line_with_both_hashes(kit, what):
    failing, path, expected, named = _tamper(kit, what)
    checks = kit.checks()
    assert sorted(item for item, check in checks.items() if not check.ok) == sorted(failing)
    for item in failing:
        line = checks[item].message()
        assert line.startswith(f"FAIL: {item}: {path}: ") and "\n" not in line
        assert f"expected {expected}" in line and named[0] in line and named[0] != expected
        for part in named[1:]:
            assert part in line


def stage_lines(kit: FakeKit) -> list[str]:
    """What `invoke verify --models none` prints for the untouched fake kit."""
    served = kit.served
    return [f"source: ok (archive sha256 {served.sha256[:8]}…, tree {served.tree_hash[:8]}…)",
            f"binaries: ok, 3 of 3 match the build manifest and lock.yaml binaries[{LOCK_KEY}]",
            "models: none checked (--models none)"]


def test_verify_and_report_prints_one_line_per_stage(kit, capsys):
    assert verify_and_report(kit.served.config(), DEVICE, PIN, models="none") is True
    assert capsys.readouterr().out.splitlines() == stage_lines(kit)


def test_verify_and_report_verbose_prints_the_table_then_the_stages(kit, capsys):
    assert verify_and_report(kit.served.config(), DEVICE, PIN, models="none", verbose=True) is True
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["item", "status", "expected", "actual", "path"]
    assert lines[:-3] == render_table(verify(kit.served.config(), DEVICE, PIN)).splitlines()
    assert lines[-4] == "8 of 8 checks passed" and lines[-3:] == stage_lines(kit)
    assert not any("FAIL" in line for line in lines)


@pytest.mark.parametrize("what", ["binary", "lock tree_hash"])
def test_verify_and_report_prints_the_full_table_on_failure(kit, capsys, what):
    failing, path, expected, named = _tamper(kit, what)
    assert verify_and_report(kit.served.config(), DEVICE, PIN, models="none") is False
    lines = capsys.readouterr().out.rstrip().splitlines()
    assert lines[0].split() == ["item", "status", "expected", "actual", "path"]
    fail_lines = [line for line in lines if line.startswith("FAIL: ")]
    assert [line.split(": ")[1] for line in fail_lines] == failing
    assert all(path in line and f"expected {expected}" in line and named[0] in line for line in fail_lines)
    assert lines[-4] == f"{8 - len(failing)} of 8 checks passed, {len(failing)} FAILED"
    ok_source, ok_binaries, models = stage_lines(kit)
    if what == "binary":
        assert lines[-3:] == [ok_source, f"binaries: FAIL, 2 of 6 checks failed: {', '.join(failing)}", models]
    else:
        assert lines[-3:] == ["source: FAIL, 1 of 2 checks failed: source tree", ok_binaries, models]


def test_stage_summaries(kit, tmp_path):
    models = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(name.encode())
        models.append(ModelFile(f"{name} (replica-tiny)", path, sha256_of(path), f"lock.yaml: replicas.tiny/x.{name}",
                                "replica-tiny"))
    own = tmp_path / "own.gguf"
    own.write_bytes(b"own")
    stages = verify_stages(kit.served.config(), DEVICE, PIN, [*models, (own, sha256_of(own))], model_set="present")
    assert [stage.name for stage in stages] == ["source", "binaries", "models"] and all(s.ok for s in stages)
    assert stages[2].line() == "models: ok, 2 replica-tiny files match lock.yaml, 1 file matches the caller's sha256"

    kit.edit_lock(f"{LOCK_KEY}:", "cpu/other/x:")
    stages = verify_stages(kit.served.config(), DEVICE, PIN, model_set="present")
    assert stages[1].line() == (f"binaries: ok, 3 of 3 match the build manifest; lock.yaml pins no "
                                f"binaries[{LOCK_KEY}] (`invoke lock` pins them)")
    assert stages[2].line() == "models: none checked (--models present)"

    shutil.rmtree(kit.build_dir)
    shutil.rmtree(kit.tree.path)
    lines = [stage.line() for stage in verify_stages(kit.served.config(), DEVICE, PIN)]
    assert lines == ["source: FAIL, 1 of 1 checks failed: source tree",
                     "binaries: FAIL, 1 of 1 checks failed: build manifest", "models: none checked"]


def test_nothing_fetched_or_built_fails_every_check(served):
    checks = {check.item: check for check in verify(served.config(), DEVICE, PIN)}
    assert not any(check.ok for check in checks.values())
    assert "not fetched" in checks["source tree"].message() and checks["source tree"].actual is None
    assert f"invoke build --device {DEVICE} --pin {PIN}" in checks["build manifest"].message()


def test_invoke_verify_exit_code(kit):
    cli = make_kit(kit.served.config_dir)
    args = ("verify", "--device", DEVICE, "--pin", PIN, "--models", "none")
    good = run_invoke(cli, kit.served.home, *args)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.splitlines() == stage_lines(kit)
    verbose = run_invoke(cli, kit.served.home, *args, "--verbose")
    assert verbose.returncode == 0 and "8 of 8 checks passed" in verbose.stdout
    assert verbose.stdout.splitlines()[-3:] == stage_lines(kit)

    failing, path, expected, (actual,) = _tamper(kit, "binary")
    bad = run_invoke(cli, kit.served.home, *args)
    assert bad.returncode != 0
    fail_lines = [line for line in bad.stdout.splitlines() if line.startswith("FAIL: ")]
    assert len(fail_lines) == 2 and all(path in line and actual in line and expected in line for line in fail_lines)
    assert f"binaries: FAIL, 2 of 6 checks failed: {', '.join(failing)}" in bad.stdout.splitlines()
    assert "Traceback" not in bad.stderr


# --- render_table ----------------------------------------------------------------------------------

def test_render_table_lines():
    good = Check("source tree", "/src/tree", "a" * 40, "a" * 40, True, "lock.yaml llama_cpp.offline.tree_hash")
    bad = Check("llama-cli (manifest)", "/b/bin/llama-cli", "1" * 64, "2" * 64, False, "build manifest")
    missing = Check("model m (replica-tiny)", "/m/m.gguf", "3" * 64, None, False, "missing")
    lines = render_table([good, bad, missing]).splitlines()
    header, rule, *rows = lines[:5]
    assert header.split() == ["item", "status", "expected", "actual", "path"]
    assert set(rule.replace(" ", "")) == {"-"}
    # columns line up: every row's status starts where the header's does; hashes cut to 16 characters
    column = header.index("status")
    assert [row[column:].split()[0] for row in rows] == ["ok", "FAIL", "FAIL"]
    assert rows[0].split()[-3:] == ["a" * 16, "a" * 16, "/src/tree"]
    assert rows[2].split()[-3:] == ["3" * 16, "-", "/m/m.gguf"]
    assert lines[5:] == [
        f"FAIL: llama-cli (manifest): /b/bin/llama-cli: sha256 is {'2' * 64}, expected {'1' * 64} (build manifest)",
        "FAIL: model m (replica-tiny): /m/m.gguf: missing",
        "1 of 3 checks passed, 2 FAILED",
    ]
    assert all(line == line.rstrip() for line in lines)


def test_render_table_all_ok():
    checks = [Check("binaries (lock)", "/kit/configs/lock.yaml", None, None, True, "no binaries pinned")]
    lines = render_table(checks).splitlines()
    assert len(lines) == 4 and lines[-1] == "1 of 1 checks passed"
    assert lines[2].split()[:4] == ["binaries", "(lock)", "ok", "-"]


# --- the kit's own build (slow) ----------------------------------------------------------------------

def copy_kit_build(work_root: Path) -> Path:
    src, dst = build_dir_for(DEVICE, "offline"), build_dir_for(DEVICE, "offline", work_root)
    dst.mkdir(parents=True)
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    shutil.copytree(src / "bin", dst / "bin")
    return dst


@pytest.mark.slow
def test_kit_build_verifies_with_its_replicas(pinned_bin_dir, tiny_replica_paths, capsys):
    cfg = load_config()
    checks = {check.item: check for check in verify(cfg, DEVICE, "offline")}
    assert all(check.ok for check in checks.values()), [c.message() for c in checks.values() if not c.ok]
    assert {"source archive", "source tree", "llama-bench (manifest)", "llama-cli (manifest)",
            "llama-quantize (manifest)"} <= set(checks)
    assert checks["source tree"].actual == cfg.pin("offline").tree_hash

    capsys.readouterr()
    assert verify_and_report(cfg, DEVICE, "offline", models="replica-tiny") is True
    lines = capsys.readouterr().out.splitlines()
    n_binaries = len(load_manifest(DEVICE, "offline")["binaries"])
    assert [line.split(":")[0] for line in lines] == ["source", "binaries", "models"]
    archive = checks["source archive"].actual  # None where the downloads were cleaned and the tree proves the pin
    archive_part = f"archive sha256 {archive[:8]}…" if archive else "archive not present"
    assert lines[0] == f"source: ok ({archive_part}, tree {checks['source tree'].actual[:8]}…)"
    assert lines[1].startswith(f"binaries: ok, {n_binaries} of {n_binaries} match the build manifest")
    assert lines[2] == f"models: ok, {len(tiny_replica_paths)} replica-tiny files match lock.yaml"

    assert verify_and_report(cfg, DEVICE, "offline", models="replica-tiny", verbose=True) is True
    out = capsys.readouterr().out
    for model_id, path in tiny_replica_paths.items():
        assert any(line.startswith(f"model {model_id} (replica-tiny)") and line.endswith(str(path))
                   for line in out.splitlines())
    assert "FAIL" not in out and out.splitlines()[-3:] == lines


@pytest.mark.slow
def test_tampered_copy_of_kit_build_against_a_binaries_pin(pinned_bin_dir, tmp_path, tmp_config_dir):
    manifest = load_manifest(DEVICE, "offline")
    hashes = {name: entry["sha256"] for name, entry in manifest["binaries"].items()}
    lockfile.record_binaries(DEVICE, "offline", manifest["toolchain_id"], hashes, tmp_config_dir)
    cfg = load_config(tmp_config_dir)
    build_dir = copy_kit_build(tmp_path / "work")
    checks = {c.item: c for c in verify(cfg, DEVICE, "offline", work_root=tmp_path / "work")}
    assert all(c.ok for c in checks.values()) and "llama-quantize (lock)" in checks

    target = build_dir / "bin" / "llama-quantize"
    flip_byte(target, 8192)
    actual = sha256_of(target)
    checks = {c.item: c for c in verify(cfg, DEVICE, "offline", work_root=tmp_path / "work")}
    failed = sorted(item for item, check in checks.items() if not check.ok)
    assert failed == ["llama-quantize (lock)", "llama-quantize (manifest)"]
    key = f"binaries.{DEVICE}/offline/{manifest['toolchain_id']}.llama-quantize"
    lock_line, manifest_line = checks[failed[0]].message(), checks[failed[1]].message()
    for line in (lock_line, manifest_line):
        assert str(target) in line and f"sha256 is {actual}, expected {hashes['llama-quantize']}" in line
    assert key in lock_line and "(build manifest)" in manifest_line
