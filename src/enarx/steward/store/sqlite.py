"""The embedded store: one SQLite file (``state_dir/steward.db`` by default).

The file and its WAL/shared-memory companions are 0600 (SQLite gives the companions the
database file's mode). WAL mode lets readers run alongside the one writer; writers take the
database lock up front (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for it, so
concurrent processes (e.g. two stewards opening one file) serialise instead of failing.
A write is answered only once it survives a power cut, not only a crash: as with
``synchronous=FULL``, the WAL is fsynced after COMMIT (see below).

Group commit: SQLite runs one writer at a time and every commit waits for an fsync, so the
write transactions of concurrent threads share one database transaction on a dedicated writer
connection, each inside its own ``SAVEPOINT`` (an aborted or failing one rolls back alone).
The transaction commits when no other writer is waiting (or after ``GROUP_MAX`` members or
``GROUP_MAX_AGE`` seconds), and every member returns only after that COMMIT: nothing is
acknowledged before it is durable, but one fsync serves many requests. The writer commits
with ``synchronous=NORMAL`` and the committing thread fsyncs the WAL itself right after
COMMIT, outside the writer lock: the next batch runs its statements and commits while the
previous one's fsync is in flight, and no member returns before an fsync that began after its
batch's COMMIT has completed (a later batch's fsync covers every earlier batch too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from enarx.errors import StoreError
from enarx.steward.store import schema
from enarx.steward.store.sql import Row, SqlStore, Tx

__all__ = ["GROUP_MAX", "GROUP_MAX_AGE", "SqliteStore"]

T = TypeVar("T")
GROUP_MAX = 64
GROUP_MAX_AGE = 0.010


class _Group:
    """The shared write transaction (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # the writer connection: one member at a time
        self.cond = threading.Condition()  # guards the fields below
        self.wanting = 0  # threads waiting for (or holding) ``lock``
        self.conn: sqlite3.Connection | None = None
        self.open = 0  # the batch whose transaction is open (0: none)
        self.members = 0
        self.opened_at = 0.0
        self.next = 1
        self.ended = 0  # every batch <= ended has committed or failed
        self.syncing: set[int] = set()  # committed, their WAL fsync not yet done
        self.failed: dict[int, Exception] = {}  # batches that did not commit
        self.closed = False
        self.dir_synced = False
        #: (batch, loop, future) of callers awaiting a batch (``SqliteStore.durable``)
        self.waiters: list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.sync_wanted = 0  # the newest committed batch the syncer thread should fsync
        self.syncer: threading.Thread | None = None

    def done(self) -> int:
        """Under ``cond``: every batch <= this has ended and, if committed, is on disk."""
        return min(self.syncing) - 1 if self.syncing else self.ended

    def wake(self) -> None:
        """Under ``cond``: wake the threads and resolve the futures of finished batches."""
        self.cond.notify_all()
        if not self.waiters:
            return
        done, left = self.done(), []
        for batch, loop, fut in self.waiters:
            if batch > done:
                left.append((batch, loop, fut))
                continue
            failed = self.failed.get(batch)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut, failed)
        self.waiters = left


def _resolve(fut: asyncio.Future[None], failed: Exception | None) -> None:
    if fut.done():
        return
    if failed is None:
        fut.set_result(None)
    else:
        fut.set_exception(StoreError(getattr(failed, "message", str(failed)),
                                     hint=getattr(failed, "hint", None)))


class SqliteStore(SqlStore):
    dialect: schema.Dialect = "sqlite"

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, pool_size: int = 8
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._deferring = threading.local()
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

    def close(self) -> None:
        group: _Group = self.__dict__.setdefault("_group", _Group())
        with group.lock:
            group.closed = True
            if group.open:  # members still waiting for this batch get an error, not a hang
                self._fail(group, StoreError("the store was closed before the write "
                                             "committed", hint="retry the request"))
            if group.conn is not None:
                with contextlib.suppress(Exception):
                    group.conn.close()
                group.conn = None
        with group.cond:
            group.cond.notify_all()  # the syncer thread sees ``closed`` and ends
            syncer = group.syncer
        if syncer is not None and syncer is not threading.current_thread():
            syncer.join(30)
        super().close()

    # --- answering without waiting for the fsync on the caller's thread --------------------

    @contextlib.contextmanager
    def deferred(self) -> Iterator[list[int]]:
        """Writes in this block (on this thread) return after their COMMIT without waiting
        for the fsync, which a background thread does; the yielded list receives the batches
        written. The caller must ``await durable(max(batches))`` before it answers anyone:
        that keeps "nothing acknowledged before it is on disk" while the event loop runs
        the request itself, with no hand-off to a worker thread."""
        batches: list[int] = []
        previous = getattr(self._deferring, "batches", None)
        self._deferring.batches = batches
        try:
            yield batches
        finally:
            self._deferring.batches = previous

    async def durable(self, batch: int) -> None:
        """Wait (without blocking the event loop) until ``batch`` is on disk; StoreError if
        it did not commit or its fsync failed."""
        if batch <= 0:
            return
        g: _Group = self.__dict__.setdefault("_group", _Group())
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with g.cond:
            if g.done() >= batch:
                _resolve(fut, g.failed.get(batch))
            else:
                g.waiters.append((batch, loop, fut))
        await fut

    def _request_sync(self, g: _Group, batch: int) -> None:
        with g.cond:
            g.sync_wanted = max(g.sync_wanted, batch)
            if g.syncer is None:
                g.syncer = threading.Thread(target=self._syncer, args=(g,),
                                            name="enarx-steward-fsync", daemon=True)
                g.syncer.start()
            g.cond.notify_all()

    def _syncer(self, g: _Group) -> None:
        """The background fsync of deferred writes: one fsync for every batch committed
        since the last one."""
        synced = 0
        while True:
            with g.cond:
                while g.sync_wanted <= synced and not g.closed:
                    g.cond.wait()
                if g.sync_wanted <= synced:  # closed and nothing left
                    g.syncer = None
                    return
                synced = g.sync_wanted
            self._sync(g, synced)

    @contextlib.contextmanager
    def _tx(self, *, write: bool = True, single: bool = False) -> Iterator[Tx]:
        if not write:
            with super()._tx(write=False, single=single) as tx:
                yield tx
            return
        g: _Group = self.__dict__.setdefault("_group", _Group())
        with g.cond:
            g.wanting += 1
        g.lock.acquire()
        synced = 0  # the batch this thread committed: it fsyncs the WAL, outside the lock
        batch = 0
        try:
            with g.cond:
                g.wanting -= 1
            batch = self._join(g)
            conn = g.conn
            if conn is None:
                raise StoreError("the store is closed", hint="this is a bug in the caller")
            # A one-statement member needs no savepoint: SQLite undoes a failing statement
            # by itself (and it never calls ``abort``), so the shared transaction stays
            # intact unless SQLite ended it, which ``_end_member`` checks.
            if not single:
                try:
                    conn.execute("SAVEPOINT member")
                except Exception as exc:
                    self._fail(g, self._typed(exc))
                    raise self._typed(exc) from None
            tx = Tx(lambda sql, params: self._execute(conn, sql, params))
            error: BaseException | None = None
            try:
                yield tx
            except BaseException as exc:
                error = exc
            self._end_member(g, conn, rollback=error is not None or tx.aborted,
                             savepoint=not single)
            with g.cond:
                g.members += 1
                due = (g.wanting == 0 or g.members >= GROUP_MAX
                       or time.monotonic() - g.opened_at >= GROUP_MAX_AGE)
            if due:
                synced = self._commit(g)
            if error is not None:
                if isinstance(error, Exception):
                    raise self._typed(error) from None
                raise error
        finally:
            g.lock.release()
            deferring: list[int] | None = getattr(self._deferring, "batches", None)
            if deferring is not None:
                if batch:
                    deferring.append(batch)
                if synced:
                    self._request_sync(g, synced)
            elif synced:
                self._sync(g, synced)
        if deferring is not None:
            return  # the caller awaits ``durable(batch)``
        with g.cond:
            while g.done() < batch:
                g.cond.wait()
            failed = g.failed.get(batch)
        if failed is not None:  # a fresh exception per member (they run in other threads)
            raise StoreError(getattr(failed, "message", str(failed)),
                             hint=getattr(failed, "hint", None))

    def _join(self, g: _Group) -> int:
        """Under ``g.lock``: the open batch, opening one (BEGIN IMMEDIATE) if none is."""
        if g.open:
            return g.open
        if g.closed:
            raise StoreError("the store is closed", hint="this is a bug in the caller")
        try:
            if g.conn is None:
                g.conn = self._connect()
                # Durability comes from ``_sync`` (fsync of the WAL before any member is
                # answered), so COMMIT itself need not fsync while holding the lock.
                g.conn.execute("PRAGMA synchronous = NORMAL")
                # Another process's writer holds the lock for ~one fsync: poll for it in
                # steps of at most 2 ms (SQLite's own busy handler sleeps up to 100 ms),
                # still giving up after the busy timeout.
                g.conn.execute("PRAGMA busy_timeout = 0")
            conn = g.conn
            self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), first=0.0002,
                             most=0.002)
        except Exception as exc:
            self._drop_writer(g)
            raise self._typed(exc) from None
        with g.cond:
            g.open, g.next = g.next, g.next + 1
            g.members = 0
            g.opened_at = time.monotonic()
            return g.open

    def _end_member(self, g: _Group, conn: sqlite3.Connection, *, rollback: bool,
                    savepoint: bool) -> None:
        if not savepoint:
            if rollback and not conn.in_transaction:  # SQLite rolled the whole batch back
                self._fail(g, StoreError(f"{self.path}: the write transaction was rolled "
                                         "back", hint="retry the request"))
            return
        try:
            if rollback:
                conn.execute("ROLLBACK TO SAVEPOINT member")
            conn.execute("RELEASE SAVEPOINT member")
        except Exception as exc:  # the shared transaction's state is unknown: end it
            self._fail(g, self._typed(exc))

    def _commit(self, g: _Group) -> int:
        """Under ``g.lock``: COMMIT the open batch (no fsync: ``synchronous=NORMAL`` on the
        writer) so the next batch can start at once; the batch's number for :meth:`_sync`
        (0 if it failed)."""
        if not g.open or g.conn is None:
            return 0
        try:
            g.conn.execute("COMMIT")
        except Exception as exc:
            self._fail(g, self._typed(exc))
            return 0
        with g.cond:
            batch, g.open = g.open, 0
            g.syncing.add(batch)
            g.ended = max(g.ended, batch)
        return batch

    def _sync(self, g: _Group, batch: int) -> None:
        """fsync the WAL after ``batch``'s COMMIT, outside the writer lock (later batches
        commit meanwhile), then release the batch's members. A successful fsync makes every
        batch committed before it durable too. The same guarantee as ``synchronous=FULL``,
        which fsyncs the WAL inside COMMIT while holding the lock."""
        error: StoreError | None = None
        try:
            with contextlib.suppress(FileNotFoundError):  # gone: checkpointed (and synced)
                _fsync(Path(f"{self.path}-wal"))       # by the last connection's close
            if not g.dir_synced:  # the WAL file's directory entry, once per writer
                _fsync(self.path.parent)
                g.dir_synced = True
        except OSError as exc:
            error = StoreError(f"{self.path}: the write may not have reached the disk "
                               f"({exc.strerror or exc})", hint="check the disk, then retry")
        with g.cond:
            covered = {b for b in g.syncing if b <= batch}  # this fsync answers for them all
            g.syncing -= covered
            if error is not None:  # every batch it covered failed (none may wait forever)
                for b in covered | {batch}:
                    g.failed[b] = error
            g.wake()

    def _fail(self, g: _Group, exc: Exception) -> None:
        if g.conn is not None:
            try:
                g.conn.execute("ROLLBACK")
            except Exception:
                self._drop_writer(g)
        self._finish(g, exc if isinstance(exc, StoreError) else StoreError(
            f"{self.path}: the write did not commit: {exc}"))

    def _finish(self, g: _Group, exc: Exception | None) -> None:
        with g.cond:
            if exc is not None and g.open:
                g.failed[g.open] = exc
            g.ended = max(g.ended, g.open)
            for old in [b for b in g.failed if b < g.ended - 10_000]:
                del g.failed[old]
            g.open = 0
            g.wake()

    def _drop_writer(self, g: _Group) -> None:
        if g.conn is not None:
            with contextlib.suppress(Exception):
                g.conn.close()
            g.conn = None

    def _execute(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Row]:
        return conn.execute(sql, tuple(params)).fetchall()

    def _begin(self, conn: sqlite3.Connection, write: bool, single: bool) -> bool:
        if single and not write:
            return False  # one SELECT reads one consistent snapshot by itself
        self._retry_busy(lambda: conn.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
        return True

    def _retry_busy(self, op: Callable[[], T], *, first: float = 0.001,
                    most: float = 0.05) -> T:
        """Run ``op``, retrying while SQLite reports the database busy, up to the busy
        timeout (sleeping ``first`` seconds, doubling up to ``most``). SQLite's own busy
        handler covers most waits, but some (a concurrent switch to WAL mode, WAL recovery
        by another process) return SQLITE_BUSY at once."""
        deadline = time.monotonic() + self._busy_timeout
        delay = first
        while True:
            try:
                return op()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, most)

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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
