"""The guest's fd table and the handles behind each fd.

Enarx's fd model: ``Enarx.toml`` ``files[i]`` becomes WASI fd ``i`` (stdio, null, pre-opened
dirs, TCP listeners and streams, TLS). Every handle subclasses :class:`Handle`,
whose defaults answer the errno wasmtime gives for an operation the kind of fd cannot do,
so a new kind (a socket) overrides only what it supports and callers never change.

Handles raise :class:`~enarx.wasi.abi.WasiError`; buffers are memoryviews into guest
memory so reads and writes go straight between the host fd and the guest (no copies).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import stat as st
import termios
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

from enarx.wasi import abi
from enarx.wasi.abi import Errno, Filetype, WasiError, from_oserror
from enarx.wasi.guestmem import advance

__all__ = [
    "FILE_METADATA_RIGHTS", "MAX_OPEN_STREAMS", "DirStreams", "FdTable", "FileHandle",
    "Filestat", "Handle", "NullHandle", "StdioHandle", "default_fd_limit", "filestat_of",
    "filetype_of", "set_times_fd",
]  # fmt: skip

# (dev, ino, filetype, nlink, size, atim, mtim, ctim)
Filestat = tuple[int, int, int, int, int, int, int, int]


def filetype_of(mode: int) -> int:
    if st.S_ISREG(mode):
        return Filetype.REGULAR_FILE
    if st.S_ISDIR(mode):
        return Filetype.DIRECTORY
    if st.S_ISLNK(mode):
        return Filetype.SYMBOLIC_LINK
    if st.S_ISCHR(mode):
        return Filetype.CHARACTER_DEVICE
    if st.S_ISBLK(mode):
        return Filetype.BLOCK_DEVICE
    if st.S_ISSOCK(mode):
        return Filetype.SOCKET_STREAM
    return Filetype.UNKNOWN


def filestat_of(s: os.stat_result) -> Filestat:
    return (
        s.st_dev,
        s.st_ino,
        filetype_of(s.st_mode),
        s.st_nlink,
        s.st_size,
        s.st_atime_ns,
        s.st_mtime_ns,
        s.st_ctime_ns,
    )


def _wait(fd: int, write: bool) -> None:
    """Block until a non-blocking host fd is ready (the guest asked for blocking I/O)."""
    poller = select.poll()  # not select(): fds above FD_SETSIZE are legal
    poller.register(fd, select.POLLOUT if write else select.POLLIN)
    poller.poll()


class Handle:
    """One open guest fd. Defaults refuse everything with wasmtime's errno."""

    filetype: int = Filetype.UNKNOWN
    rights_base: int = 0
    rights_inheriting: int = 0
    fdflags: int = 0

    # --- data ------------------------------------------------------------------------
    def read(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.BADF)

    def write(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.BADF)

    def pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        raise WasiError(Errno.SPIPE)

    def pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        raise WasiError(Errno.SPIPE)

    def seek(self, offset: int, whence: int) -> int:
        raise WasiError(Errno.SPIPE)

    # --- metadata --------------------------------------------------------------------
    def filestat(self) -> Filestat:
        return (0, 0, self.filetype, 1, 0, 0, 0, 0)

    def set_size(self, size: int) -> None:
        raise WasiError(Errno.BADF)

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        raise WasiError(Errno.BADF)

    def set_fdflags(self, flags: int) -> None:
        raise WasiError(Errno.BADF)

    def sync(self, data_only: bool) -> None:
        return None

    def advise(self, offset: int, length: int, advice: int) -> None:
        raise WasiError(Errno.BADF)

    def allocate(self, offset: int, length: int) -> None:
        raise WasiError(Errno.BADF)

    # --- readiness for poll_oneoff ---------------------------------------------------
    def poll_fileno(self) -> int | None:
        """Host fd to wait on for readiness, or None when the handle is always ready."""
        return None

    def nbytes_readable(self) -> int:
        """Bytes available now, reported in a fd_read event (0 when unknown)."""
        return 0

    def pending(self) -> int:
        """Bytes buffered inside the handle (TLS plaintext) that its host fd no longer
        signals: poll_oneoff reports such a handle readable without waiting."""
        return 0

    # --- sockets (overridden by socket handles) --------------------------------------
    def sock_accept(self, flags: int) -> Handle:
        raise WasiError(Errno.NOTSOCK)

    def sock_recv(self, bufs: Sequence[memoryview], riflags: int) -> tuple[int, int]:
        raise WasiError(Errno.NOTSOCK)

    def sock_send(self, bufs: Sequence[memoryview], siflags: int) -> int:
        raise WasiError(Errno.NOTSOCK)

    def sock_shutdown(self, how: int) -> None:
        raise WasiError(Errno.NOTSOCK)

    def close(self) -> None:
        return None


class StdioHandle(Handle):
    """A host fd used directly (stdin/stdout/stderr or a pipe the runtime hands in)."""

    rights_base = abi.RIGHTS_STDIO
    rights_inheriting = 0

    def __init__(self, host_fd: int) -> None:
        self.host_fd = host_fd
        try:
            self.filetype = Filetype.CHARACTER_DEVICE if os.isatty(host_fd) else Filetype.UNKNOWN
        except OSError:
            self.filetype = Filetype.UNKNOWN

    def read(self, bufs: Sequence[memoryview]) -> int:
        while True:
            try:
                return os.readv(self.host_fd, bufs)
            except BlockingIOError:
                if self.fdflags & abi.FDFLAG_NONBLOCK:
                    raise WasiError(Errno.AGAIN) from None
                _wait(self.host_fd, write=False)
            except OSError as e:
                raise from_oserror(e) from None

    def write(self, bufs: Sequence[memoryview]) -> int:
        fd = self.host_fd
        try:
            n = os.writev(fd, bufs)
        except BlockingIOError:
            n = 0
        except OSError as e:
            raise from_oserror(e) from None
        total = sum(len(b) for b in bufs) if len(bufs) != 1 else len(bufs[0])
        if n == total:
            return n
        # Partial write (pipe full, signal): finish it, as a blocking write would. Views
        # into guest memory, never a joined copy (the buffers may alias one large region).
        rest = advance(list(bufs), n)
        while rest:
            try:
                k = os.writev(fd, rest)
            except BlockingIOError:
                _wait(fd, write=True)
                continue
            except OSError as e:
                if n:
                    return n
                raise from_oserror(e) from None
            n += k
            rest = advance(rest, k)
        return n

    def filestat(self) -> Filestat:
        try:
            s = os.fstat(self.host_fd)
        except OSError:
            return super().filestat()
        # Hide host identity (dev/ino); keep the kind and times.
        return (0, 0, self.filetype, 1, 0, s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)

    def poll_fileno(self) -> int | None:
        return self.host_fd

    def nbytes_readable(self) -> int:
        try:
            buf = fcntl.ioctl(self.host_fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return int.from_bytes(buf, "little")


class NullHandle(Handle):
    """/dev/null: reads are EOF, writes vanish."""

    filetype = Filetype.CHARACTER_DEVICE
    rights_base = abi.RIGHTS_STDIO

    def read(self, bufs: Sequence[memoryview]) -> int:
        return 0

    def write(self, bufs: Sequence[memoryview]) -> int:
        if len(bufs) == 1:
            return len(bufs[0])
        return sum(len(b) for b in bufs)


class _HostFdHandle(Handle):
    """Owns a host fd opened by the shim (files and directories)."""

    def __init__(self, host_fd: int, readonly: bool) -> None:
        self.host_fd = host_fd
        self.readonly = readonly

    def filestat(self) -> Filestat:
        try:
            return filestat_of(os.fstat(self.host_fd))
        except OSError as e:
            raise from_oserror(e) from None

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        if self.readonly:
            raise WasiError(Errno.ROFS)
        set_times_fd(self.host_fd, None, atim, mtim, now_a, now_m)

    def sync(self, data_only: bool) -> None:
        try:
            (os.fdatasync if data_only else os.fsync)(self.host_fd)
        except OSError as e:
            # fsync on a read-only directory fd may be refused; it has nothing to flush.
            if e.errno not in (errno.EINVAL, errno.EBADF):
                raise from_oserror(e) from None

    def close(self) -> None:
        if self.host_fd >= 0:
            fd, self.host_fd = self.host_fd, -1
            os.close(fd)


def set_times_fd(
    fd: int,
    name: str | None,
    atim: int | None,
    mtim: int | None,
    now_a: bool,
    now_m: bool,
) -> None:
    """utimensat with per-field OMIT/NOW, on an fd (name None) or on name in dir fd."""
    s = os.fstat(fd) if name is None else os.stat(name, dir_fd=fd, follow_symlinks=False)
    now = time.time_ns()
    a = now if now_a else (atim if atim is not None else s.st_atime_ns)
    m = now if now_m else (mtim if mtim is not None else s.st_mtime_ns)
    try:
        if name is None:
            os.utime(fd, ns=(a, m))
        else:
            os.utime(name, ns=(a, m), dir_fd=fd, follow_symlinks=False)
    except OSError as e:
        raise from_oserror(e) from None


#: Rights a file keeps when open read-only (and that path_open grants whatever the guest
#: asked for: wasi-libc leaves FD_DATASYNC out of an O_RDONLY request, yet fdatasync works).
FILE_METADATA_RIGHTS = abi.RIGHT_FD_SYNC | abi.RIGHT_FD_DATASYNC | abi.RIGHT_FD_FILESTAT_SET_TIMES


class FileHandle(_HostFdHandle):
    filetype: int = Filetype.REGULAR_FILE

    def __init__(
        self, host_fd: int, *, readable: bool, writable: bool, readonly: bool, fdflags: int = 0
    ) -> None:
        super().__init__(host_fd, readonly)
        rights = abi.RIGHTS_FILE
        if not readable:
            rights &= ~abi.RIGHT_FD_READ
        if not writable:
            # As Linux (and wasmtime): a file open read-only still syncs and takes new
            # timestamps; only the calls that change its data need it open for writing.
            rights &= ~(abi.RIGHTS_FILE_WRITE & ~FILE_METADATA_RIGHTS)
        self.writable = writable
        self.rights_base = rights
        self.rights_inheriting = 0
        self.fdflags = fdflags
        with contextlib.suppress(OSError):
            self.filetype = filetype_of(os.fstat(host_fd).st_mode)

    def read(self, bufs: Sequence[memoryview]) -> int:
        try:
            return os.readv(self.host_fd, bufs)
        except OSError as e:
            raise from_oserror(e) from None

    def write(self, bufs: Sequence[memoryview]) -> int:
        try:
            return os.writev(self.host_fd, bufs)
        except OSError as e:
            raise from_oserror(e) from None

    def pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        try:
            return os.preadv(self.host_fd, bufs, offset)
        except OSError as e:
            raise from_oserror(e) from None

    def pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        # Under O_APPEND the data goes to the end whatever the offset, as Linux and wasmtime.
        try:
            return os.pwritev(self.host_fd, bufs, offset)
        except OSError as e:
            raise from_oserror(e) from None

    def seek(self, offset: int, whence: int) -> int:
        try:
            return os.lseek(self.host_fd, offset, whence)
        except OSError as e:
            raise from_oserror(e) from None

    def set_size(self, size: int) -> None:
        try:
            os.ftruncate(self.host_fd, size)
        except OSError as e:
            raise from_oserror(e) from None

    def set_fdflags(self, flags: int) -> None:
        # NONBLOCK reaches the host fd too: a FIFO the guest switched to non-blocking must
        # answer EAGAIN, not block the host where no deadline reaches.
        cur = fcntl.fcntl(self.host_fd, fcntl.F_GETFL)
        want = cur & ~(os.O_APPEND | os.O_NONBLOCK)
        want |= os.O_APPEND if flags & abi.FDFLAG_APPEND else 0
        want |= os.O_NONBLOCK if flags & abi.FDFLAG_NONBLOCK else 0
        fcntl.fcntl(self.host_fd, fcntl.F_SETFL, want)
        self.fdflags = flags

    def advise(self, offset: int, length: int, advice: int) -> None:
        try:
            os.posix_fadvise(self.host_fd, offset, length, advice)
        except OSError as e:
            raise from_oserror(e) from None

    def allocate(self, offset: int, length: int) -> None:
        try:
            size = os.fstat(self.host_fd).st_size
            if offset + length > size:
                os.ftruncate(self.host_fd, offset + length)
        except OSError as e:
            raise from_oserror(e) from None

    def nbytes_readable(self) -> int:
        try:
            return max(0, os.fstat(self.host_fd).st_size - os.lseek(self.host_fd, 0, 1))
        except OSError:
            return 0


#: Directory streams the whole fd table keeps open between fd_readdir calls (least recently
#: used first out). Each holds a dup of its directory's fd and libc's DIR buffer (~32 KiB):
#: the host memory readdir costs stays constant however many directories a guest opens.
MAX_OPEN_STREAMS = 16

class _Streaming(Protocol):
    def end_stream(self) -> None: ...


class DirStreams:
    """The fd table's open directory streams (:class:`~enarx.wasi.dirhandle.DirHandle`),
    at most ``limit`` at a time."""

    def __init__(self, limit: int = MAX_OPEN_STREAMS) -> None:
        self.limit = limit
        self._open: OrderedDict[int, _Streaming] = OrderedDict()

    def touch(self, h: _Streaming) -> None:
        self._open[id(h)] = h
        self._open.move_to_end(id(h))
        while len(self._open) > self.limit:
            _, old = self._open.popitem(last=False)
            old.end_stream()

    def forget(self, h: object) -> None:
        self._open.pop(id(h), None)

    def __len__(self) -> int:
        return len(self._open)


def default_fd_limit() -> int:
    """How many fds a guest may hold: at most 4096, and 64 below the process's soft
    RLIMIT_NOFILE, so the host keeps fds of its own (path walks, the module cache) and
    the guest meets a clean EMFILE from the table rather than from the kernel mid-call."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _MAX_GUEST_FDS
    return max(16, min(_MAX_GUEST_FDS, soft - 64))


_MAX_GUEST_FDS = 4096


class FdTable:
    """Maps guest fd numbers to handles; new fds take the lowest free number.

    ``limit`` caps the fds a guest can open (path_open, sock_accept): each one is a host
    fd, and the host process shares its fd limit with them. Every fd in the table counts,
    the ``Enarx.toml`` entries included.
    """

    def __init__(self, limit: int | None = None) -> None:
        self._fds: dict[int, Handle] = {}
        self.lookup = self._fds.get  # the hot path: a bound dict.get, no Python frame
        self.limit = default_fd_limit() if limit is None else limit
        self.streams = DirStreams()

    def add(self, handle: Handle) -> int:
        fd = 0
        while fd in self._fds:
            fd += 1
        self._fds[fd] = handle
        return fd

    def add_guest(self, handle: Handle, publish: Callable[[int], object]) -> int:
        """Install a handle the guest opened and ``publish`` its fd (write it to guest
        memory). A full table (EMFILE) or a failed publish closes the handle: nothing leaks."""
        if len(self._fds) >= self.limit:
            handle.close()
            raise WasiError(Errno.MFILE)
        fd = self.add(handle)
        try:
            publish(fd)
        except BaseException:
            del self._fds[fd]
            handle.close()
            raise
        return fd

    def get(self, fd: int) -> Handle:
        h = self._fds.get(fd)
        if h is None:
            raise WasiError(Errno.BADF)
        return h

    def __contains__(self, fd: int) -> bool:
        return fd in self._fds

    def __len__(self) -> int:
        return len(self._fds)

    def items(self) -> list[tuple[int, Handle]]:
        return sorted(self._fds.items())

    def close(self, fd: int) -> None:
        h = self._fds.pop(fd, None)
        if h is None:
            raise WasiError(Errno.BADF)
        self.streams.forget(h)
        try:
            h.close()
        except OSError as e:
            raise from_oserror(e) from None

    def renumber(self, src: int, dst: int) -> None:
        h = self.get(src)
        self.get(dst)
        if src == dst:
            return
        old = self._fds.pop(dst)
        self._fds[dst] = self._fds.pop(src)
        del h
        old.close()

    def close_all(self) -> None:
        for fd in list(self._fds):
            h = self._fds.pop(fd)
            with contextlib.suppress(OSError):
                h.close()
