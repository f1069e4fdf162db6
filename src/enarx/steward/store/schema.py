"""The steward database schema as numbered migrations, one SQL text for SQLite and PostgreSQL.

Migration *n* brings a database from version *n - 1* to *n*. A store applies the missing ones
when it opens, inside one transaction that holds the database's write lock (SQLite
``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock``), and records each in
``schema_version``; so two processes opening one database at once apply each migration once,
and a failed migration leaves the previous version intact. Never edit a released migration:
append a new one.

Types are spelled ``{blob}`` and ``{real}`` and filled per dialect; booleans are integers 0/1
in both. Times are seconds since the Unix epoch.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ADVISORY_LOCK_KEY", "LATEST_VERSION", "MIGRATIONS", "Dialect", "statements"]

Dialect = Literal["sqlite", "postgresql"]

#: Key of the PostgreSQL advisory lock held while migrating (arbitrary, fixed: "enarxstw").
ADVISORY_LOCK_KEY = 0x656E_6172_7873_7477

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"blob": "BLOB", "real": "REAL"},
    "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION"},
}

#: (version, statements). Version 0 is the empty database.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            # One row per /kbs/v0/auth: the challenge nonce, redeemed at most once by
            # /kbs/v0/attest; then the attestation result; then at most one certificate.
            """CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                nonce TEXT NOT NULL,
                tee TEXT NOT NULL,
                created_at {real} NOT NULL,
                expires_at {real} NOT NULL,
                used INTEGER NOT NULL DEFAULT 0,
                token TEXT,
                tee_pubkey TEXT,
                workload TEXT,
                evidence_digest TEXT,
                attested_expires_at {real},
                issued_serial TEXT
            )""",
            "CREATE INDEX sessions_expiry ON sessions (expires_at)",
            # Every certificate the steward issued.
            """CREATE TABLE issuances (
                serial TEXT PRIMARY KEY,
                issued_at {real} NOT NULL,
                evidence_digest TEXT NOT NULL,
                workload TEXT,
                ear_status TEXT NOT NULL,
                policy_id TEXT NOT NULL,
                platform TEXT NOT NULL,
                kind TEXT NOT NULL,
                session_id TEXT
            )""",
            "CREATE INDEX issuances_time ON issuances (issued_at)",
            # Key-broker resources (/kbs/v0/resource/<repo>/<type>/<tag>).
            """CREATE TABLE resources (
                path TEXT PRIMARY KEY,
                data {blob} NOT NULL,
                updated_at {real} NOT NULL
            )""",
            # The steward's own keys (CA key, EAR signing key): created once, shared by replicas.
            """CREATE TABLE secrets (
                name TEXT PRIMARY KEY,
                value {blob} NOT NULL,
                created_at {real} NOT NULL
            )""",
        ),
    ),
    (
        2,
        (
            # The evidence (CMW bytes) a session's certificate will carry: the CSR may reach
            # another replica than the one that appraised the evidence.
            "ALTER TABLE sessions ADD COLUMN evidence {blob}",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]


def statements(version: int, dialect: Dialect) -> list[str]:
    """The SQL statements of migration ``version`` for ``dialect``."""
    for v, stmts in MIGRATIONS:
        if v == version:
            return [s.format(**_TYPES[dialect]) for s in stmts]
    raise KeyError(version)
