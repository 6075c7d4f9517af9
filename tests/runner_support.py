"""Shared by the runner tests: a config in a temp dir and the real llama.cpp binaries of this host.

Binaries come from MOEBENCH_TEST_BIN (default /tmp/b1/bin, a build of the pinned offline tree) and
the tiny model from MOEBENCH_TEST_MODEL or the first models/replica-tiny/*.gguf; tests needing them
skip when they are absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from moebench.config import CONFIG_DIR, REPO_ROOT, load_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"
BIN_DIR = Path(os.environ.get("MOEBENCH_TEST_BIN", "/tmp/b1/bin"))


def config_dir(tmp: Path) -> Path:
    """configs/ copied to `tmp`, with the fixture prompts.yaml where the kit has none yet."""
    out = tmp / "configs"
    out.mkdir(parents=True, exist_ok=True)
    for path in CONFIG_DIR.glob("*.yaml"):
        shutil.copy(path, out / path.name)
    scripts = tmp / "scripts"  # devices.yaml names patch files relative to the kit's root
    if (REPO_ROOT / "scripts").is_dir() and not scripts.exists():
        scripts.symlink_to(REPO_ROOT / "scripts")
    if not (out / "prompts.yaml").exists():
        shutil.copy(FIXTURES / "configs" / "prompts.yaml", out / "prompts.yaml")
    return out


def load_test_config(tmp: Path):
    return load_config(config_dir(tmp))


def tiny_model() -> Path | None:
    """MOEBENCH_TEST_MODEL, else the first tiny replica of the kit."""
    explicit = os.environ.get("MOEBENCH_TEST_MODEL")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    found = sorted((REPO_ROOT / "models" / "replica-tiny").glob("*.gguf"))
    return found[0] if found else None


def have_binaries() -> bool:
    return all((BIN_DIR / name).is_file() for name in ("llama-cli", "llama-server", "llama-bench"))


def patch_resolvers(monkeypatch, model: Path) -> None:
    """Point run.py at the test binaries and model (no build manifest, no verify stage)."""
    from moebench import run

    monkeypatch.setattr(run, "resolve_binary", lambda device, pin, name: (BIN_DIR / name, None, "test binaries: no build manifest"))
    monkeypatch.setattr(run, "resolve_model_path", lambda cfg, model_id, source, scale: model)
    monkeypatch.setattr(run, "check_verified", lambda *a: (False, "tests run unverified test binaries"))


def write_experiment_overrides(cfg_dir: Path, **smoke) -> None:
    """Change the smoke reduction of a copied config (e.g. long generations for the fault tests)."""
    import yaml

    path = cfg_dir / "experiments.yaml"
    data = yaml.safe_load(path.read_text())
    data["smoke"].update(smoke)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def main(argv: list[str]) -> int:
    """Run a smoke matrix in this process (the SIGINT and lock tests drive it as a subprocess)."""
    import sys

    from moebench import run
    from moebench.errors import UserError

    cfg_dir, output, mode, resume, model = argv
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        patch_resolvers(mp, Path(model))
        try:
            summary = run.run_experiment(load_config(Path(cfg_dir)), "cpu", "experiment_1_efficiency", Path(output),
                                         smoke=True, only_models=["llama-3.2-1b-instruct-q4km"], threads_override=2,
                                         resume=resume == "resume", allow_unverified=True, runner_mode=mode)
        except UserError as exc:
            print(exc.one_line(), file=sys.stderr)
            return 2
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
