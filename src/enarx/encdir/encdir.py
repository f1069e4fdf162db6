"""An encrypted directory tree on the host, seen as a plaintext tree (see the package doc).

Paths are guest paths relative to the root: a ``str`` such as ``"a/b.txt"`` or a sequence
of components (``(b"a", b"b.txt")``). Components are names (no ``/``, not ``.`` or ``..``);
resolving ``..`` and refusing escapes is the caller's job (a ``str`` path may use ``..``
lexically, never above the root). Host symlinks, devices or sockets inside the tree are
never followed: finding one is :class:`EncDirCorrupt`. A guest symlink is a host regular file
of its own format (:mod:`enarx.encdir.symlinks`, kind ``"symlink"``); this class never follows
one (following, with its confinement, is the WASI layer's job): as a directory component it
is ``ENOTDIR``, opened as a file ``ELOOP``. Symlink and hard-link operations are in
:mod:`enarx.encdir.linkops` (a hard-linked file lives in the link store, its names are
entries: :mod:`enarx.encdir.hardlinks`).
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
from enarx.encdir.hardlinks import ENTRY_SIZE
from enarx.encdir.hostfs import GuestPath, Parts, parts_of, tmp_name, write_new
from enarx.encdir.keys import (
    FORMAT_VERSION,
    MARKER_NAME,
    DirKeys,
    build_marker,
    check_marker,
    upgrade_patch,
)
from enarx.encdir.linkops import MAX_LINKS, LinkOps
from enarx.encdir.names import DIRIV_NAME, DIRIV_SIZE, decrypt_name, encrypt_name, is_metadata
from enarx.encdir.symlinks import LINK_MAGIC, is_link
from enarx.fsutil import atomic_write

__all__ = ["MAX_LINKS", "EncDir", "GuestPath"]


def _node(s: os.stat_result, kind: str, size: int, nlink: int = 1) -> Node:
    nlink = s.st_nlink if kind == "dir" else nlink
    return Node(kind, size, s.st_mtime_ns, s.st_atime_ns, s.st_ctime_ns, s.st_ino, nlink)


def _upgrade(path: str, marker: bytes) -> None:
    """A version-1 directory opened read-write becomes version 2 (its files are upgraded one
    by one as they are next written; version-1 files stay readable)."""
    at, data = upgrade_patch(marker)
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.pwrite(fd, data, at)
        os.fsync(fd)
    finally:
        os.close(fd)


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


class EncDir(LinkOps, Owner):
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
            marker = os.read(fd, 4096)
            version = check_marker(marker, keys)
            try:  # one writer, or any number of readers, per directory
                fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EncDirError(
                    f"{root} is in use by another enarx process or pre-open",
                    hint="an encrypted directory can be opened read-write by one Keep at a "
                         "time (or read-only by several)") from None
            if version != FORMAT_VERSION and not readonly:
                _upgrade(os.path.join(root, MARKER_NAME), marker)
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

    def _kind(self, s: os.stat_result, host: str, head: bytes | None = None) -> str:
        """``dir``, ``file`` or ``symlink`` (a claim its format then authenticates);
        ``head``: the host file's first bytes when the caller has read them."""
        if st.S_ISDIR(s.st_mode):
            return "dir"
        if st.S_ISREG(s.st_mode):
            if head is None:
                head = self._read_host(host, len(LINK_MAGIC))
            return "symlink" if is_link(head) else "file"
        raise EncDirCorrupt("a host entry is neither a file nor a directory (symlink?)")

    def _writable(self) -> None:
        if self.readonly:
            raise EncDirFsError(errno.EROFS, "the encrypted directory is read-only")

    # --- queries ----------------------------------------------------------------------------
    def lookup(self, path: GuestPath) -> Node:
        """What ``stat`` says about ``path`` (the file's authenticated plaintext size)."""
        with self._lock:
            _, host = self._locate(parts_of(path))
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            head = self._read_host(host, ENTRY_SIZE + 1) if st.S_ISREG(s.st_mode) else None
            kind = self._kind(s, host, head)
            if kind == "dir":
                return _node(s, "dir", s.st_size)
            if kind == "symlink":
                return _node(s, "symlink", len(self._link_target(host)))
            content = self._content(host, head)
            cs = s if content == host else self._stored(content)
            state = self._states.get((cs.st_dev, cs.st_ino))
            if state is not None:
                return state.node()
            tmp = self._load(content)
            try:
                return _node(cs, "file", tmp.length, tmp.nlink)
            finally:
                tmp.close_fd()

    stat = lookup

    def listdir(self, path: GuestPath) -> list[tuple[bytes, str]]:
        """``(name, kind)`` of every entry of directory ``path`` (kind ``file``, ``dir`` or
        ``symlink``)."""
        with self._lock:
            host = self._dir(parts_of(path))
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
            parts = parts_of(path)
            if not parts:
                raise EncDirFsError(errno.EISDIR)
            parent, host = self._locate(parts)
            s = self._lstat(host)
            if s is None:
                if not create:
                    raise EncDirFsError(errno.ENOENT)
                self._writable()
                return EncFile(self, self._create(parent, host))
            else:
                if create and excl:
                    raise EncDirFsError(errno.EEXIST)
                head = self._read_host(host, ENTRY_SIZE + 1) if st.S_ISREG(s.st_mode) \
                    else None
                kind = self._kind(s, host, head)
                if kind == "dir":
                    raise EncDirFsError(errno.EISDIR)
                if kind == "symlink":  # never followed here (as O_NOFOLLOW); a fake is EIO
                    self._link_target(host)
                    raise EncDirFsError(errno.ELOOP)
                host = self._content(host, head)
            if trunc:
                self._writable()
            state = self._acquire(host)
            if trunc and state.length:
                state.truncate(0)
                state.commit(durable=False)
            return EncFile(self, state)

    def _create(self, parent: str, host: str) -> FileState:
        """A new, empty file at ``host`` (written aside, then linked into place: EEXIST if
        something is there), open by its final name: a virtio-9p share (VM Keeps) truncates
        by the name an fd was opened with, which must therefore still exist."""
        tmp = tmp_name(parent, "new")
        write_new(tmp, new_file_bytes(self._keys, os.path.basename(host)))
        try:
            os.link(tmp, host)
        except FileExistsError:
            raise EncDirFsError(errno.EEXIST) from None
        finally:
            os.unlink(tmp)
        try:
            fd = os.open(host, os.O_RDWR | os.O_NOFOLLOW)
        except OSError as e:
            raise EncDirFsError(e.errno or errno.EIO, f"cannot open encrypted file: {e}") \
                from None
        try:
            state = FileState(self._keys, host, fd, writable=True, lock=self._lock)
        except BaseException:
            os.close(fd)
            raise
        s = os.fstat(fd)
        self._states[(s.st_dev, s.st_ino)] = state
        state.refs += 1
        return state

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
            parts = parts_of(path)
            if not parts:
                raise EncDirFsError(errno.EEXIST)
            parent, host = self._locate(parts)
            if self._lstat(host) is not None:
                raise EncDirFsError(errno.EEXIST)
            tmp = tmp_name(parent, "mkdir")
            os.mkdir(tmp, 0o700)
            try:
                write_new(os.path.join(tmp, DIRIV_NAME), os.urandom(DIRIV_SIZE))
                os.rename(tmp, host)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    def _empty(self, host: str) -> bool:
        with os.scandir(host) as it:
            return all(is_metadata(e.name) for e in it)

    def _remove_dir(self, parent: str, host: str) -> None:
        grave = tmp_name(parent, "rmdir")
        os.rename(host, grave)
        self._ivs.pop(host, None)
        shutil.rmtree(grave, ignore_errors=True)

    def rmdir(self, path: GuestPath) -> None:
        with self._lock:
            self._writable()
            parts = parts_of(path)
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
            parts = parts_of(path)
            _, host = self._locate(parts)
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if not parts or self._kind(s, host) == "dir":
                raise EncDirFsError(errno.EISDIR)
            content = self._content(host)
            if content != host:  # one name of a hard-linked file
                os.unlink(host)
                self._drop_link(content)
                return
            self._forget_path(host)
            os.unlink(host)

    def rename(self, src: GuestPath, dst: GuestPath) -> None:
        """Move ``src`` to ``dst`` with POSIX ``rename`` semantics (replacing a file or an
        empty directory of the same kind)."""
        with self._lock:
            self._writable()
            sp, dp = parts_of(src), parts_of(dst)
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
            scontent = self._content(shost) if skind == "file" else shost
            dcontent = None  # a hard-linked file losing its name dhost
            if ds is not None:
                if (ds.st_dev, ds.st_ino) == (ss.st_dev, ss.st_ino):
                    return
                dkind = self._kind(ds, dhost)
                if dkind == "file" and (c := self._content(dhost)) != dhost:
                    if c == scontent:  # two names of one file: nothing to do (POSIX)
                        return
                    dcontent = c
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
            if skind == "file" and scontent != shost:
                self._rename_entry(scontent, shost, dparent, dhost)
            elif skind == "file":
                self._rename_file(shost, dhost)
            elif skind == "symlink":  # re-sealed under its new name, then the old one goes
                self._place_link(dparent, dhost, self._link_target(shost), replace=True)
                os.unlink(shost)
            else:
                os.rename(shost, dhost)
                self._ivs.clear()
                for state in self._states.values():
                    if state.path.startswith(shost + os.sep):
                        state.retarget(dhost + state.path[len(shost):])
            if dcontent is not None:
                self._drop_link(dcontent)

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
            _, host = self._locate(parts_of(path))
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if st.S_ISREG(s.st_mode):
                host = self._content(host)
            state = self._open_state(host)
            if state is not None:
                state.commit(durable=False)
            utime(host, atime_ns, mtime_ns)
            if state is not None:
                state.touched_ns = 0
