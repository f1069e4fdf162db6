"""The ``path_*`` calls, every one confined to a pre-open through :mod:`enarx.wasi.resolve`.

A mixin of :class:`enarx.wasi.host.WasiHost`. Each call resolves the guest path to a
(directory fd, single name) pair and ends in one ``*at`` syscall that does not follow a
final symlink, so nothing the guest names can reach outside the directory it was granted.

Read-only pre-opens (and everything opened beneath them) refuse every write with
``EROFS`` -- the error a C program reports as "Read-only file system" -- checked before
rights, so the answer does not depend on which rights the guest happened to request.
"""

from __future__ import annotations

import contextlib
import os
import stat as st
from collections.abc import Callable
from typing import TYPE_CHECKING

from enarx.wasi import abi
from enarx.wasi.abi import FILESTAT, U32, Errno, WasiError, from_oserror
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.encfs import EncDirHandle
from enarx.wasi.fdcalls import check_fstflags
from enarx.wasi.fdtable import (
    FILE_METADATA_RIGHTS,
    FileHandle,
    Handle,
    filestat_of,
    set_times_fd,
)
from enarx.wasi.guestmem import read_bytes, write_bytes
from enarx.wasi.memfs import MemDirHandle
from enarx.wasi.resolve import Resolved, check_path, resolve, stays_inside

if TYPE_CHECKING:
    from enarx.wasi.fdtable import FdTable

__all__ = ["MAX_PATH", "PathCalls"]

MAX_PATH = 4096
_WRITE_RIGHTS = (
    abi.RIGHT_FD_WRITE
    | abi.RIGHT_FD_DATASYNC
    | abi.RIGHT_FD_ALLOCATE
    | abi.RIGHT_FD_FILESTAT_SET_SIZE
)


def _dir(fds: FdTable, fd: int, right: int, *, write: bool = False) -> DirHandle:
    h = fds.get(fd)
    if not isinstance(h, DirHandle):
        raise WasiError(Errno.NOTDIR)
    if write and h.readonly:
        raise WasiError(Errno.ROFS)
    if not h.rights_base & right:
        raise WasiError(Errno.NOTCAPABLE)
    return h


def _lstat(r: Resolved) -> os.stat_result:
    try:
        return os.stat(r.name, dir_fd=r.dirfd, follow_symlinks=False)
    except OSError as e:
        raise from_oserror(e) from None


def _open_resolved(r: Resolved, flags: int, creat: int) -> int:
    if r.must_dir:
        if creat:
            raise WasiError(Errno.ISDIR)
        flags |= os.O_DIRECTORY
    try:
        return os.open(r.name, flags, 0o666, dir_fd=r.dirfd)
    except OSError as e:
        raise from_oserror(e) from None


def _require_dir_if_slash(r: Resolved) -> None:
    """A trailing slash names a directory: anything else is ENOTDIR."""
    if r.must_dir and not st.S_ISDIR(_lstat(r).st_mode):
        raise WasiError(Errno.NOTDIR)


def _keep_link_inside(src: Resolved, dst: Resolved) -> None:
    """A symlink renamed or hard-linked to another place must still name something inside
    the pre-open from there (path_symlink's rule, which a move to a shallower directory
    would otherwise get around)."""
    try:
        target = os.readlink(src.name, dir_fd=src.dirfd)
    except OSError:
        return  # not a symlink, or absent: the operation itself answers
    if target.startswith(b"/") or not stays_inside(dst.depth, target):
        raise WasiError(Errno.PERM)


class PathCalls:
    fds: FdTable

    def _path(self, mv: memoryview, ptr: int, length: int) -> bytes:
        # Linux's PATH_MAX. The walker holds a few Python objects (and possibly a host fd)
        # per component, so an unbounded path would let a guest make the host allocate
        # about ten times the bytes it passed.
        if length > MAX_PATH:
            raise WasiError(Errno.NAMETOOLONG)
        return read_bytes(mv, ptr, length)

    def _path_open(
        self,
        mv: memoryview,
        fd: int,
        lookup: int,
        path: int,
        path_len: int,
        oflags: int,
        base: int,
        inheriting: int,
        fdflags: int,
        out: int,
    ) -> int:
        d = _dir(self.fds, fd, abi.RIGHT_PATH_OPEN)
        oflags &= 0xFFFF
        fdflags &= 0xFFFF
        p = self._path(mv, path, path_len)
        if isinstance(d, EncDirHandle):  # encrypted tree (its symlinks followed there)
            mem = d.open_path(p, oflags, base, fdflags,
                              follow=bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW))
            self.fds.add_guest(mem, lambda new_fd: U32.pack_into(mv, out, new_fd))
            return 0
        if isinstance(d, MemDirHandle):  # memory only
            mem = d.open_path(p, oflags, base, fdflags)
            self.fds.add_guest(mem, lambda new_fd: U32.pack_into(mv, out, new_fd))
            return 0
        creat, trunc = oflags & abi.OFLAG_CREAT, oflags & abi.OFLAG_TRUNC
        want_dir = bool(oflags & abi.OFLAG_DIRECTORY)
        # As wasmtime: any write-ish fd right means "open for writing", which the kernel
        # refuses on a directory with EISDIR (a directory's own rights hold none of them).
        write = bool(base & _WRITE_RIGHTS) or bool(fdflags & abi.FDFLAG_APPEND)
        if d.readonly:
            # Go asks for FD_FILESTAT_SET_SIZE even on read-only opens: only a real write
            # (FD_WRITE, append, create, truncate) is refused; the rest opens read-only.
            writes = bool(base & abi.RIGHT_FD_WRITE) or bool(fdflags & abi.FDFLAG_APPEND)
            if creat or trunc or (writes and not want_dir):
                raise WasiError(Errno.ROFS)
            write = False
        read = bool(base & (abi.RIGHT_FD_READ | abi.RIGHT_FD_READDIR)) or not write
        if creat and not d.rights_base & abi.RIGHT_PATH_CREATE_FILE:
            raise WasiError(Errno.NOTCAPABLE)
        if trunc and not d.rights_inheriting & abi.RIGHT_FD_FILESTAT_SET_SIZE:
            raise WasiError(Errno.NOTCAPABLE)
        if want_dir and (creat or trunc):
            return Errno.INVAL
        # Always O_NONBLOCK to open: a FIFO someone placed in the directory would otherwise
        # block the host in open(2), where no deadline reaches. Blocking mode is restored
        # below when the guest did not ask for NONBLOCK.
        flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK
        flags |= os.O_RDWR if read and write else os.O_WRONLY if write else os.O_RDONLY
        flags |= os.O_CREAT if creat else 0
        flags |= os.O_EXCL if oflags & abi.OFLAG_EXCL else 0
        flags |= os.O_TRUNC if trunc else 0
        flags |= os.O_DIRECTORY if want_dir else 0
        flags |= os.O_APPEND if fdflags & abi.FDFLAG_APPEND else 0
        flags |= os.O_DSYNC if fdflags & abi.FDFLAG_DSYNC else 0
        flags |= os.O_SYNC if fdflags & (abi.FDFLAG_SYNC | abi.FDFLAG_RSYNC) else 0
        follow = bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW) or p.endswith(b"/")
        host_fd = -1
        if follow and not p.endswith(b"/"):
            # Fast path: open the last component with O_NOFOLLOW and no readlink probe.
            # Success means it was no symlink, exactly what the full walk would open; any
            # failure (ELOOP on a symlink, ...) has no effect and the full walk decides.
            with resolve(d.host_fd, p, follow=False) as r, contextlib.suppress(WasiError):
                host_fd = _open_resolved(r, flags, creat)
        if host_fd < 0:
            with resolve(d.host_fd, p, follow=follow) as r:
                host_fd = _open_resolved(r, flags, creat)
        try:
            mode = os.fstat(host_fd).st_mode
            if not fdflags & abi.FDFLAG_NONBLOCK:
                os.set_blocking(host_fd, True)
        except OSError as e:
            os.close(host_fd)
            raise from_oserror(e) from None
        h: Handle
        if st.S_ISDIR(mode):
            h = DirHandle(host_fd, readonly=d.readonly, guest_path=None, root=d.root)
            h.rights_base &= d.rights_inheriting
            h.rights_inheriting &= d.rights_inheriting
        else:
            h = FileHandle(host_fd, readable=read, writable=write, readonly=d.readonly)
            h.fdflags = fdflags
            h.rights_base &= d.rights_inheriting
            if base:
                h.rights_base &= base | abi.RIGHT_FD_FDSTAT_SET_FLAGS | FILE_METADATA_RIGHTS
        self.fds.add_guest(h, lambda new_fd: U32.pack_into(mv, out, new_fd))
        return 0

    def _path_create_directory(self, mv: memoryview, fd: int, path: int, length: int) -> int:
        d = _dir(self.fds, fd, abi.RIGHT_PATH_CREATE_DIRECTORY, write=True)
        p = self._path(mv, path, length)
        if isinstance(d, EncDirHandle):
            d.mkdir_path(p)
            return 0
        with resolve(d.host_fd, p, follow=False) as r:
            try:
                os.mkdir(r.name_slash, 0o777, dir_fd=r.dirfd)
            except OSError as e:
                raise from_oserror(e) from None
        return 0

    def _path_filestat_get(
        self, mv: memoryview, fd: int, lookup: int, path: int, length: int, out: int
    ) -> int:
        d = _dir(self.fds, fd, abi.RIGHT_PATH_FILESTAT_GET)
        p = self._path(mv, path, length)
        if isinstance(d, EncDirHandle):
            FILESTAT.pack_into(mv, out,
                               *d.stat_path(p, bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW)))
            return 0
        if isinstance(d, MemDirHandle):
            FILESTAT.pack_into(mv, out, *d.stat_path(p))
            return 0
        follow = bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW) or p.endswith(b"/")
        s = None
        if follow and not p.endswith(b"/"):
            # Fast path: lstat the last component without a readlink probe; only a symlink
            # (or an error) needs the full walk that follows it.
            with resolve(d.host_fd, p, follow=False) as r, contextlib.suppress(WasiError):
                s = _lstat(r)
            if s is not None and (
                st.S_ISLNK(s.st_mode) or (r.must_dir and not st.S_ISDIR(s.st_mode))
            ):
                s = None
        if s is None:
            with resolve(d.host_fd, p, follow=follow) as r:
                s = _lstat(r)
                if r.must_dir and not st.S_ISDIR(s.st_mode):
                    raise WasiError(Errno.NOTDIR)
        FILESTAT.pack_into(mv, out, *filestat_of(s))
        return 0

    def _path_filestat_set_times(
        self,
        mv: memoryview,
        fd: int,
        lookup: int,
        path: int,
        length: int,
        atim: int,
        mtim: int,
        fst: int,
    ) -> int:
        d = _dir(self.fds, fd, abi.RIGHT_PATH_FILESTAT_SET_TIMES, write=True)
        p = self._path(mv, path, length)
        check_fstflags(fst)
        if isinstance(d, EncDirHandle):
            d.set_times_path(p, atim if fst & abi.FST_ATIM else None,
                             mtim if fst & abi.FST_MTIM else None,
                             bool(fst & abi.FST_ATIM_NOW), bool(fst & abi.FST_MTIM_NOW),
                             bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW))
            return 0
        follow = bool(lookup & abi.LOOKUP_SYMLINK_FOLLOW) or p.endswith(b"/")
        with resolve(d.host_fd, p, follow=follow) as r:
            _require_dir_if_slash(r)
            try:
                set_times_fd(
                    r.dirfd,
                    os.fsdecode(r.name),
                    atim if fst & abi.FST_ATIM else None,
                    mtim if fst & abi.FST_MTIM else None,
                    bool(fst & abi.FST_ATIM_NOW),
                    bool(fst & abi.FST_MTIM_NOW),
                )
            except OSError as e:
                raise from_oserror(e) from None
        return 0

    def _path_link(
        self,
        mv: memoryview,
        old_fd: int,
        old_lookup: int,
        old_path: int,
        old_len: int,
        new_fd: int,
        new_path: int,
        new_len: int,
    ) -> int:
        # The source must be writable too: a hard link out of a read-only pre-open into a
        # writable one would make the same inode writable through the new name.
        od = _dir(self.fds, old_fd, abi.RIGHT_PATH_LINK_SOURCE, write=True)
        nd = _dir(self.fds, new_fd, abi.RIGHT_PATH_LINK_TARGET, write=True)
        op = self._path(mv, old_path, old_len)
        np_ = self._path(mv, new_path, new_len)
        if isinstance(od, EncDirHandle) or isinstance(nd, EncDirHandle):
            # hard links within one encrypted tree; none into or out of one (EXDEV)
            if isinstance(od, EncDirHandle) and isinstance(nd, EncDirHandle) \
                    and od.encdir is nd.encdir:
                od.link_path(op, nd, np_, bool(old_lookup & abi.LOOKUP_SYMLINK_FOLLOW))
                return 0
            raise WasiError(Errno.XDEV)
        follow = bool(old_lookup & abi.LOOKUP_SYMLINK_FOLLOW)
        with resolve(od.host_fd, op, follow=follow or op.endswith(b"/")) as ro:
            if ro.must_dir:
                s = _lstat(ro)
                raise WasiError(Errno.PERM if st.S_ISDIR(s.st_mode) else Errno.NOTDIR)
            with resolve(nd.host_fd, np_, follow=False) as rn:
                _keep_link_inside(ro, rn)
                try:
                    os.link(
                        ro.name,
                        rn.name_slash,
                        src_dir_fd=ro.dirfd,
                        dst_dir_fd=rn.dirfd,
                        follow_symlinks=False,
                    )
                except OSError as e:
                    raise from_oserror(e) from None
        return 0

    def _path_readlink(
        self, mv: memoryview, fd: int, path: int, length: int, buf: int, buf_len: int, out: int
    ) -> int:
        d = _dir(self.fds, fd, abi.RIGHT_PATH_READLINK)
        p = self._path(mv, path, length)
        if isinstance(d, EncDirHandle):
            data = d.readlink_path(p)[:buf_len]
            write_bytes(mv, buf, data)
            U32.pack_into(mv, out, len(data))
            return 0
        if isinstance(d, MemDirHandle):
            d.readlink_path(p)
        with resolve(d.host_fd, p, follow=False) as r:
            if r.must_dir:
                _lstat(r)
                raise WasiError(Errno.INVAL)  # "x/" names a directory, never a link
            try:
                target = os.readlink(r.name, dir_fd=r.dirfd)
            except OSError as e:
                raise from_oserror(e) from None
        data = target[:buf_len]
        write_bytes(mv, buf, data)
        U32.pack_into(mv, out, len(data))
        return 0

    def _path_remove_directory(self, mv: memoryview, fd: int, path: int, length: int) -> int:
        return self._remove(mv, fd, path, length, abi.RIGHT_PATH_REMOVE_DIRECTORY, os.rmdir,
                            dot=Errno.INVAL)

    def _remove(
        self, mv: memoryview, fd: int, path: int, length: int, right: int,
        remove: Callable[..., None], *, dot: int,
    ) -> int:
        """rmdir / unlink of the last component, never following it; ``dot`` is the errno
        for removing "." itself."""
        d = _dir(self.fds, fd, right, write=True)
        p = self._path(mv, path, length)
        if isinstance(d, EncDirHandle):
            (d.rmdir_path if remove is os.rmdir else d.unlink_path)(p)
            return 0
        with resolve(d.host_fd, p, follow=False) as r:
            if r.name == b".":
                raise WasiError(dot)
            try:
                remove(r.name_slash, dir_fd=r.dirfd)
            except OSError as e:
                raise from_oserror(e) from None
        return 0

    def _path_rename(
        self,
        mv: memoryview,
        fd: int,
        old_path: int,
        old_len: int,
        new_fd: int,
        new_path: int,
        new_len: int,
    ) -> int:
        od = _dir(self.fds, fd, abi.RIGHT_PATH_RENAME_SOURCE, write=True)
        nd = _dir(self.fds, new_fd, abi.RIGHT_PATH_RENAME_TARGET, write=True)
        op = self._path(mv, old_path, old_len)
        np_ = self._path(mv, new_path, new_len)
        if isinstance(od, EncDirHandle):
            od.rename_path(op, nd, np_)  # EXDEV unless within the same encrypted tree
            return 0
        if isinstance(nd, EncDirHandle):
            raise WasiError(Errno.XDEV)
        with (
            resolve(od.host_fd, op, follow=False) as ro,
            resolve(nd.host_fd, np_, follow=False) as rn,
        ):
            if ro.name == b"." or rn.name == b".":
                raise WasiError(Errno.BUSY)
            # "file" -> "new/": the source must then be a directory
            if rn.must_dir and not ro.must_dir and not st.S_ISDIR(_lstat(ro).st_mode):
                raise WasiError(Errno.NOTDIR)
            _keep_link_inside(ro, rn)
            try:
                os.rename(ro.name_slash, rn.name_slash, src_dir_fd=ro.dirfd, dst_dir_fd=rn.dirfd)
            except OSError as e:
                raise from_oserror(e) from None
        return 0

    def _path_symlink(
        self, mv: memoryview, old_path: int, old_len: int, fd: int, new_path: int, new_len: int
    ) -> int:
        target = self._path(mv, old_path, old_len)
        d = _dir(self.fds, fd, abi.RIGHT_PATH_SYMLINK, write=True)
        p = self._path(mv, new_path, new_len)
        check_path(target)
        if target.startswith(b"/"):
            # Never plant a link to a host absolute path (host tools would follow it).
            raise WasiError(Errno.PERM)
        if isinstance(d, EncDirHandle):
            d.symlink_path(target, p)  # stored encrypted, bound to its name
            return 0
        with resolve(d.host_fd, p, follow=False) as r:
            # Nor a relative one that climbs out of the pre-open from where it is created.
            if not stays_inside(r.depth, target):
                raise WasiError(Errno.PERM)
            try:
                os.symlink(target, r.name_slash, dir_fd=r.dirfd)
            except OSError as e:
                raise from_oserror(e) from None
        return 0

    def _path_unlink_file(self, mv: memoryview, fd: int, path: int, length: int) -> int:
        return self._remove(mv, fd, path, length, abi.RIGHT_PATH_UNLINK_FILE, os.unlink,
                            dot=Errno.ISDIR)
