"""Small host-side helpers of :mod:`enarx.encdir.encdir`: guest path parsing, exclusive
creation of new host files, temporary names."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

from enarx.encdir.errors import EncDirFsError

__all__ = ["GuestPath", "Parts", "parts_of", "tmp_name", "write_new"]

GuestPath = str | bytes | Sequence[str | bytes]
Parts = tuple[bytes, ...]


def parts_of(path: GuestPath) -> Parts:
    if isinstance(path, str | bytes):
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        out: list[bytes] = []
        for comp in raw.split(b"/"):
            if comp in (b"", b"."):
                continue
            if comp == b"..":
                if not out:
                    raise EncDirFsError(errno.EPERM, "path leaves the encrypted directory")
                out.pop()
                continue
            out.append(comp)
        return tuple(out)
    parts = tuple(c.encode("utf-8", "surrogateescape") if isinstance(c, str) else bytes(c)
                  for c in path)
    for c in parts:
        if c in (b"", b".", b"..") or b"/" in c:
            raise EncDirFsError(errno.EINVAL, f"invalid path component {c!r}")
    return parts


def write_new(path: str, data: bytes) -> None:
    """Create ``path`` (never an existing one) holding ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def tmp_name(parent: str, tag: str) -> str:
    return os.path.join(parent, f".{tag}-{os.urandom(8).hex()}.tmp")
