"""Where the kit keeps what it fetches and builds.

Downloads, extracted sources and builds live under one work directory (`MOEBENCH_HOME`, default
`.moebench/` in the kit's root, git-ignored) so a CI cache or a second checkout can share them;
models live under `models/`, results under `data/` and `results/`.
"""

from __future__ import annotations

import os
from pathlib import Path

from moebench.config import REPO_ROOT


def work_dir() -> Path:
    return Path(os.environ.get("MOEBENCH_HOME", REPO_ROOT / ".moebench")).resolve()


def downloads_dir() -> Path:
    return work_dir() / "downloads"


def sources_dir() -> Path:
    return work_dir() / "src"


def build_dir(device: str, pin: str) -> Path:
    return work_dir() / "build" / f"{device}-{pin}"


def models_dir() -> Path:
    return Path(os.environ.get("MOEBENCH_MODELS", REPO_ROOT / "models")).resolve()


def raw_dir() -> Path:
    return REPO_ROOT / "data" / "raw"


def processed_dir() -> Path:
    return REPO_ROOT / "data" / "processed"


def results_dir() -> Path:
    return REPO_ROOT / "results"
