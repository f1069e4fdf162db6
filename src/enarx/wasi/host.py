"""Binds every ``wasi_snapshot_preview1`` import into a wasmtime ``Linker``.

Why hand-written rather than wasmtime-py's built-in WASI: that one has no preview1
sockets and cannot express Enarx's fd model (``Enarx.toml`` ``files[i]`` is WASI fd ``i``,
TCP listeners, streams and TLS included), so the whole preview1 surface
lives here, with the filesystem confined by :mod:`enarx.wasi.resolve`.

Speed: each import is defined through the raw ``wasmtime_linker_define_func_unchecked``
path (about half the cost of ``Linker.define_func``): one ctypes callback per import gets
the raw value array, and guest memory is one memoryview per call, re-taken from
``wasmtime_memory_data``/``_data_size`` every call because ``memory.grow`` can move it.
The ctypes callback objects are kept on the host so they outlive the linker.

Native fast path: when :mod:`enarx.wasi.native` has its library, ``fd_read``/``fd_write``
are served in C for stdio and regular files, with these Python callbacks as its fallback.
The C side keeps a map guest fd -> host fd. Imports that can drop an fd or change a
handle's rights/flags (``_SYNC_AFTER``) refresh the fds they name before returning to the
guest, so no entry outlives its handle. A new fd takes a number whose entry is empty:
``path_open`` hands it over at once; any other (``sock_accept``) stays in Python, and a
Python-served ``fd_read``/``fd_write`` refreshes its fd's entry too.

Exit and deadlines: ``proc_exit`` and a blocking call that runs into ``deadline`` return a
trap; afterwards ``exit_code`` / ``timed_out`` tell the runtime which it was.
"""

from __future__ import annotations

import ctypes
import functools
import os
import select
import struct
import textwrap
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import wasmtime
from wasmtime import _ffi as ffi

from enarx.wasi import abi, encnative, native
from enarx.wasi.abi import U32, U64, Errno, Filetype, WasiError
from enarx.wasi.encfs import EncDirHandle, EncFileHandle
from enarx.wasi.fdcalls import FdCalls
from enarx.wasi.fdtable import FdTable, FileHandle, StdioHandle
from enarx.wasi.fuel import FuelExhausted
from enarx.wasi.guestmem import fill_random, write_bytes
from enarx.wasi.pathcalls import PathCalls
from enarx.wasi.poll import PollCalls

__all__ = ["MODULE", "SIGNATURES", "DeadlineReached", "WasiHost"]

MODULE = "wasi_snapshot_preview1"

# Raw callback: (env, caller, args_and_results, n) -> wasm_trap_t* (0 = no trap). Values are
# 16-byte wasmtime_val_raw_t slots, so argument i is u64 index 2*i.
_RAW_CB = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.c_size_t,
)
_caller_context = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(
    ("wasmtime_caller_context", ffi.dll)
)
# The two per-call lookups are declared without argtypes and called with prebuilt c_void_p
# objects: ctypes then skips argument conversion, which is most of an FFI call's cost here.
_memory_data = ctypes.CFUNCTYPE(ctypes.c_void_p)(("wasmtime_memory_data", ffi.dll))
_memory_size = ctypes.CFUNCTYPE(ctypes.c_size_t)(("wasmtime_memory_data_size", ffi.dll))
_export_get = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p
)(("wasmtime_caller_export_get", ffi.dll))
_view_memory = ctypes.pythonapi.PyMemoryView_FromMemory
_view_memory.restype = ctypes.py_object
_view_memory.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_PYBUF_WRITE = 0x200

# name -> (parameter kinds, returns errno). 'i' = i32 (read unsigned), 'I' = i64 (unsigned).
# 'm' as first char: the call needs guest memory.
SIGNATURES: dict[str, tuple[str, bool]] = {
    "args_get": ("mii", True),
    "args_sizes_get": ("mii", True),
    "environ_get": ("mii", True),
    "environ_sizes_get": ("mii", True),
    "clock_res_get": ("mii", True),
    "clock_time_get": ("miIi", True),
    "fd_advise": ("iIIi", True),
    "fd_allocate": ("iII", True),
    "fd_close": ("i", True),
    "fd_datasync": ("i", True),
    "fd_fdstat_get": ("mii", True),
    "fd_fdstat_set_flags": ("ii", True),
    "fd_fdstat_set_rights": ("iII", True),
    "fd_filestat_get": ("mii", True),
    "fd_filestat_set_size": ("iI", True),
    "fd_filestat_set_times": ("iIIi", True),
    "fd_pread": ("miiiIi", True),
    "fd_prestat_get": ("mii", True),
    "fd_prestat_dir_name": ("miii", True),
    "fd_pwrite": ("miiiIi", True),
    "fd_read": ("miiii", True),
    "fd_readdir": ("miiiIi", True),
    "fd_renumber": ("ii", True),
    "fd_seek": ("miIii", True),
    "fd_sync": ("i", True),
    "fd_tell": ("mii", True),
    "fd_write": ("miiii", True),
    "path_create_directory": ("miii", True),
    "path_filestat_get": ("miiiii", True),
    "path_filestat_set_times": ("miiiiIIi", True),
    "path_link": ("miiiiiii", True),
    "path_open": ("miiiiiIIii", True),
    "path_readlink": ("miiiiii", True),
    "path_remove_directory": ("miii", True),
    "path_rename": ("miiiiii", True),
    "path_symlink": ("miiiii", True),
    "path_unlink_file": ("miii", True),
    "poll_oneoff": ("miiii", True),
    "proc_exit": ("i", False),
    "proc_raise": ("i", True),
    "sched_yield": ("", True),
    "random_get": ("mii", True),
    "sock_accept": ("miii", True),
    "sock_recv": ("miiiiii", True),
    "sock_send": ("miiiii", True),
    "sock_shutdown": ("ii", True),
}


# Imports that can remove or renumber an fd or change its rights or flags -> positions of
# their fd arguments (in the impl's arguments): the native map entries of those fds are
# refreshed after each call, so a stale entry never reaches a closed host fd. fd_read and
# fd_write run in Python only for fds the C side does not know: that fills the entry in.
_SYNC_AFTER: dict[str, tuple[int, ...]] = {
    "fd_close": (0,), "fd_renumber": (0, 1), "fd_fdstat_set_flags": (0,),
    "fd_fdstat_set_rights": (0,), "fd_read": (1,), "fd_write": (1,),
}  # fmt: skip


class _ProcExit(BaseException):
    """Unwinds out of a host call when the guest calls proc_exit."""


class DeadlineReached(BaseException):
    """A blocking host call ran into the run's deadline; the guest is stopped with a trap."""


def _callback_source(sig: str, returns: bool) -> str:
    """Python source of one raw callback; generated so each import unpacks its own
    arguments inline (the hot path is a handful of attribute-free operations)."""
    mem = sig.startswith("m")
    kinds = sig[1:] if mem else sig
    args = []
    if mem:
        args.append("view(caller)")
    for i, k in enumerate(kinds):
        args.append(f"vals[{2 * i}] & 0xFFFFFFFF" if k == "i" else f"vals[{2 * i}]")
    call = f"impl({', '.join(args)})"
    body = f"vals[0] = {call}" if returns else call
    return (
        "def cb(env, caller, vals, n):\n"
        "    try:\n"
        f"        {body}\n"
        "        return 0\n"
        "    except WasiError as e:\n"
        "        vals[0] = e.errno\n"
        "        return 0\n"
        "    except struct.error:\n"
        "        vals[0] = FAULT\n"
        "        return 0\n"
        "    except BaseException as e:\n"
        "        return fail(e)\n"
    )


@functools.cache
def _factories() -> dict[tuple[str, bool], Callable[..., Any]]:
    """A callback factory per distinct signature, all compiled by one ``exec`` on first use:
    one compile instead of one per import per run is ~10 ms of every start-up."""
    shapes = sorted(set(SIGNATURES.values()))
    src = [
        f"def make_{i}(impl, view, fail):\n"
        + textwrap.indent(_callback_source(sig, ret), "    ")
        + "    return cb\n"
        for i, (sig, ret) in enumerate(shapes)
    ]
    scope: dict[str, Any] = {"WasiError": WasiError, "struct": struct, "FAULT": int(Errno.FAULT)}
    exec("\n".join(src), scope)
    return {shape: scope[f"make_{i}"] for i, shape in enumerate(shapes)}


class WasiHost(FdCalls, PathCalls, PollCalls):
    """The WASI preview1 host for one run of one guest."""

    def __init__(
        self,
        *,
        args: Sequence[bytes],
        env: Sequence[tuple[bytes, bytes]],
        fds: FdTable,
        deadline: float | None = None,
    ) -> None:
        self.args = [bytes(a) for a in args]
        self.env = [bytes(k) + b"=" + bytes(v) for k, v in env]
        self.fds = fds
        self.deadline = deadline
        for _fd, h in fds.items():
            # Socket handles wait inside their calls; this lets those waits end at the deadline.
            attach = getattr(h, "attach_deadline", None)
            if attach is not None:
                attach(self.check_deadline)
        self.exit_code: int | None = None
        self._timed_out = False
        self._fastio: native.FastIO | None = None
        self._pollers: dict[tuple[int, int], select.poll] = {}
        self.host_error: BaseException | None = None  # an unexpected exception, for debugging
        self._callbacks: list[Any] = []  # keep ctypes callbacks alive
        self._functypes: list[wasmtime.FuncType] = []
        self._linked = False
        self._ctx: ctypes.c_void_p | None = None
        self._mem = ffi.wasmtime_extern_t()
        self._mem_ptr = ctypes.c_void_p(0)
        self._mv_size = -1
        self._mv = memoryview(b"")

    # --- binding ------------------------------------------------------------------------
    def link(self, linker: wasmtime.Linker) -> None:
        """Define every wasi_snapshot_preview1 import in ``linker``.

        Call once: the host then serves the one Store the guest is instantiated in.
        """
        if self._linked:
            raise RuntimeError("WasiHost.link() called twice: use one WasiHost per run")
        self._linked = True
        # With fuel, every read/write is charged in Python (the C side also checks the store).
        lib = native.library() if native.enabled() and not self.fuel_metered else None
        raws: dict[str, Any] = {}
        for name, (sig, returns) in SIGNATURES.items():
            impl = getattr(self, "_" + name)
            if lib is not None and name == "path_open":
                impl = self._publishing(impl)
            elif lib is not None and name in _SYNC_AFTER:
                impl = self._syncing(impl, _SYNC_AFTER[name])
            make = _factories()[(sig, returns)]
            raws[name] = _RAW_CB(make(impl, self._view, self._fail_for(name)))
        if lib is not None:
            addr = ctypes.cast(raws["fd_read"], ctypes.c_void_p).value or 0
            self._fastio = native.FastIO(
                lib, addr, ctypes.cast(raws["fd_write"], ctypes.c_void_p).value or 0
            )
            for fd, h in self.fds.items():
                self._native_sync(fd)
                if isinstance(h, EncDirHandle):
                    encnative.ready(lib)  # its one-time cost before the guest runs
            self._fastio.set_deadline(self.deadline)  # run() sets it before link()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        for name, (sig, returns) in SIGNATURES.items():
            kinds = sig[1:] if sig.startswith("m") else sig
            ft = wasmtime.FuncType(
                [i32 if k == "i" else i64 for k in kinds], [i32] if returns else []
            )
            raw = raws[name]
            env: ctypes.c_void_p | None = None
            if self._fastio is not None and name in ("fd_read", "fd_write"):
                fn = self._fastio.fd_read if name == "fd_read" else self._fastio.fd_write
                cb = ctypes.cast(fn, ffi.wasmtime_func_unchecked_callback_t)
                env = self._fastio.state  # the C side's state; it calls `raw` to fall back
            else:
                cb = ctypes.cast(raw, ffi.wasmtime_func_unchecked_callback_t)
            self._callbacks += [raw, cb]
            self._functypes.append(ft)
            mod, nm = MODULE.encode(), name.encode()
            err = ffi.wasmtime_linker_define_func_unchecked(
                linker.ptr(), mod, len(mod), nm, len(nm), ft.ptr(), cb, env,
                ctypes.CFUNCTYPE(None, ctypes.c_void_p)(),  # NULL: no finalizer
            )  # fmt: skip
            if err:
                raise wasmtime.WasmtimeError._from_ptr(err)

    # --- native fast path ---------------------------------------------------------------
    @property
    def timed_out(self) -> bool:
        """A blocking host call (Python or native) ran into the deadline."""
        return self._timed_out or (self._fastio is not None and self._fastio.stats()[2])

    @timed_out.setter
    def timed_out(self, value: bool) -> None:
        self._timed_out = value

    def native_stats(self) -> tuple[int, int] | None:
        """(fd_read/fd_write calls served in C, calls handed to Python); None: no native path."""
        if self._fastio is None:
            return None
        served, fallback, _ = self._fastio.stats()
        return served, fallback

    def _syncing(self, impl: Callable[..., int], at: tuple[int, ...]) -> Callable[..., int]:
        def call(*args: Any) -> int:
            try:
                return impl(*args)
            finally:
                for i in at:
                    self._native_sync(args[i])

        return call

    def _publishing(self, impl: Callable[..., int]) -> Callable[..., int]:
        """path_open, then hand the new fd to the C side at once (its first read or write
        is then native too). The fd is the one path_open just wrote to guest memory."""

        def call(mv: memoryview, *args: int) -> int:
            res = impl(mv, *args)
            if res == 0:
                self._native_sync(U32.unpack_from(mv, args[-1])[0])
            return res

        return call

    def _native_sync(self, fd: int) -> None:
        """Tell the C side whether it may serve ``fd``: an exact StdioHandle (blocking) or
        FileHandle on a regular file, with the rights it has, or a readable file of an
        encrypted pre-open (reads only); all others stay in Python."""
        assert self._fastio is not None
        h = self.fds.lookup(fd)
        if h is None:
            self._fastio.set(fd, None)
            return
        entry: tuple[int, int] | None = None
        t = type(h)
        if isinstance(h, EncFileHandle):
            if h.rights_base & abi.RIGHT_FD_READ and encnative.attach(
                self._fastio, fd, h.file, h.pos
            ):
                return
        elif (
            (t is StdioHandle and not h.fdflags)
            or (t is FileHandle and h.filetype == Filetype.REGULAR_FILE)
        ):
            flags = native.F_STDIO if t is StdioHandle else 0
            if h.rights_base & abi.RIGHT_FD_READ:
                flags |= native.F_READ
            if h.rights_base & abi.RIGHT_FD_WRITE:
                flags |= native.F_WRITE
            entry = (h.host_fd, flags)  # type: ignore[attr-defined]
        self._fastio.set(fd, entry)

    def _fail_for(self, name: str) -> Callable[[BaseException], int]:
        def fail(exc: BaseException) -> int:
            if isinstance(exc, _ProcExit):
                msg = f"enarx: proc_exit({self.exit_code})"
            elif isinstance(exc, DeadlineReached):
                self.timed_out = True
                msg = "enarx: deadline reached in a blocking host call"
            elif isinstance(exc, FuelExhausted):
                self.out_of_fuel = True
                msg = "enarx: out of fuel in a host call"
            else:
                self.host_error = exc
                msg = f"enarx: host error in {name}: {type(exc).__name__}"
            data = msg.encode()
            trap = ffi.wasmtime_trap_new(data, len(data))
            return ctypes.cast(trap, ctypes.c_void_p).value or 0

        return fail

    def _view(self, caller: int) -> memoryview:
        """The guest's linear memory for this call.

        One FFI call in the common case: memory never shrinks and only moves when it grows,
        so an unchanged size means the cached view is still exact.
        """
        ctx = self._ctx
        if ctx is None:
            ctx = self._bind_memory(caller)
        n = _memory_size(ctx, self._mem_ptr)
        if n != self._mv_size:
            p = _memory_data(ctx, self._mem_ptr)
            self._mv = _view_memory(p, n, _PYBUF_WRITE)
            self._mv_size = n
        return self._mv

    def _bind_memory(self, caller: int) -> ctypes.c_void_p:
        """Find the guest's exported memory on the first call that needs it.

        The store context is cached: a WasiHost serves exactly one Store (one run).
        """
        ext = ffi.wasmtime_extern_t()
        if (
            not _export_get(caller, b"memory", 6, ctypes.addressof(ext))
            or cast(int, ext.kind) != ffi.WASMTIME_EXTERN_MEMORY.value  # an int at run time
        ):
            raise WasiError(Errno.FAULT)  # no exported memory: nothing to point into
        self._mem = ext
        self._mem_ptr = ctypes.c_void_p(ctypes.addressof(ext.of.memory))
        self._ctx = ctypes.c_void_p(_caller_context(caller))
        self._mv_size = -1
        return self._ctx

    def check_deadline(self) -> float | None:
        """Seconds left before the deadline (None: no deadline); raises once it is past."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineReached()
        return left

    # --- args, environment ------------------------------------------------------------------
    @staticmethod
    def _sizes(mv: memoryview, items: list[bytes], count_ptr: int, size_ptr: int) -> int:
        U32.pack_into(mv, count_ptr, len(items))
        U32.pack_into(mv, size_ptr, sum(len(a) + 1 for a in items))
        return 0

    @staticmethod
    def _strings(mv: memoryview, items: list[bytes], ptrs: int, buf: int) -> int:
        for i, item in enumerate(items):
            U32.pack_into(mv, ptrs + 4 * i, buf)
            write_bytes(mv, buf, item + b"\0")
            buf += len(item) + 1
        return 0

    def _args_sizes_get(self, mv: memoryview, argc: int, size: int) -> int:
        return self._sizes(mv, self.args, argc, size)

    def _args_get(self, mv: memoryview, argv: int, buf: int) -> int:
        return self._strings(mv, self.args, argv, buf)

    def _environ_sizes_get(self, mv: memoryview, count: int, size: int) -> int:
        return self._sizes(mv, self.env, count, size)

    def _environ_get(self, mv: memoryview, environ: int, buf: int) -> int:
        return self._strings(mv, self.env, environ, buf)

    # --- clocks, random, process ------------------------------------------------------------
    def _clock_res_get(self, mv: memoryview, clock_id: int, out: int) -> int:
        if clock_id > abi.CLOCK_THREAD_CPUTIME:
            return Errno.INVAL
        res = time.clock_getres(_CLOCKS[clock_id])
        U64.pack_into(mv, out, max(1, round(res * 1e9)))
        return 0

    def _clock_time_get(self, mv: memoryview, clock_id: int, precision: int, out: int) -> int:
        if clock_id > abi.CLOCK_THREAD_CPUTIME:
            return Errno.INVAL
        U64.pack_into(mv, out, time.clock_gettime_ns(_CLOCKS[clock_id]))
        return 0

    def _random_get(self, mv: memoryview, buf: int, length: int) -> int:
        self._charge(length)
        fill_random(mv, buf, length)
        return 0

    def _proc_exit(self, code: int) -> None:
        self.exit_code = code
        raise _ProcExit()

    def _proc_raise(self, sig: int) -> int:
        return Errno.NOSYS  # as wasmtime: signals are not part of the sandbox

    def _sched_yield(self) -> int:
        os.sched_yield()
        return 0

    # --- sockets: delegated to the handle (non-socket handles answer ENOTSOCK) ---------
    def _sock_accept(self, mv: memoryview, fd: int, flags: int, out: int) -> int:
        h = self.fds.get(fd)
        if flags & ~abi.FDFLAG_NONBLOCK:
            return Errno.INVAL
        new = h.sock_accept(flags)
        self.fds.add_guest(new, lambda fd: U32.pack_into(mv, out, fd))
        return 0

    def _sock_recv(
        self, mv: memoryview, fd: int, ri: int, ri_len: int, flags: int, out_n: int, out_fl: int
    ) -> int:
        h = self.fds.get(fd)
        n, roflags = h.sock_recv(self._io_bufs(mv, ri, ri_len), flags)
        self._charge(n)
        U32.pack_into(mv, out_n, n)
        abi.U16.pack_into(mv, out_fl, roflags)
        return 0

    def _sock_send(
        self, mv: memoryview, fd: int, si: int, si_len: int, flags: int, out_n: int
    ) -> int:
        h = self.fds.get(fd)
        sent = h.sock_send(self._io_bufs(mv, si, si_len), flags)
        self._charge(sent)
        U32.pack_into(mv, out_n, sent)
        return 0

    def _sock_shutdown(self, fd: int, how: int) -> int:
        h = self.fds.get(fd)
        if how & ~(abi.SDFLAG_RD | abi.SDFLAG_WR) or not how:
            return Errno.INVAL
        h.sock_shutdown(how)
        return 0


_CLOCKS = (
    time.CLOCK_REALTIME,
    time.CLOCK_MONOTONIC,
    time.CLOCK_PROCESS_CPUTIME_ID,
    time.CLOCK_THREAD_CPUTIME_ID,
)
