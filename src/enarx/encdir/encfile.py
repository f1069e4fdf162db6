"""One open encrypted file: block cache, read-modify-write, and journalled commits.

All handles the guest opens on one host file share one :class:`FileState` (the directory
keeps them by host inode), so a write through one fd is seen through every other at once.
Writes change plaintext blocks in memory; a *commit* seals the changed blocks under a new
write counter and writes them together with the new trailer. It happens when
:data:`DIRTY_LIMIT` blocks are pending, on ``sync()``, ``set_times`` and the last
``close()``.

Crash safety: a commit first writes one redo journal (``<host name>.j``: every
(offset, bytes) write of the commit plus the final host size, authenticated with a GMAC tag
under a key derived from the directory key), then updates the file in place, then
invalidates the journal (its magic overwritten: cheaper than truncating it, which makes ext4
flush). Opening a file whose journal is complete and authentic replays it (replaying is
idempotent); a journal cut by a crash fails its tag, is removed, and the file was never
touched. So after a crash at any point every file is entirely at its previous or its new
committed state. Without ``sync()`` a power loss may reorder the host's writes; the result
is then detected (EIO), not silently wrong. ``sync()`` fsyncs the journal before the file is
touched and the file before the journal is invalidated. The journal file stays open while
the file is, and is removed when the file is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.encdir import fileformat as ff
from enarx.encdir.errors import EncDirCorrupt, EncDirFsError
from enarx.encdir.keys import DirKeys

__all__ = ["DIRTY_LIMIT", "EncFile", "FileState", "Node", "Observer", "Owner", "new_file_bytes",
           "recover", "replayed_image", "utime"]

#: pending blocks that trigger a commit (1 MiB of 64 KiB blocks)
DIRTY_LIMIT = 16
_CACHE_LIMIT = 16  # decrypted blocks kept per open file
_RUN_BYTES = 1 << 20  # read from the host in one go (at least one block)
_IOV_BATCH = 512  # pieces per pwritev (below every IOV_MAX)


@dataclass(frozen=True)
class Node:
    """What ``stat`` says about a guest file or directory."""

    kind: str  # "file", "dir" or "symlink"
    size: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    ino: int
    nlink: int = 1


def _pread_exact(fd: int, n: int, off: int) -> bytes:
    out = os.pread(fd, n, off)
    while len(out) < n:
        more = os.pread(fd, n - len(out), off + len(out))
        if not more:
            break
        out += more
    return out


def _pwrite_all(fd: int, data: ff.Buffer | list[ff.Buffer], off: int) -> None:
    """Write all of ``data`` (bytes, or pieces written in order with pwritev) at ``off``."""
    if isinstance(data, list):
        for k in range(0, len(data), _IOV_BATCH):
            bufs = data[k: k + _IOV_BATCH]
            total = sum(len(b) for b in bufs)
            n = os.pwritev(fd, bufs, off)
            if n < total:  # short write (rare on regular files): finish byte-wise
                _pwrite_all(fd, b"".join(bufs)[n:], off + n)
            off += total
        return
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        view, off = view[n:], off + n


def new_file_bytes(keys: DirKeys, host_name: str) -> bytes:
    """The host bytes of a new, empty encrypted file (random id and content key) that will
    live at ``host_name``."""
    file_id = os.urandom(ff.FILE_ID_SIZE)
    t = ff.Trailer(os.urandom(32), 0, 0, array("Q"), (host_name,), ff.BLOCK, 1)
    return ff.build_prefix(file_id) + ff.seal_trailer(keys.header, file_id, t)


def recover(keys: DirKeys, path: str) -> None:
    """Finish or discard the journal a crash left next to host file ``path``."""
    jpath = path + ".j"
    try:
        with open(jpath, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    parsed = ff.parse_journal(keys.journal, data)
    if parsed is not None:
        file_id, final_size, records = parsed
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            fd = -1
        if fd >= 0:
            try:
                head = _pread_exact(fd, ff.PREFIX_SIZE, 0)
                if len(head) == ff.PREFIX_SIZE and head[len(ff.MAGIC):] == file_id:
                    for off, chunk in records:
                        _pwrite_all(fd, chunk, off)
                    os.ftruncate(fd, final_size)
                    os.fsync(fd)
            finally:
                os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(jpath)


def replayed_image(keys: DirKeys, path: str) -> bytes | None:
    """For read-only use: the host bytes of ``path`` as they are once its pending journal is
    replayed (in memory, the host file untouched); None when there is no valid journal."""
    try:
        with open(path + ".j", "rb") as f:
            parsed = ff.parse_journal(keys.journal, f.read())
        if parsed is None:
            return None
        with open(path, "rb") as f:
            image = bytearray(f.read())
    except FileNotFoundError:
        return None
    file_id, final_size, records = parsed
    if bytes(image[len(ff.MAGIC): ff.PREFIX_SIZE]) != file_id:
        return None
    for off, chunk in records:
        if off > len(image):
            image.extend(bytes(off - len(image)))
        image[off: off + len(chunk)] = chunk
    del image[final_size:]
    image.extend(bytes(final_size - len(image)))
    return bytes(image)


class Observer(Protocol):
    """Something that reads the host file on its own (the native read path,
    :mod:`enarx.wasi.encnative`): told before anything about the file changes."""

    def stale(self) -> None: ...


class FileState:
    """The shared, in-memory state of one host file (see the module docstring)."""

    def __init__(self, keys: DirKeys, path: str, fd: int, *, writable: bool,
                 lock: threading.RLock, image: bytes | None = None) -> None:
        self.keys = keys
        self.path = path  # host path; the directory updates it on rename
        self.fd = fd
        self.writable = writable
        self.lock = lock
        self.refs = 0
        self._scratch = memoryview(bytearray())  # see _read_run
        self.touched_ns = 0  # when uncommitted writes last changed the file (0: none)
        self.jfd = -1  # the open journal file (see _write_journal) and its path
        self.jpath = ""
        self.jsize = 0  # its size on the host
        self.jlive = False  # it holds a commit not yet (known to be) applied
        self.image = image  # read-only, with a pending journal: the replayed host bytes
        self.observer: Observer | None = None
        head = self._read(ff.PREFIX_SIZE, 0)
        self.fmt, self.file_id = ff.parse_prefix(head)
        host_size = os.fstat(fd).st_size if image is None else len(image)
        tail = self._read(4, host_size - 4) if host_size >= ff.PREFIX_SIZE + 4 else b""
        if len(tail) != 4:
            raise EncDirCorrupt("file is cut (no trailer)")
        tlen = int.from_bytes(tail, "little")
        if tlen > host_size - ff.PREFIX_SIZE:
            raise EncDirCorrupt("file trailer length is out of range")
        t = ff.open_trailer(keys.header, self.file_id, self._read(tlen, host_size - tlen),
                            self.fmt)
        if ff.PREFIX_SIZE + ff.data_host_len(t.length, t.block) + tlen != host_size:
            raise EncDirCorrupt("file size does not match its trailer (cut or extended)")
        if os.path.basename(path) not in t.names:
            raise EncDirCorrupt("file is not the one its name was given to (moved or swapped "
                                "on the host)")
        self.names = t.names
        self.aead = AESGCM(t.file_key)
        self.file_key = t.file_key
        self.length = t.length
        self.counter = t.counter
        self.versions = t.versions
        self.block = t.block
        self.nlink = t.nlink
        self.dirty: dict[int, bytes | bytearray] = {}
        self.cache: dict[int, bytes] = {}
        self.meta_dirty = False

    def _changing(self) -> None:
        """Before the length, a block, the versions or the host fd change."""
        if self.observer is not None:
            self.observer.stale()

    def native_readable(self) -> bool:
        """Whether every plaintext byte is what the host holds now (no pending block) and
        readable from ``fd``: what an :class:`Observer` may read by itself."""
        return self.fd >= 0 and self.image is None and not self.dirty

    # --- blocks ---------------------------------------------------------------------------
    def _read_run(self, n: int, off: int) -> memoryview:
        """``n`` host bytes at ``off`` into a reused buffer (no fresh allocation, so no page
        faults per read); valid until the next call. Shorter at the host file's end."""
        if self.image is not None:
            return memoryview(self.image)[off: off + n]
        if len(self._scratch) < n:
            self._scratch = memoryview(bytearray(n))
        view = self._scratch[:n]
        got = os.preadv(self.fd, [view], off)
        while 0 < got < n:  # short (rare on a regular file): the rest
            k = os.preadv(self.fd, [view[got:]], off + got)
            if k <= 0:
                break
            got += k
        return view[:got]

    def _read(self, n: int, off: int) -> bytes:
        if self.image is not None:
            return self.image[off: off + n]
        return _pread_exact(self.fd, n, off)

    def _block_len(self, i: int) -> int:
        return min(self.block, self.length - i * self.block)

    def _block(self, i: int) -> bytes | bytearray:
        got = self.dirty.get(i)
        if got is None:
            got = self.cache.get(i)
        if got is not None:
            return got
        n = self._block_len(i)
        version = self.versions[i]
        if version == 0:
            return bytes(n)
        sealed = self._read(n + ff.BLOCK_OVERHEAD, ff.block_offset(i, self.block))
        if len(sealed) != n + ff.BLOCK_OVERHEAD:
            raise EncDirCorrupt(f"block {i} is cut")
        plain = ff.open_block(self.aead, self.file_id, i, version, sealed)
        if len(plain) != n:
            raise EncDirCorrupt(f"block {i} has the wrong length")
        if len(self.cache) >= _CACHE_LIMIT:
            del self.cache[next(iter(self.cache))]
        self.cache[i] = plain
        return plain

    def _set(self, i: int, plain: bytes | bytearray) -> None:
        self.cache.pop(i, None)
        self.dirty[i] = plain

    # --- the file operations ----------------------------------------------------------------
    def pread(self, n: int, off: int) -> bytes:
        if n < 0 or off < 0:
            raise EncDirFsError(errno.EINVAL)
        want = min(n, self.length - off)
        if want <= 0:
            return b""
        bs = self.block
        if off // bs == (off + want - 1) // bs:  # within one block
            base = off // bs * bs
            return bytes(self._block(off // bs)[off - base: off - base + want])
        buf = bytearray(want)
        self.pread_into(memoryview(buf), off)
        return bytes(buf)

    def pread_into(self, buf: memoryview, off: int) -> int:
        """Read into ``buf`` from plaintext offset ``off``; returns the bytes read. Whole
        blocks the host holds are decrypted straight into ``buf`` (e.g. guest memory)."""
        bs = self.block
        i, within = divmod(off, bs)
        if not within and len(buf) == bs and off + bs <= self.length and off >= 0 \
                and i not in self.dirty and i not in self.cache and self.versions[i]:
            # the sequential-read hot path: one whole block, straight into ``buf``
            sealed = self._read_run(bs + ff.BLOCK_OVERHEAD, ff.block_offset(i, bs))
            if len(sealed) != bs + ff.BLOCK_OVERHEAD:
                raise EncDirCorrupt(f"block {i} is cut")
            ff.open_run_into(self.aead, self.file_id, i, self.versions, self.length, sealed,
                             buf, bs)
            return bs
        if off < 0:
            raise EncDirFsError(errno.EINVAL)
        end = min(self.length, off + len(buf))
        if off >= end:
            return 0
        first, last = off // bs, (end - 1) // bs
        run_limit = max(1, _RUN_BYTES // bs)
        i = first
        while i <= last:
            lo = i * bs
            hi = lo + self._block_len(i)
            whole = lo >= off and hi <= end
            if not whole or i in self.dirty or i in self.cache or self.versions[i] == 0:
                a, b = max(off, lo), min(end, hi)
                buf[a - off: b - off] = self._block(i)[a - lo: b - lo]
                i += 1
                continue
            j = i  # a run of whole blocks only the host has: one read, decrypted in place
            while j < last and j - i < run_limit and j + 1 not in self.dirty \
                    and j + 1 not in self.cache and self.versions[j + 1] != 0 \
                    and (j + 1) * bs + self._block_len(j + 1) <= end:
                j += 1
            want = (j - i) * (bs + ff.BLOCK_OVERHEAD) + ff.block_host_len(j, self.length, bs)
            sealed = self._read_run(want, ff.block_offset(i, bs))
            if len(sealed) != want:
                raise EncDirCorrupt(f"blocks {i}..{j} are cut")
            span = j * bs + self._block_len(j) - lo
            ff.open_run_into(self.aead, self.file_id, i, self.versions, self.length,
                             sealed, buf[lo - off: lo - off + span], bs)
            i = j + 1
        return end - off

    def _check_writable(self) -> None:
        if not self.writable:
            raise EncDirFsError(errno.EROFS, "the encrypted directory is read-only")

    def pwrite(self, data: bytes, off: int) -> int:
        self._check_writable()
        if off < 0:
            raise EncDirFsError(errno.EINVAL)
        data = bytes(data)
        if not data:
            return 0
        bs = self.block
        self._changing()
        self.touched_ns = time.time_ns()
        end = off + len(data)
        if end > self.length:
            self._resize(end)
        pos = off
        while pos < end:
            i, within = divmod(pos, bs)
            take = min(bs - within, end - pos)
            chunk = data[pos - off: pos - off + take]
            if within == 0 and take == self._block_len(i):
                self._set(i, chunk)
            else:  # changed in place: a run of small writes copies the block once
                blk = self.dirty.get(i)
                if not isinstance(blk, bytearray):
                    blk = bytearray(self._block(i))
                    self._set(i, blk)
                blk[within: within + take] = chunk
            pos += take
            if len(self.dirty) >= DIRTY_LIMIT:
                self.commit(durable=False)
        return len(data)

    def _resize(self, new: int) -> None:
        old = self.length
        if new == old:
            return
        if new > ff.MAX_FILE_SIZE:
            raise EncDirFsError(errno.EFBIG, f"files in an encrypted directory are at most "
                                f"{ff.MAX_FILE_SIZE >> 30} GiB")
        self._changing()
        self.touched_ns = time.time_ns()
        self.meta_dirty = True
        if new > old:
            if old % self.block:  # the old last block grows: re-seal it, zero-filled
                j = old // self.block
                blk = self._block(j)
                self.length = new
                self._set(j, blk + bytes(self._block_len(j) - len(blk)))
            self.length = new
            self.versions.extend([0] * (ff.nblocks(new, self.block) - len(self.versions)))
            return
        keep = ff.nblocks(new, self.block)
        last = self._block(keep - 1)[: new - (keep - 1) * self.block] \
            if new % self.block else None
        self.length = new
        del self.versions[keep:]
        for d in (self.dirty, self.cache):
            for i in [i for i in d if i >= keep]:
                del d[i]
        if last is not None:
            self._set(keep - 1, last)

    def truncate(self, n: int) -> None:
        self._check_writable()
        if n < 0:
            raise EncDirFsError(errno.EINVAL)
        self._resize(n)
        if len(self.dirty) >= DIRTY_LIMIT:
            self.commit(durable=False)

    def commit(self, *, durable: bool) -> None:
        """Seal pending blocks under a new counter and write them through the journal."""
        if not self.dirty and not self.meta_dirty:
            if durable and self.writable:
                os.fsync(self.fd)
            return
        self._changing()
        counter = self.counter + 1
        versions = array("Q", self.versions)
        runs: list[tuple[int, list[ff.Buffer]]] = []  # contiguous host writes
        end = -1
        order = sorted(self.dirty)
        k = 0
        while k < len(order):  # each run of consecutive blocks sealed into one buffer
            j = k
            while j + 1 < len(order) and order[j + 1] == order[j] + 1:
                j += 1
            for i in order[k: j + 1]:
                versions[i] = counter
            sealed = ff.seal_run(self.aead, self.file_id, order[k], counter,
                                 [self.dirty[i] for i in order[k: j + 1]])
            at = ff.block_offset(order[k], self.block)
            runs.append((at, [sealed]))
            end = at + len(sealed)
            k = j + 1
        trailer = ff.seal_trailer(self.keys.header, self.file_id,
                                  ff.Trailer(self.file_key, self.length, counter, versions,
                                             self.names, self.block, self.nlink))
        if self.fmt != ff.FORMAT_VERSION:  # a version-1 file: its prefix says version 2 now
            runs.insert(0, (0, [ff.build_prefix(self.file_id)]))
        at = ff.PREFIX_SIZE + ff.data_host_len(self.length, self.block)
        if at == end:
            runs[-1][1].append(trailer)
        else:
            runs.append((at, [trailer]))
        final = at + len(trailer)
        try:
            if self.path:  # an unlinked file is unreachable after a crash: no journal
                self._write_journal(final, runs, durable)
            for off, chunks in runs:
                _pwrite_all(self.fd, chunks, off)
            os.ftruncate(self.fd, final)
            if durable:
                os.fsync(self.fd)
            if self.jfd >= 0:  # applied: nothing to replay. Its magic goes (one byte, no
                os.pwrite(self.jfd, b"\0", 0)  # truncate: ext4 flushes files cut to 0)
                self.jlive = False
        except OSError as e:
            raise EncDirFsError(e.errno or errno.EIO, f"cannot write encrypted file: {e}") from e
        self.counter = counter
        self.versions = versions
        self.fmt = ff.FORMAT_VERSION
        for i, plain in self.dirty.items():
            if len(self.cache) < _CACHE_LIMIT:
                self.cache[i] = bytes(plain)
        self.dirty.clear()
        self.meta_dirty = False

    def node(self) -> Node:
        """What ``stat`` says: the host's times, but a pending write counts as a change."""
        s = os.fstat(self.fd)
        mtime = max(s.st_mtime_ns, self.touched_ns)
        return Node("file", self.length, mtime, s.st_atime_ns, max(s.st_ctime_ns, mtime),
                    s.st_ino, self.nlink)

    def _write_journal(self, final: int, runs: list[tuple[int, list[ff.Buffer]]],
                       durable: bool) -> None:
        """Write the redo journal; the journal file stays open (empty between commits) so a
        commit costs no directory operations."""
        journal = ff.journal_parts(self.keys.journal, self.file_id, final, runs)
        if self.jfd < 0 or self.jpath != self.path + ".j":
            self.drop_journal()
            self.jpath = self.path + ".j"
            self.jfd = os.open(self.jpath, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                               0o600)
            self.jsize = 0
        size = sum(len(memoryview(p)) for p in journal)
        self.jlive = True
        _pwrite_all(self.jfd, journal, 0)
        if size < self.jsize:  # no tail of an older, longer one
            os.ftruncate(self.jfd, size)
        self.jsize = size
        if durable:
            os.fsync(self.jfd)

    def drop_journal(self) -> None:
        """Close the journal file; remove it unless it holds a commit not yet applied (a
        failed write leaves it for the next open to replay)."""
        if self.jfd < 0:
            return
        jfd, self.jfd = self.jfd, -1
        try:
            if not self.jlive:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.jpath)
        finally:
            os.close(jfd)

    def retarget(self, path: str) -> None:
        """The host file now lives at ``path`` (renamed, or ``""`` once unlinked)."""
        self.drop_journal()
        self.path = path

    def close_fd(self) -> None:
        self._changing()
        self.drop_journal()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class EncFile:
    """A handle on an open encrypted file (plaintext offsets; no position of its own)."""

    def __init__(self, owner: Owner, state: FileState) -> None:
        self._owner = owner
        self._state: FileState | None = state

    def _st(self) -> FileState:
        if self._state is None:
            raise EncDirFsError(errno.EBADF, "file is closed")
        return self._state

    def shared(self) -> FileState | None:
        """The state this handle shares with every other handle on the file (None once
        closed)."""
        return self._state

    def pread(self, n: int, off: int) -> bytes:
        st = self._st()
        with st.lock:
            return st.pread(n, off)

    def pread_into(self, buf: memoryview, off: int) -> int:
        """Like ``pread`` but into ``buf`` (no intermediate copy); returns the bytes read."""
        st = self._st()
        with st.lock:
            return st.pread_into(buf, off)

    def pwrite(self, data: bytes, off: int) -> int:
        st = self._st()
        with st.lock:
            return st.pwrite(data, off)

    def size(self) -> int:
        return self._st().length

    def truncate(self, n: int) -> None:
        st = self._st()
        with st.lock:
            st.truncate(n)

    def sync(self) -> None:
        st = self._st()
        with st.lock:
            st.commit(durable=True)

    def stat(self) -> Node:
        st = self._st()
        with st.lock:
            return st.node()

    def set_times(self, atime_ns: int | None, mtime_ns: int | None) -> None:
        st = self._st()
        with st.lock:
            st.commit(durable=False)
            utime(st.fd, atime_ns, mtime_ns)
            st.touched_ns = 0

    def close(self) -> None:
        st, self._state = self._state, None
        if st is not None:
            self._owner.release(st)

    def __enter__(self) -> EncFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def utime(target: int | str, atime_ns: int | None, mtime_ns: int | None) -> None:
    if atime_ns is None and mtime_ns is None:
        return
    s = os.stat(target)
    os.utime(target, ns=(s.st_atime_ns if atime_ns is None else atime_ns,
                         s.st_mtime_ns if mtime_ns is None else mtime_ns))


class Owner:
    """What an :class:`EncFile` needs from its directory (implemented by ``EncDir``)."""

    def release(self, state: FileState) -> None:
        raise NotImplementedError

