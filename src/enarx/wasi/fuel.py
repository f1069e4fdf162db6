"""Fuel for host work: with ``--fuel``, host calls pay for the bytes they move.

wasmtime charges fuel for wasm instructions only; a host call that fills 64 MiB costs the
guest one ``call``. So every host call that moves guest-chosen amounts of data (random_get,
fd_read/fd_write/fd_pread/fd_pwrite, fd_readdir, sock_recv/sock_send) takes
``ceil(bytes / BYTES_PER_FUEL)`` units from the same store fuel, read and written through
the C API on the caller's store context. Reads and writes are clipped to what the remaining
fuel pays for (a short read or write is a valid answer); a call that cannot pay for even
one byte, or a random_get that cannot pay for all of it, raises :class:`FuelExhausted`, which
the host turns into a trap the runtime reports as out of fuel (exit 124), as for wasm code.
"""

from __future__ import annotations

import ctypes

from wasmtime import _ffi as ffi

__all__ = ["BYTES_PER_FUEL", "FuelExhausted", "affordable", "charge"]

#: One fuel unit per 8 bytes (a 64-bit word): about what a wasm copy loop spends.
BYTES_PER_FUEL = 8

_get_fuel = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64))(
    ("wasmtime_context_get_fuel", ffi.dll)
)
_set_fuel = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64)(
    ("wasmtime_context_set_fuel", ffi.dll)
)
_error_delete = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(("wasmtime_error_delete", ffi.dll))


class FuelExhausted(BaseException):
    """A host call cannot be paid for: the guest is stopped with a trap (out of fuel)."""


def _fuel(ctx: ctypes.c_void_p | None) -> int:
    out = ctypes.c_uint64(0)
    err = _get_fuel(ctx, ctypes.byref(out))
    if err:  # fuel is not enabled in this store: nothing to charge
        _error_delete(err)
        raise RuntimeError("fuel metering requested on a store without fuel")
    return out.value


def affordable(ctx: ctypes.c_void_p | None) -> int:
    """How many bytes the remaining fuel pays for."""
    return _fuel(ctx) * BYTES_PER_FUEL


def charge(ctx: ctypes.c_void_p | None, nbytes: int) -> None:
    """Take the fuel for ``nbytes``; all of it or, if short, none and FuelExhausted."""
    cost = -(-nbytes // BYTES_PER_FUEL)
    left = _fuel(ctx)
    if cost > left:
        err = _set_fuel(ctx, 0)
        if err:
            _error_delete(err)
        raise FuelExhausted()
    if cost:
        err = _set_fuel(ctx, left - cost)
        if err:
            _error_delete(err)
