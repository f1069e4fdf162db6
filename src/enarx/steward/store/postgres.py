"""The shared store: PostgreSQL (psycopg 3), for several steward replicas on one database.

Each replica keeps a small pool of connections. Single-use nonces are safe across replicas
because redemption is one ``UPDATE ... WHERE used = 0 ... RETURNING`` (row-locked by the
server); migrations run under a transaction-scoped advisory lock. Error messages name the
server with the password removed from the URL.
"""

from __future__ import annotations

import re
import select
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg

from enarx.errors import StoreError, UsageError
from enarx.steward.store import schema
from enarx.steward.store.sql import Row, SqlStore, Tx

__all__ = ["PostgresStore", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*):[^@/?#]*@")


def _check_url(url: str) -> None:
    hint = "use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
    if not url.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"not a PostgreSQL URL: {redact_url(url)}", hint=hint)
    try:
        _ = urlsplit(url).port  # a non-numeric or out-of-range port raises here
        psycopg.conninfo.conninfo_to_dict(url)
    except (ValueError, psycopg.Error) as exc:
        raise UsageError(
            f"malformed PostgreSQL URL {redact_url(url)}: {_first_line(exc)}", hint=hint
        ) from None


class PostgresStore(SqlStore):
    dialect: schema.Dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: int = 10) -> None:
        _check_url(url)
        self._url = url
        self._connect_timeout = connect_timeout
        self.display_url = redact_url(url)
        super().__init__(pool_size)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self.display_url!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,  # transactions are explicit: BEGIN ... COMMIT
                connect_timeout=self._connect_timeout,
                application_name="enarx-steward",
            )
        except psycopg.ProgrammingError as exc:
            raise UsageError(
                f"malformed PostgreSQL URL {self.display_url}: {_first_line(exc)}",
                hint="use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            ) from None
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.display_url}: {_first_line(exc)}",
                hint="check that the server runs and accepts this user and database "
                "(host, port, password in the --db URL)",
            ) from None
        try:
            # A replica that hangs inside a transaction must not hold its locks for ever.
            conn.execute("SET idle_in_transaction_session_timeout = '60s'")
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(
                f"PostgreSQL at {self.display_url}: {_first_line(exc)}",
                hint="check that the server runs, then retry",
            ) from None
        return conn

    def _close_conn(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()

    def _execute(self, conn: psycopg.Connection[Any], sql: str, params: Sequence[Any]) -> list[Row]:
        cur = conn.execute(sql.replace("?", "%s"), tuple(params), prepare=False)
        return cur.fetchall() if cur.description is not None else []

    def _begin(self, conn: psycopg.Connection[Any], write: bool, single: bool) -> bool:
        if conn.closed or conn.broken:
            raise psycopg.OperationalError("the connection is closed")
        if single or not write:
            return False  # one statement is atomic by itself (autocommit): one round trip
        conn.execute("BEGIN")
        return True

    def _went_stale(self, conn: psycopg.Connection[Any]) -> bool:
        # An idle connection has nothing to read unless the server sent an error before
        # closing it (terminated backend, shutdown) or the peer closed the socket.
        if conn.closed or conn.broken:
            return True
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError, psycopg.Error):
            return True
        return bool(readable)

    def _is_broken(self, conn: psycopg.Connection[Any]) -> bool:
        return bool(conn.closed or conn.broken)

    def _is_stale(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.OperationalError)

    def _lock_schema(self, tx: Tx) -> None:
        tx("SELECT pg_advisory_xact_lock(?)", schema.ADVISORY_LOCK_KEY)

    def _is_integrity_error(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.errors.IntegrityError)

    def _error(self, exc: Exception) -> StoreError | None:
        if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.errors.IntegrityError):
            return None
        if isinstance(exc, psycopg.OperationalError):
            return StoreError(
                f"lost the connection to PostgreSQL at {self.display_url}: {_first_line(exc)}",
                hint="check that the server runs, then retry",
            )
        return StoreError(f"PostgreSQL at {self.display_url}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
