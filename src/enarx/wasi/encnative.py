"""Native reads of encrypted pre-opens: ``fd_read`` decrypts in C (``_encread.c``).

Through the Python shim, a 64 KiB ``read()`` of an encrypted file costs the host read, the
AES-GCM work and ~6 µs of interpreter work (WASI dispatch and :mod:`enarx.encdir`'s
bookkeeping); in C it costs the host read and the AES-GCM work. This module keeps the C
side's copy of each open file in step with its :class:`enarx.encdir.encfile.FileState` and
hands the guest fds of readable encrypted files to :class:`enarx.wasi.native.FastIO`.

The rule that keeps the two paths one behaviour: C serves a file only while Python holds no
pending (uncommitted) block of it and reads it straight from the host, so both see the same
committed bytes. The file state calls :meth:`EncMirror.stale` before any change (a write, a
resize, a commit, its host fd closing); every read C cannot or may not serve goes to Python,
which then refreshes the copy (length, block versions, host fd) through the ``fd_read``
re-sync of :mod:`enarx.wasi.host`. C answers a block that fails authentication, is cut or is
unreadable with the errno Python gives (EIO), its bytes wiped from the guest's buffer.

AES-256-GCM comes from the OpenSSL ``cryptography`` runs on (:mod:`enarx.wasi.evp`), through
``EVP`` functions whose addresses are passed in, as wasmtime's are. Each file's context is
keyed once; a block sets only its nonce. Before first use the C path must open blocks sealed
by :mod:`enarx.encdir.fileformat` and refuse them once a byte is flipped; otherwise, or
without those functions, every read stays in Python. ``ENARX_NATIVE=0`` turns this off with
the rest of the native path.
"""

from __future__ import annotations

import ctypes
import functools
import os
import weakref
from array import array
from typing import TYPE_CHECKING, Any

from enarx.wasi import evp

if TYPE_CHECKING:
    from enarx.encdir.encfile import FileState
    from enarx.wasi.native import FastIO

__all__ = ["EncMirror", "attach", "ready"]


class EncMirror:
    """The C side's copy of one open encrypted file (one per :class:`FileState`)."""

    def __init__(self, lib: ctypes.CDLL, fns: ctypes.Array[ctypes.c_void_p],
                 state: FileState) -> None:
        if len(state.file_key) != 32 or len(state.file_id) != 16:  # what C reads
            raise ValueError("an AES-256 key and a 16-byte file id")
        ptr = lib.fastio_enc_new(fns, state.file_key)
        if not ptr:
            raise MemoryError("fastio_enc_new")
        self._lib = lib
        self.ptr = int(ptr)
        self._state = weakref.ref(state)
        self._on = False  # what C's `valid` says (so a change to a file C is off costs nothing)
        weakref.finalize(self, lib.fastio_enc_free, ctypes.c_void_p(self.ptr))

    def stale(self) -> None:
        """Stop serving the file natively (called by the file state before it changes)."""
        if self._on:
            self._lib.fastio_enc_stale(self.ptr)
            self._on = False

    def refresh(self) -> bool:
        """Give C the file as the host holds it now; False (C stays off) while the file has
        pending blocks, is closed or is read from a replayed in-memory image."""
        st = self._state()
        if st is None or not st.native_readable():
            self.stale()
            return False
        versions = st.versions
        addr, n = versions.buffer_info() if len(versions) else (0, 0)
        self._on = bool(self._lib.fastio_enc_set(self.ptr, st.fd, st.length, st.block,
                                                 st.file_id, addr, n))
        return self._on

    def pread(self, n: int, off: int) -> bytes:
        """What C reads at plaintext ``off`` (for the self-test and the tests): OSError with
        the errno C answers (EIO when a block fails authentication)."""
        buf = ctypes.create_string_buffer(n)
        got = int(self._lib.fastio_enc_pread(self.ptr, buf, n, off))
        if got < 0:
            raise OSError(-got, os.strerror(-got))
        return buf.raw[:got]


def attach(fastio: FastIO, fd: int, file: Any, pos: ctypes.c_int64) -> bool:
    """Let C serve guest ``fd``'s reads of ``file`` (an :class:`enarx.encdir.EncFile`) from
    position ``pos``; False when it cannot (no OpenSSL functions, the self-test failed, the
    file is closed), and the fd stays with Python."""
    fns = evp.functions()
    state = file.shared() if file is not None else None
    if fns is None or state is None or not ready(fastio.lib):
        return False
    mirror = state.observer
    if not isinstance(mirror, EncMirror):
        mirror = EncMirror(fastio.lib, fns, state)
        state.observer = mirror
    mirror.refresh()
    fastio.set_enc(fd, mirror, mirror.ptr, pos)
    return True


def ready(lib: ctypes.CDLL) -> bool:
    """Whether the native library can decrypt: the ``EVP`` functions are found and the
    self-test passes (~15 ms, once per process: the host calls this while linking a guest
    that has an encrypted pre-open, so the guest's first read does not pay it)."""
    return evp.functions() is not None and _self_test(lib)


@functools.cache
def _self_test(lib: ctypes.CDLL) -> bool:
    """Once per library: C opens two blocks (a whole one and a short one, read whole and in
    part) sealed by ``cryptography`` and refuses the file once one byte is flipped."""
    fns = evp.functions()
    try:
        return fns is not None and _run_self_test(lib, fns)
    except Exception:
        return False


def _run_self_test(lib: ctypes.CDLL, fns: ctypes.Array[ctypes.c_void_p]) -> bool:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from enarx.encdir import fileformat as ff

    block, file_key, file_id = 4096, os.urandom(32), os.urandom(ff.FILE_ID_SIZE)
    plain = os.urandom(block + 1000)
    versions = array("Q", [3, 7])
    aead = AESGCM(file_key)
    body = ff.build_prefix(file_id) + b"".join(
        ff.seal_block(aead, file_id, i, versions[i], plain[i * block: (i + 1) * block])
        for i in range(2)
    )
    ptr = lib.fastio_enc_new(fns, file_key)
    if not ptr:
        return False
    fd = os.memfd_create("enarx-encread-selftest", os.MFD_CLOEXEC)
    try:
        buf = ctypes.create_string_buffer(len(plain))

        def read(n: int, off: int) -> bytes | None:
            got = int(lib.fastio_enc_pread(ptr, buf, n, off))
            return None if got < 0 else buf.raw[:got]

        os.write(fd, body)
        addr, n = versions.buffer_info()
        if not lib.fastio_enc_set(ptr, fd, len(plain), block, file_id, addr, n):
            return False
        good = read(len(plain), 0) == plain and read(100, block - 50) == plain[block - 50:
                                                                             block + 50]
        os.pwrite(fd, bytes([body[-1] ^ 1]), len(body) - 1)
        # the short block fails: EIO, and its bytes are wiped from the buffer
        return good and read(len(plain), 0) is None and buf.raw[block:] == bytes(1000)
    finally:
        os.close(fd)
        lib.fastio_enc_free(ptr)
