"""The embedded store: one SQLite file (``state_dir/steward.db`` by default).

The file and its WAL/shared-memory companions are 0600 (SQLite gives the companions the
database file's mode). WAL mode lets readers run alongside the one writer; writers take the
database lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for it, so
concurrent processes (e.g. two stewards opening one file) serialise instead of failing.
``synchronous=FULL``: a committed transaction survives a power cut, not only a crash.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from enarx.errors import StoreError
from enarx.steward.store import schema
from enarx.steward.store.sql import Row, SqlStore, Tx

__all__ = ["SqliteStore"]

T = TypeVar("T")


class SqliteStore(SqlStore):
    dialect: schema.Dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, pool_size: int = 8
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        _create_private(self.path)
        super().__init__(pool_size)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # transactions are ours: BEGIN [IMMEDIATE] ... COMMIT
                check_same_thread=False,  # the pool hands a connection to one thread at a time
            )
        except sqlite3.Error as exc:
            raise self._typed(exc) from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            mode = self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"{self.path}: cannot switch the database to WAL mode ({mode})",
                    hint="put the state directory on a local filesystem",
                )
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._typed(exc) from None
            raise
        return conn

    def _close_conn(self, conn: sqlite3.Connection) -> None:
        conn.close()

    def _execute(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
        return conn.execute(sql, tuple(params)).fetchall()

    def _begin(self, conn: sqlite3.Connection, write: bool, single: bool) -> bool:
        self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
        return True

    def _retry_busy(self, op: Callable[[], T]) -> T:
        """Run ``op``, retrying while SQLite reports the database busy, up to the busy
        timeout. SQLite's own busy handler covers most waits, but some (a concurrent switch to
        WAL mode, WAL recovery by another process) return SQLITE_BUSY at once."""
        deadline = time.monotonic() + self._busy_timeout
        delay = 0.001
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _lock_schema(self, tx: Tx) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's write lock

    def _is_integrity_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def _error(self, exc: Exception) -> StoreError | None:
        if not isinstance(exc, sqlite3.Error) or isinstance(exc, sqlite3.IntegrityError):
            return None
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if _is_busy(exc):
            return StoreError(
                f"{self.path}: the database stayed locked for {self._busy_timeout:g} s",
                hint="another process holds a long transaction on it; for several stewards "
                "use PostgreSQL (--db postgresql://...)",
            )
        return StoreError(f"{self.path}: {msg}")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _create_private(path: Path) -> None:
    """Create the database file 0600 (before SQLite does, with the umask's mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except IsADirectoryError:
        raise StoreError(
            f"{path}: is a directory", hint="--db sqlite:///PATH names a file"
        ) from None
    except OSError as exc:
        raise StoreError(
            f"cannot open the database {path}: {exc.strerror}",
            hint="check that the state directory exists and is writable",
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            companion = path.with_name(path.name + suffix)
            if companion.stat().st_mode & 0o077:
                os.chmod(companion, 0o600)
