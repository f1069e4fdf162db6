"""In-memory, read-only pre-opened directories: secrets and deployed package files.

Secrets released to a Keep after attestation (Enarx.toml ``[[secrets]]``) and the files of a
package ``enarx deploy`` decrypted inside the Keep must reach the guest as files without ever
touching a host-disk path. :class:`MemDirHandle` is a pre-open whose tree lives in this
process's memory (``name -> bytes`` or ``name -> subtree``); :class:`MemFileHandle` is a file
opened beneath it, with its own offset. Everything is read-only: every write answers
``EROFS`` (the directory subclasses :class:`~enarx.wasi.dirhandle.DirHandle` with
``readonly=True``, so the path calls that write refuse it before looking at the path), and
there are no symlinks, so nothing the guest names can leave the tree.

The ``path_*`` calls that read (``path_open``, ``path_filestat_get``, ``path_readlink``) ask
the directory through :meth:`MemDirHandle.open_path` / :meth:`MemDirHandle.stat_path`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Union

from enarx.wasi import abi
from enarx.wasi.abi import Errno, Filetype, WasiError
from enarx.wasi.dirhandle import DIRENT_SIZE, Dirent, DirHandle
from enarx.wasi.fdtable import Filestat, Handle
from enarx.wasi.resolve import PathWalk

if TYPE_CHECKING:
    from enarx.wasi.fdtable import DirStreams

__all__ = ["MemDirHandle", "MemFileHandle", "MemTree", "build_tree"]

#: A directory: entry name -> file contents or a subdirectory.
MemTree = Mapping[str, Union[bytes, "MemTree"]]

_DEV = 0x454E5258  # "ENRX": a device number no host file system uses
_INODES = itertools.count(2)  # per-process inode numbers of in-memory nodes
_FILE_RIGHTS = abi.RIGHTS_FILE_READ  # read, seek, tell, advise, filestat_get, poll


class _Node:
    """One file or directory of an in-memory tree (inode number, times, contents)."""

    __slots__ = ("children", "data", "ino", "time_ns")

    def __init__(self, data: bytes | None, children: dict[bytes, _Node] | None,
                 time_ns: int) -> None:
        self.data = data
        self.children = children
        self.ino = next(_INODES)
        self.time_ns = time_ns

    @property
    def is_dir(self) -> bool:
        return self.children is not None

    def filestat(self) -> Filestat:
        if self.children is not None:
            return (_DEV, self.ino, Filetype.DIRECTORY, 2, 0, self.time_ns, self.time_ns,
                    self.time_ns)
        size = len(self.data or b"")
        return (_DEV, self.ino, Filetype.REGULAR_FILE, 1, size, self.time_ns, self.time_ns,
                self.time_ns)


def build_tree(tree: MemTree) -> _Node:
    """The node tree of ``tree``; names are single path components (no ``/``, ``.``, ``..``,
    NUL), else ``ValueError``."""
    now = time.time_ns()

    def node(value: bytes | MemTree, where: str) -> _Node:
        if isinstance(value, bytes | bytearray | memoryview):
            return _Node(bytes(value), None, now)
        children: dict[bytes, _Node] = {}
        for name, sub in value.items():
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise ValueError(f"{where}{name!r} is not a valid file name")
            children[name.encode("utf-8")] = node(sub, f"{where}{name}/")
        return _Node(None, children, now)

    return node(tree, "")


class MemFileHandle(Handle):
    """A read-only file whose bytes are in memory; its own offset (one per open)."""

    filetype = Filetype.REGULAR_FILE

    def __init__(self, node: _Node, rights: int = _FILE_RIGHTS) -> None:
        self._node = node
        self._data = memoryview(node.data or b"")
        self._pos = 0
        self.rights_base = rights & _FILE_RIGHTS
        self.rights_inheriting = 0

    def _copy(self, bufs: Sequence[memoryview], offset: int) -> int:
        done = 0
        for b in bufs:
            chunk = self._data[offset + done : offset + done + len(b)]
            b[: len(chunk)] = chunk
            done += len(chunk)
            if len(chunk) < len(b):
                break
        return done

    def read(self, bufs: Sequence[memoryview]) -> int:
        n = self._copy(bufs, self._pos)
        self._pos += n
        return n

    def pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        return self._copy(bufs, offset) if offset < len(self._data) else 0

    def write(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.BADF)  # not open for writing (as a read-only host file)

    def pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        raise WasiError(Errno.BADF)

    def seek(self, offset: int, whence: int) -> int:
        base = {abi.WHENCE_SET: 0, abi.WHENCE_CUR: self._pos,
                abi.WHENCE_END: len(self._data)}.get(whence)
        if base is None or base + offset < 0:
            raise WasiError(Errno.INVAL)
        self._pos = base + offset
        return self._pos

    def filestat(self) -> Filestat:
        return self._node.filestat()

    def set_size(self, size: int) -> None:
        raise WasiError(Errno.ROFS)

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        raise WasiError(Errno.ROFS)

    def set_fdflags(self, flags: int) -> None:
        if flags & (abi.FDFLAG_APPEND | abi.FDFLAG_DSYNC | abi.FDFLAG_SYNC | abi.FDFLAG_RSYNC):
            raise WasiError(Errno.ROFS)
        self.fdflags = flags  # NONBLOCK: memory never blocks

    def advise(self, offset: int, length: int, advice: int) -> None:
        return None

    def allocate(self, offset: int, length: int) -> None:
        raise WasiError(Errno.ROFS)

    def nbytes_readable(self) -> int:
        return max(0, len(self._data) - self._pos)

    def close(self) -> None:
        self._data = memoryview(b"")


class MemDirHandle(DirHandle):
    """A read-only directory held in memory (a pre-open when ``guest_path`` is set)."""

    memory = True

    def __init__(self, tree: MemTree | _Node, *, guest_path: bytes | None) -> None:
        node = tree if isinstance(tree, _Node) else build_tree(tree)
        super().__init__(-1, readonly=True, guest_path=guest_path)
        self._node = node
        self.rights_base = abi.RIGHTS_DIR_READ
        self.rights_inheriting = abi.RIGHTS_DIR_READ | _FILE_RIGHTS

    @classmethod
    def preopen_tree(cls, tree: MemTree, guest_path: str) -> MemDirHandle:
        return cls(tree, guest_path=guest_path.encode("utf-8"))

    # --- lookups used by the path calls ---------------------------------------------------
    def _walk(self, path: bytes, *, follow: bool = True) -> _Node:
        walk = PathWalk(path)  # resolve.py's checks; nothing here is a symlink
        stack = [self._node]
        for comp in reversed(walk.todo):
            cur = stack[-1]
            if cur.children is None:
                raise WasiError(Errno.NOTDIR)
            if comp == b".":
                continue
            if comp == b"..":
                if len(stack) == 1:  # above this fd's directory: refused, as resolve.py
                    raise WasiError(Errno.PERM)
                stack.pop()
                continue
            nxt = cur.children.get(comp)
            if nxt is None:
                raise WasiError(Errno.NOENT)
            stack.append(nxt)
        node = stack[-1]
        if walk.must_dir and node.children is None:
            raise WasiError(Errno.NOTDIR)
        return node

    def stat_path(self, path: bytes) -> Filestat:
        return self._walk(path).filestat()

    def readlink_path(self, path: bytes) -> bytes:
        self._walk(path)
        raise WasiError(Errno.INVAL)  # nothing here is a symlink

    def open_path(self, path: bytes, oflags: int, base: int, fdflags: int) -> Handle:
        """``path_open`` beneath this directory: read-only opens of what exists."""
        if oflags & (abi.OFLAG_CREAT | abi.OFLAG_TRUNC):
            raise WasiError(Errno.ROFS)
        if base & abi.RIGHT_FD_WRITE or fdflags & abi.FDFLAG_APPEND:
            node = self._walk(path)
            raise WasiError(Errno.ISDIR if node.is_dir else Errno.ROFS)
        node = self._walk(path)
        if oflags & abi.OFLAG_DIRECTORY and not node.is_dir:
            raise WasiError(Errno.NOTDIR)
        if node.is_dir:
            d = MemDirHandle(node, guest_path=None)
            d.rights_base &= self.rights_inheriting
            d.rights_inheriting &= self.rights_inheriting
            return d
        rights = self.rights_inheriting & (base | abi.RIGHT_FD_FDSTAT_SET_FLAGS) if base \
            else self.rights_inheriting
        f = MemFileHandle(node, rights)
        f.fdflags = fdflags & abi.FDFLAG_NONBLOCK
        return f

    # --- the directory fd itself ------------------------------------------------------------
    def filestat(self) -> Filestat:
        return self._node.filestat()

    def set_times(self, atim: int | None, mtim: int | None, now_a: bool, now_m: bool) -> None:
        raise WasiError(Errno.ROFS)

    def sync(self, data_only: bool) -> None:
        return None

    def readdir(self, cookie: int, room: int, streams: DirStreams) -> list[Dirent]:
        children = self._node.children or {}
        entries: list[Dirent] = [(1, b".", self._node.ino, int(Filetype.DIRECTORY)),
                                 (2, b"..", self._node.ino, int(Filetype.DIRECTORY))]
        for i, (name, node) in enumerate(sorted(children.items()), start=3):
            ftype = Filetype.DIRECTORY if node.is_dir else Filetype.REGULAR_FILE
            entries.append((i, name, node.ino, int(ftype)))
        out: list[Dirent] = []
        size = 0
        for d in entries[cookie:]:
            out.append(d)
            size += DIRENT_SIZE + len(d[1])
            if size >= room:
                break
        return out

    def end_stream(self) -> None:
        return None

    def close(self) -> None:
        self.host_fd = -1
