"""The ``fd_*`` calls: marshal guest memory, check rights, delegate to the handle.

A mixin of :class:`enarx.wasi.host.WasiHost`. Rights missing from a handle answer
``ENOTCAPABLE`` (76), as preview1 specifies and the WASI testsuite accepts.

With fuel on (``fuel_metered``), the data calls pay for their bytes (:mod:`enarx.wasi.fuel`).
"""

from __future__ import annotations

import ctypes
import os
import select
from typing import TYPE_CHECKING

from enarx.wasi import abi, fuel
from enarx.wasi.abi import (
    DIRENT,
    FDSTAT,
    FILESTAT,
    PRESTAT,
    U32,
    U64,
    Errno,
    Filetype,
    WasiError,
)
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.encfs import EncFileHandle
from enarx.wasi.fdtable import FileHandle, Handle, NullHandle, StdioHandle
from enarx.wasi.guestmem import clip, iovecs, view, write_bytes

if TYPE_CHECKING:
    from enarx.wasi.fdtable import FdTable

__all__ = ["FdCalls", "check_fstflags"]

_I64 = 1 << 63
_READDIR_BATCH = 1 << 16  # bytes of dirents the host builds at a time
_W = abi.RIGHT_FD_WRITE
_unpack_iovec = abi.IOVEC.unpack_from
_pack_u32 = U32.pack_into
_ADVICE = (
    os.POSIX_FADV_NORMAL,
    os.POSIX_FADV_SEQUENTIAL,
    os.POSIX_FADV_RANDOM,
    os.POSIX_FADV_WILLNEED,
    os.POSIX_FADV_DONTNEED,
    os.POSIX_FADV_NOREUSE,
)


def _need(h: Handle, right: int) -> None:
    if not h.rights_base & right:
        raise WasiError(Errno.NOTCAPABLE)


def check_fstflags(fst: int) -> None:
    if fst & ~(abi.FST_ATIM | abi.FST_ATIM_NOW | abi.FST_MTIM | abi.FST_MTIM_NOW):
        raise WasiError(Errno.INVAL)
    if fst & abi.FST_ATIM and fst & abi.FST_ATIM_NOW:
        raise WasiError(Errno.INVAL)
    if fst & abi.FST_MTIM and fst & abi.FST_MTIM_NOW:
        raise WasiError(Errno.INVAL)


def _may_block(h: Handle) -> bool:
    """Host fds whose blocking I/O can wait forever: stdio, FIFOs and devices."""
    if h.fdflags & abi.FDFLAG_NONBLOCK:
        return False
    return type(h) is StdioHandle or (
        type(h) is FileHandle and h.filetype != Filetype.REGULAR_FILE
    )


class FdCalls:
    fds: FdTable
    deadline: float | None
    _ctx: ctypes.c_void_p | None  # the store context (WasiHost binds it on the first call)
    #: Set by the runtime when the store has fuel: host calls then pay for their bytes.
    fuel_metered: bool = False
    #: Set when a host call could not pay: the trap that follows is "out of fuel".
    out_of_fuel: bool = False

    _pollers: dict[tuple[int, int], select.poll]  # WasiHost's, see _wait_ready

    def check_deadline(self) -> float | None:  # provided by WasiHost
        raise NotImplementedError

    # --- fuel ---------------------------------------------------------------------------
    def _charge(self, nbytes: int) -> None:
        """Pay for ``nbytes`` of host work (all or nothing: FuelExhausted stops the guest)."""
        if self.fuel_metered:
            try:
                fuel.charge(self._ctx, nbytes)
            except fuel.FuelExhausted:
                self.out_of_fuel = True
                raise

    def _io_bufs(self, mv: memoryview, iovs: int, n: int) -> list[memoryview]:
        """The guest's iovecs, clipped to what the remaining fuel pays for."""
        bufs = iovecs(mv, iovs, n)
        if self.fuel_metered:
            cap = fuel.affordable(self._ctx)
            if cap == 0 and any(len(b) for b in bufs):
                self._charge(1)  # raises: not even one byte can be paid for
            bufs = clip(bufs, cap)
        return bufs

    # --- data ---------------------------------------------------------------------------
    def _fd_write(self, mv: memoryview, fd: int, iovs: int, n: int, out: int) -> int:
        # The hottest call (every printf): one-iovec fast path, no helper calls.
        h = self.fds.lookup(fd)
        if h is None:
            return Errno.BADF
        if not h.rights_base & _W:
            return Errno.NOTCAPABLE
        if self.fuel_metered or (self.deadline is not None and _may_block(h)):
            return self._fd_write_slow(mv, h, iovs, n, out)
        if n == 1:
            buf, ln = _unpack_iovec(mv, iovs)
            end = buf + ln
            if end > len(mv):
                return Errno.FAULT
            _pack_u32(mv, out, h.write((mv[buf:end],)))
        else:
            _pack_u32(mv, out, h.write(iovecs(mv, iovs, n)))
        return 0

    def _fd_read(self, mv: memoryview, fd: int, iovs: int, n: int, out: int) -> int:
        h = self.fds.get(fd)
        if not h.rights_base & abi.RIGHT_FD_READ:
            raise WasiError(Errno.NOTCAPABLE)
        metered = self.fuel_metered
        bufs = self._io_bufs(mv, iovs, n) if metered else iovecs(mv, iovs, n)
        if _may_block(h):
            self._wait_readable(h.host_fd)  # type: ignore[attr-defined]
        got = h.read(bufs)
        if metered:
            self._charge(got)
        U32.pack_into(mv, out, got)
        return 0

    def _fd_write_slow(self, mv: memoryview, h: Handle, iovs: int, n: int, out: int) -> int:
        """fd_write with fuel to pay or a deadline to keep. A write to a pipe/tty/FIFO nobody
        drains must not outlive the deadline: wait until the fd is writable, then write at
        most PIPE_BUF bytes, which cannot block once poll says so. A short write is a valid
        answer; libc writes the rest in the next call."""
        bufs = self._io_bufs(mv, iovs, n)
        if self.deadline is not None and _may_block(h):
            self._wait_ready(h.host_fd, select.POLLOUT)  # type: ignore[attr-defined]
            bufs = clip(bufs, select.PIPE_BUF)
        done = h.write(bufs)
        self._charge(done)
        _pack_u32(mv, out, done)
        return 0

    def _wait_readable(self, host_fd: int) -> None:
        self._wait_ready(host_fd, select.POLLIN | select.POLLPRI)

    def _wait_ready(self, host_fd: int, events: int) -> None:
        """With a deadline, a blocking read or write must not outlive it (wasm cannot be
        interrupted while inside a host call)."""
        left = self.check_deadline()
        if left is None:
            return
        # One poll object per (fd, events), kept for the run: building one per call doubled
        # the cost of every stdio call under --timeout. A poll object holds only the fd
        # number and events, so a reused host fd number is the same poll target.
        key = (host_fd, events)
        poller = self._pollers.get(key)
        if poller is None:
            poller = select.poll()  # not select(): guest-opened fds may be above FD_SETSIZE
            poller.register(host_fd, events)
            if len(self._pollers) < 64:
                self._pollers[key] = poller
        while not poller.poll(max(1, int(min(left, 1.0) * 1000))):
            left = self.check_deadline()
            assert left is not None

    def _fd_pread(self, mv: memoryview, fd: int, iovs: int, n: int, off: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_READ)
        if off >= _I64:
            return Errno.INVAL
        got = h.pread(self._io_bufs(mv, iovs, n), off)
        self._charge(got)
        U32.pack_into(mv, out, got)
        return 0

    def _fd_pwrite(self, mv: memoryview, fd: int, iovs: int, n: int, off: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_WRITE)
        if off >= _I64:
            return Errno.INVAL
        done = h.pwrite(self._io_bufs(mv, iovs, n), off)
        self._charge(done)
        U32.pack_into(mv, out, done)
        return 0

    def _fd_seek(self, mv: memoryview, fd: int, offset: int, whence: int, out: int) -> int:
        h = self.fds.get(fd)
        if offset >= _I64:
            offset -= 1 << 64  # filedelta is signed
        if whence == abi.WHENCE_CUR and offset == 0:
            if not h.rights_base & (abi.RIGHT_FD_SEEK | abi.RIGHT_FD_TELL):
                raise WasiError(Errno.NOTCAPABLE)
        else:
            _need(h, abi.RIGHT_FD_SEEK)
        if whence > abi.WHENCE_END:
            return Errno.INVAL
        U64.pack_into(mv, out, h.seek(offset, whence))
        return 0

    def _fd_tell(self, mv: memoryview, fd: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_TELL)
        U64.pack_into(mv, out, h.seek(0, abi.WHENCE_CUR))
        return 0

    # --- lifecycle ----------------------------------------------------------------------
    def _fd_close(self, fd: int) -> int:
        self.fds.close(fd)
        return 0

    def _fd_renumber(self, src: int, dst: int) -> int:
        self.fds.renumber(src, dst)
        return 0

    def _fd_sync(self, fd: int) -> int:
        return self._sync(fd, abi.RIGHT_FD_SYNC, data_only=False)

    def _fd_datasync(self, fd: int) -> int:
        return self._sync(fd, abi.RIGHT_FD_DATASYNC, data_only=True)

    def _sync(self, fd: int, right: int, *, data_only: bool) -> int:
        h = self.fds.get(fd)
        if isinstance(h, DirHandle):
            return Errno.BADF  # as wasmtime: a directory is not a file to sync
        _need(h, right)
        h.sync(data_only=data_only)
        return 0

    def _fd_advise(self, fd: int, offset: int, length: int, advice: int) -> int:
        h = self.fds.get(fd)
        if advice > abi.ADVICE_MAX:
            return Errno.INVAL
        _need(h, abi.RIGHT_FD_ADVISE)
        if offset >= _I64 or length >= _I64:
            return Errno.INVAL
        h.advise(offset, length, _ADVICE[advice])
        return 0

    def _fd_allocate(self, fd: int, offset: int, length: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_ALLOCATE)
        if offset + length >= _I64:
            return Errno.INVAL
        h.allocate(offset, length)
        return 0

    # --- fdstat / filestat --------------------------------------------------------------
    def _fd_fdstat_get(self, mv: memoryview, fd: int, out: int) -> int:
        h = self.fds.get(fd)
        FDSTAT.pack_into(mv, out, h.filetype, h.fdflags, h.rights_base, h.rights_inheriting)
        return 0

    def _fd_fdstat_set_flags(self, fd: int, flags: int) -> int:
        h = self.fds.get(fd)
        flags &= 0xFFFF
        if flags & ~abi.FDFLAGS_ALL:
            return Errno.INVAL
        _need(h, abi.RIGHT_FD_FDSTAT_SET_FLAGS)
        sync = abi.FDFLAG_DSYNC | abi.FDFLAG_RSYNC | abi.FDFLAG_SYNC
        if (flags ^ h.fdflags) & sync:
            return Errno.INVAL  # the host cannot change O_SYNC on an open fd (wasmtime: same)
        h.set_fdflags(flags)
        return 0

    def _fd_fdstat_set_rights(self, fd: int, base: int, inheriting: int) -> int:
        h = self.fds.get(fd)
        if base & ~h.rights_base or inheriting & ~h.rights_inheriting:
            return Errno.NOTCAPABLE  # rights can only be dropped
        h.rights_base = base
        h.rights_inheriting = inheriting
        return 0

    def _fd_filestat_get(self, mv: memoryview, fd: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_FILESTAT_GET)
        FILESTAT.pack_into(mv, out, *h.filestat())
        return 0

    def _fd_filestat_set_size(self, fd: int, size: int) -> int:
        h = self.fds.get(fd)
        if isinstance(h, DirHandle):
            return Errno.BADF
        if isinstance(h, FileHandle | EncFileHandle) and not h.writable:
            # As Linux ftruncate (and wasmtime): not open for writing; a read-only pre-open
            # answers EROFS to every write, as everywhere else.
            return Errno.ROFS if h.readonly else Errno.INVAL
        _need(h, abi.RIGHT_FD_FILESTAT_SET_SIZE)
        if size >= _I64:
            return Errno.INVAL
        h.set_size(size)
        return 0

    def _fd_filestat_set_times(self, fd: int, atim: int, mtim: int, fst: int) -> int:
        h = self.fds.get(fd)
        check_fstflags(fst)
        _need(h, abi.RIGHT_FD_FILESTAT_SET_TIMES)
        h.set_times(
            atim if fst & abi.FST_ATIM else None,
            mtim if fst & abi.FST_MTIM else None,
            bool(fst & abi.FST_ATIM_NOW),
            bool(fst & abi.FST_MTIM_NOW),
        )
        return 0

    # --- pre-opens ----------------------------------------------------------------------
    def _fd_prestat_get(self, mv: memoryview, fd: int, out: int) -> int:
        h = self.fds.get(fd)
        if not isinstance(h, DirHandle) or h.guest_path is None:
            return Errno.BADF
        PRESTAT.pack_into(mv, out, abi.PREOPENTYPE_DIR, len(h.guest_path))
        return 0

    def _fd_prestat_dir_name(self, mv: memoryview, fd: int, buf: int, length: int) -> int:
        h = self.fds.get(fd)
        if not isinstance(h, DirHandle) or h.guest_path is None:
            return Errno.BADF
        if length < len(h.guest_path):
            return Errno.NAMETOOLONG
        write_bytes(mv, buf, h.guest_path)
        return 0

    # --- directories --------------------------------------------------------------------
    def _fd_readdir(
        self, mv: memoryview, fd: int, buf: int, length: int, cookie: int, out: int
    ) -> int:
        h = self.fds.get(fd)
        if not isinstance(h, DirHandle):
            return Errno.NOTDIR if not isinstance(h, (StdioHandle, NullHandle)) else Errno.BADF
        _need(h, abi.RIGHT_FD_READDIR)
        dest = view(mv, buf, length)
        # Serialise entries from `cookie` on, in batches (the host holds one batch at a
        # time, never the listing); the last one may be cut short, which tells the guest
        # (libc) its buffer was too small, exactly as the spec describes. A buffer left
        # short means the end of the directory.
        pos = 0
        while pos < length:
            batch = h.readdir(cookie, min(length - pos, _READDIR_BATCH), self.fds.streams)
            if not batch:
                break
            start = pos
            for nxt, name, ino, ftype in batch:
                rec = DIRENT.pack(nxt, ino, len(name), ftype) + name
                k = min(len(rec), length - pos)
                dest[pos : pos + k] = rec[:k]
                pos += k
                cookie = nxt
            self._charge(pos - start)
        U32.pack_into(mv, out, pos)
        return 0
