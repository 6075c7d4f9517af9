"""Shared by the runner tests: a copied config and smoke runs through the kit's own pinned build.

Binaries come from the build manifest of the cpu build of the offline pin and models from the
kit's tiny replicas, resolved by run/experiment.py itself (`resolve_binary`, `resolve_model_path`) after a
real `invoke verify` (`check_verified`), so every provenance field of a test record is filled the
way a user's run fills it. The session fixtures `pinned_bin_dir` and `tiny_replica_paths`
(tests/conftest.py) build or reuse both; `expect_kit_resolution` checks that run/experiment.py resolves to
exactly what they produced. Only a test that deliberately swaps the model (a truncated GGUF)
replaces `resolve_model_path` (`swap_model`).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from moebench.config import CONFIG_DIR, REPO_ROOT, load_config

DEVICE = "cpu"
PIN = "offline"
EXPERIMENT = "experiment_1_efficiency"
MODEL = "llama-3.2-1b-instruct-q4km"
# One thread: on a shared 2-core host, two OpenMP threads spin on each other's barrier and a cell
# becomes 25x slower, which would make every timing below depend on the neighbours' load.
THREADS = 1
# Manifest-derived and host provenance that a run of the kit's own build must fill (never null).
FILLED_PROVENANCE = ("binary_sha256", "binary_name", "llama_cpp_commit", "llama_cpp_pin", "source_tree_hash",
                     "source_channel", "compiler", "build_flags", "toolchain_id", "host", "kit_commit",
                     "config_sha256", "model_sha256", "model_path")


def config_dir(tmp: Path) -> Path:
    """configs/ copied to `tmp/configs`, scripts/ linked beside it (devices.yaml names patch files
    relative to the kit's root)."""
    out = tmp / "configs"
    out.mkdir(parents=True, exist_ok=True)
    for path in CONFIG_DIR.glob("*.yaml"):
        shutil.copy(path, out / path.name)
    scripts = tmp / "scripts"
    if not scripts.exists():
        scripts.symlink_to(REPO_ROOT / "scripts")
    return out


def load_test_config(tmp: Path):
    return load_config(config_dir(tmp))


def write_experiment_overrides(cfg_dir: Path, **smoke: Any) -> None:
    """Change the smoke reduction of a copied config (e.g. long generations for the fault tests)."""
    import yaml

    path = cfg_dir / "experiments.yaml"
    data = yaml.safe_load(path.read_text())
    data["smoke"].update(smoke)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def kit_resolution_problem(cfg_dir: Path, mode: str, bin_dir: Path, model: Path) -> str | None:
    """Why run/experiment.py would not run `bin_dir`'s binary on `model`, or None when it resolves to them."""
    from moebench.run import engines, experiment as run

    binary = run.resolve_binary(DEVICE, PIN, engines.BINARY_FOR_MODE[mode])[0]
    if binary.resolve().parent != Path(bin_dir).resolve():
        return f"run/experiment.py resolves {binary}, the pinned build is in {bin_dir}"
    resolved = run.resolve_model_path(load_config(cfg_dir), MODEL, "replica", "tiny")
    if resolved.resolve() != Path(model).resolve():
        return f"run/experiment.py resolves {resolved}, the tiny replica is {model}"
    return None


def expect_kit_resolution(cfg_dir: Path, mode: str, bin_dir: Path, model: Path) -> None:
    problem = kit_resolution_problem(cfg_dir, mode, bin_dir, model)
    assert problem is None, problem


def swap_model(monkeypatch, model: Path) -> None:
    """Run `model` instead of the replica (a deliberately broken file); binaries stay the kit's."""
    from moebench.run import experiment as run

    monkeypatch.setattr(run, "resolve_model_path", lambda cfg, model_id, source, scale: model)


def run_smoke(cfg_dir: Path, output: Path, mode: str, resume: bool = False, model: str | list[str] = MODEL,
              order: str = "interleaved", order_seed: int | None = None, allow_unverified: bool = False):
    """The smoke matrix of `model` (or models) through run_experiment, verified unless told."""
    from moebench.run import experiment as run

    return run.run_experiment(load_config(cfg_dir), DEVICE, EXPERIMENT, output, smoke=True,
                              only_models=[model] if isinstance(model, str) else model,
                              threads_override=THREADS, resume=resume, allow_unverified=allow_unverified, pin=PIN,
                              runner_mode=mode, order=order, order_seed=order_seed)


def assert_kit_provenance(record: dict[str, Any], bin_dir: Path) -> None:
    """The record names the pinned build it ran: manifest hash of its binary, commit, flags, host."""
    import json

    prov = record["provenance"]
    missing = [name for name in FILLED_PROVENANCE if prov.get(name) is None]
    assert not missing, f"provenance fields null in a run of the kit's build: {missing}"
    manifest = json.loads((Path(bin_dir).parent / "manifest.json").read_text())
    assert prov["binary_sha256"] == manifest["binaries"][prov["binary_name"]]["sha256"]
    assert prov["llama_cpp_commit"] == manifest["commit"]
    assert prov["source_tree_hash"] == manifest["source_tree_hash"]
    assert prov["verified"] is True and prov["allow_unverified"] is False


def main(argv: list[str]) -> int:
    """`runner_support.py CFG_DIR OUTPUT MODE new|resume BIN_DIR MODEL`: one smoke run in this
    process (the SIGINT and lock tests drive it as a subprocess). Exits 3 when run/experiment.py would not run
    the given pinned build and replica, 2 on a user error, 130 when interrupted.
    MOEBENCH_TEST_CLOCK_JUMP_S=N steps the wall clock N seconds back after the first record's start."""
    from moebench.errors import UserError

    jump = float(os.environ.get("MOEBENCH_TEST_CLOCK_JUMP_S", "0"))
    if jump:
        step_wall_clock_back(jump)

    cfg_dir, output, mode, resume, bin_dir, model = argv
    problem = kit_resolution_problem(Path(cfg_dir), mode, Path(bin_dir), Path(model))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 3
    try:
        summary = run_smoke(Path(cfg_dir), Path(output), mode, resume=resume == "resume")
    except UserError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    return 130 if summary.interrupted else 0


def step_wall_clock_back(seconds: float) -> None:
    """Once the first cell has run, the wall clock (time.time and the records' started_at) is
    `seconds` behind: what an NTP step or a manual `date -s` mid-run looks like to the harness."""
    import time
    from datetime import datetime, timedelta, timezone

    from moebench.run import engines, provenance

    jumped = [False]
    real_time = time.time

    def utc_now() -> str:
        now = datetime.now(timezone.utc) - (timedelta(seconds=seconds) if jumped[0] else timedelta())
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    for engine in engines.ENGINES.values():
        def run_cell(self, *args, _original=engine.run_cell):
            try:
                return _original(self, *args)
            finally:
                jumped[0] = True
        engine.run_cell = run_cell
    provenance.utc_now = utc_now
    time.time = lambda: real_time() - (seconds if jumped[0] else 0.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
