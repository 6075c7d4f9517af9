"""Where the kit keeps what it fetches and builds.

Downloads, extracted sources and builds live under one work directory (`MOEBENCH_HOME`, default
`.moebench/` in the kit's root, git-ignored) so a CI cache, a second checkout or a toolchain image
(which mounts it) can share them;
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


def running_image() -> str | None:
    """The toolchain image this process runs in, as the launcher (moebench.images.launch) names it."""
    return os.environ.get("MOEBENCH_IMAGE") or None


def build_dir(device: str, pin: str, work_root: Path | None = None) -> Path:
    """Builds made in an image live apart from the host's: the same device and pin, another toolchain."""
    root = Path(work_root).resolve() if work_root is not None else work_dir()
    image = running_image()
    return root / "build" / (f"image-{image}" if image else "") / f"{device}-{pin}"


def models_dir() -> Path:
    return Path(os.environ.get("MOEBENCH_MODELS", REPO_ROOT / "models")).resolve()


def raw_dir() -> Path:
    return REPO_ROOT / "data" / "raw"


def processed_dir() -> Path:
    return REPO_ROOT / "data" / "processed"


def results_dir() -> Path:
    return REPO_ROOT / "results"
