"""Links in an encrypted directory: symlinks (:mod:`enarx.encdir.symlinks`) and hard
links (:mod:`enarx.encdir.hardlinks`), as a part of :class:`enarx.encdir.EncDir` (which
provides the resolution and open-file methods declared at the top)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat as st
import threading

from enarx.encdir.encfile import FileState
from enarx.encdir.errors import EncDirCorrupt, EncDirFsError
from enarx.encdir.hardlinks import (
    ENTRY_SIZE,
    STORE_NAME,
    is_entry,
    object_name,
    open_entry,
    seal_entry,
)
from enarx.encdir.hostfs import GuestPath, Parts, parts_of, tmp_name, write_new
from enarx.encdir.keys import DirKeys
from enarx.encdir.symlinks import MAX_TARGET, open_link, seal_link

__all__ = ["MAX_LINKS", "LinkOps"]

#: the most names one file can have
MAX_LINKS = 65000


class LinkOps:
    """Symlink and hard-link operations of an encrypted directory."""

    root: str
    _keys: DirKeys
    _lock: threading.RLock

    # provided by EncDir
    def _diriv(self, host_dir: str) -> bytes:
        raise NotImplementedError

    def _locate(self, parts: Parts) -> tuple[str, str]:
        raise NotImplementedError

    def _kind(self, s: os.stat_result, host: str, head: bytes | None = None) -> str:
        raise NotImplementedError

    def _writable(self) -> None:
        raise NotImplementedError

    def _acquire(self, host: str) -> FileState:
        raise NotImplementedError

    def release(self, state: FileState) -> None:
        raise NotImplementedError

    def _forget_path(self, host: str) -> None:
        raise NotImplementedError

    # --- host entries -------------------------------------------------------------------------
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

    def _link_target(self, host: str) -> bytes:
        data = self._read_host(host, MAX_TARGET + 64)
        parent = os.path.dirname(host)
        return open_link(self._keys.links, self._diriv(parent), os.path.basename(host), data)


    def _place_link(self, parent: str, host: str, target: bytes, *, replace: bool) -> None:
        data = seal_link(self._keys.links, self._diriv(parent), os.path.basename(host), target)
        self._place(parent, host, data, replace=replace)

    def _place_entry(self, parent: str, host: str, file_id: bytes, *, replace: bool) -> None:
        data = seal_entry(self._keys.links, self._diriv(parent), os.path.basename(host), file_id)
        self._place(parent, host, data, replace=replace)

    @staticmethod
    def _place(parent: str, host: str, data: bytes, *, replace: bool) -> None:
        """A new small host file at ``host``, atomically (written aside, then renamed over
        ``host`` when ``replace``, else linked there: EEXIST when something is)."""
        tmp = tmp_name(parent, "link")
        write_new(tmp, data)
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
            parts = parts_of(path)
            if not parts:
                raise EncDirFsError(errno.EEXIST)
            parent, host = self._locate(parts)
            if self._lstat(host) is not None:
                raise EncDirFsError(errno.EEXIST)
            self._place_link(parent, host, raw, replace=False)

    def readlink(self, path: GuestPath) -> bytes:
        """The target of the symlink ``path`` (EINVAL when it is not a symlink)."""
        with self._lock:
            _, host = self._locate(parts_of(path))
            s = self._lstat(host)
            if s is None:
                raise EncDirFsError(errno.ENOENT)
            if self._kind(s, host) != "symlink":
                raise EncDirFsError(errno.EINVAL, "not a symlink")
            return self._link_target(host)

    def link(self, src: GuestPath, dst: GuestPath) -> None:
        """Give the file ``src`` the further name ``dst``, as ``link(2)`` (a symlink is
        copied: it never changes, so only its ``st_ino`` and ``nlink`` tell)."""
        with self._lock:
            self._writable()
            sp, dp = parts_of(src), parts_of(dst)
            _, shost = self._locate(sp)
            dparent, dhost = self._locate(dp)
            ss = self._lstat(shost)
            if ss is None:
                raise EncDirFsError(errno.ENOENT)
            if not sp or self._kind(ss, shost) == "dir":
                raise EncDirFsError(errno.EPERM, "no hard links to directories")
            if not dp or self._lstat(dhost) is not None:
                raise EncDirFsError(errno.EEXIST)
            if self._kind(ss, shost) == "symlink":
                self._place_link(dparent, dhost, self._link_target(shost), replace=False)
                return
            self._add_link(shost, dparent, dhost)

    # --- hard links (the format: enarx.encdir.hardlinks) ------------------------------------
    def _content(self, host: str, head: bytes | None = None) -> str:
        """Where the file named ``host`` is: ``host`` itself, or for a name of a hard-linked
        file (an entry, authenticated here) its place in the link store. ``head``: the host
        file's first ``ENTRY_SIZE + 1`` bytes when the caller has read them."""
        if head is None:
            head = self._read_host(host, ENTRY_SIZE + 1)
        if not is_entry(head):
            return host
        file_id = open_entry(self._keys.links, self._diriv(os.path.dirname(host)),
                             os.path.basename(host), head)
        return os.path.join(self.root, STORE_NAME, object_name(file_id))

    def _stored(self, obj: str) -> os.stat_result:
        s = self._lstat(obj)
        if s is None or not st.S_ISREG(s.st_mode):
            raise EncDirCorrupt("a hard-linked file is missing from the link store")
        return s

    def _add_link(self, shost: str, dparent: str, dhost: str) -> None:
        """The file at ``shost`` gets the new name ``dhost``: its link count goes up first,
        then the name is added (a crash in between leaves the count one too high)."""
        content = self._content(shost)
        state = self._acquire(content)
        try:
            if state.nlink >= MAX_LINKS:
                raise EncDirFsError(errno.EMLINK)
            state.nlink += 1
            state.meta_dirty = True
            name = object_name(state.file_id)
            if content != shost:
                state.commit(durable=False)
                self._place_entry(dparent, dhost, state.file_id, replace=False)
                return
            # its first link: the file moves into the store, then both names become entries
            store = os.path.join(self.root, STORE_NAME)
            with contextlib.suppress(FileExistsError):
                os.mkdir(store, 0o700)
            self._stored_dir(store)
            state.names = (os.path.basename(shost), name)  # valid at both places
            state.commit(durable=False)
            tmp = tmp_name(store, "store")
            os.link(shost, tmp)  # the same host inode: open handles keep working
            os.rename(tmp, os.path.join(store, name))
            state.retarget(os.path.join(store, name))
            self._place_entry(os.path.dirname(shost), shost, state.file_id, replace=True)
            self._place_entry(dparent, dhost, state.file_id, replace=False)
            state.names = (name,)
            state.meta_dirty = True
            state.commit(durable=False)
        finally:
            self.release(state)

    def _stored_dir(self, store: str) -> None:
        s = self._lstat(store)
        if s is None or not st.S_ISDIR(s.st_mode):
            raise EncDirCorrupt(f"{STORE_NAME} (the link store) is not a directory")

    def _drop_link(self, obj: str) -> None:
        """A name of the hard-linked file ``obj`` is gone: its link count goes down, and at
        zero the file goes (still open, it lives on unlinked, as on POSIX)."""
        if self._lstat(obj) is None:
            return
        state = self._acquire(obj)
        try:
            if state.nlink > 1:
                state.nlink -= 1
                state.meta_dirty = True
                state.commit(durable=False)
            else:
                self._forget_path(obj)
                os.unlink(obj)
        finally:
            self.release(state)

    def _rename_entry(self, obj: str, shost: str, dparent: str, dhost: str) -> None:
        """Move a name of a hard-linked file: counted as a further link while both names
        exist (an entry is re-sealed under its new name, then the old one goes)."""
        state = self._acquire(obj)
        try:
            state.nlink += 1
            state.meta_dirty = True
            state.commit(durable=False)
            self._place_entry(dparent, dhost, state.file_id, replace=True)
            os.unlink(shost)
            state.nlink -= 1
            state.meta_dirty = True
            state.commit(durable=False)
        finally:
            self.release(state)
