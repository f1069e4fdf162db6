"""An encrypted directory tree on the host, seen as a plaintext tree (see the package doc).

Paths are guest paths relative to the root: a ``str`` such as ``"a/b.txt"`` or a sequence
of components (``(b"a", b"b.txt")``). Components are names (no ``/``, not ``.`` or ``..``);
resolving ``..`` and refusing escapes is the caller's job (a ``str`` path may use ``..``
lexically, never above the root). Host symlinks, devices or sockets inside the tree are
never followed: finding one is :class:`EncDirCorrupt`. A guest symlink is a host regular file
of its own format (:mod:`enarx.encdir.symlinks`, kind ``"symlink"``); this class never follows
one (following, with its confinement, is the WASI layer's job): as a directory component it
is ``ENOTDIR``, opened as a file ``ELOOP``. Hard links cannot be created (ENOTSUP: a file's
trailer and crash journal are bound to one host name, see docs/encrypted-dirs.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat as st
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path

from enarx.encdir.encfile import (
    EncFile,
    FileState,
    Node,
    Owner,
    new_file_bytes,
    recover,
    replayed_image,
    utime,
)
from enarx.encdir.errors import EncDirCorrupt, EncDirError, EncDirFsError
from enarx.encdir.keys import MARKER_NAME, DirKeys, build_marker, check_marker
from enarx.encdir.names import DIRIV_NAME, DIRIV_SIZE, decrypt_name, encrypt_name, is_metadata
from enarx.encdir.symlinks import LINK_MAGIC, MAX_TARGET, is_link, open_link, seal_link
from enarx.fsutil import atomic_write

__all__ = ["EncDir", "GuestPath"]

GuestPath = str | bytes | Sequence[str | bytes]
Parts = tuple[bytes, ...]


def _parts(path: GuestPath) -> Parts:
    if isinstance(path, str | bytes):
        raw = path.encode("utf-8", "surrogateescape") if isinstance(path, str) else path
        out: list[bytes] = []
        for comp in raw.split(b"/"):
            if comp in (b"", b"."):
                continue
            if comp == b"..":
                if not out:
                    raise EncDirFsError(errno.EPERM, "path leaves the encrypted directory")
                out.pop()
                continue
            out.append(comp)
        return tuple(out)
    parts = tuple(c.encode("utf-8", "surrogateescape") if isinstance(c, str) else bytes(c)
                  for c in path)
    for c in parts:
        if c in (b"", b".", b"..") or b"/" in c:
            raise EncDirFsError(errno.EINVAL, f"invalid path component {c!r}")
    return parts


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _tmp_name(parent: str, tag: str) -> str:
    return os.path.join(parent, f".{tag}-{os.urandom(8).hex()}.tmp")


def _node(s: os.stat_result, kind: str, size: int) -> Node:
    nlink = s.st_nlink if kind == "dir" else 1
    return Node(kind, size, s.st_mtime_ns, s.st_atime_ns, s.st_ctime_ns, s.st_ino, nlink)


def _shutdown(states: dict[tuple[int, int], FileState], lock: threading.RLock, lock_fd: int,
              strict: bool) -> None:
    """Commit and close every open file, then drop the directory lock (``strict``: raise the
    first failure; otherwise, at garbage collection or exit, best effort)."""
    error: BaseException | None = None
    with lock:
        pending = list(states.values())
        states.clear()
        for s in pending:
            try:
                if s.writable:
                    s.commit(durable=True)
            except Exception as e:
                error = error or e
            finally:
                s.close_fd()
        if lock_fd >= 0:
            os.close(lock_fd)
    if strict and error is not None:
        raise error


class EncDir(Owner):
    """One opened encrypted directory (holds the key's derived keys in this process)."""

    def __init__(self, root: str, keys: DirKeys, *, readonly: bool, lock_fd: int = -1) -> None:
        self.root = root
        self.readonly = readonly
        self._keys = keys
        self._lock = threading.RLock()
        self._ivs: dict[str, bytes] = {}
        self._states: dict[tuple[int, int], FileState] = {}
        self._lock_fd = lock_fd
        self._closed = False
        # commits what is pending and drops the lock even if close() is never called
        self._finalizer = weakref.finalize(self, _shutdown, self._states, self._lock, lock_fd,
                                           False)

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, host_path: str | os.PathLike[str], key: bytes) -> EncDir:
        """Make ``host_path`` (absent or empty) a new, empty encrypted directory."""
        keys = DirKeys.derive(key)
        root = os.fspath(host_path)
        try:
            os.mkdir(root, 0o700)
        except FileExistsError:
            if not os.path.isdir(root) or set(os.listdir(root)) - {DIRIV_NAME}:
                raise EncDirFsError(errno.EEXIST, f"{root} exists and is not empty",
                                    hint="pick a new or empty directory") from None
        except OSError as e:
            raise EncDirFsError(e.errno or errno.EIO, f"cannot create {root}: {e.strerror}") \
                from None
        iv_path = os.path.join(root, DIRIV_NAME)
        if not os.path.exists(iv_path):
            atomic_write(Path(iv_path), os.urandom(DIRIV_SIZE))
        atomic_write(Path(root) / MARKER_NAME, build_marker(keys))
        return cls.open(root, key)

    @classmethod
    def open(cls, host_path: str | os.PathLike[str], key: bytes, *,
             readonly: bool = False) -> EncDir:
        """Open an encrypted directory; a wrong key is refused (:class:`EncDirKeyError`)."""
        keys = DirKeys.derive(key)
        root = os.fspath(host_path)
        if not os.path.isdir(root):
            raise EncDirFsError(errno.ENOENT, f"{root} is not a directory",
                                hint="create it with `enarx dir encrypt` or EncDir.create")
        try:
            fd = os.open(os.path.join(root, MARKER_NAME), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            raise EncDirError(f"{root} is not an encrypted directory (no {MARKER_NAME})",
                              hint="create it with `enarx dir encrypt SRC DST --key KEY`, or "
                                   "start from an empty directory") from None
        try:
            check_marker(os.read(fd, 4096), keys)
            try:  # one writer, or any number of readers, per directory
                fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EncDirError(
                    f"{root} is in use by another enarx process or pre-open",
                    hint="an encrypted directory can be opened read-write by one Keep at a "
                         "time (or read-only by several)") from None
            d = cls(root, keys, readonly=readonly, lock_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        d._diriv(root)
        return d

    @classmethod
    def open_or_create(cls, host_path: str | os.PathLike[str], key: bytes, *,
                       readonly: bool = False) -> EncDir:
        """Open, or create when ``host_path`` is absent or an empty directory."""
        root = os.fspath(host_path)
        if not readonly and (not os.path.exists(root) or
                             (os.path.isdir(root) and not os.listdir(root))):
            cls.create(root, key).close()
        return cls.open(root, key, readonly=readonly)

    def close(self) -> None:
        """Commit (durably) and close every file still open, and release the directory."""
        if self._finalizer.detach() is not None:
            self._closed = True
            _shutdown(self._states, self._lock, self._lock_fd, True)

    # --- resolution -------------------------------------------------------------------------
    def _diriv(self, host_dir: str) -> bytes:
        iv = self._ivs.get(host_dir)
        if iv is None:
            try:
                fd = os.open(os.path.join(host_dir, DIRIV_NAME), os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    iv = os.read(fd, DIRIV_SIZE + 1)
                finally:
                    os.close(fd)
            except OSError as e:
                raise EncDirCorrupt(f"directory IV is missing or unreadable: {e.strerror}") \
                    from None
            if len(iv) != DIRIV_SIZE:
                raise EncDirCorrupt("directory IV has the wrong size")
            self._ivs[host_dir] = iv
        return iv

    def _host(self, parent: str, name: bytes) -> str:
        return os.path.join(parent, encrypt_name(self._keys.names, name, self._diriv(parent)))

    def _dir(self, parts: Parts) -> str:
        """Host path of the directory ``parts`` (every component must be a directory)."""
        if self._closed:
            raise EncDirFsError(errno.EBADF, "the encrypted directory is closed")
        host = self.root
        for comp in parts:
            host = self._host(host, comp)
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if not st.S_ISDIR(s.st_mode):
                if not st.S_ISREG(s.st_mode):
                    raise EncDirCorrupt("a host entry is neither a file nor a directory")
                raise EncDirFsError(errno.ENOTDIR)
        return host

    def _locate(self, parts: Parts) -> tuple[str, str]:
        """(host parent directory, host path) of the entry ``parts`` names."""
        if not parts:
            self._dir(())  # refuses a closed directory
            return os.path.dirname(self.root), self.root
        parent = self._dir(parts[:-1])
        return parent, self._host(parent, parts[-1])

    @staticmethod
    def _lstat(host: str) -> os.stat_result | None:
        try:
            return os.lstat(host)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise EncDirFsError(errno.ENOTDIR) from None

    @staticmethod
    def _read_host(host: str, n: int) -> bytes:
        flags = os.O_RDONLY | os.O_NOFOLLOW
        try:  # a peek must not change the guest-visible atime (host atime is the file's)
            try:
                fd = os.open(host, flags | getattr(os, "O_NOATIME", 0))
            except PermissionError:  # O_NOATIME needs the file's owner
                fd = os.open(host, flags)
        except FileNotFoundError:
            raise EncDirFsError(errno.ENOENT) from None
        except OSError as e:
            raise EncDirCorrupt(f"a host entry cannot be read: {e.strerror}") from None
        try:
            return os.pread(fd, n, 0)
        finally:
            os.close(fd)

    def _kind(self, s: os.stat_result, host: str) -> str:
        """``dir``, ``file`` or ``symlink`` (a claim its format then authenticates)."""
        if st.S_ISDIR(s.st_mode):
            return "dir"
        if st.S_ISREG(s.st_mode):
            return "symlink" if is_link(self._read_host(host, len(LINK_MAGIC))) else "file"
        raise EncDirCorrupt("a host entry is neither a file nor a directory (symlink?)")

    def _link_target(self, host: str) -> bytes:
        data = self._read_host(host, MAX_TARGET + 64)
        parent = os.path.dirname(host)
        return open_link(self._keys.links, self._diriv(parent), os.path.basename(host), data)

    def _writable(self) -> None:
        if self.readonly:
            raise EncDirFsError(errno.EROFS, "the encrypted directory is read-only")

    # --- queries ----------------------------------------------------------------------------
    def lookup(self, path: GuestPath) -> Node:
        """What ``stat`` says about ``path`` (the file's authenticated plaintext size)."""
        with self._lock:
            _, host = self._locate(_parts(path))
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            kind = self._kind(s, host)
            if kind == "dir":
                return _node(s, "dir", s.st_size)
            if kind == "symlink":
                return _node(s, "symlink", len(self._link_target(host)))
            state = self._states.get((s.st_dev, s.st_ino))
            if state is not None:
                return state.node()
            tmp = self._load(host)
            try:
                return _node(s, "file", tmp.length)
            finally:
                tmp.close_fd()

    stat = lookup

    def listdir(self, path: GuestPath) -> list[tuple[bytes, str]]:
        """``(name, kind)`` of every entry of directory ``path`` (kind ``file``, ``dir`` or
        ``symlink``)."""
        with self._lock:
            host = self._dir(_parts(path))
            iv = self._diriv(host)
            out = []
            with os.scandir(host) as it:
                for e in it:
                    if is_metadata(e.name):
                        continue
                    name = decrypt_name(self._keys.names, e.name, iv)
                    out.append((name, self._kind(e.stat(follow_symlinks=False), e.path)))
            return sorted(out)

    # --- files ------------------------------------------------------------------------------
    def _load(self, host: str) -> FileState:
        """A verified state of the file at ``host`` (journal recovered first)."""
        image = None
        if self.readonly:  # a pending journal is replayed in memory, the host left as is
            image = replayed_image(self._keys, host)
        else:
            recover(self._keys, host)
        flags = (os.O_RDONLY if self.readonly else os.O_RDWR) | os.O_NOFOLLOW
        try:
            fd = os.open(host, flags)
        except OSError as e:
            raise EncDirFsError(e.errno or errno.EIO, f"cannot open encrypted file: {e}") \
                from None
        try:
            return FileState(self._keys, host, fd, writable=not self.readonly, lock=self._lock,
                             image=image)
        except BaseException:
            os.close(fd)
            raise

    def open_file(self, path: GuestPath, create: bool = False, excl: bool = False,
                  trunc: bool = False) -> EncFile:
        """Open (and maybe create or truncate) a regular file."""
        with self._lock:
            parts = _parts(path)
            if not parts:
                raise EncDirFsError(errno.EISDIR)
            parent, host = self._locate(parts)
            s = self._lstat(host)
            if s is None:
                if not create:
                    raise EncDirFsError(errno.ENOENT)
                self._writable()
                tmp = _tmp_name(parent, "new")
                _write_new(tmp, new_file_bytes(self._keys, os.path.basename(host)))
                try:
                    os.link(tmp, host)
                except FileExistsError:
                    raise EncDirFsError(errno.EEXIST) from None
                finally:
                    os.unlink(tmp)
            else:
                if create and excl:
                    raise EncDirFsError(errno.EEXIST)
                kind = self._kind(s, host)
                if kind == "dir":
                    raise EncDirFsError(errno.EISDIR)
                if kind == "symlink":  # never followed here (as O_NOFOLLOW); a fake is EIO
                    self._link_target(host)
                    raise EncDirFsError(errno.ELOOP)
            if trunc:
                self._writable()
            state = self._acquire(host)
            if trunc and state.length:
                state.truncate(0)
                state.commit(durable=False)
            return EncFile(self, state)

    def _acquire(self, host: str) -> FileState:
        s = os.lstat(host)
        state = self._states.get((s.st_dev, s.st_ino))
        if state is None:
            state = self._load(host)
            s2 = os.fstat(state.fd)
            self._states[(s2.st_dev, s2.st_ino)] = state
        state.refs += 1
        return state

    def release(self, state: FileState) -> None:
        with self._lock:
            state.refs -= 1
            if state.refs > 0:
                return
            for k, v in list(self._states.items()):
                if v is state:
                    del self._states[k]
            try:
                if state.writable:
                    state.commit(durable=False)
            finally:
                state.close_fd()

    def _open_state(self, host: str) -> FileState | None:
        try:
            s = os.lstat(host)
        except OSError:
            return None
        return self._states.get((s.st_dev, s.st_ino))

    # --- changes ----------------------------------------------------------------------------
    def mkdir(self, path: GuestPath) -> None:
        with self._lock:
            self._writable()
            parts = _parts(path)
            if not parts:
                raise EncDirFsError(errno.EEXIST)
            parent, host = self._locate(parts)
            if self._lstat(host) is not None:
                raise EncDirFsError(errno.EEXIST)
            tmp = _tmp_name(parent, "mkdir")
            os.mkdir(tmp, 0o700)
            try:
                _write_new(os.path.join(tmp, DIRIV_NAME), os.urandom(DIRIV_SIZE))
                os.rename(tmp, host)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def _empty(self, host: str) -> bool:
        with os.scandir(host) as it:
            return all(is_metadata(e.name) for e in it)

    def _remove_dir(self, parent: str, host: str) -> None:
        grave = _tmp_name(parent, "rmdir")
        os.rename(host, grave)
        self._ivs.pop(host, None)
        shutil.rmtree(grave, ignore_errors=True)

    def rmdir(self, path: GuestPath) -> None:
        with self._lock:
            self._writable()
            parts = _parts(path)
            if not parts:
                raise EncDirFsError(errno.EBUSY, "cannot remove the encrypted root")
            parent, host = self._locate(parts)
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if self._kind(s, host) != "dir":
                raise EncDirFsError(errno.ENOTDIR)
            if not self._empty(host):
                raise EncDirFsError(errno.ENOTEMPTY)
            self._remove_dir(parent, host)

    def _forget_path(self, host: str) -> None:
        """The file at ``host`` is going away: open handles keep working, unjournalled."""
        state = self._open_state(host)
        if state is not None:
            state.retarget("")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(host + ".j")

    def unlink(self, path: GuestPath) -> None:
        with self._lock:
            self._writable()
            parts = _parts(path)
            _, host = self._locate(parts)
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if not parts or self._kind(s, host) == "dir":
                raise EncDirFsError(errno.EISDIR)
            self._forget_path(host)
            os.unlink(host)

    def rename(self, src: GuestPath, dst: GuestPath) -> None:
        """Move ``src`` to ``dst`` with POSIX ``rename`` semantics (replacing a file or an
        empty directory of the same kind)."""
        with self._lock:
            self._writable()
            sp, dp = _parts(src), _parts(dst)
            if not sp or not dp:
                raise EncDirFsError(errno.EBUSY)
            _, shost = self._locate(sp)
            dparent, dhost = self._locate(dp)
            ss = self._lstat(shost)
            if ss is None:
                raise EncDirFsError(errno.ENOENT)
            skind = self._kind(ss, shost)
            if skind == "dir" and dp[: len(sp)] == sp and dp != sp:
                raise EncDirFsError(errno.EINVAL, "cannot move a directory into itself")
            ds = self._lstat(dhost)
            if ds is not None:
                if (ds.st_dev, ds.st_ino) == (ss.st_dev, ss.st_ino):
                    return
                dkind = self._kind(ds, dhost)
                if skind != "dir" and dkind == "dir":
                    raise EncDirFsError(errno.EISDIR)
                if skind == "dir" and dkind != "dir":
                    raise EncDirFsError(errno.ENOTDIR)
                if dkind == "dir":
                    if not self._empty(dhost):
                        raise EncDirFsError(errno.ENOTEMPTY)
                    self._remove_dir(dparent, dhost)
                else:
                    self._forget_path(dhost)
            if skind == "file":
                self._rename_file(shost, dhost)
                return
            if skind == "symlink":  # re-sealed under its new name, then the old one goes
                self._place_link(dparent, dhost, self._link_target(shost), replace=True)
                os.unlink(shost)
                return
            os.rename(shost, dhost)
            self._ivs.clear()
            for state in self._states.values():
                if state.path.startswith(shost + os.sep):
                    state.retarget(dhost + state.path[len(shost):])

    def _rename_file(self, shost: str, dhost: str) -> None:
        """Rename a file, crash-safely re-binding its trailer: first to both names, then the
        host rename, then to the new name only (each step a journalled commit)."""
        state = self._acquire(shost)
        try:
            new = os.path.basename(dhost)
            state.names = (os.path.basename(shost), new)
            state.meta_dirty = True
            state.commit(durable=False)
            os.rename(shost, dhost)
            state.retarget(dhost)
            state.names = (new,)
            state.meta_dirty = True
            state.commit(durable=False)
        finally:
            self.release(state)

    def set_times(self, path: GuestPath, atime_ns: int | None = None,
                  mtime_ns: int | None = None) -> None:
        """Set access/modification times (None leaves one as it is)."""
        with self._lock:
            self._writable()
            _, host = self._locate(_parts(path))
            if self._lstat(host) is None:
                raise EncDirFsError(errno.ENOENT)
            state = self._open_state(host)
            if state is not None:
                state.commit(durable=False)
            utime(host, atime_ns, mtime_ns)
            if state is not None:
                state.touched_ns = 0

    def _place_link(self, parent: str, host: str, target: bytes, *, replace: bool) -> None:
        data = seal_link(self._keys.links, self._diriv(parent), os.path.basename(host), target)
        tmp = _tmp_name(parent, "link")
        _write_new(tmp, data)
        try:
            if replace:
                os.rename(tmp, host)
            else:
                os.link(tmp, host)  # atomic create-if-absent
        except FileExistsError:
            raise EncDirFsError(errno.EEXIST) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def symlink(self, target: str | bytes, path: GuestPath) -> None:
        """Create a symlink at ``path`` whose target (stored encrypted and bound to the
        link's name) is ``target``, as is: it is never resolved here."""
        with self._lock:
            self._writable()
            raw = target.encode("utf-8", "surrogateescape") if isinstance(target, str) \
                else bytes(target)
            parts = _parts(path)
            if not parts:
                raise EncDirFsError(errno.EEXIST)
            parent, host = self._locate(parts)
            if self._lstat(host) is not None:
                raise EncDirFsError(errno.EEXIST)
            self._place_link(parent, host, raw, replace=False)

    def readlink(self, path: GuestPath) -> bytes:
        """The target of the symlink ``path`` (EINVAL when it is not a symlink)."""
        with self._lock:
            _, host = self._locate(_parts(path))
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if self._kind(s, host) != "symlink":
                raise EncDirFsError(errno.EINVAL, "not a symlink")
            return self._link_target(host)

    def link(self, src: GuestPath, dst: GuestPath) -> None:
        raise EncDirFsError(errno.ENOTSUP, "encrypted directories have no hard links")
