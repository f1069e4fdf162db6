"""On-disk cache of compiled modules, authenticated with a key the cache directory does not hold.

wasmtime deserialises a compiled artifact as trusted native code, so whoever can write an
entry the runtime loads chooses the code it runs. An entry is therefore
``MAGIC ‖ HMAC-SHA256(key, binding ‖ artifact) ‖ artifact`` where ``binding`` names the
module's SHA-256, the wasmtime version and the engine settings (length-prefixed, so no two
bindings share an encoding). The tag is checked with :func:`hmac.compare_digest` before
wasmtime sees a byte; the file name is only a lookup hint. A swapped, truncated, corrupted
or foreign entry (made with another key) costs one warning line and a recompile, never a load.

The key: 32 random bytes in ``$XDG_STATE_HOME/enarx/module-cache/key`` (default
``~/.local/state``), created with ``O_EXCL`` and mode 0600 in a 0700 directory owned by this
user, never inside
the cache directory (``ENARX_CACHE_DIR`` moves only the cache). A key file that is not a
regular 32-byte file owned by this user with no group/other permission is replaced by a fresh
key (with a warning): its old value may have leaked, so entries made with it are not trusted.

Confidential backends (sev-snp, tdx, sgx) use no on-disk cache: there the host owns the disk
*and* the user's files, and the only secret the host cannot read is one the TEE derives
(e.g. the SNP ``MSG_KEY_REQ`` derived key), which an in-process backend cannot obtain.
The Keep compiles its module every run instead (see docs/enarx-toml.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from enarx.errors import ResourceError
from enarx.fsutil import cache_dir, ensure_private_dir, state_dir

__all__ = ["KEY_SIZE", "CacheKeyError", "ModuleCache", "default_dir", "default_key_path",
           "load_or_create_key"]

_MAGIC = b"ENXC2\n"
_OLD_MAGIC = b"ENXC1\n"  # unauthenticated entries of earlier releases: never loaded
_TAG = 32
KEY_SIZE = 32

Warn = Callable[[str], None]


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def default_dir() -> Path:
    """``$ENARX_CACHE_DIR``, else ``$XDG_CACHE_HOME/enarx/modules``. Raises ResourceError."""
    return cache_dir("modules", env="ENARX_CACHE_DIR")


def default_key_path() -> Path:
    """``$XDG_STATE_HOME/enarx/module-cache/key``: not moved by ``ENARX_CACHE_DIR``."""
    return state_dir("module-cache") / "key"


class CacheKeyError(Exception):
    """The key file cannot be read or created: the run goes on without a cache."""


def load_or_create_key(path: Path, *, warn: Warn = _stderr_warning) -> bytes:
    """The cache key at ``path``, created (0600, ``O_EXCL``) if missing, replaced if unsafe."""
    try:
        ensure_private_dir(path.parent)  # 0700, and refused if another user owns it
    except OSError as e:
        raise CacheKeyError(f"cannot use {path.parent}: {e.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return _create_key(path)
    except OSError as e:
        # ELOOP: a symlink where the key should be: never follow it, replace it.
        problem: str | None = f"cannot be opened ({e.strerror})"
    else:
        try:
            st = os.fstat(fd)
            problem = _unsafe(st)
            key = os.read(fd, KEY_SIZE + 1) if problem is None else b""
        finally:
            os.close(fd)
        if problem is None and len(key) != KEY_SIZE:
            problem = f"holds {len(key)} bytes, not {KEY_SIZE}"
        if problem is None:
            return key
    warn(f"compiled-module cache key {path} {problem}; replacing it with a new key "
         "(entries made with the old one will be recompiled)")
    return _create_key(path, replace=True)


def _unsafe(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return "belongs to another user"
    if st.st_mode & 0o077:
        return f"is readable or writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _create_key(path: Path, *, replace: bool = False) -> bytes:
    # Written under a temporary name, then linked (or renamed) into place: a concurrent
    # enarx never sees a half-written key.
    key = os.urandom(KEY_SIZE)
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except OSError as e:
        raise CacheKeyError(f"cannot create a key in {path.parent}: {e.strerror}") from None
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return load_or_create_key(path)  # another enarx created it first: use theirs
    except OSError as e:
        raise CacheKeyError(f"cannot write {path}: {e.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _inside(child: Path, parent: Path) -> bool:
    try:
        return child.resolve().is_relative_to(parent.resolve())
    except (OSError, RuntimeError):
        return True  # cannot tell: assume the worst


class ModuleCache:
    """Compiled artifacts on disk, each authenticated with ``key``."""

    _ENTRY = "compiled-module cache entry"  # how warnings name an entry

    def __init__(self, directory: Path, key: bytes, *, warn: Warn = _stderr_warning) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"the cache key must be {KEY_SIZE} bytes")
        self.dir = directory
        self._key = key
        self._warn = warn

    @classmethod
    def open(
        cls,
        directory: Path | None = None,
        key_path: Path | None = None,
        *,
        warn: Warn = _stderr_warning,
    ) -> ModuleCache | None:
        """The user's cache, or None (with a warning) when no safe key is available."""
        try:
            directory = directory or default_dir()
            key_path = key_path or default_key_path()
        except ResourceError as e:
            warn(f"compiled-module cache disabled: {e.message}")
            return None
        if _inside(key_path, directory):
            warn(f"the compiled-module cache key {key_path} would lie inside the cache "
                 f"directory {directory}; running without the cache (move ENARX_CACHE_DIR)")
            return None
        try:
            key = load_or_create_key(key_path, warn=warn)
        except CacheKeyError as e:
            warn(f"compiled-module cache disabled: {e}")
            return None
        return cls(directory, key, warn=warn)

    def path_for(self, name: str) -> Path:
        return self.dir / f"{name}.cwasm"

    def _tag(self, binding: bytes, artifact: bytes) -> bytes:
        mac = hmac.new(self._key, len(binding).to_bytes(8, "big") + binding, hashlib.sha256)
        mac.update(artifact)
        return mac.digest()

    def load(self, name: str, binding: bytes) -> bytes | None:
        """The artifact stored under ``name`` for ``binding``, or None if absent or not authentic.

        A present entry that fails authentication is reported in one warning line.
        """
        path = self.path_for(name)
        data = self._read(path)
        if data is None:
            return None
        head = len(_MAGIC) + _TAG
        if len(data) > head and data.startswith(_MAGIC):
            tag, artifact = data[len(_MAGIC) : head], data[head:]
            if hmac.compare_digest(tag, self._tag(binding, artifact)):
                return artifact
        elif data.startswith(_OLD_MAGIC):
            return None  # written by an older enarx (unkeyed): replaced without a word
        self._warn(f"{self._ENTRY} {path} failed authentication; recompiling")
        return None

    def store(self, name: str, binding: bytes, artifact: bytes) -> None:
        """Best effort: a read-only or full cache dir only costs a recompile next time."""
        self._write(name, _MAGIC + self._tag(binding, artifact) + artifact)

    def _read(self, path: Path) -> bytes | None:
        """The bytes of the entry at ``path``; None when absent or unreadable (warned)."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            self._warn(f"cannot read {self._ENTRY} {path}: {e.strerror}; recompiling")
            return None

    def _write(self, name: str, data: bytes) -> None:
        """Write the entry ``name`` atomically; best effort (a full disk costs a recompile)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.path_for(name))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass

    def discard(self, name: str) -> None:
        with contextlib.suppress(OSError):
            self.path_for(name).unlink(missing_ok=True)
