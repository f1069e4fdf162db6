"""Bounds-checked access to guest linear memory.

Every helper takes the memoryview of the whole linear memory for the current call. A
pointer or length that leaves it raises WasiError(EFAULT); memoryview slicing alone would
silently clamp, so lengths are checked explicitly.
"""

from __future__ import annotations

from enarx.wasi.abi import IOVEC, Errno, WasiError

_unpack_iovec = IOVEC.unpack_from


def iovecs(mv: memoryview, ptr: int, count: int) -> list[memoryview]:
    """The guest's (c)iovec array as views into guest memory."""
    size = len(mv)
    if ptr + 8 * count > size:
        raise WasiError(Errno.FAULT)
    out = []
    for i in range(count):
        buf, ln = _unpack_iovec(mv, ptr + 8 * i)
        if buf + ln > size:
            raise WasiError(Errno.FAULT)
        out.append(mv[buf : buf + ln])
    return out


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
