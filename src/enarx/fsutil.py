"""Filesystem helpers for the I/O edges: atomic writes and the per-user enarx directories.

Every file enarx keeps across runs (compiled-module cache, fetched collateral, sim keys) is
written with ``atomic_write`` and lives under one of ``cache_dir``, ``state_dir`` or
``config_dir``, which follow the XDG base-directory rules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from enarx.errors import ResourceError

__all__ = ["atomic_write", "cache_dir", "config_dir", "ensure_private_dir", "state_dir"]

#: XDG variable and its default below $HOME, per kind of directory.
_XDG = {
    "cache": ("XDG_CACHE_HOME", (".cache",)),
    "state": ("XDG_STATE_HOME", (".local", "state")),
    "config": ("XDG_CONFIG_HOME", (".config",)),
}


def atomic_write(path: Path, data: bytes | bytearray | memoryview, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half.

    A temp file in the same directory gets ``mode`` before any byte is written (a key never
    sits in a wider-open file), is fsynced and renamed over ``path``; the directory is then
    fsynced so the rename survives a crash. On any failure the temp file is removed and
    ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1  # owned by f now
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        # Some filesystems cannot fsync a directory; the file itself is complete either way.
        with contextlib.suppress(OSError):
            os.fsync(dfd)
    finally:
        os.close(dfd)


def cache_dir(name: str, *, env: str | None = None, create: bool = False) -> Path:
    """``$XDG_CACHE_HOME/enarx/<name>`` (default ``~/.cache``): files enarx can re-fetch or
    recompute. ``env`` names a variable that, when set, overrides the whole path."""
    return _user_dir("cache", name, env, create)


def state_dir(name: str, *, env: str | None = None, create: bool = False) -> Path:
    """``$XDG_STATE_HOME/enarx/<name>`` (default ``~/.local/state``): data that should
    persist across runs but is not configuration (e.g. the sim backend's keys)."""
    return _user_dir("state", name, env, create)


def config_dir(name: str, *, env: str | None = None, create: bool = False) -> Path:
    """``$XDG_CONFIG_HOME/enarx/<name>`` (default ``~/.config``): user configuration."""
    return _user_dir("config", name, env, create)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents as 0700 and make ``path`` itself 0700.

    Raises ``PermissionError`` if ``path`` (or what a symlink there points to) belongs to
    another user: whoever owns it could swap the files enarx keeps in it.
    """
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent process made it first
            p.mkdir(mode=0o700)
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path))
    if st.st_uid != os.getuid():
        raise PermissionError(errno.EPERM, "owned by another user", str(path))
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _user_dir(kind: str, name: str, env: str | None, create: bool) -> Path:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"not a directory name: {name!r}")
    override = os.environ.get(env) if env else None
    if override:
        path = Path(override)
    else:
        var, default = _XDG[kind]
        base = os.environ.get(var, "")
        # XDG: a relative path in these variables is invalid and must be ignored.
        root = Path(base) if os.path.isabs(base) else _home().joinpath(*default)
        path = root / "enarx" / name
    return ensure_private_dir(path) if create else path


def _home() -> Path:
    try:
        return Path.home()
    except RuntimeError:
        raise ResourceError(
            "cannot find the home directory for enarx's cache and state files",
            hint="set HOME (or XDG_CACHE_HOME / XDG_STATE_HOME / XDG_CONFIG_HOME)",
        ) from None
