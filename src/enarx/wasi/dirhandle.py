"""Directory fds: pre-opens and the directories opened beneath them, and ``fd_readdir``.

A directory handle never holds its whole listing: it keeps an open stream positioned at a
cookie, and the fd table keeps at most ``MAX_OPEN_STREAMS`` such streams open
(:class:`~enarx.wasi.fdtable.DirStreams`); a stream pushed out is reopened and skipped
forward when the guest reads on. The pre-open's parent stays hidden: ``..`` of the root
reports the root itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from enarx.errors import ResourceError
from enarx.wasi import abi
from enarx.wasi.abi import DIRENT, Errno, Filetype, WasiError, from_oserror
from enarx.wasi.fdtable import _HostFdHandle, filetype_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from enarx.wasi.fdtable import DirStreams

__all__ = ["DIRENT_SIZE", "DirHandle", "Dirent"]

DIRENT_SIZE = DIRENT.size

# (cookie of the next entry, name, d_ino, filetype)
Dirent = tuple[int, bytes, int, int]


class DirHandle(_HostFdHandle):
    """A directory fd; pre-opens carry the guest path announced by fd_prestat_*.

    ``root`` is the (st_dev, st_ino) of the pre-open the directory lies in: its ``..`` entry
    is outside the sandbox, so readdir reports the root's own inode there.
    """

    filetype = Filetype.DIRECTORY

    def __init__(
        self,
        host_fd: int,
        *,
        readonly: bool,
        guest_path: bytes | None,
        root: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(host_fd, readonly)
        self.guest_path = guest_path
        if root is None and guest_path is not None:
            with contextlib.suppress(OSError):
                s = os.fstat(host_fd)
                root = (s.st_dev, s.st_ino)
        self.root = root
        if readonly:
            self.rights_base = abi.RIGHTS_DIR_READ
            self.rights_inheriting = abi.RIGHTS_DIR_READ | abi.RIGHTS_FILE_READ
        else:
            self.rights_base = abi.RIGHTS_DIR
            self.rights_inheriting = abi.RIGHTS_DIR | abi.RIGHTS_FILE
        # fd_readdir: an open stream positioned at cookie ``_pos`` (entries are never
        # cached as a whole), and the last entry it gave, which the guest asks for again
        # when it did not fit in its buffer.
        self._stream: Iterator[os.DirEntry[str]] | None = None
        self._pos = 0
        self._last: Dirent | None = None

    @classmethod
    def preopen(cls, host_path: str, guest_path: str, *, readonly: bool = False) -> DirHandle:
        try:
            fd = os.open(host_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ResourceError(
                f"pre-opened directory {host_path!r} does not exist",
                hint="create the directory, or fix the path (--dir or `host` in Enarx.toml)",
            ) from None
        except NotADirectoryError:
            raise ResourceError(
                f"{host_path!r} is not a directory",
                hint="--dir (and kind = \"dir\") takes a directory: pre-open the one holding "
                "the file and pass the guest the file's path inside it",
            ) from None
        except OSError as e:
            raise ResourceError(f"cannot open directory {host_path!r}: {e.strerror}") from None
        return cls(fd, readonly=readonly, guest_path=os.fsencode(guest_path))

    def read(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.BADF)

    def write(self, bufs: Sequence[memoryview]) -> int:
        raise WasiError(Errno.BADF)

    def pread(self, bufs: Sequence[memoryview], offset: int) -> int:
        raise WasiError(Errno.BADF)

    def pwrite(self, bufs: Sequence[memoryview], offset: int) -> int:
        raise WasiError(Errno.BADF)

    def seek(self, offset: int, whence: int) -> int:
        raise WasiError(Errno.BADF)

    def set_fdflags(self, flags: int) -> None:
        raise WasiError(Errno.BADF)

    def readdir(self, cookie: int, room: int, streams: DirStreams) -> list[Dirent]:
        """Entries from ``cookie`` on ('.' is 0, '..' 1, then the directory's own), until
        their dirent records (``DIRENT_SIZE`` + name each) reach ``room`` bytes."""
        out: list[Dirent] = []
        size = 0
        try:
            if cookie < 2:
                me = os.fstat(self.host_fd)
                dots = [(1, b".", me.st_ino, int(Filetype.DIRECTORY))]
                # The pre-open's parent is outside the sandbox: do not reveal its inode.
                at_root = self.root == (me.st_dev, me.st_ino) or self.guest_path is not None
                parent = me.st_ino if at_root else os.stat("..", dir_fd=self.host_fd).st_ino
                dots.append((2, b"..", parent, int(Filetype.DIRECTORY)))
                for d in dots[cookie:]:
                    out.append(d)
                    size += DIRENT_SIZE + len(d[1])
                    if size >= room:
                        return out
                cookie = 2
            if self._last is not None and self._last[0] == cookie + 1 and self._pos == cookie + 1:
                # The entry that did not fit last time, asked for again.
                out.append(self._last)
                size += DIRENT_SIZE + len(self._last[1])
            else:
                self._seek(cookie, streams)
            stream = self._stream
            while size < room and stream is not None:
                ent = next(stream, None)
                if ent is None:
                    self.end_stream()
                    streams.forget(self)
                    break
                self._pos += 1
                d = (self._pos, os.fsencode(ent.name), ent.inode(), _dirent_type(ent))
                self._last = d
                out.append(d)
                size += DIRENT_SIZE + len(d[1])
            if self._stream is not None:
                streams.touch(self)
        except OSError as e:
            self.end_stream()
            raise from_oserror(e) from None
        return out

    def _seek(self, cookie: int, streams: DirStreams) -> None:
        """Position the stream so that it yields entry ``cookie`` next."""
        if self._stream is None or self._pos != cookie:
            self.end_stream()
            self._stream = os.scandir(self.host_fd)
            self._pos = 2
            streams.touch(self)
        while self._pos < cookie:
            if next(self._stream, None) is None:
                self.end_stream()
                streams.forget(self)
                return
            self._pos += 1

    def end_stream(self) -> None:
        """Close the readdir stream (the next fd_readdir opens a new one)."""
        stream, self._stream, self._last = self._stream, None, None
        if stream is not None:
            stream.close()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.end_stream()
        super().close()


def _dirent_type(ent: os.DirEntry[str]) -> int:
    try:
        if ent.is_symlink():
            return Filetype.SYMBOLIC_LINK
        if ent.is_dir(follow_symlinks=False):
            return Filetype.DIRECTORY
        if ent.is_file(follow_symlinks=False):
            return Filetype.REGULAR_FILE
        return filetype_of(ent.stat(follow_symlinks=False).st_mode)
    except OSError:
        return Filetype.UNKNOWN
