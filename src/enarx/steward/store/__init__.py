"""The steward's persistent state: sessions and nonces, issuance records, key-broker resources
and the steward's own keys, in SQLite (one machine) or PostgreSQL (replicas).

``open_store(url, state_dir)`` picks the backend from ``--db``:

- ``None``: the SQLite file ``state_dir/steward.db``;
- ``sqlite:///abs/path.db`` or ``sqlite:relative/path.db``: that SQLite file;
- ``postgresql://user[:password]@host[:port]/database`` (or ``postgres://``): PostgreSQL.

Both apply the numbered schema migrations (:mod:`.schema`) when they open.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from enarx.errors import StoreError, UsageError
from enarx.fsutil import ensure_private_dir
from enarx.steward.store.model import Issuance, Session, Store, Time, to_epoch
from enarx.steward.store.postgres import PostgresStore, redact_url
from enarx.steward.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_DB_NAME",
    "Issuance",
    "PostgresStore",
    "Session",
    "SqliteStore",
    "Store",
    "Time",
    "open_store",
    "redact_url",
    "sqlite_path",
    "to_epoch",
]

DEFAULT_DB_NAME = "steward.db"

_URL_HINT = (
    "use sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or "
    "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
)


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:`` URL names."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise UsageError(f"malformed database URL {redact_url(url)}", hint=_URL_HINT) from None
    if parts.scheme != "sqlite" or parts.netloc or parts.query or parts.fragment or not parts.path:
        raise UsageError(f"not a SQLite URL: {redact_url(url)}", hint=_URL_HINT)
    return Path(parts.path)


def open_store(url: str | None, state_dir: str | os.PathLike[str]) -> Store:
    """Open (creating and migrating as needed) the store ``url`` names; see the module doc."""
    if url is None:
        try:
            directory = ensure_private_dir(Path(state_dir))
        except OSError as exc:
            raise StoreError(
                f"cannot use the state directory {state_dir}: {exc.strerror or exc}",
                hint="pass --state-dir DIR (a directory you own)",
            ) from None
        return SqliteStore(directory / DEFAULT_DB_NAME)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        return SqliteStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise UsageError(f"unsupported database URL {redact_url(url)}", hint=_URL_HINT)
