"""The registry's metadata: users, repositories, tags, tree nodes and bearer tokens, in SQLite
(``STATE_DIR/registry.db`` by default, or ``--db sqlite:///PATH``) or PostgreSQL (``--db
postgresql://…``, several registry replicas over one database and one shared blob directory).

Blob bytes live in :mod:`enarx.registry.blobs`; a node row names its blob by SHA-256. A row is
written only after its blob is safely on disk, so a crash or an interrupted upload leaves no
row that points at nothing. A tag starts *pending* with one missing node (its root); storing a
directory adds its entries to the count, storing any node removes one, and at zero the tag is
*complete* — only complete tags are listed or served, so a package is visible whole or not at
all. Tokens are stored as SHA-256 of the token (they are 256-bit random, so a plain hash is
enough); the token itself is printed once and never stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from enarx.errors import StoreError, UsageError
from enarx.steward.store import redact_url, sqlite_path
from enarx.steward.store.sql import Pool

__all__ = ["DEFAULT_DB_NAME", "TOKEN_PREFIX", "NodeRow", "RegistryDB", "RepoRow", "TagRow"]

DEFAULT_DB_NAME = "registry.db"
TOKEN_PREFIX = "enarx-registry-"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS reg_users (name TEXT PRIMARY KEY, record {blob} NOT NULL,"
    " created_at {real} NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reg_repos (owner TEXT NOT NULL, name TEXT NOT NULL,"
    " public INTEGER NOT NULL, workloads TEXT NOT NULL, record {blob} NOT NULL,"
    " created_at {real} NOT NULL, PRIMARY KEY (owner, name))",
    "CREATE TABLE IF NOT EXISTS reg_tags (owner TEXT NOT NULL, repo TEXT NOT NULL,"
    " tag TEXT NOT NULL, generation TEXT NOT NULL, body {blob} NOT NULL,"
    " content_type TEXT NOT NULL, entry TEXT NOT NULL, missing INTEGER NOT NULL,"
    " created_at {real} NOT NULL, PRIMARY KEY (owner, repo, tag))",
    "CREATE TABLE IF NOT EXISTS reg_nodes (owner TEXT NOT NULL, repo TEXT NOT NULL,"
    " tag TEXT NOT NULL, path TEXT NOT NULL, generation TEXT NOT NULL, blob TEXT NOT NULL,"
    " length BIGINT NOT NULL, content_type TEXT NOT NULL, digests TEXT NOT NULL,"
    " PRIMARY KEY (owner, repo, tag, path))",
    "CREATE TABLE IF NOT EXISTS reg_tokens (hash TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " created_at {real} NOT NULL)",
    # read tokens (``token create --read``): a private repository's metadata, no contents
    "CREATE TABLE IF NOT EXISTS reg_read_tokens (hash TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " created_at {real} NOT NULL)",
)
_TYPES = {"sqlite": {"blob": "BLOB", "real": "REAL"},
          "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION"}}
_URL_HINT = ("use sqlite:///ABSOLUTE/PATH.db, sqlite:RELATIVE/PATH.db or "
             "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")


@dataclass(frozen=True)
class RepoRow:
    owner: str
    name: str
    public: bool
    workloads: tuple[str, ...]
    record: bytes


@dataclass(frozen=True)
class TagRow:
    generation: str
    body: bytes
    content_type: str
    entry: str  # the tag's entry as canonical JSON
    missing: int

    @property
    def complete(self) -> bool:
        return self.missing == 0


@dataclass(frozen=True)
class NodeRow:
    blob: str
    length: int
    content_type: str
    digests: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class RegistryDB:
    """Every metadata operation; each runs in one transaction."""

    def __init__(self, url: str | None, state_dir: Path, *, pool_size: int = 8) -> None:
        self.dialect: Literal["sqlite", "postgresql"]
        scheme = url.split(":", 1)[0].lower() if url and ":" in url else ""
        if url is None or scheme == "sqlite":
            self.dialect = "sqlite"
            self.display = str(state_dir / DEFAULT_DB_NAME if url is None else sqlite_path(url))
            self._path = Path(self.display)
            _create_private(self._path)
        elif scheme in ("postgresql", "postgres"):
            from enarx.steward.store.postgres import _check_url

            _check_url(url)
            self.dialect = "postgresql"
            self.display = redact_url(url)
        else:
            raise UsageError(f"unsupported database URL {redact_url(url)}", hint=_URL_HINT)
        self._url = url
        self._pool: Pool[Any] = Pool(self._connect, self._close_conn, pool_size)
        try:
            with self._tx() as tx:
                for stmt in _SCHEMA:
                    tx(stmt.format(**_TYPES[self.dialect]))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._pool.close()

    # --- connections ---------------------------------------------------------------------

    def _connect(self) -> Any:
        try:
            if self.dialect == "sqlite":
                conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA busy_timeout = 30000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                return conn
            import psycopg

            return psycopg.connect(self._url or "", autocommit=True, connect_timeout=10,
                                   application_name="enarx-registry")
        except Exception as exc:
            raise self._typed(exc) from None

    def _close_conn(self, conn: Any) -> None:
        conn.close()

    def _typed(self, exc: Exception) -> StoreError:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        return StoreError(f"registry database {self.display}: {first}",
                          hint="check --db: the SQLite file's directory, or that PostgreSQL "
                          "is reachable")

    @contextlib.contextmanager
    def _tx(self, write: bool = True) -> Iterator[Any]:
        """One transaction; SQLite writers take the write lock up front (BEGIN IMMEDIATE),
        readers do not (WAL lets them run beside the writer)."""
        conn, _ = self._pool.acquire()
        pg = self.dialect == "postgresql"
        discard = False

        def run(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            if pg:
                sql = sql.replace("?", "%s")
            cur = conn.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []

        try:
            conn.execute("BEGIN IMMEDIATE" if write and not pg else "BEGIN")
            try:
                yield run
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except (sqlite3.IntegrityError, _pg_integrity()):
            raise
        except (sqlite3.Error, _pg_error()) as exc:
            discard = True
            raise self._typed(exc) from None
        finally:
            self._pool.release(conn, discard=discard)

    # --- tokens and users ----------------------------------------------------------------

    def create_token(self, owner: str, *, read_only: bool = False) -> str:
        """A new token acting as ``owner``; ``read_only``: it reads the metadata (tags,
        directories) of ``owner``'s private repositories and nothing else."""
        table = "reg_read_tokens" if read_only else "reg_tokens"
        token = TOKEN_PREFIX + ("read-" if read_only else "") + secrets.token_urlsafe(32)
        with self._tx() as tx:
            tx(f"INSERT INTO {table} (hash, owner, created_at) VALUES (?, ?, ?)",
               token_hash(token), owner, time.time())
        return token

    def revoke_tokens(self, owner: str) -> int:
        """Delete every token of ``owner`` (read tokens too); returns how many there were."""
        n = 0
        with self._tx() as tx:
            for table in ("reg_tokens", "reg_read_tokens"):
                n += len(tx(f"SELECT hash FROM {table} WHERE owner = ?", owner))
                tx(f"DELETE FROM {table} WHERE owner = ?", owner)
        return n

    def token_owner(self, token: str) -> str | None:
        with self._tx(write=False) as tx:
            rows = tx("SELECT owner FROM reg_tokens WHERE hash = ?", token_hash(token))
        return str(rows[0][0]) if rows else None

    def read_token_owner(self, token: str) -> str | None:
        """The user whose private repositories' metadata a read token may read."""
        with self._tx(write=False) as tx:
            rows = tx("SELECT owner FROM reg_read_tokens WHERE hash = ?", token_hash(token))
        return str(rows[0][0]) if rows else None

    def put_user(self, name: str, record: bytes) -> bool:
        return self._insert("INSERT INTO reg_users (name, record, created_at) VALUES (?, ?, ?)",
                            name, record, time.time())

    def get_user(self, name: str) -> bytes | None:
        with self._tx(write=False) as tx:
            rows = tx("SELECT record FROM reg_users WHERE name = ?", name)
        return bytes(rows[0][0]) if rows else None

    # --- repositories --------------------------------------------------------------------

    def put_repo(self, owner: str, name: str, public: bool, workloads: Sequence[str],
                 record: bytes) -> bool:
        return self._insert(
            "INSERT INTO reg_repos (owner, name, public, workloads, record, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            owner, name, int(public), json.dumps(list(workloads)), record, time.time())

    def get_repo(self, owner: str, name: str) -> RepoRow | None:
        with self._tx(write=False) as tx:
            rows = tx("SELECT public, workloads, record FROM reg_repos WHERE owner = ? AND "
                      "name = ?", owner, name)
        if not rows:
            return None
        public, workloads, record = rows[0]
        return RepoRow(owner, name, bool(public), tuple(json.loads(workloads)), bytes(record))

    # --- tags ----------------------------------------------------------------------------

    def put_tag(self, owner: str, repo: str, tag: str, body: bytes, content_type: str,
                entry: str) -> Literal["created", "resumed", "replaced", "exists"]:
        """Create a pending tag; a pending tag with the same body is resumed, with another
        body replaced (its nodes dropped); a complete tag is never changed ("exists")."""
        try:
            return self._put_tag(owner, repo, tag, body, content_type, entry)
        except (sqlite3.IntegrityError, _pg_integrity()):
            # a concurrent first PUT of the same tag won the insert: decide against it
            return self._put_tag(owner, repo, tag, body, content_type, entry)

    def _put_tag(self, owner: str, repo: str, tag: str, body: bytes, content_type: str,
                 entry: str) -> Literal["created", "resumed", "replaced", "exists"]:
        with self._tx() as tx:
            lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
            rows = tx("SELECT body, missing FROM reg_tags WHERE owner = ? AND repo = ? AND "
                      "tag = ?" + lock, owner, repo, tag)
            if rows:
                old_body, missing = bytes(rows[0][0]), int(rows[0][1])
                if missing == 0:
                    return "exists"
                if old_body == body:
                    return "resumed"
                tx("DELETE FROM reg_nodes WHERE owner = ? AND repo = ? AND tag = ?",
                   owner, repo, tag)
                tx("DELETE FROM reg_tags WHERE owner = ? AND repo = ? AND tag = ?",
                   owner, repo, tag)
            tx("INSERT INTO reg_tags (owner, repo, tag, generation, body, content_type, entry,"
               " missing, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?)",
               owner, repo, tag, secrets.token_hex(16), body, content_type, entry, time.time())
            return "replaced" if rows else "created"

    def get_tag(self, owner: str, repo: str, tag: str) -> TagRow | None:
        with self._tx(write=False) as tx:
            rows = tx("SELECT generation, body, content_type, entry, missing FROM reg_tags "
                      "WHERE owner = ? AND repo = ? AND tag = ?", owner, repo, tag)
        if not rows:
            return None
        g, body, ctype, entry, missing = rows[0]
        return TagRow(str(g), bytes(body), str(ctype), str(entry), int(missing))

    def list_tags(self, owner: str, repo: str) -> list[str]:
        with self._tx(write=False) as tx:
            rows = tx("SELECT tag FROM reg_tags WHERE owner = ? AND repo = ? AND missing = 0",
                      owner, repo)
        return [str(r[0]) for r in rows]

    # --- tree nodes ----------------------------------------------------------------------

    def put_node(self, owner: str, repo: str, tag: str, path: str, generation: str,
                 node: NodeRow, children: int) -> Literal["created", "exists", "stale"]:
        """Record a stored node of the pending tag ``generation``; ``children`` is the number
        of entries a directory adds (0 for a file)."""
        try:
            return self._put_node(owner, repo, tag, path, generation, node, children)
        except (sqlite3.IntegrityError, _pg_integrity()):
            return "exists"  # a concurrent upload of the same node won

    def _put_node(self, owner: str, repo: str, tag: str, path: str, generation: str,
                  node: NodeRow, children: int) -> Literal["created", "exists", "stale"]:
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""  # SQLite: BEGIN IMMEDIATE
        with self._tx() as tx:
            rows = tx("SELECT generation, missing FROM reg_tags WHERE owner = ? AND repo = ? "
                      "AND tag = ?" + lock, owner, repo, tag)
            if not rows or str(rows[0][0]) != generation:
                return "stale"
            if tx("SELECT 1 FROM reg_nodes WHERE owner = ? AND repo = ? AND tag = ? AND "
                  "path = ?", owner, repo, tag, path):
                return "exists"
            tx("INSERT INTO reg_nodes (owner, repo, tag, path, generation, blob, length,"
               " content_type, digests) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
               owner, repo, tag, path, generation, node.blob, node.length, node.content_type,
               node.digests)
            tx("UPDATE reg_tags SET missing = missing - 1 + ? WHERE owner = ? AND repo = ? "
               "AND tag = ? AND generation = ?", children, owner, repo, tag, generation)
            return "created"

    def get_node(self, owner: str, repo: str, tag: str, path: str) -> NodeRow | None:
        with self._tx(write=False) as tx:
            rows = tx("SELECT blob, length, content_type, digests FROM reg_nodes WHERE "
                      "owner = ? AND repo = ? AND tag = ? AND path = ?", owner, repo, tag, path)
        if not rows:
            return None
        blob, length, ctype, digests = rows[0]
        return NodeRow(str(blob), int(length), str(ctype), str(digests))

    def delete_pending_before(self, cutoff: float) -> list[str]:
        """Drop pending tags created before ``cutoff`` (epoch seconds) with their nodes;
        returns them as ``owner/repo:tag``."""
        with self._tx() as tx:
            rows = tx("SELECT owner, repo, tag FROM reg_tags WHERE missing > 0 AND "
                      "created_at < ?", cutoff)
            for owner, repo, tag in rows:
                tx("DELETE FROM reg_nodes WHERE owner = ? AND repo = ? AND tag = ?",
                   owner, repo, tag)
                tx("DELETE FROM reg_tags WHERE owner = ? AND repo = ? AND tag = ? AND "
                   "missing > 0", owner, repo, tag)
        return [f"{o}/{r}:{t}" for o, r, t in rows]

    def referenced_blobs(self) -> set[str]:
        with self._tx(write=False) as tx:
            return {str(r[0]) for r in tx("SELECT DISTINCT blob FROM reg_nodes")}

    def blob_in_use(self, blob: str) -> bool:
        with self._tx(write=False) as tx:
            return bool(tx("SELECT 1 FROM reg_nodes WHERE blob = ? LIMIT 1", blob))

    def _insert(self, sql: str, *params: Any) -> bool:
        try:
            with self._tx() as tx:
                tx(sql, *params)
        except (sqlite3.IntegrityError, _pg_integrity()):
            return False
        return True


def _pg_integrity() -> type[Exception]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return sqlite3.IntegrityError
    return psycopg.IntegrityError


def _pg_error() -> type[Exception]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return sqlite3.Error
    return psycopg.Error


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does (with the umask's mode)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the registry database {path}: {exc.strerror or exc}",
                         hint="check --state-dir / --db: the directory must exist and be "
                         "writable") from None
    os.close(fd)
