"""Adversarial guests that call one WASI import with raw arguments.

``Guest(name)`` instantiates a hand-written module whose export ``go`` forwards its
arguments to the import ``name``, so a test can pass any pointer, length or count: what the
host allocates (:func:`host_peak`), which errno comes back, and that nothing leaks or hangs.
A guest must not make the Python host allocate in proportion to a length or count it chose.
"""

from __future__ import annotations

import struct
import threading
import tracemalloc
from collections.abc import Callable, Sequence
from typing import TypeVar

import wasmtime

from enarx.wasi.fdtable import FdTable, Handle
from enarx.wasi.host import SIGNATURES, WasiHost

__all__ = [
    "PAGE", "RIGHT_FD_READ", "RIGHT_FD_WRITE", "Guest", "MiB", "Rescue", "events", "host_peak",
    "iovec_array", "sub_clock", "sub_fd",
]  # fmt: skip

_ENGINE = wasmtime.Engine()
MiB = 1 << 20
PAGE = 1 << 16
RIGHT_FD_READ = 1 << 1
RIGHT_FD_WRITE = 1 << 6
T = TypeVar("T")


class Guest:
    """One instance whose export ``go`` forwards its arguments to one WASI import."""

    def __init__(
        self,
        name: str,
        *,
        pages: int = 1,
        handles: Sequence[Handle] = (),
        fds: FdTable | None = None,
    ) -> None:
        self.fds = FdTable() if fds is None else fds
        for h in handles:
            self.fds.add(h)
        sig, _ = SIGNATURES[name]
        kinds = sig[1:] if sig.startswith("m") else sig
        params = " ".join("i32" if k == "i" else "i64" for k in kinds)
        gets = " ".join(f"local.get {i}" for i in range(len(kinds)))
        wat = f"""(module
          (import "wasi_snapshot_preview1" "{name}" (func $f (param {params}) (result i32)))
          (memory (export "memory") {pages})
          (func (export "go") (param {params}) (result i32) {gets} call $f))"""
        self.host = WasiHost(args=[b"guest"], env=[], fds=self.fds)
        self.store = wasmtime.Store(_ENGINE)
        linker = wasmtime.Linker(_ENGINE)
        self.host.link(linker)
        inst = linker.instantiate(self.store, wasmtime.Module(_ENGINE, wat))
        exports = inst.exports(self.store)
        memory, go = exports["memory"], exports["go"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(go, wasmtime.Func)
        self.memory, self.go = memory, go

    def write(self, offset: int, data: bytes) -> None:
        self.memory.write(self.store, data, offset)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, offset, offset + n))

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 4), "little")

    def __call__(self, *args: int) -> int:
        result = self.go(self.store, *args)
        if self.host.host_error is not None:
            raise self.host.host_error
        assert isinstance(result, int)
        return result


def host_peak(call: Callable[[], T]) -> tuple[T, int]:
    """Run ``call`` under tracemalloc: (its result, peak bytes the host allocated)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def iovec_array(count: int, buf: int, length: int) -> bytes:
    return struct.pack("<II", buf, length) * count


def sub_clock(userdata: int, timeout_ns: int) -> bytes:
    """A relative monotonic-clock subscription."""
    return struct.pack("<QB7xIxxxxQQH6x", userdata, 0, 1, timeout_ns, 0, 0)


def sub_fd(userdata: int, tag: int, fd: int) -> bytes:
    """An fd subscription: tag 1 fd_read, 2 fd_write."""
    return struct.pack("<QB7xI28x", userdata, tag, fd)


def events(g: Guest, at: int, n: int) -> list[tuple[int, int, int]]:
    """(userdata, errno, type) of each event."""
    return [struct.unpack_from("<QHB", g.read(at + 32 * i, 32)) for i in range(n)]


class Rescue:
    """Runs ``action`` only if the guest's call is still stuck after a long grace period,
    so a regression fails the test instead of hanging the run. Not a timing assertion."""

    def __init__(self, action: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.needed = False
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action: Callable[[], object]) -> None:
        if not self.done.wait(30):
            self.needed = True
            action()

    def __enter__(self) -> Rescue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self._thread.join()
