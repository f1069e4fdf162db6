"""Turn Enarx.toml ``[[files]]`` into the guest's fd table (files[i] = WASI fd i).

This is an I/O edge: it opens host directories (and, with the network layer, sockets)
before the workload starts, so a missing directory is a clear error naming the entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from enarx.errors import ResourceError
from enarx.flags import file_name
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.fdtable import FdTable, NullHandle, StdioHandle

if TYPE_CHECKING:  # cryptography is imported only when a TLS entry needs it
    from enarx.keep.tls import KeepIdentity

__all__ = ["needs_tls", "open_files"]


def open_files(
    files: Sequence[Any],
    *,
    stdio: tuple[int, int, int] = (0, 1, 2),
    base_dir: str = ".",
    identity: KeepIdentity | None = None,
) -> FdTable:
    """Build the fd table; relative ``dir`` host paths resolve against ``base_dir``.

    ``identity`` is the Keep's TLS identity for this run, needed by ``prot = "tls"`` sockets.

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
