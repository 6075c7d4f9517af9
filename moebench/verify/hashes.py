"""`invoke verify`: re-hash everything a result depends on and compare it with its pin.

One `Check` per file: the source archive (vs lock.yaml), the source tree (full git tree hash vs
lock.yaml), every built binary (vs its build manifest, and vs `lock.binaries` when this
device/pin/toolchain is pinned there) and the model files the caller names. Nothing is trusted
from a marker or mtime here; every byte is read again (files hashed in parallel).

Checks are grouped by stage (toolchain image, source, binaries, models): `invoke verify` prints one
line per stage, and the full table of checks with `--verbose` or when any check fails.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from moebench import paths
from moebench.pins.build import build_dir_for, load_manifest
from moebench.config import Config
from moebench.errors import IntegrityError, UserError
from moebench.hashing import git_tree_hash, sha256_files
from moebench.pins.source import CHANNELS, marker_path, tree_dir


@dataclass(frozen=True)
class Check:
    item: str
    path: str
    expected: str | None
    actual: str | None
    ok: bool
    note: str = ""
    digest: str = "sha256"

    def message(self) -> str:
        """One line: what, where, both hashes."""
        if self.ok:
            return f"ok: {self.item}: {self.path}"
        if self.actual is None or self.expected is None:
            return f"FAIL: {self.item}: {self.path}: {self.note}"
        return f"FAIL: {self.item}: {self.path}: {self.digest} is {self.actual}, expected {self.expected} ({self.note})"


@dataclass(frozen=True)
class ModelFile:
    """A model file to hash, with the SHA-256 its pin expects (None: not pinned, reported as a failure)."""
    name: str
    path: Path
    expected_sha256: str | None
    pin_key: str = ""
    label: str = ""  # replica-tiny, replica-full or real: the set it belongs to, for the summary line


@dataclass(frozen=True)
class Stage:
    """One stage's checks, and the summary line that says what they proved when all of them pass."""
    name: str
    checks: list[Check]
    proved: str

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def line(self) -> str:
        if self.ok:
            return f"{self.name}: {self.proved}"
        failed = [check.item for check in self.checks if not check.ok]
        return f"{self.name}: FAIL, {len(failed)} of {len(self.checks)} checks failed: {', '.join(failed)}"


def verify(cfg: Config, device: str, pin: str, models: Iterable[ModelFile | tuple[Path, str | None]] = (),
           work_root: Path | None = None) -> list[Check]:
    """Every check for `device`/`pin` plus the given model files (ModelFile or (path, expected sha256));
    `all(c.ok for c in checks)` means verified."""
    return [check for stage in verify_stages(cfg, device, pin, models, work_root) for check in stage.checks]


def verify_stages(cfg: Config, device: str, pin: str, models: Iterable[ModelFile | tuple[Path, str | None]] = (),
                  work_root: Path | None = None, model_set: str = "") -> list[Stage]:
    """`verify`'s checks grouped by stage, in pipeline order; `model_set` names the models for the summary."""
    image = _image_stage(cfg)
    stages = [image] if image is not None else []
    stages.append(_source_stage(cfg, pin))
    stages.append(_binary_stage(cfg, device, pin, work_root))
    stages.append(_model_stage([m if isinstance(m, ModelFile) else ModelFile(Path(m[0]).name, Path(m[0]), m[1])
                                for m in models], model_set))
    return stages


def _short(digest: str | None) -> str:
    return "-" if digest is None else f"{digest.removeprefix('sha256:')[:8]}…"


def _image_stage(cfg: Config) -> Stage | None:
    """In a toolchain image: its ID (from the engine, via the launcher) must be the lock's, or nothing runs."""
    name = paths.running_image()
    if name is None:
        return None
    key = f"images.{name}.id"
    pinned = cfg.lock.images[name].id if name in cfg.lock.images else None
    actual = os.environ.get("MOEBENCH_IMAGE_DIGEST")
    if pinned is None or actual != pinned:
        raise IntegrityError(cfg.root / "lock.yaml", f"this run's image {name!r} is {actual}, lock.yaml pins {pinned}",
                             f"rebuild it from the lock: invoke image.verify --image {name} --rebuild", key=key)
    return Stage("image", [Check("toolchain image", f"{name} ({key})", pinned, actual, True, digest="image id")],
                 f"ok, {name} is {_short(actual)} as lock.yaml {key} pins")


def _source_stage(cfg: Config, pin_name: str) -> Stage:
    checks = _source_checks(cfg, pin_name)
    parts = [(f"archive sha256 {_short(check.actual)}" if check.actual else "archive not present")
             if check.item == "source archive" else f"tree {_short(check.actual)}" for check in checks]
    return Stage("source", checks, f"ok ({', '.join(parts)})")


def _source_checks(cfg: Config, pin_name: str) -> list[Check]:
    pin = cfg.pin(pin_name)
    tree = tree_dir(pin_name, pin.commit)
    checks = []
    channel = None
    if marker_path(tree).is_file():
        channel = json.loads(marker_path(tree).read_text(encoding="utf-8")).get("channel")
    if not tree.is_dir():
        checks.append(Check("source tree", str(tree), pin.tree_hash, None, False,
                            f"not fetched (run: invoke build --pin {pin_name})"))
        return checks
    actual = git_tree_hash(tree, exclude=pin.unhashed_paths)
    note = f"lock.yaml llama_cpp.{pin_name}.tree_hash" if pin.tree_hash else "no tree_hash pinned in lock.yaml"
    tree_check = Check("source tree", str(tree), pin.tree_hash, actual, actual == pin.tree_hash, note,
                       digest="git tree id")
    archive = _archive_of(cfg, pin_name, channel)
    if archive is not None:
        checks.append(_archive_check(*archive, tree_proven=tree_check.ok))
    return checks + [tree_check]


def _archive_check(path: Path, expected: str | None, key: str, tree_proven: bool) -> Check:
    """A present archive must match its pin; an absent one (a tree carried to another machine, or
    downloads cleaned) is no failure when the extracted tree matches the pinned tree hash, which is
    the stronger proof of the two."""
    if path.is_file():
        actual = sha256_files([path])[path]
        return Check("source archive", str(path), expected, actual, actual == expected, f"lock.yaml {key}")
    if tree_proven:
        return Check("source archive", str(path), expected, None, True,
                     "not present; the source tree matches the pinned tree hash")
    return Check("source archive", str(path), expected, None, False, "archive not downloaded (run: invoke build)")


def _archive_of(cfg: Config, pin_name: str, channel: str | None) -> tuple[Path, str | None, str] | None:
    pin = cfg.pin(pin_name)
    channel = channel if channel in CHANNELS else pin.default_source
    if channel == "pypi_sdist" and pin.sources.pypi_sdist is not None:
        sdist = pin.sources.pypi_sdist
        return paths.downloads_dir() / sdist.filename, sdist.sha256, f"llama_cpp.{pin_name}.sources.pypi_sdist.sha256"
    if channel == "archive" and pin.sources.archive is not None:
        return (paths.downloads_dir() / f"llama.cpp-{pin.commit}.tar.gz", pin.sources.archive.sha256,
                f"llama_cpp.{pin_name}.sources.archive.sha256")
    return None  # a git checkout has no archive; git proved its tree when it was fetched


def _binary_stage(cfg: Config, device: str, pin: str, work_root: Path | None) -> Stage:
    try:
        manifest = load_manifest(device, pin, work_root)
    except UserError as exc:
        return Stage("binaries", [Check("build manifest", exc.where, None, None, False, f"{exc.problem} ({exc.fix})")],
                     "")
    root = build_dir_for(device, pin, work_root)
    files = {name: root / entry["path"] for name, entry in manifest["binaries"].items()}
    present = [path for path in files.values() if path.is_file()]
    digests = sha256_files(present)
    key = f"{device}/{pin}/{manifest['toolchain_id']}"
    locked = cfg.lock.binaries.get(key)
    checks = []
    for name, path in files.items():
        actual = digests.get(path)
        expected = manifest["binaries"][name]["sha256"]
        note = "build manifest" if actual else "missing"
        checks.append(Check(f"{name} (manifest)", str(path), expected, actual, actual == expected, note))
        if locked is not None:
            pinned = locked.get(name)
            note = f"lock.yaml binaries.{key}.{name}" if pinned else f"lock.yaml binaries.{key} has no {name}"
            checks.append(Check(f"{name} (lock)", str(path), pinned, actual, pinned is not None and actual == pinned, note))
    count = f"{len(files)} of {len(files)} match the build manifest"
    if locked is None:
        checks.append(Check("binaries (lock)", str(cfg.root / "lock.yaml"), None, None, True,
                            f"no binaries.{key} pinned (run `invoke lock` to pin this build)"))
        return Stage("binaries", checks, f"ok, {count}; lock.yaml pins no binaries[{key}] (`invoke lock` pins them)")
    return Stage("binaries", checks, f"ok, {count} and lock.yaml binaries[{key}]")


def _model_stage(models: list[ModelFile], model_set: str) -> Stage:
    checks = _model_checks(models)
    if not checks:
        return Stage("models", checks, "none checked" + (f" (--models {model_set})" if model_set else ""))
    # "lock.yaml: replicas.tiny/offline.<id>" -> lock.yaml; a caller's own hashes carry no pin key
    groups = Counter((model.label, model.pin_key.split(":")[0] if model.pin_key else "the caller's sha256")
                     for model in models)
    return Stage("models", checks, "ok, " + ", ".join(
        f"{n} {label + ' ' if label else ''}file{'s match' if n != 1 else ' matches'} {where}"
        for (label, where), n in groups.items()))


def _model_checks(models: list[ModelFile]) -> list[Check]:
    present = [m.path for m in models if m.path.is_file()]
    digests = sha256_files(present)
    checks = []
    for model in models:
        actual = digests.get(model.path)
        if actual is None:
            checks.append(Check(f"model {model.name}", str(model.path), model.expected_sha256, None, False, "missing"))
            continue
        note = model.pin_key or "expected by caller"
        if model.expected_sha256 is None:
            note = f"no sha256 pinned ({model.pin_key or 'caller gave none'})"
        checks.append(Check(f"model {model.name}", str(model.path), model.expected_sha256, actual,
                            actual == model.expected_sha256, note))
    return checks


def render_table(checks: list[Check]) -> str:
    """An aligned table (item, ok, expected, actual, path), then one line per mismatch."""
    def short(value: str | None) -> str:
        return "-" if value is None else value[:16]

    rows = [(c.item, "ok" if c.ok else "FAIL", short(c.expected), short(c.actual), c.path) for c in checks]
    header = ("item", "status", "expected", "actual", "path")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4]
             for row in [header, tuple("-" * w for w in widths) + ("-" * 4,), *rows]]
    lines += [c.message() for c in checks if not c.ok]
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed} of {len(checks)} checks passed" + (f", {failed} FAILED" if failed else ""))
    return "\n".join(line.rstrip() for line in lines)


def model_files(cfg: Config, which: str, pin: str = "offline", model_ids: list[str] | None = None) -> list[ModelFile]:
    """The model files `invoke verify --models` names: replica-tiny, replica-full, real, none or present;
    `model_ids` narrows them to the models one run uses."""
    if which == "none":
        return []
    from moebench.models import registry

    if which == "present":
        sources = [("replica", "tiny"), ("replica", "full"), ("real", "tiny")]
    elif which in ("replica-tiny", "replica-full"):
        sources = [("replica", which.removeprefix("replica-"))]
    elif which == "real":
        sources = [("real", "tiny")]
    else:
        raise UserError("--models", f"unknown model set {which!r}",
                        "use one of: replica-tiny, replica-full, real, none, present")
    files = []
    for source, scale in sources:
        for model_id in model_ids or cfg.models.models:
            ref = registry.resolve(cfg, model_id, source, scale, pin)
            if which == "present" and not ref.path.is_file():
                continue
            files.append(ModelFile(f"{model_id} ({ref.label})", ref.path, ref.expected_sha256, ref.pin_key,
                                   ref.label))
    return files


def verify_and_report(cfg: Config, device: str, pin: str, models: str = "present",
                      model_ids: list[str] | None = None, verbose: bool = False) -> bool:
    """`invoke verify`: one line per stage, after the full table when `verbose` or when any check failed;
    True only when every check passed."""
    replica_pin = "offline" if models.startswith("replica") or models == "present" else pin
    stages = verify_stages(cfg, device, pin, model_files(cfg, models, replica_pin, model_ids), model_set=models)
    checks = [check for stage in stages for check in stage.checks]
    verified = all(check.ok for check in checks)
    if verbose or not verified:
        print(render_table(checks), file=sys.stdout, flush=True)
    print("\n".join(stage.line() for stage in stages), file=sys.stdout, flush=True)
    return verified
