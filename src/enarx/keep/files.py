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
) -> FdTable:
    """Build the fd table; relative ``dir`` host paths resolve against ``base_dir``.

    ``identity`` is the Keep's TLS identity for this run, needed by ``prot = "tls"`` sockets.
    ``secret_files`` fill the in-memory ``/run/secrets`` entry (``[[secrets]]``); with
    ``package`` (``enarx deploy``) every ``dir`` entry is a directory of that in-memory tree,
    read-only, and no host directory is opened.

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
