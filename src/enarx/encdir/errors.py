"""Errors of the encrypted-directory core.

Every failure is an :class:`EncDirError` (an :class:`~enarx.errors.ResourceError`, exit code
2; :class:`EncDirCorrupt` exits 4, as failed evidence). Two kinds matter to callers: :class:`EncDirKeyError` (the key is malformed or is not
this directory's: refused before a workload starts) and :class:`EncDirCorrupt` (an
authentication check failed: tampered, truncated, reordered, swapped or rolled-back data;
the WASI layer answers EIO, never wrong data). File-system outcomes a plain directory also
has (no such file, exists, not empty, ...) are :class:`EncDirFsError`, which is also an
:class:`OSError` carrying the errno a POSIX call would have set.
"""

from __future__ import annotations

import errno as _errno
import os

from enarx.errors import ResourceError

__all__ = ["EncDirCorrupt", "EncDirError", "EncDirFsError", "EncDirKeyError"]


class EncDirError(ResourceError):
    """Base of every error :mod:`enarx.encdir` raises on purpose."""

    #: the errno the WASI layer reports for this error
    errno_value: int = _errno.EIO


class EncDirKeyError(EncDirError):
    """The key is not 32 bytes, or is not the key this directory was created with."""

    default_hint = ("use the 32-byte key this directory was created with "
                    "(e.g. made by `head -c 32 /dev/urandom > key`)")


class EncDirCorrupt(EncDirError):
    """Authentication failed: the host changed, cut, reordered, swapped or rolled back data."""

    exit_code = 4  # like failed evidence: the data's integrity check failed
    errno_value = _errno.EIO
    default_hint = ("the host copy of the encrypted directory was modified outside the Keep; "
                    "restore it from a backup")


class EncDirFsError(EncDirError, OSError):
    """An ordinary file-system outcome (ENOENT, EEXIST, ENOTEMPTY, ...), with its errno."""

    def __init__(self, err: int, message: str | None = None, *, hint: str | None = None) -> None:
        super().__init__(message or os.strerror(err), hint=hint)
        self.errno = err
        self.strerror = os.strerror(err)
        self.errno_value = err
