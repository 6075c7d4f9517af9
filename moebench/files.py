"""Whole-or-nothing file writes: a file the kit writes is either its old self or complete.

The bytes go to a hidden sibling (`.<name>.<pid>.partial`, a name the bundle skips and no glob of
the kit's matches), are fsynced, and replace the target in one rename. A write that fails removes
the sibling and re-raises (naming the target), so each caller turns the OSError into its own
one-line error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` (text as UTF-8) to `path` so that no reader ever sees a part of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # a read-only disk refuses even this; the first error is the news
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename == str(partial):
            exc.filename = str(path)  # errors name the file the user knows, not the hidden sibling
        raise
    return path
