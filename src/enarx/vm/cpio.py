"""A reproducible writer for the Linux initramfs format (``newc`` cpio, gzip-compressed).

Entries are sorted by path; every entry has mtime 0, uid/gid 0 and inode numbers
assigned in order, and the gzip header carries mtime 0 and no file name, so the same
entries always give the same bytes. This module does no I/O beyond the file object
it is given.
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass

__all__ = ["CpioEntry", "gzip_bytes", "write_newc"]

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class CpioEntry:
    """One archive member. ``mode`` includes the file type bits (``stat.S_IFREG | 0o755``)."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if not self.path or self.path.startswith("/") or ".." in self.path.split("/"):
            raise ValueError(f"cpio entry path must be relative and normal: {self.path!r}")


def _header(ino: int, entry: CpioEntry, size: int, name: bytes) -> bytes:
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, size, 0, 0,
              entry.rdev[0], entry.rdev[1], len(name) + 1, 0)
    return _MAGIC + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def write_newc(entries: list[CpioEntry]) -> bytes:
    """The uncompressed ``newc`` archive of ``entries`` (sorted; duplicate paths refused)."""
    seen: set[str] = set()
    out = io.BytesIO()
    for ino, entry in enumerate(sorted(entries, key=lambda e: e.path), start=1):
        if entry.path in seen:
            raise ValueError(f"duplicate cpio entry: {entry.path}")
        seen.add(entry.path)
        name = entry.path.encode()
        data = entry.data if (stat.S_ISREG(entry.mode) or stat.S_ISLNK(entry.mode)) else b""
        head = _header(ino, entry, len(data), name) + name + b"\0"
        out.write(head + _pad(len(head)))
        out.write(data + _pad(len(data)))
    trailer = CpioEntry(_TRAILER, 0)
    head = _header(0, trailer, 0, _TRAILER.encode()) + _TRAILER.encode() + b"\0"
    out.write(head + _pad(len(head)))
    return out.getvalue()


def gzip_bytes(data: bytes, *, level: int = 6) -> bytes:
    """gzip ``data`` with mtime 0 and no file name in the header (reproducible)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=level) as gz:
        gz.write(data)
    return buf.getvalue()
