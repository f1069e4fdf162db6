"""The ``fd_*`` calls: marshal guest memory, check rights, delegate to the handle.

A mixin of :class:`enarx.wasi.host.WasiHost`. Rights missing from a handle answer
``ENOTCAPABLE`` (76), as preview1 specifies and the WASI testsuite accepts.
"""

from __future__ import annotations

import os
import select
from typing import TYPE_CHECKING

from enarx.wasi import abi
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
from enarx.wasi.fdtable import DirHandle, FileHandle, Handle, NullHandle, StdioHandle
from enarx.wasi.guestmem import clip, iovecs, view, write_bytes

if TYPE_CHECKING:
    from enarx.wasi.fdtable import FdTable

_I64 = 1 << 63
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

    def check_deadline(self) -> float | None:  # provided by WasiHost
        raise NotImplementedError

    # --- data ---------------------------------------------------------------------------
    def _fd_write(self, mv: memoryview, fd: int, iovs: int, n: int, out: int) -> int:
        # The hottest call (every printf): one-iovec fast path, no helper calls.
        h = self.fds.lookup(fd)
        if h is None:
            return Errno.BADF
        if not h.rights_base & _W:
            return Errno.NOTCAPABLE
        if self.deadline is not None and _may_block(h):
            return self._fd_write_by_deadline(mv, h, iovs, n, out)
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
        if _may_block(h):
            self._wait_readable(h.host_fd)  # type: ignore[attr-defined]
        U32.pack_into(mv, out, h.read(iovecs(mv, iovs, n)))
        return 0

    def _fd_write_by_deadline(
        self, mv: memoryview, h: Handle, iovs: int, n: int, out: int
    ) -> int:
        """A write to a pipe/tty/FIFO nobody drains must not outlive the deadline: wait until
        the fd is writable, then write at most PIPE_BUF bytes, which cannot block once poll
        says so. A short write is a valid answer; libc writes the rest in the next call."""
        self._wait_ready(h.host_fd, select.POLLOUT)  # type: ignore[attr-defined]
        _pack_u32(mv, out, h.write(clip(iovecs(mv, iovs, n), select.PIPE_BUF)))
        return 0

    def _wait_readable(self, host_fd: int) -> None:
        self._wait_ready(host_fd, select.POLLIN | select.POLLPRI)

    def _wait_ready(self, host_fd: int, events: int) -> None:
        """With a deadline, a blocking read or write must not outlive it (wasm cannot be
        interrupted while inside a host call)."""
        left = self.check_deadline()
        if left is None:
            return
        poller = select.poll()  # not select(): guest-opened fds may be above FD_SETSIZE
        poller.register(host_fd, events)
        while not poller.poll(max(1, int(min(left, 1.0) * 1000))):
            left = self.check_deadline()
            assert left is not None

    def _fd_pread(self, mv: memoryview, fd: int, iovs: int, n: int, off: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_READ)
        if off >= _I64:
            return Errno.INVAL
        U32.pack_into(mv, out, h.pread(iovecs(mv, iovs, n), off))
        return 0

    def _fd_pwrite(self, mv: memoryview, fd: int, iovs: int, n: int, off: int, out: int) -> int:
        h = self.fds.get(fd)
        _need(h, abi.RIGHT_FD_WRITE)
        if off >= _I64:
            return Errno.INVAL
        U32.pack_into(mv, out, h.pwrite(iovecs(mv, iovs, n), off))
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
        if not isinstance(h, DirHandle):  # directories sync without the right, as wasmtime
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
        if cookie == 0 or h.listing is None:
            h.listing = h.entries()
        # Serialise entries from `cookie` on; the last one may be cut short, which tells
        # the guest (libc) its buffer was too small, exactly as the spec describes.
        chunks = []
        size = 0
        for i in range(cookie, len(h.listing)):
            name, ino, ftype = h.listing[i]
            chunks.append(DIRENT.pack(i + 1, ino, len(name), ftype) + name)
            size += DIRENT.size + len(name)
            if size >= length:
                break
        data = b"".join(chunks)[:length]
        dest[: len(data)] = data
        U32.pack_into(mv, out, len(data))
        return 0
