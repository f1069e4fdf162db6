"""The native fast path for ``fd_read``/``fd_write`` (``_fastio.c``): build, cache, load, bind.

A WASI call through the Python shim costs a ctypes trampoline plus interpreter work (~2 µs);
``_fastio.c`` serves ``fd_read``/``fd_write`` on stdio and regular files in C (~0.3 µs) and
hands every other call to the Python callback unchanged, so the guest sees one behaviour
(errno for errno, byte for byte). With fuel metering on, every call goes to Python.
``_encread.c`` (driven by :mod:`enarx.wasi.encnative`) serves ``fd_read`` on files of
encrypted pre-opens the same way; the library is built from :data:`SOURCES` together.

Building: the system ``cc``/``gcc``, else ``python -m ziglang cc``; quiet, bounded by a
timeout, and any failure just means the pure-Python path. ``ENARX_NATIVE=0`` forces that
path. The C file gets wasmtime's functions as pointers from the already-loaded
``libwasmtime`` (no headers, no linking).

Where the library lives, and why it can be trusted: the user's cache dir
(``$ENARX_NATIVE_DIR``, else ``$XDG_CACHE_HOME/enarx/native``), created 0700 and used only
if it is ours and not writable by group or others. The file name carries a SHA-256 key of
the C source, the compiler (path, size, mtime), ``libwasmtime`` (path, size, mtime) and the
machine, so any change rebuilds. A cache is writable by whoever can write the user's files,
so the SHA-256 of the library we built is recorded *outside* the cache, in a 0600 file under
``$XDG_STATE_HOME/enarx/native`` (0700). Loading reads the library into memory, compares its
digest with the record in constant time, and ``dlopen``s that very copy through a
``memfd``: what runs is what was verified, with no window to swap the file between check
and load. A missing or wrong record means rebuild. Building into the installed package at
install time was rejected because an editable install's package dir is the source tree.

Signals: Python's SIGINT handler makes a blocked ``read``/``write``/``poll`` fail with EINTR.
The C side then ends the call with a trap (nothing moved) or a short count (something did),
never a retry, so Ctrl-C stops a guest blocked on stdin; the pending KeyboardInterrupt is
raised once control is back in Python.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import hmac
import os
import platform
import shutil
import stat
import sys
import tempfile
import weakref
from pathlib import Path

from wasmtime import _ffi as ffi

from enarx.fsutil import atomic_write, cache_dir, ensure_private_dir, state_dir
from enarx.wasi.abi import from_oserror

__all__ = ["F_READ", "F_STDIO", "F_WRITE", "MAP_SIZE", "FastIO", "enabled", "library"]

_HERE = Path(__file__).parent
#: the C files of the library (compiled together; a change to any one rebuilds it)
SOURCES = (_HERE / "_fastio.h", _HERE / "_fastio.c", _HERE / "_encread.c")
MAP_SIZE = 1024  # guest fds below this can be served natively (MAP_SIZE in _fastio.c)
F_READ, F_WRITE, F_STDIO = 1, 2, 4
_BUILD_TIMEOUT = 60.0


def enabled() -> bool:
    """Whether runs should use the native path (``ENARX_NATIVE=0`` turns it off)."""
    return os.environ.get("ENARX_NATIVE", "1") != "0" and library() is not None


@functools.cache
def library() -> ctypes.CDLL | None:
    """The verified, loaded library, building it on first use; None if it cannot be had."""
    try:
        return _load_or_build()
    except Exception:  # never fail a run over the fast path
        return None


def _compiler() -> tuple[list[str], str] | None:
    """(command, a file whose identity names the compiler's version)."""
    for name in ("cc", "gcc"):
        exe = shutil.which(name)
        if exe:
            return [exe], exe
    import importlib.util

    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        return None
    return [sys.executable, "-m", "ziglang", "cc"], spec.origin


def _identity(path: str) -> str:
    s = os.stat(path)
    return f"{os.path.realpath(path)}:{s.st_size}:{s.st_mtime_ns}"


def _private_dir(path: Path) -> bool:
    """Create ``path`` 0700 if needed; True if it is ours and closed to others.

    An existing directory that others could write (or a symlink) is refused, not repaired:
    whoever could write it may have planted files in it already.
    """
    try:
        before: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        before = None
    if before is not None and not _closed(before):
        return False
    ensure_private_dir(path)
    return _closed(os.lstat(path))


def _closed(s: os.stat_result) -> bool:
    return stat.S_ISDIR(s.st_mode) and s.st_uid == os.getuid() and not s.st_mode & 0o077


def _load_or_build() -> ctypes.CDLL | None:
    found = _compiler()
    if found is None:
        return None
    cc, cc_file = found
    src = {p.name: p.read_bytes() for p in SOURCES}
    ident = "|".join(
        [_identity(cc_file), _identity(ffi.dll._name), platform.machine(),
         sys.implementation.cache_tag or ""]
    )  # fmt: skip
    digest = hashlib.sha256()
    for name, text in src.items():
        digest.update(f"{name}\0{len(text)}\0".encode() + text)
    key = hashlib.sha256(digest.digest() + b"\0" + ident.encode()).hexdigest()[:32]
    cache, records = cache_dir("native", env="ENARX_NATIVE_DIR"), state_dir("native")
    if not (_private_dir(cache) and _private_dir(records)):
        return None
    lib_path, record = cache / f"fastio-{key}.so", records / f"fastio-{key}.sha256"
    loaded = _load_verified(lib_path, record)
    if loaded is not None:
        return loaded
    data = _build(cc, src, cache)
    if data is None:
        return None
    atomic_write(record, hashlib.sha256(data).hexdigest().encode(), mode=0o600)
    atomic_write(lib_path, data, mode=0o600)
    return _dlopen(data)


def _load_verified(lib_path: Path, record: Path) -> ctypes.CDLL | None:
    try:
        want = record.read_bytes().strip()
        data = lib_path.read_bytes()
    except OSError:
        return None
    if not hmac.compare_digest(hashlib.sha256(data).hexdigest().encode(), want):
        return None
    return _dlopen(data)


def _build(cc: list[str], src: dict[str, bytes], cache: Path) -> bytes | None:
    import subprocess  # only when building: ~3 ms of every start-up otherwise

    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        out = Path(tmp) / "_fastio.so"
        for name, data in src.items():
            (Path(tmp) / name).write_bytes(data)
        units = [str(Path(tmp) / name) for name in src if name.endswith(".c")]
        try:
            done = subprocess.run(
                [*cc, "-O2", "-shared", "-fPIC", "-o", str(out), *units],
                capture_output=True,
                timeout=_BUILD_TIMEOUT,
                check=False,
                cwd=tmp,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0 or not out.exists():
            return None
        return out.read_bytes()


def _dlopen(data: bytes) -> ctypes.CDLL:
    fd = os.memfd_create("enarx-fastio", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        lib = ctypes.CDLL(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
    lib.fastio_new.restype = ctypes.c_void_p
    lib.fastio_new.argtypes = [
        ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint16),
    ]  # fmt: skip
    lib.fastio_free.argtypes = [ctypes.c_void_p]
    lib.fastio_set_fd.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint32]
    lib.fastio_set_deadline.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int64,
        ctypes.c_int64,
    ]
    lib.fastio_stats.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]
    lib.fastio_set_enc.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p,
                                   ctypes.c_void_p]
    lib.fastio_enc_new.restype = ctypes.c_void_p
    lib.fastio_enc_new.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
    lib.fastio_enc_free.argtypes = [ctypes.c_void_p]
    lib.fastio_enc_stale.argtypes = [ctypes.c_void_p]
    lib.fastio_enc_set.argtypes = [
        ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_char_p,
        ctypes.c_void_p, ctypes.c_size_t,
    ]  # fmt: skip
    lib.fastio_enc_pread.restype = ctypes.c_int64
    lib.fastio_enc_pread.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                     ctypes.c_uint64]
    return lib


def _errmap() -> ctypes.Array[ctypes.c_uint16]:
    """Host errno -> WASI errno for 0..255, exactly as the Python path maps it."""
    table = (ctypes.c_uint16 * 256)()
    for e in range(256):
        table[e] = int(from_oserror(OSError(e, "")).errno)
    return table


def _addr(name: str) -> int:
    return ctypes.cast(getattr(ffi.dll, name), ctypes.c_void_p).value or 0


class FastIO:
    """The native state of one WasiHost (one store): its fd map, deadline and counters."""

    def __init__(self, lib: ctypes.CDLL, py_read: int, py_write: int) -> None:
        fns = (ctypes.c_void_p * 9)(
            _addr("wasmtime_trap_new"),
            _addr("wasmtime_caller_export_get"),
            _addr("wasmtime_caller_context"),
            _addr("wasmtime_memory_data"),
            _addr("wasmtime_memory_data_size"),
            py_read,
            py_write,
            _addr("wasmtime_context_get_fuel"),
            _addr("wasmtime_error_delete"),
        )
        if ctypes.sizeof(ffi.wasmtime_extern_t) > 64:
            raise RuntimeError("wasmtime_extern_t is larger than _fastio.c expects")
        state = lib.fastio_new(
            fns, ffi.wasmtime_extern_t.of.offset, ffi.WASMTIME_EXTERN_MEMORY.value, _errmap()
        )
        if not state:
            raise MemoryError("fastio_new")
        self._lib = lib
        self.state = ctypes.c_void_p(state)
        self.fd_read = _addr_of(lib, "fastio_fd_read")
        self.fd_write = _addr_of(lib, "fastio_fd_write")
        self._map: dict[int, tuple[int, int]] = {}
        # guest fd -> what its entry points into (an encrypted file's C state and the fd's
        # position): kept alive here while the C side may use it
        self._held: dict[int, tuple[object, object]] = {}
        weakref.finalize(self, lib.fastio_free, ctypes.c_void_p(state))

    @property
    def lib(self) -> ctypes.CDLL:
        return self._lib

    def set(self, fd: int, entry: tuple[int, int] | None) -> None:
        """Guest ``fd`` is served natively as ``(host fd, F_* flags)``, or not (None)."""
        if self._map.get(fd) == entry or fd >= MAP_SIZE:
            return
        self._held.pop(fd, None)
        if entry is None:
            del self._map[fd]
            self._lib.fastio_set_fd(self.state, fd, -1, 0)
        else:
            self._map[fd] = entry
            self._lib.fastio_set_fd(self.state, fd, *entry)

    def set_enc(self, fd: int, enc: object, enc_ptr: int, pos: ctypes.c_int64) -> None:
        """Guest ``fd`` reads the encrypted file whose C state is at ``enc_ptr`` (owned by
        ``enc``) from position ``pos`` (see :mod:`enarx.wasi.encnative`)."""
        if fd >= MAP_SIZE:
            return
        entry = (-enc_ptr, ctypes.addressof(pos))  # never equal to a (host fd, flags) pair
        if self._map.get(fd) == entry:
            return
        self._map[fd] = entry
        self._held[fd] = (enc, pos)
        self._lib.fastio_set_enc(self.state, fd, enc_ptr, ctypes.addressof(pos))

    def set_deadline(self, deadline: float | None) -> None:
        """``deadline`` on ``time.monotonic()``'s clock (CLOCK_MONOTONIC on Linux)."""
        if deadline is None:
            self._lib.fastio_set_deadline(self.state, 0, 0, 0)
            return
        ns = int(deadline * 1e9)
        self._lib.fastio_set_deadline(self.state, 1, ns // 10**9, ns % 10**9)

    def stats(self) -> tuple[int, int, bool]:
        """(calls served natively, calls handed to Python, timed out)."""
        out = (ctypes.c_uint64 * 3)()
        self._lib.fastio_stats(self.state, out)
        return int(out[0]), int(out[1]), bool(out[2])


def _addr_of(lib: ctypes.CDLL, name: str) -> int:
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
