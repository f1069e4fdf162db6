"""Encrypted pre-opened directories: the guest's plaintext tree over an :mod:`enarx.encdir`.

An encrypted pre-open (``--dir HOST::GUEST:enc=KEYFILE``, or Enarx.toml ``encryption_key``)
is not a host directory fd: its names and contents are ciphertext on the host, and only
:class:`enarx.encdir.EncDir` (holding the key, in this process) reads and writes them.
:class:`EncDirHandle` is the pre-open (and every directory opened beneath it),
:class:`EncFileHandle` a file opened beneath it, with its own offset. The path calls hand
these directories off here as they hand :mod:`enarx.wasi.memfs` ones to memory. The native
fast path serves ``fd_read`` on a readable :class:`EncFileHandle` (:mod:`enarx.wasi.encnative`:
the handle's offset lives in a ``ctypes`` integer both sides use); everything else is here.

Guest paths are resolved here one component at a time, as :mod:`enarx.wasi.resolve` does on
host fds: ``.`` is skipped, ``..`` pops a directory already checked, nothing climbs above the
fd it starts from (``EPERM``); symlinks (stored encrypted by the core, which never follows
them) are read and spliced into the rest of the path, counted (more than
:data:`~enarx.wasi.resolve.MAX_SYMLINK_EXPANSIONS` is ``ELOOP``), an absolute target is an
escape (``EPERM``), and the last component is followed only when the call asks
(``LOOKUP_SYMLINK_FOLLOW`` or a trailing ``/``). Creating a symlink whose target would climb
out of the fd's directory is ``EPERM``, as on a plain pre-open. Hard links work within one
encrypted tree (``EXDEV`` into or out of it). The core gets plain components (``tuple[bytes, ...]``, ``()`` the root). Its POSIX errors become the errno a plain pre-open gives; a block, header or name
that fails authentication is ``EIO``, never wrong data.

Limits: a directory fd remembers its path, so a directory renamed while open keeps naming
the old path (its next call answers ``ENOENT``); a hard link to a symlink is a copy of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from enarx.wasi import abi
from enarx.wasi.abi import Errno, Filetype, WasiError, from_oserror
from enarx.wasi.dirhandle import DIRENT_SIZE, Dirent, DirHandle
from enarx.wasi.fdtable import FILE_METADATA_RIGHTS, Filestat, Handle
from enarx.wasi.resolve import PathWalk, check_path, stays_inside

if TYPE_CHECKING:
    from enarx.wasi.fdtable import DirStreams

__all__ = ["EncDirHandle", "EncFileHandle", "core_errors"]

Parts = tuple[bytes, ...]
#: WASI errno -> host errno, for close (whose failures travel as OSError)
_HOST_ERRNO = {int(Errno.IO): errno.EIO, int(Errno.NOSPC): errno.ENOSPC,
               int(Errno.ROFS): errno.EROFS, int(Errno.DQUOT): errno.EDQUOT}
_DEV = 0x454E4344  # "ENCD": a device number no host file system uses
_MAX_OFFSET = (1 << 63) - 1  # as off_t: a seek beyond is EINVAL, as on Linux
_WRITE_RIGHTS = (abi.RIGHT_FD_WRITE | abi.RIGHT_FD_DATASYNC | abi.RIGHT_FD_ALLOCATE
                 | abi.RIGHT_FD_FILESTAT_SET_SIZE)


@contextlib.contextmanager
def core_errors() -> Iterator[None]:
    """Map what :mod:`enarx.encdir` raises to the errno the guest sees (EIO when a check
    fails: tampered, truncated, swapped or rolled-back data is never handed to the guest)."""
    try:
        yield
    except WasiError:
        raise
    except OSError as e:
        raise from_oserror(e) from None
    except Exception as e:
        # imported here: the core (and cryptography) loads only when a tree is opened
        from enarx.encdir.errors import EncDirError

        if isinstance(e, EncDirError):  # EncDirCorrupt (failed authentication): EIO
            raise from_oserror(OSError(e.errno_value, "")) from None
        raise


def _core_path(parts: Parts) -> Parts:
    """The path form :class:`enarx.encdir.EncDir` takes (components relative to its root)."""
    return parts


def _kind_is_dir(node: Any) -> bool:
    kind = getattr(node, "kind", None)
    return kind in ("dir", "directory") or getattr(kind, "name", "").lower() in ("dir", "directory")


def _kind_is_link(node: Any) -> bool:
    return getattr(node, "kind", None) == "symlink"


def _filestat(node: Any, size: int | None = None) -> Filestat:
    mtime = int(getattr(node, "mtime_ns", 0) or 0)
    atime = int(getattr(node, "atime_ns", mtime) or mtime)
    ctime = int(getattr(node, "ctime_ns", mtime) or mtime)
    if _kind_is_dir(node):
        return (_DEV, int(node.ino), Filetype.DIRECTORY, 2, 0, atime, mtime, ctime)
    if _kind_is_link(node):
        return (_DEV, int(node.ino), Filetype.SYMBOLIC_LINK, 1, int(node.size), atime, mtime,
                ctime)
    n = int(node.size) if size is None else size
    nlink = int(getattr(node, "nlink", 1))
    return (_DEV, int(node.ino), Filetype.REGULAR_FILE, nlink, n, atime, mtime, ctime)


class _Tree:
    """One opened encrypted tree shared by the pre-open and every fd beneath it; the last
    of them to close closes the tree (commits, syncs and drops its lock)."""

    __slots__ = ("encdir", "refs")

    def __init__(self, encdir: Any) -> None:
        self.encdir = encdir
        self.refs = 0

    def hold(self) -> _Tree:
        self.refs += 1
        return self

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0:
            _closing(self.encdir.close)


def _closing(close: Any) -> None:
    """Run a core ``close``; a failure is an OSError (fd_close reports it as an errno, and
    the end of a run, which closes every fd, does not raise)."""
    try:
        with core_errors():
            close()
    except WasiError as e:
        raise OSError(_HOST_ERRNO.get(e.errno, errno.EIO), "close") from None


class EncDirHandle(DirHandle):
    """A directory of an encrypted tree (the pre-open when ``guest_path`` is set)."""

    encrypted = True

    def __init__(self, tree: _Tree, parts: Parts = (), *, readonly: bool,
                 guest_path: bytes | None) -> None:
        super().__init__(-1, readonly=readonly, guest_path=guest_path)
        self._tree: _Tree | None = tree.hold()
        self.encdir = tree.encdir
        self.parts = parts

    @classmethod
    def preopen_encdir(cls, encdir: Any, guest_path: str, *, readonly: bool) -> EncDirHandle:
        """The pre-open of an opened :class:`enarx.encdir.EncDir` (closed with its last fd)."""
        return cls(_Tree(encdir), (), readonly=readonly, guest_path=guest_path.encode("utf-8"))

    # --- path resolution --------------------------------------------------------------------
    def _lookup(self, parts: Parts) -> Any:
        with core_errors():
            return self.encdir.lookup(_core_path(parts))

    def _readlink(self, parts: Parts) -> bytes:
        with core_errors():
            return bytes(self.encdir.readlink(_core_path(parts)))

    def resolve(self, path: bytes, *, follow: bool = False) -> tuple[Parts, bool]:
        """(components from the encrypted root, names a directory: a trailing ``/``);
        symlinks are followed in every component but the last, and in the last when
        ``follow`` (the result then names no symlink, or something that does not exist)."""
        walk = PathWalk(path)  # the checks and the component stack of resolve.py's walk
        todo = walk.todo
        stack: list[bytes] = []  # every entry checked to be a directory but a last one
        while todo:
            comp = todo.pop()
            last = not todo
            if comp in (b".", b".."):
                if comp == b"..":
                    if not stack:  # above this fd's directory: refused, as resolve.py
                        raise WasiError(Errno.PERM)
                    stack.pop()
                if last:
                    walk.must_dir = True
                continue
            if len(comp) > 255:
                raise WasiError(Errno.NAMETOOLONG)
            here = (*self.parts, *stack, comp)
            if last and not follow:
                stack.append(comp)
                break
            try:
                node = self._lookup(here)
            except WasiError as e:
                if last and e.errno == Errno.NOENT:  # the call creates it or says ENOENT
                    stack.append(comp)
                    break
                raise
            if _kind_is_link(node):
                walk.count_expansion()
                walk.splice(self._readlink(here), last)
                continue
            if not last and not _kind_is_dir(node):
                raise WasiError(Errno.NOTDIR)
            stack.append(comp)
        return self.parts + tuple(stack), walk.must_dir

    def _node(self, path: bytes, follow: bool = True) -> tuple[Parts, Any]:
        parts, must_dir = self.resolve(path, follow=follow or path.endswith(b"/"))
        node = self._lookup(parts)
        if must_dir and not _kind_is_dir(node):
            raise WasiError(Errno.NOTDIR)
        return parts, node

    def _target(self, path: bytes, dot: int) -> tuple[Parts, bool]:
        """Components of a path whose last one is created, removed or renamed."""
        parts, must_dir = self.resolve(path)
        last = path.rstrip(b"/").rsplit(b"/", 1)[-1]
        if last in (b".", b"..") or parts == ():
            if last == b"..":
                raise WasiError(Errno.NOTEMPTY if dot == Errno.INVAL else dot)
            raise WasiError(dot)
        return parts, must_dir

    # --- the path calls -----------------------------------------------------------------------
    def stat_path(self, path: bytes, follow: bool = True) -> Filestat:
        return _filestat(self._node(path, follow)[1])

    def readlink_path(self, path: bytes) -> bytes:
        parts, must_dir = self.resolve(path)
        node = self._lookup(parts)
        if must_dir or not _kind_is_link(node):
            raise WasiError(Errno.INVAL)  # "x/" names a directory, never a link
        return self._readlink(parts)

    def open_path(self, path: bytes, oflags: int, base: int, fdflags: int,
                  follow: bool = True) -> Handle:
        creat, trunc = oflags & abi.OFLAG_CREAT, oflags & abi.OFLAG_TRUNC
        excl, want_dir = oflags & abi.OFLAG_EXCL, oflags & abi.OFLAG_DIRECTORY
        write = bool(base & _WRITE_RIGHTS) or bool(fdflags & abi.FDFLAG_APPEND)
        if self.readonly:
            writes = bool(base & abi.RIGHT_FD_WRITE) or bool(fdflags & abi.FDFLAG_APPEND)
            if creat or trunc or (writes and not want_dir):
                raise WasiError(Errno.ROFS)
            write = False
        read = bool(base & (abi.RIGHT_FD_READ | abi.RIGHT_FD_READDIR)) or not write
        if creat and not self.rights_base & abi.RIGHT_PATH_CREATE_FILE:
            raise WasiError(Errno.NOTCAPABLE)
        if trunc and not self.rights_inheriting & abi.RIGHT_FD_FILESTAT_SET_SIZE:
            raise WasiError(Errno.NOTCAPABLE)
        if want_dir and (creat or trunc):
            raise WasiError(Errno.INVAL)
        parts, must_dir = self.resolve(path, follow=follow or path.endswith(b"/"))
        if must_dir and creat:
            raise WasiError(Errno.ISDIR)
        node = None
        with contextlib.suppress(WasiError):
            node = self._lookup(parts)
        if node is None and not creat:
            self._lookup(parts)  # raises the real error (ENOENT, ENOTDIR, EIO)
        if node is not None and creat and excl:
            raise WasiError(Errno.EXIST)
        if node is not None and _kind_is_link(node):  # not followed: as O_NOFOLLOW
            raise WasiError(Errno.NOTDIR if want_dir or must_dir else Errno.LOOP)
        if node is not None and _kind_is_dir(node):
            if creat or write:
                raise WasiError(Errno.ISDIR)
            d = EncDirHandle(self._live(), parts, readonly=self.readonly, guest_path=None)
            d.rights_base &= self.rights_inheriting
            d.rights_inheriting &= self.rights_inheriting
            return d
        if must_dir or want_dir:
            raise WasiError(Errno.NOTDIR)
        if parts == ():
            raise WasiError(Errno.ISDIR)
        with core_errors():
            f = self.encdir.open_file(_core_path(parts), create=bool(creat), excl=bool(excl),
                                      trunc=bool(trunc))
        h = EncFileHandle(self._live(), parts, f, readable=read, writable=write,
                          readonly=self.readonly, fdflags=fdflags)
        h.rights_base &= self.rights_inheriting
        if base:
            h.rights_base &= base | abi.RIGHT_FD_FDSTAT_SET_FLAGS | FILE_METADATA_RIGHTS
        return h

    def mkdir_path(self, path: bytes) -> None:
        parts, _ = self._target(path, Errno.EXIST)
        with core_errors():
            self.encdir.mkdir(_core_path(parts))

    def rmdir_path(self, path: bytes) -> None:
        parts, _ = self._target(path, Errno.INVAL)
        with core_errors():
            self.encdir.rmdir(_core_path(parts))

    def unlink_path(self, path: bytes) -> None:
        parts, must_dir = self._target(path, Errno.ISDIR)
        if must_dir:  # "file/" names a directory; unlink of a directory is EISDIR
            node = self._lookup(parts)  # not followed: "link/" is ENOTDIR, as unlinkat
            raise WasiError(Errno.ISDIR if _kind_is_dir(node) else Errno.NOTDIR)
        with core_errors():
            self.encdir.unlink(_core_path(parts))

    def rename_path(self, path: bytes, dst: DirHandle, dst_path: bytes) -> None:
        if not isinstance(dst, EncDirHandle) or dst.encdir is not self.encdir:
            raise WasiError(Errno.XDEV)  # a file cannot move between encrypted trees as is
        src_parts, src_dir = self._target(path, Errno.BUSY)
        dst_parts, dst_dir = dst._target(dst_path, Errno.BUSY)
        node = self._lookup(src_parts)
        if (src_dir or dst_dir) and not _kind_is_dir(node):
            raise WasiError(Errno.NOTDIR)
        if dst_parts[: len(src_parts)] == src_parts and dst_parts != src_parts:
            raise WasiError(Errno.INVAL)  # a directory into itself
        with core_errors():
            self.encdir.rename(_core_path(src_parts), _core_path(dst_parts))

    def _new_name(self, path: bytes) -> None:
        """The checks creating ``path`` makes on a plain pre-open, in the same order."""
        parts, must_dir = self._target(path, Errno.EXIST)
        node = None
        with contextlib.suppress(WasiError):
            node = self._lookup(parts)
        if node is not None:
            raise WasiError(Errno.EXIST)
        if must_dir:
            raise WasiError(Errno.NOENT)  # "x/" for something that is not a directory yet
        if not _kind_is_dir(self._lookup(parts[:-1])):  # the parent: ENOENT, ENOTDIR
            raise WasiError(Errno.NOTDIR)

    def symlink_path(self, target: bytes, path: bytes) -> None:
        """Create a symlink (the checks and errors of a plain pre-open: a target that is
        absolute or climbs out of this fd's directory from where the link is is ``EPERM``)."""
        check_path(target)
        if target.startswith(b"/"):
            raise WasiError(Errno.PERM)
        parts, _ = self._target(path, Errno.EXIST)
        if not stays_inside(len(parts) - len(self.parts) - 1, target):
            raise WasiError(Errno.PERM)
        self._new_name(path)
        with core_errors():
            self.encdir.symlink(target, _core_path(parts))

    def link_path(self, path: bytes, dst: EncDirHandle, dst_path: bytes,
                  follow: bool = False) -> None:
        """A hard link within one encrypted tree, with a plain pre-open's checks and errors
        (a symlink, not followed, is linked as a copy of itself: see the core)."""
        parts, must_dir = self.resolve(path, follow=follow or path.endswith(b"/"))
        node = self._lookup(parts)
        if _kind_is_dir(node) or must_dir:
            raise WasiError(Errno.PERM if _kind_is_dir(node) else Errno.NOTDIR)
        dst._new_name(dst_path)
        dst_parts, _ = dst._target(dst_path, Errno.EXIST)
        with core_errors():
            self.encdir.link(_core_path(parts), _core_path(dst_parts))

    def set_times_path(self, path: bytes, atim: int | None, mtim: int | None, now_a: bool,
                       now_m: bool, follow: bool = True) -> None:
        parts, _ = self._node(path, follow)
        self._set_times(parts, atim, mtim, now_a, now_m)

    def _set_times(self, parts: Parts, atim: int | None, mtim: int | None, now_a: bool,
                   now_m: bool) -> None:
        now = time.time_ns()
        with core_errors():
            self.encdir.set_times(_core_path(parts), atime_ns=now if now_a else atim,
                                  mtime_ns=now if now_m else mtim)

    # --- the directory fd itself ----------------------------------------------------------------
    def filestat(self) -> Filestat:
        return _filestat(self._lookup(self.parts))

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        if self.readonly:
            raise WasiError(Errno.ROFS)
        self._set_times(self.parts, atim, mtim, now_a, now_m)

    def sync(self, data_only: bool) -> None:
        return None

    def readdir(self, cookie: int, room: int, streams: DirStreams) -> list[Dirent]:
        me = self._lookup(self.parts)
        entries: list[Dirent] = [(1, b".", int(me.ino), int(Filetype.DIRECTORY))]
        if self.parts:
            parent = self._lookup(self.parts[:-1])
            entries.append((2, b"..", int(parent.ino), int(Filetype.DIRECTORY)))
        else:  # the pre-open's parent is outside the sandbox
            entries.append((2, b"..", int(me.ino), int(Filetype.DIRECTORY)))
        with core_errors():
            listing = sorted(self.encdir.listdir(_core_path(self.parts)))
        out: list[Dirent] = []
        size = 0
        for i in range(cookie, len(entries) + len(listing)):
            if i < len(entries):
                d = entries[i]
            else:
                name, kind = listing[i - len(entries)]
                raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
                try:
                    ino = int(self._lookup((*self.parts, raw)).ino)
                except WasiError:  # a damaged file is still listed (and can be removed);
                    ino = 0  # opening it answers EIO
                ftype = (Filetype.DIRECTORY if kind == "dir" else Filetype.SYMBOLIC_LINK
                         if kind == "symlink" else Filetype.REGULAR_FILE)
                d = (i + 1, raw, ino, int(ftype))
            out.append(d)
            size += DIRENT_SIZE + len(d[1])
            if size >= room:
                break
        return out

    def end_stream(self) -> None:
        return None

    def _live(self) -> _Tree:
        if self._tree is None:
            raise WasiError(Errno.BADF)
        return self._tree

    def close(self) -> None:
        self.host_fd = -1
        tree, self._tree = self._tree, None
        if tree is not None:
            tree.release()


class EncFileHandle(Handle):
    """A regular file of an encrypted tree, with its own offset (one per open)."""

    filetype = Filetype.REGULAR_FILE

    def __init__(self, tree: _Tree, parts: Parts, file: Any, *, readable: bool, writable: bool,
                 readonly: bool, fdflags: int = 0) -> None:
        self._tree: _Tree | None = tree.hold()
        self.encdir = tree.encdir
        self.parts = parts
        self.file = file
        self.readable = readable
        self.writable = writable
        self.readonly = readonly
        self.fdflags = fdflags
        #: the offset, shared with the native read path (enarx.wasi.encnative)
        self.pos = ctypes.c_int64(0)
        rights = abi.RIGHTS_FILE
        if not readable:
            rights &= ~abi.RIGHT_FD_READ
        if not writable:
            rights &= ~(abi.RIGHTS_FILE_WRITE & ~FILE_METADATA_RIGHTS)
        self.rights_base = rights
        self.rights_inheriting = 0

    # --- data -----------------------------------------------------------------------------
    def _pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        if not self.readable:
            raise WasiError(Errno.BADF)
        done = 0
        try:  # the read hot path: no context manager, one call per buffer
            for b in bufs:  # decrypted straight into guest memory (no intermediate copy)
                if not len(b):
                    continue
                n = int(self.file.pread_into(b, offset + done))
                done += n
                if n < len(b):
                    break
        except Exception:
            with core_errors():
                raise
        return done

    def _pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        if not self.writable:
            raise WasiError(Errno.BADF)
        data = b"".join(bufs) if len(bufs) != 1 else bytes(bufs[0])
        with core_errors():
            if self.fdflags & abi.FDFLAG_APPEND:
                offset = self.file.size()
            return int(self.file.pwrite(data, offset)) if data else 0

    def read(self, bufs: Sequence[memoryview]) -> int:
        pos = self.pos
        n = self._pread(bufs, pos.value)
        pos.value += n
        return n

    def pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        return self._pread(bufs, offset)

    def write(self, bufs: Sequence[memoryview]) -> int:
        pos = self.pos
        if self.fdflags & abi.FDFLAG_APPEND:
            with core_errors():
                pos.value = self.file.size()
        n = self._pwrite(bufs, pos.value)
        pos.value += n
        return n

    def pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        return self._pwrite(bufs, offset)  # under APPEND: at the end, as Linux

    def seek(self, offset: int, whence: int) -> int:
        if whence == abi.WHENCE_END:
            with core_errors():
                base = self.file.size()
        else:
            base = {abi.WHENCE_SET: 0, abi.WHENCE_CUR: self.pos.value}.get(whence, -1)
            if base < 0:
                raise WasiError(Errno.INVAL)
        if not 0 <= base + offset <= _MAX_OFFSET:
            raise WasiError(Errno.INVAL)
        self.pos.value = base + offset
        return self.pos.value

    # --- metadata ---------------------------------------------------------------------------
    def filestat(self) -> Filestat:
        with core_errors():
            return _filestat(self.file.stat())

    def set_size(self, size: int) -> None:
        if self.readonly:
            raise WasiError(Errno.ROFS)
        if not self.writable:
            raise WasiError(Errno.INVAL)  # as Linux ftruncate on a read-only fd
        with core_errors():
            self.file.truncate(size)

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        if self.readonly:
            raise WasiError(Errno.ROFS)
        now = time.time_ns()
        with core_errors():  # on the open file: it may have been renamed or unlinked
            self.file.set_times(now if now_a else atim, now if now_m else mtim)

    def set_fdflags(self, flags: int) -> None:
        if self.readonly and flags & abi.FDFLAG_APPEND:
            raise WasiError(Errno.ROFS)
        self.fdflags = flags  # NONBLOCK: the encrypted tree never blocks

    def sync(self, data_only: bool) -> None:
        with core_errors():
            self.file.sync()

    def advise(self, offset: int, length: int, advice: int) -> None:
        return None

    def allocate(self, offset: int, length: int) -> None:
        if not self.writable:
            raise WasiError(Errno.ROFS if self.readonly else Errno.BADF)
        with core_errors():
            if offset + length > self.file.size():
                self.file.truncate(offset + length)

    def nbytes_readable(self) -> int:
        try:
            return max(0, int(self.file.size()) - self.pos.value)
        except Exception:
            return 0

    def close(self) -> None:
        """Release the file (the last close of a file commits what was written); a failure is
        an OSError, which fd_close reports as an errno and the end of a run does not raise."""
        f, self.file = self.file, None
        tree, self._tree = self._tree, None
        try:
            if f is not None:
                _closing(f.close)
        finally:
            if tree is not None:
                tree.release()
