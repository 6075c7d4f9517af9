"""The pinned llama.cpp's own tools: its gguf-py package and its llama-quantize.

A replica must be written by the GGUF writer of the llama.cpp that will read it, so gguf-py is
imported from the pinned source tree (never from a PyPI `gguf`, whose constants and tensor lists
may belong to another llama.cpp).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from moebench.config import Config
from moebench.errors import UserError


def pinned_gguf_py_dir(cfg: Config, pin: str) -> Path:
    from moebench.pins.source import fetch_source

    return Path(fetch_source(cfg, pin).gguf_py)


def load_pinned_gguf(cfg: Config, pin: str = "offline") -> ModuleType:
    """Import `gguf` from the gguf-py of the pinned llama.cpp source tree (fetched if needed)."""
    return import_gguf_from(pinned_gguf_py_dir(cfg, pin))


def import_gguf_from(gguf_py: Path) -> ModuleType:
    """Import `gguf` from `gguf_py`, replacing any `gguf` imported from elsewhere."""
    gguf_py = Path(gguf_py).resolve()
    if not (gguf_py / "gguf" / "__init__.py").is_file():
        raise UserError(gguf_py, "not a gguf-py directory (no gguf/__init__.py)",
                        "fetch the pinned llama.cpp source again (invoke build)")
    loaded = sys.modules.get("gguf")
    if loaded is not None and _is_under(loaded, gguf_py):
        return loaded
    for name in [n for n in sys.modules if n == "gguf" or n.startswith("gguf.")]:
        del sys.modules[name]
    if str(gguf_py) in sys.path:
        sys.path.remove(str(gguf_py))
    sys.path.insert(0, str(gguf_py))
    importlib.invalidate_caches()
    module = importlib.import_module("gguf")
    if not _is_under(module, gguf_py):
        raise UserError(gguf_py, f"`import gguf` resolved to {module.__file__}",
                        "remove the other gguf package from the environment")
    return module


def _is_under(module: ModuleType, root: Path) -> bool:
    return Path(module.__file__ or "").resolve().is_relative_to(root)


def quantize_binary(device: str, pin: str) -> Path:
    """The pinned build's llama-quantize for `device` (built by `invoke build`)."""
    from moebench.pins.build import binary_path

    return Path(binary_path(device, pin, "llama-quantize"))
