"""Bounds-checked access to guest linear memory.

Every helper takes the memoryview of the whole linear memory for the current call. A
pointer or length that leaves it raises WasiError(EFAULT); memoryview slicing alone would
silently clamp, so lengths are checked explicitly.

Nothing here lets a guest make the host allocate in proportion to a length it chose: an
iovec array is read at most ``MAX_IOVECS`` entries and ``MAX_IO_BYTES`` deep (the rest is
a short read/write, always a valid answer), and :func:`fill_random` writes in chunks.
"""

from __future__ import annotations

import os

from enarx.wasi.abi import IOVEC, Errno, WasiError

__all__ = [
    "MAX_IOVECS", "MAX_IO_BYTES", "advance", "clip", "fill_random", "iovecs", "read_bytes",
    "view", "write_bytes",
]  # fmt: skip

_unpack_iovec = IOVEC.unpack_from

# Linux's IOV_MAX and MAX_RW_COUNT: one host call never takes more buffers or bytes. Without
# them a 64 MiB guest could hand over 8M iovecs (about 1.6 GB of host memoryviews), or
# 1024 aliases of one large buffer that a gathering copy would multiply.
MAX_IOVECS = 1024
MAX_IO_BYTES = 0x7FFFF000
_RANDOM_CHUNK = 1 << 20


def iovecs(mv: memoryview, ptr: int, count: int) -> list[memoryview]:
    """The guest's (c)iovec array as views into guest memory.

    The whole array must lie in memory (EFAULT otherwise, as the guest described it), but
    only the first ``MAX_IOVECS`` entries and ``MAX_IO_BYTES`` bytes are used.
    """
    size = len(mv)
    if ptr + 8 * count > size:
        raise WasiError(Errno.FAULT)
    out = []
    room = MAX_IO_BYTES
    for i in range(min(count, MAX_IOVECS)):
        buf, ln = _unpack_iovec(mv, ptr + 8 * i)
        if buf + ln > size:
            raise WasiError(Errno.FAULT)
        if ln >= room:
            out.append(mv[buf : buf + room])
            break
        room -= ln
        out.append(mv[buf : buf + ln])
    return out


def advance(bufs: list[memoryview], n: int) -> list[memoryview]:
    """``bufs`` without its first ``n`` bytes (views, never copies)."""
    i = 0
    while i < len(bufs) and n >= len(bufs[i]):
        n -= len(bufs[i])
        i += 1
    rest = bufs[i:]
    if rest and n:
        rest[0] = rest[0][n:]
    return rest


def clip(bufs: list[memoryview], limit: int) -> list[memoryview]:
    """The first ``limit`` bytes of ``bufs`` (views, never copies)."""
    out = []
    for b in bufs:
        if len(b) >= limit:
            out.append(b[:limit])
            break
        out.append(b)
        limit -= len(b)
    return out


def fill_random(mv: memoryview, ptr: int, length: int) -> None:
    """random_get: bounds first, then chunk by chunk (never ``length`` bytes at once)."""
    dest = view(mv, ptr, length)
    for at in range(0, length, _RANDOM_CHUNK):
        k = min(_RANDOM_CHUNK, length - at)
        dest[at : at + k] = os.urandom(k)


def read_bytes(mv: memoryview, ptr: int, length: int) -> bytes:
    if ptr + length > len(mv):
        raise WasiError(Errno.FAULT)
    return bytes(mv[ptr : ptr + length])


def write_bytes(mv: memoryview, ptr: int, data: bytes | bytearray | memoryview) -> None:
    end = ptr + len(data)
    if end > len(mv):
        raise WasiError(Errno.FAULT)
    mv[ptr:end] = data


def view(mv: memoryview, ptr: int, length: int) -> memoryview:
    if ptr + length > len(mv):
        raise WasiError(Errno.FAULT)
    return mv[ptr : ptr + length]
