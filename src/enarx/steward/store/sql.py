"""The store's operations written once over a small driver interface (SQLite, PostgreSQL).

A backend supplies connections (:meth:`SqlStore._connect`), the dialect and the mapping of its
driver's exceptions; this class supplies the connection pool, transactions and every
:class:`~enarx.steward.store.model.Store` operation. SQL is written with ``?`` placeholders.
"""

from __future__ import annotations

import hmac
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Generic, TypeVar

from enarx.errors import StoreError, UsageError
from enarx.steward.store import schema
from enarx.steward.store.model import Issuance, Session, Time, to_epoch

__all__ = ["Pool", "SqlStore", "Tx"]

C = TypeVar("C")
Row = tuple[Any, ...]

_SESSION_COLS = (
    "id, nonce, tee, created_at, expires_at, used, token, tee_pubkey, workload, "
    "evidence_digest, attested_expires_at, issued_serial, evidence"
)
_ISSUANCE_COLS = (
    "serial, issued_at, evidence_digest, workload, ear_status, policy_id, platform, kind, "
    "session_id"
)


class Pool(Generic[C]):
    """At most ``size`` connections, each used by one thread at a time; callers wait for one."""

    def __init__(
        self,
        connect: Callable[[], C],
        close: Callable[[C], None],
        size: int,
        *,
        timeout: float = 30.0,
    ) -> None:
        self._connect = connect
        self._close = close
        self._size = size
        self._timeout = timeout
        self._idle: list[C] = []
        self._open = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def size(self) -> int:
        return self._size

    def acquire(self) -> tuple[C, bool]:
        """A connection and whether it was reused (it may have gone stale while idle)."""
        deadline = time.monotonic() + self._timeout
        with self._cond:
            while True:
                if self._closed:
                    raise StoreError("the store is closed", hint="this is a bug in the caller")
                if self._idle:
                    return self._idle.pop(), True
                if self._open < self._size:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"all {self._size} database connections are busy",
                        hint="the database is overloaded or a transaction hangs",
                    )
                self._cond.wait(left)
        try:
            return self._connect(), False
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, conn: C, *, discard: bool = False) -> None:
        with self._cond:
            drop = discard or self._closed
            if drop:
                self._open -= 1
            else:
                self._idle.append(conn)
            self._cond.notify()
        if drop:
            with suppress(Exception):
                self._close(conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            with suppress(Exception):
                self._close(conn)


class Tx:
    """One transaction: ``tx(sql, *params)`` runs a statement and returns its rows."""

    def __init__(self, run: Callable[[str, Sequence[Any]], list[Row]]) -> None:
        self._run = run
        self.aborted = False

    def __call__(self, sql: str, *params: Any) -> list[Row]:
        return self._run(sql, params)

    def abort(self) -> None:
        """Roll the transaction back instead of committing it (no error is raised)."""
        self.aborted = True


class SqlStore(ABC):
    """Every store operation, over a backend's connections. Subclasses call :meth:`_open`."""

    dialect: schema.Dialect

    def __init__(self, pool_size: int) -> None:
        self._pool: Pool[Any] = Pool(self._connect, self._close_conn, pool_size)

    # --- the backend's part --------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Any: ...

    @abstractmethod
    def _close_conn(self, conn: Any) -> None: ...

    @abstractmethod
    def _execute(self, conn: Any, sql: str, params: Sequence[Any]) -> list[Row]: ...

    @abstractmethod
    def _begin(self, conn: Any, write: bool, single: bool) -> bool:
        """Start a transaction; ``False`` when the backend runs this block without one."""

    @abstractmethod
    def _lock_schema(self, tx: Tx) -> None:
        """Inside a write transaction: wait for the database-wide migration lock."""

    @abstractmethod
    def _error(self, exc: Exception) -> StoreError | None:
        """The typed error for a driver exception (``None``: not the driver's)."""

    @abstractmethod
    def _is_integrity_error(self, exc: Exception) -> bool: ...

    def _is_broken(self, conn: Any) -> bool:
        return False

    def _went_stale(self, conn: Any) -> bool:
        """Whether an idle pooled connection is known dead before using it (no I/O)."""
        return False

    def _is_stale(self, exc: Exception) -> bool:
        """Whether starting a transaction failed because the connection is dead."""
        return False

    # --- transactions --------------------------------------------------------------------

    @contextmanager
    def _tx(self, *, write: bool = True, single: bool = False) -> Iterator[Tx]:
        """A transaction: committed when the block ends (rolled back if it raises or calls
        :meth:`Tx.abort`). Driver errors come out as :class:`StoreError`. ``single``: the
        block runs exactly one statement, which a backend may run without BEGIN/COMMIT
        (it is atomic by itself)."""
        conn, in_tx = self._start(write, single)
        ok = False
        try:
            tx = Tx(lambda sql, params: self._execute(conn, sql, params))
            try:
                yield tx
                if in_tx:
                    self._execute(conn, "ROLLBACK" if tx.aborted else "COMMIT", ())
                ok = True
            except BaseException:
                if in_tx:
                    with suppress(Exception):
                        self._execute(conn, "ROLLBACK", ())
                raise
        except Exception as exc:
            raise self._typed(exc) from None
        finally:
            # After a failure the connection's state is unknown: do not hand it out again.
            self._pool.release(conn, discard=not ok or self._is_broken(conn))

    def _start(self, write: bool, single: bool) -> tuple[Any, bool]:
        for _attempt in range(self._pool.size + 2):
            conn, reused = self._pool.acquire()
            if reused and self._went_stale(conn):
                self._pool.release(conn, discard=True)
                continue
            try:
                return conn, self._begin(conn, write, single)
            except Exception as exc:
                self._pool.release(conn, discard=True)
                if not reused or not self._is_stale(exc):
                    raise self._typed(exc) from None
            # An idle connection went stale (e.g. the server restarted); nothing of this
            # transaction was sent, so retrying on another connection is safe.
        raise StoreError("no usable database connection", hint="check the database server")

    def _typed(self, exc: Exception) -> Exception:
        if isinstance(exc, StoreError):
            return exc
        return self._error(exc) or exc

    def _open(self) -> None:
        """Apply the missing migrations (all in one transaction under the migration lock)."""
        if self._read_version() == schema.LATEST_VERSION:
            return  # the usual case: no write lock, so opening never waits for writers
        real = "REAL" if self.dialect == "sqlite" else "DOUBLE PRECISION"
        with self._tx() as tx:
            self._lock_schema(tx)
            tx(
                "CREATE TABLE IF NOT EXISTS schema_version "
                f"(version INTEGER PRIMARY KEY, applied_at {real} NOT NULL)"
            )
            current = int(tx("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])
            if current > schema.LATEST_VERSION:
                raise StoreError(
                    f"the database has schema version {current}; this enarx knows up to "
                    f"{schema.LATEST_VERSION}",
                    hint="run a newer enarx against this database (never an older one)",
                )
            for version in range(current + 1, schema.LATEST_VERSION + 1):
                for stmt in schema.statements(version, self.dialect):
                    tx(stmt)
                tx(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    version,
                    time.time(),
                )

    def _read_version(self) -> int:
        """The schema version, 0 before the first migration (read only, takes no lock)."""
        if self.dialect == "sqlite":
            exists = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        else:
            exists = "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?"
        with self._tx(write=False) as tx:
            if not tx(exists, "schema_version")[0][0]:
                return 0
            return int(tx("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])

    def close(self) -> None:
        self._pool.close()

    def schema_version(self) -> int:
        with self._tx(write=False) as tx:
            return int(tx("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])

    # --- sessions ------------------------------------------------------------------------

    def create_session(
        self, id: str, nonce: str, tee: str, expires_at: Time, *, now: Time | None = None
    ) -> None:
        created = time.time() if now is None else to_epoch(now)
        try:
            with self._tx(single=True) as tx:
                tx(
                    "INSERT INTO sessions (id, nonce, tee, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    _text("session id", id),
                    _text("nonce", nonce),
                    _text("tee", tee),
                    created,
                    to_epoch(expires_at),
                )
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise StoreError("a session with this id exists already") from None
            raise

    def redeem_nonce(self, session_id: str, nonce: str, now: Time) -> Session | None:
        if not _storable(session_id):
            return None  # no such session can exist
        with self._tx() as tx:
            rows = tx(
                f"UPDATE sessions SET used = 1 WHERE id = ? AND used = 0 AND expires_at > ? "
                f"RETURNING {_SESSION_COLS}",
                session_id,
                to_epoch(now),
            )
            if not rows or not hmac.compare_digest(
                str(rows[0][1]).encode(), nonce.encode(errors="surrogatepass")
            ):
                tx.abort()  # a wrong nonce does not spend the session's one redemption
                return None
            return _session(rows[0])

    def attest_session(
        self,
        session_id: str,
        now: Time,
        token: str,
        tee_pubkey_json: str,
        workload: str | None,
        evidence_digest: str,
        expires_at: Time,
        evidence: bytes = b"",
    ) -> bool:
        """Redeem the session's nonce and record its attestation in one statement: only a
        session that exists, is unused, has not expired at ``now`` and has no token yet."""
        if not _storable(session_id):
            return False
        with self._tx(single=True) as tx:
            rows = tx(
                "UPDATE sessions SET used = 1, token = ?, tee_pubkey = ?, workload = ?, "
                "evidence_digest = ?, attested_expires_at = ?, evidence = ? "
                "WHERE id = ? AND used = 0 AND expires_at > ? AND token IS NULL RETURNING id",
                _text("token", token),
                _text("tee-pubkey", tee_pubkey_json),
                _opt_text("workload", workload),
                _text("evidence digest", evidence_digest),
                to_epoch(expires_at),
                bytes(evidence),
                session_id,
                to_epoch(now),
            )
            return bool(rows)

    def get_session(self, id: str) -> Session | None:
        if not _storable(id):
            return None
        with self._tx(write=False, single=True) as tx:
            rows = tx(f"SELECT {_SESSION_COLS} FROM sessions WHERE id = ?", id)
        return _session(rows[0]) if rows else None

    def purge_expired(self, now: Time) -> int:
        t = to_epoch(now)
        with self._tx(single=True) as tx:
            rows = tx(
                "DELETE FROM sessions WHERE expires_at <= ? AND "
                "(attested_expires_at IS NULL OR attested_expires_at <= ?) RETURNING id",
                t,
                t,
            )
        return len(rows)

    # --- issuances -----------------------------------------------------------------------

    def record_issuance(
        self,
        serial_hex: str,
        time: Time,
        evidence_digest: str,
        workload: str | None,
        ear_status: str,
        policy_id: str,
        platform: str,
        kind: str,
        *,
        session_id: str | None = None,
    ) -> bool:
        if session_id is not None and not _storable(session_id):
            return False  # no such session can exist
        values = (
            _text("serial", serial_hex),
            to_epoch(time),
            _text("evidence digest", evidence_digest),
            _opt_text("workload", workload),
            _text("EAR status", ear_status),
            _text("policy id", policy_id),
            _text("platform", platform),
            _text("kind", kind),
            session_id,
        )
        try:
            if session_id is not None and self.dialect == "postgresql":
                # One statement (one round trip, atomic): claim the session's one certificate
                # and record it; nothing is inserted when the claim matches no row.
                with self._tx(single=True) as tx:
                    return bool(tx(
                        "WITH claimed AS (UPDATE sessions SET issued_serial = ? WHERE id = ? "
                        "AND token IS NOT NULL AND issued_serial IS NULL RETURNING id) "
                        f"INSERT INTO issuances ({_ISSUANCE_COLS}) "
                        "SELECT ?, ?, ?, ?, ?, ?, ?, ?, id FROM claimed RETURNING serial",
                        serial_hex, session_id, *values[:-1],
                    ))
            with self._tx() as tx:
                if session_id is not None:
                    claimed = tx(
                        "UPDATE sessions SET issued_serial = ? WHERE id = ? AND "
                        "token IS NOT NULL AND issued_serial IS NULL RETURNING id",
                        serial_hex,
                        session_id,
                    )
                    if not claimed:
                        tx.abort()
                        return False
                tx(
                    f"INSERT INTO issuances ({_ISSUANCE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    *values,
                )
                return True
        except Exception as exc:
            if self._is_integrity_error(exc):
                raise StoreError(
                    f"a certificate with serial {serial_hex} was issued before",
                    hint="serials are random; this is a bug",
                ) from None
            raise

    def list_issuances(self, limit: int | None = None) -> list[Issuance]:
        sql = f"SELECT {_ISSUANCE_COLS} FROM issuances ORDER BY issued_at, serial"
        with self._tx(write=False) as tx:
            rows = tx(sql + " LIMIT ?", int(limit)) if limit is not None else tx(sql)
        return [_issuance(r) for r in rows]

    # --- resources and secrets -----------------------------------------------------------

    def put_resource(self, path: str, data: bytes, now: Time | None = None) -> None:
        t = time.time() if now is None else to_epoch(now)
        with self._tx(single=True) as tx:
            tx(
                "INSERT INTO resources (path, data, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET data = excluded.data, "
                "updated_at = excluded.updated_at",
                _text("resource path", path),
                bytes(data),
                t,
            )

    def get_resource(self, path: str) -> bytes | None:
        if not _storable(path):
            return None
        with self._tx(write=False, single=True) as tx:
            rows = tx("SELECT data FROM resources WHERE path = ?", path)
        return bytes(rows[0][0]) if rows else None

    def delete_resource(self, path: str) -> bool:
        if not _storable(path):
            return False
        with self._tx(single=True) as tx:
            return bool(tx("DELETE FROM resources WHERE path = ? RETURNING path", path))

    def get_or_create_secret(self, name: str, factory: Callable[[], bytes]) -> bytes:
        _text("secret name", name)
        with self._tx(write=False) as tx:
            rows = tx("SELECT value FROM secrets WHERE name = ?", name)
        if rows:
            return bytes(rows[0][0])
        value = factory()  # outside any transaction: key generation may be slow
        if not isinstance(value, bytes | bytearray) or not value:
            raise TypeError(f"the factory for secret {name!r} must return non-empty bytes")
        with self._tx() as tx:
            tx(
                "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                name,
                bytes(value),
                time.time(),
            )
            rows = tx("SELECT value FROM secrets WHERE name = ?", name)
        return bytes(rows[0][0])


def _session(r: Row) -> Session:
    return Session(
        id=r[0],
        nonce=r[1],
        tee=r[2],
        created_at=float(r[3]),
        expires_at=float(r[4]),
        used=bool(r[5]),
        token=r[6],
        tee_pubkey=r[7],
        workload=r[8],
        evidence_digest=r[9],
        attested_expires_at=None if r[10] is None else float(r[10]),
        issued_serial=r[11],
        evidence=None if r[12] is None else bytes(r[12]),
    )


def _issuance(r: Row) -> Issuance:
    return Issuance(
        serial=r[0],
        issued_at=float(r[1]),
        evidence_digest=r[2],
        workload=r[3],
        ear_status=r[4],
        policy_id=r[5],
        platform=r[6],
        kind=r[7],
        session_id=r[8],
    )


def _storable(value: str) -> bool:
    """Whether both databases can hold ``value`` (no NUL, valid UTF-8 once encoded)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _text(field: str, value: str) -> str:
    """``value`` for a write, or a UsageError naming ``field`` if no database can store it."""
    if not _storable(value):
        raise UsageError(
            f"{field} contains a NUL character or an unpaired surrogate",
            hint="send printable UTF-8 text",
        )
    return value


def _opt_text(field: str, value: str | None) -> str | None:
    return None if value is None else _text(field, value)
