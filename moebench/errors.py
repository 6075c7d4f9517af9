"""User-facing errors.

A `UserError` is a problem with the user's input or environment (a malformed config, a hash
mismatch, a missing binary). The CLI prints it as one line and exits 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_USER_ERROR = 2


class UserError(Exception):
    """An error the user can fix: says where (file, key), what is wrong, and how to fix it."""

    def __init__(self, where: str | Path, problem: str, fix: str, key: str | None = None):
        self.where = str(where)
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        location = f"{self.where}: {self.key}" if self.key else self.where
        return f"error: {location}: {self.problem} (fix: {self.fix})"


class ConfigError(UserError):
    """A config or lock file is malformed, has an unknown key, a wrong type or a dangling reference."""


class IntegrityError(UserError):
    """A hash does not match its pin: a source archive, a source tree, a binary or a model."""


class OutputWriteError(UserError):
    """A file could not be written: a full disk, a read-only file system, an I/O error. Never a half
    file that looks complete: what was written is kept whole or removed."""


# OS errors that mean "this disk cannot take the write", as opposed to a bug in the kit.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES,
                          errno.EPERM})


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def describe_os_error(exc: OSError) -> str:
    return exc.strerror or str(exc)
