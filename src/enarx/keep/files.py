"""Turn Enarx.toml ``[[files]]`` into the guest's fd table (files[i] = WASI fd i).

This is an I/O edge: it opens host directories (and, with the network layer, sockets)
before the workload starts, so a missing directory is a clear error naming the entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from enarx.errors import ResourceError
from enarx.flags import file_name
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.fdtable import FdTable, NullHandle, StdioHandle
from enarx.wasi.memfs import MemDirHandle, MemTree

if TYPE_CHECKING:  # cryptography is imported only when a TLS entry needs it
    from enarx.keep.tls import KeepIdentity

__all__ = ["needs_tls", "open_files"]


def open_files(
    files: Sequence[Any],
    *,
    stdio: tuple[int, int, int] = (0, 1, 2),
    base_dir: str = ".",
    identity: KeepIdentity | None = None,
    secret_files: Mapping[str, bytes] | None = None,
    package: MemTree | None = None,
    dir_keys: Mapping[str, bytes] | None = None,
) -> FdTable:
    """Build the fd table; relative ``dir`` host paths resolve against ``base_dir``.

    ``identity`` is the Keep's TLS identity for this run, needed by ``prot = "tls"`` sockets.
    ``secret_files`` fill the in-memory ``/run/secrets`` entry (``[[secrets]]``); with
    ``package`` (``enarx deploy``) every ``dir`` entry is a directory of that in-memory tree,
    read-only, and no host directory is opened. An encrypted ``dir`` entry opens its tree with
    the key from ``encryption_key_file`` or, for ``encryption_key``, from ``dir_keys``
    (steward resource path -> the 32-byte key released after attestation).

    Entries are dispatched on ``kind``, so Enarx.toml models and the light specs of
    :mod:`enarx.flags` (``enarx run`` without a config: no pydantic import) both work.
    """
    table = FdTable()
    for index, f in enumerate(files):
        where = f"files[{index}] ({file_name(f)})"
        kind = f.kind
        if kind == "stdin":
            table.add(StdioHandle(stdio[0]))
        elif kind == "stdout":
            table.add(StdioHandle(stdio[1]))
        elif kind == "stderr":
            table.add(StdioHandle(stdio[2]))
        elif kind == "null":
            table.add(NullHandle())
        elif kind == "dir" and getattr(f, "memory", False):
            table.add(MemDirHandle.preopen_tree(dict(secret_files or {}), f.guest_path))
        elif kind == "dir" and package is not None:
            table.add(_package_dir(f, where, package))
        elif kind == "dir" and _encrypted(f):
            table.add(_encrypted_dir(f, where, base_dir, dir_keys or {}))
        elif kind == "dir":
            host = os.path.join(base_dir, os.path.expanduser(f.host))
            try:
                table.add(DirHandle.preopen(host, f.guest_path, readonly=f.readonly))
            except ResourceError as e:
                raise ResourceError(f"{where}: {e.message}", hint=e.hint) from None
        elif kind in ("listen", "connect"):
            table.add(_open_socket(f, where, base_dir, identity))
        else:  # pragma: no cover - the config model admits no other kind
            raise ResourceError(f"{where}: unsupported kind {f.kind!r}")
    return table


def _package_dir(f: Any, where: str, package: MemTree) -> MemDirHandle:
    """A deployed package's ``dir`` entry: ``host`` is a directory inside the package."""
    if not f.readonly:
        raise ResourceError(f"{where}: a deployed package's directories are read-only",
                            hint='set readonly = true on the entry in the package\'s Enarx.toml')
    node: Any = package
    for comp in os.path.normpath(f.host).split("/"):
        if comp in ("", "."):
            continue
        if comp == ".." or not isinstance(node, Mapping) or comp not in node:
            raise ResourceError(
                f"{where}: {f.host!r} is not a directory of the package",
                hint="in a deployed package, `host` names a directory inside the package "
                "(the host's own disk is not trusted)",
            )
        node = node[comp]
    if not isinstance(node, Mapping):
        raise ResourceError(f"{where}: {f.host!r} is a file of the package, not a directory")
    return MemDirHandle.preopen_tree(node, f.guest_path)


def _encrypted(f: Any) -> bool:
    return bool(getattr(f, "encryption_key", None) or getattr(f, "encryption_key_file", None))


def _encrypted_dir(f: Any, where: str, base_dir: str, dir_keys: Mapping[str, bytes]) -> Any:
    """An encrypted ``dir`` entry: its key checked against the tree before the guest starts
    (and the tree locked: read-write by one opening at a time, enarx.encdir)."""
    from enarx.errors import EnarxError
    from enarx.wasi.encfs import EncDirHandle

    if f.encryption_key is not None:
        key = dir_keys.get(f.encryption_key)
        if key is None:
            raise ResourceError(
                f"{where}: the key of encrypted directory {f.host!r} was not released",
                hint=f"encryption_key = {f.encryption_key!r} comes from the steward after "
                "attestation: pass --steward URL --steward-ca PEM (or set steward in "
                "Enarx.toml), or use encryption_key_file for local testing")
    else:
        from pathlib import Path

        from enarx.encdir.keyfile import read_key_file

        key_path = os.path.join(base_dir, os.path.expanduser(f.encryption_key_file))
        try:
            key = read_key_file(Path(key_path))
        except EnarxError as e:
            raise _named(e, where) from None
    from enarx.encdir import EncDir

    host = os.path.join(base_dir, os.path.expanduser(f.host))
    try:
        encdir = EncDir.open(host, key, readonly=bool(f.readonly))
    except EnarxError as e:
        raise _named(e, where) from None
    return EncDirHandle.preopen_encdir(encdir, f.guest_path, readonly=bool(f.readonly))


def _named(e: Any, where: str) -> Any:
    """``e`` (an EnarxError, same type and exit code) with the entry it concerns named."""
    e.message = f"{where}: {e.message}"
    e.args = (e.message,)
    return e


def needs_tls(files: Sequence[Any]) -> bool:
    """Whether any entry is a TLS socket (and so needs the Keep's identity)."""
    return any(f.kind in ("listen", "connect") and f.prot == "tls" for f in files)


def _open_socket(f: Any, where: str, base_dir: str, identity: KeepIdentity | None) -> Any:
    try:
        from enarx.keep import sockets
    except ImportError:
        raise ResourceError(
            f"{where}: {f.kind} sockets are not supported by this build",
            hint="remove the entry or upgrade enarx",
        ) from None
    return sockets.open_entry(f, where, identity=identity, base_dir=base_dir)
