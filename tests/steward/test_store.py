"""The steward store (enarx.steward.store) on both backends: SQLite and a real PostgreSQL.

Every behaviour runs against both through the ``db_url`` fixture; concurrency is tested with
real threads and real processes sharing one database.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.errors import StoreError, UsageError
from enarx.steward.store import (
    PostgresStore,
    Session,
    SqliteStore,
    Store,
    open_store,
)
from enarx.steward.store.schema import LATEST_VERSION
from tests.cliutil import RunEnarx
from tests.steward.pg import PgServer, free_port

NOW = 1_800_000_000.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/steward.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def opener(db_url: str, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """``opener()`` opens one more store on the test's database (closed at the end)."""
    opened: list[Store] = []

    def open_one() -> Store:
        s = open_store(db_url, tmp_path)
        opened.append(s)
        return s

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def store(opener: Callable[[], Store]) -> Store:
    return opener()


def _attested_session(store: Store, sid: str = "s1") -> None:
    store.create_session(sid, "nonce-" + sid, "snp", NOW + 300)
    assert store.attest_session(sid, NOW, "ear.jwt", '{"kty":"EC"}', "sha384:aa", "sha384:ev",
                                NOW + 3600)


# --- schema migrations ---------------------------------------------------------------------


def test_open_applies_migrations_and_reopen_keeps_data(
    opener: Callable[[], Store], db_url: str
) -> None:
    first = opener()
    assert first.schema_version() == LATEST_VERSION
    first.put_resource("repo/key/one", b"kept")
    first.close()
    again = opener()
    assert again.schema_version() == LATEST_VERSION
    assert again.get_resource("repo/key/one") == b"kept"
    assert _count(db_url, "schema_version") == LATEST_VERSION  # one row per migration


def test_open_upgrades_a_version_1_database_in_place(
    opener: Callable[[], Store], db_url: str
) -> None:
    s = opener()
    s.create_session("old", "n1", "snp", NOW + 60)
    s.close()
    # Take the database back to schema version 1 (as an enarx of that version left it).
    _sql(db_url, "ALTER TABLE sessions DROP COLUMN evidence")
    _sql(db_url, "DELETE FROM schema_version WHERE version > 1")
    upgraded = opener()
    assert upgraded.schema_version() == LATEST_VERSION
    old = upgraded.get_session("old")  # the old row survived the migration
    assert old is not None and old.nonce == "n1" and old.evidence is None
    assert upgraded.attest_session("old", NOW, "t", "{}", None, "d", NOW + 60, evidence=b"cmw")
    got = upgraded.get_session("old")
    assert got is not None and got.evidence == b"cmw"


def test_concurrent_first_open_by_processes_migrates_once(db_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from enarx.steward.store import open_store\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "s = open_store(sys.argv[1], sys.argv[3]); print(s.schema_version()); s.close()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url, str(go), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # let all of them reach the barrier (interpreter start-up)
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        assert out.decode().strip() == str(LATEST_VERSION)
    assert _count(db_url, "schema_version") == LATEST_VERSION


def test_database_newer_than_this_enarx_is_refused(
    opener: Callable[[], Store], db_url: str
) -> None:
    opener().close()
    _sql(db_url, "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)")
    with pytest.raises(StoreError) as ei:
        opener()
    assert "schema version 999" in ei.value.message
    assert ei.value.hint and "newer enarx" in ei.value.hint


# --- nonces and sessions -------------------------------------------------------------------


def test_nonce_redeems_once(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    got = store.redeem_nonce("s1", "n1", NOW)
    assert isinstance(got, Session)
    assert (got.id, got.nonce, got.tee, got.used, got.attested) == ("s1", "n1", "snp", True, False)
    assert store.redeem_nonce("s1", "n1", NOW) is None  # replay
    session = store.get_session("s1")
    assert session is not None and session.used


def test_wrong_nonce_is_refused_and_does_not_spend_the_session(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    assert store.redeem_nonce("s1", "n2", NOW) is None
    assert store.redeem_nonce("s1", "", NOW) is None
    assert store.redeem_nonce("s1", "n1", NOW) is not None


def test_expired_or_unknown_nonce_is_refused(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    assert store.redeem_nonce("s1", "n1", NOW + 60) is None  # expiry is exclusive
    assert store.redeem_nonce("nope", "n1", NOW) is None
    assert store.get_session("nope") is None
    session = store.get_session("s1")
    assert session is not None and not session.used


def test_times_accept_aware_datetimes_and_refuse_naive(store: Store) -> None:
    t = datetime.fromtimestamp(NOW, UTC)
    store.create_session("s1", "n1", "snp", t + timedelta(seconds=60))
    assert store.redeem_nonce("s1", "n1", t + timedelta(seconds=61)) is None
    assert store.redeem_nonce("s1", "n1", t) is not None
    with pytest.raises(ValueError, match="naive"):
        store.create_session("s2", "n2", "snp", datetime(2030, 1, 1))


def test_duplicate_session_id_is_a_typed_error(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    with pytest.raises(StoreError, match="exists already"):
        store.create_session("s1", "n2", "snp", NOW + 60)
    assert store.redeem_nonce("s1", "n1", NOW) is not None  # the first one is intact


def test_concurrent_redemption_from_threads_succeeds_once(opener: Callable[[], Store]) -> None:
    stores = [opener(), opener()]  # two "replicas", each with its connection pool
    stores[0].create_session("s1", "n1", "snp", NOW + 60)
    n = 16
    barrier = threading.Barrier(n)
    results: list[Session | None] = []
    errors: list[BaseException] = []

    def redeem(i: int) -> None:
        try:
            barrier.wait(10)
            results.append(stores[i % 2].redeem_nonce("s1", "n1", NOW))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=redeem, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == n
    assert sum(r is not None for r in results) == 1


def test_concurrent_redemption_from_processes_succeeds_once(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    go = tmp_path / "go"
    code = (
        "import os, sys, time\n"
        "from enarx.steward.store import open_store\n"
        "s = open_store(sys.argv[1], sys.argv[3])\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        f"print('won' if s.redeem_nonce('s1', 'n1', {NOW}) else 'lost'); s.close()\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, db_url, str(go), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    time.sleep(1.5)
    go.touch()
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        outcomes.append(out.decode().strip())
    assert sorted(outcomes) == ["lost", "lost", "lost", "won"]


def test_attest_session_records_every_field_and_happens_once(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    assert not store.attest_session("other", NOW, "t", "{}", None, "d", NOW + 3600)
    cmw = b"\x83\x00cmw bytes\xff"
    assert store.attest_session(
        "s1", NOW, "tok", '{"kty":"EC"}', "sha384:ab", "sha384:cd", NOW + 3600, evidence=cmw
    )
    assert not store.attest_session("s1", NOW, "tok2", "{}", None, "d", NOW + 3600,
                                    evidence=b"other")
    s = store.get_session("s1")
    assert s is not None and s.attested
    assert (s.token, s.tee_pubkey, s.workload, s.evidence_digest, s.attested_expires_at) == (
        "tok",
        '{"kty":"EC"}',
        "sha384:ab",
        "sha384:cd",
        NOW + 3600,
    )
    assert s.evidence == cmw
    store.create_session("s2", "n2", "snp", NOW + 60)
    s2 = store.get_session("s2")
    assert s2 is not None and s2.evidence is None  # nothing attested, nothing recorded


def test_purge_removes_only_fully_expired_sessions(store: Store) -> None:
    store.create_session("old", "n", "snp", NOW - 10)
    store.create_session("live", "n", "snp", NOW + 10)
    _attested_session(store, "attested")  # challenge NOW+300, result NOW+3600
    assert store.purge_expired(NOW + 301) == 2
    assert store.get_session("attested") is not None
    assert store.purge_expired(NOW + 3601) == 1
    assert store.get_session("attested") is None


# --- issuance records ----------------------------------------------------------------------


def test_issuance_is_recorded_and_listed_in_time_order(store: Store) -> None:
    store.record_issuance("02", NOW + 1, "sha384:e2", None, "warning", "sha256:p", "sim", "kbs")
    store.record_issuance("01", NOW, "sha384:e1", "sha384:w", "affirming", "sha256:p", "snp", "csr")
    got = store.list_issuances()
    assert [(i.serial, i.issued_at, i.workload, i.ear_status, i.platform, i.kind) for i in got] == [
        ("01", NOW, "sha384:w", "affirming", "snp", "csr"),
        ("02", NOW + 1, None, "warning", "sim", "kbs"),
    ]
    assert [i.serial for i in store.list_issuances(limit=1)] == ["01"]


def test_one_certificate_per_session(store: Store) -> None:
    store.create_session("fresh", "n", "snp", NOW + 60)
    assert not store.record_issuance(
        "aa", NOW, "d", None, "affirming", "p", "snp", "kbs", session_id="fresh"
    )  # not attested: refused, nothing recorded
    _attested_session(store)
    assert store.record_issuance(
        "bb", NOW, "d", None, "affirming", "p", "snp", "kbs", session_id="s1"
    )
    assert not store.record_issuance(
        "cc", NOW, "d", None, "affirming", "p", "snp", "kbs", session_id="s1"
    )
    assert [i.serial for i in store.list_issuances()] == ["bb"]
    s = store.get_session("s1")
    assert s is not None and s.issued_serial == "bb"


def test_failed_issuance_leaves_nothing_half_written(store: Store) -> None:
    _attested_session(store)
    store.record_issuance("dup", NOW, "d", None, "affirming", "p", "snp", "csr")
    with pytest.raises(StoreError, match="serial dup"):
        store.record_issuance(
            "dup", NOW, "d2", None, "affirming", "p", "snp", "kbs", session_id="s1"
        )
    s = store.get_session("s1")
    assert s is not None and s.issued_serial is None  # the claim was rolled back with it
    assert [(i.serial, i.evidence_digest) for i in store.list_issuances()] == [("dup", "d")]
    # ... so the session can still get its certificate.
    assert store.record_issuance(
        "new", NOW, "d", None, "affirming", "p", "snp", "kbs", session_id="s1"
    )


# --- resources and secrets -----------------------------------------------------------------


def test_resources_put_get_overwrite_delete(store: Store) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB with NUL bytes
    store.put_resource("repo/type/tag", blob)
    assert store.get_resource("repo/type/tag") == blob
    store.put_resource("repo/type/tag", b"v2")
    assert store.get_resource("repo/type/tag") == b"v2"
    assert store.get_resource("repo/type/other") is None
    assert store.delete_resource("repo/type/tag")
    assert not store.delete_resource("repo/type/tag")
    assert store.get_resource("repo/type/tag") is None


def test_secret_is_created_once_and_factory_not_called_again(store: Store) -> None:
    calls: list[int] = []

    def factory() -> bytes:
        calls.append(1)
        return b"key-%d" % len(calls)

    assert store.get_or_create_secret("ca-key", factory) == b"key-1"
    assert store.get_or_create_secret("ca-key", factory) == b"key-1"
    assert calls == [1]
    assert store.get_or_create_secret("ear-key", factory) == b"key-2"


def test_replicas_racing_for_a_secret_agree(opener: Callable[[], Store]) -> None:
    replicas = [opener() for _ in range(4)]
    barrier = threading.Barrier(8)
    got: list[bytes] = []

    def race(i: int) -> None:
        barrier.wait(10)
        got.append(replicas[i % 4].get_or_create_secret("ca-key", lambda: os.urandom(32)))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 8 and len(set(got)) == 1


def test_secret_factory_must_return_bytes(store: Store) -> None:
    with pytest.raises(TypeError, match="non-empty bytes"):
        store.get_or_create_secret("k", lambda: b"")
    assert store.get_or_create_secret("k", lambda: b"real") == b"real"


def test_many_threads_share_one_store(store: Store) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                sid = f"s{i}-{j}"
                store.create_session(sid, "n", "snp", NOW + 60)
                assert store.redeem_nonce(sid, "n", NOW) is not None
                store.put_resource(f"r/{i}/{j}", b"x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert all(store.get_resource(f"r/{i}/9") == b"x" for i in range(12))


def test_closed_store_refuses_use(opener: Callable[[], Store]) -> None:
    s = opener()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.get_resource("a")


# --- arbitrary text from requests ------------------------------------------------------------
# Session ids (cookies), nonces and paths come from clients. Text no database can hold (NUL,
# lone surrogates) must be "not found" for lookups and a UsageError (400) for writes, the same
# on both backends, never a driver error (503) or an uncaught exception (500).


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(max_size=20) | st.sampled_from(["\x00", "a\x00b", "\ud800", "s\udfff"]))
def test_arbitrary_client_text_never_breaks_the_store(store: Store, key: str) -> None:
    assert store.get_session(key) is None
    assert store.redeem_nonce(key, key, NOW) is None
    assert store.attest_session(key, NOW, "t", "{}", None, "d", NOW) is False
    assert store.get_resource(key) is None
    assert store.delete_resource(key) is False
    sid = os.urandom(8).hex()
    store.create_session(sid, "n", "snp", NOW + 60, now=NOW)
    assert store.redeem_nonce(sid, key, NOW) is None or key == "n"  # a client's bad nonce
    assert not store.record_issuance("s", NOW, "d", None, "a", "p", "x", "k", session_id=key)
    try:
        store.put_resource("p/" + key, b"v")
    except UsageError as exc:
        assert exc.exit_code == 2 and exc.hint
    else:
        assert store.get_resource("p/" + key) == b"v"
    try:
        store.create_session(sid + "/" + key, key, "snp", NOW + 60)
    except UsageError as exc:
        assert exc.exit_code == 2 and exc.hint
    else:
        assert store.redeem_nonce(sid + "/" + key, key, NOW) is not None


# --- SQLite specifics ----------------------------------------------------------------------


def test_default_store_is_a_private_sqlite_file_in_wal_mode(tmp_path: Path) -> None:
    state = tmp_path / "state" / "steward"
    s = open_store(None, state)
    try:
        assert isinstance(s, SqliteStore)
        s.put_resource("a/b/c", b"x")  # leaves the WAL file in place while open
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in state.iterdir()}
        assert files["steward.db"] == 0o600
        assert files["steward.db-wal"] == 0o600
        assert files["steward.db-shm"] == 0o600
        with sqlite3.connect(state / "steward.db") as c:
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        s.close()


def test_existing_world_readable_db_file_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    db.touch(mode=0o644)
    os.chmod(db, 0o644)
    open_store(f"sqlite://{db}", tmp_path).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_busy_sqlite_waits_for_the_lock_then_times_out_typed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SqliteStore(db).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
    try:
        s = SqliteStore(db, busy_timeout=0.2)
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreError) as ei:
                s.put_resource("a", b"x")
            assert time.monotonic() - t0 >= 0.15  # it waited for the lock first
            assert "locked" in ei.value.message and ei.value.hint
            threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
            s2 = SqliteStore(db, busy_timeout=10)
            s2.put_resource("a", b"y")  # waits until the holder commits
            assert s2.get_resource("a") == b"y"
            s2.close()
        finally:
            s.close()
    finally:
        holder.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "sqlite://host/x.db", "sqlite:", "sqlite:///x.db?mode=ro", "steward.db"],
)
def test_bad_database_urls_are_usage_errors(url: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as ei:
        open_store(url, tmp_path)
    assert ei.value.exit_code == 2 and ei.value.hint and "postgresql://" in ei.value.hint


def test_sqlite_in_a_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as ei:
        open_store(f"sqlite://{tmp_path}/no/such/dir/s.db", tmp_path)
    assert "no/such/dir" in ei.value.message and ei.value.hint


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a directory another user owns")
def test_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "theirs"
    state.mkdir(mode=0o777)
    os.chown(state, 65534, 65534)  # nobody: they could swap the database file
    with pytest.raises(StoreError) as ei:
        open_store(None, state)
    assert "another user" in ei.value.message and "--state-dir" in str(ei.value.hint)
    assert not (state / "steward.db").exists()


# --- PostgreSQL specifics ------------------------------------------------------------------


def test_unreachable_postgres_is_a_typed_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://steward:s3cret-pw@127.0.0.1:{free_port()}/db"
    with pytest.raises(StoreError) as ei:
        open_store(url, tmp_path)
    err = ei.value
    assert "cannot connect to PostgreSQL" in err.message and err.hint
    assert "s3cret-pw" not in err.message and "s3cret-pw" not in str(err.hint)
    assert "steward:***@127.0.0.1" in err.message


def test_missing_postgres_database_is_a_typed_error(postgres: PgServer, tmp_path: Path) -> None:
    with pytest.raises(StoreError) as ei:
        open_store(postgres.url("no_such_db"), tmp_path)
    assert "no_such_db" in ei.value.message and ei.value.hint


def test_malformed_postgres_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as ei:
        open_store("postgresql://u:pw@127.0.0.1:notaport/db", tmp_path)
    assert "pw@" not in ei.value.message


def test_postgres_store_survives_its_connections_being_killed(
    pg_url: str, postgres: PgServer
) -> None:
    s = PostgresStore(pg_url)
    try:
        s.put_resource("a", b"1")
        _sql(
            postgres.url(),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'enarx-steward'",
        )
        _wait_no_steward_backends(postgres.url())
        # The pooled connection is dead; the store notices before using it (the server's
        # goodbye is waiting on its socket) and takes a new one, so the caller sees no error.
        s.put_resource("a", b"2")
        assert s.get_resource("a") == b"2"
    finally:
        s.close()


# --- through the CLI ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("db", "expect"),
    [
        ("postgresql://steward:s3cret-pw@127.0.0.1:{port}/db", b"cannot connect to PostgreSQL"),
        ("mysql://steward:s3cret-pw@db/x", b"unsupported database URL"),
        ("sqlite://{tmp}/missing/dir/s.db", b"cannot open the database"),
    ],
)
def test_serve_with_an_unusable_db_fails_cleanly(
    enarx: RunEnarx, tmp_path: Path, db: str, expect: bytes
) -> None:
    policy = tmp_path / "steward.toml"
    policy.write_text('allow = ["nil"]\n')
    url = db.format(port=free_port(), tmp=tmp_path)
    r = enarx(
        "steward",
        "serve",
        "--policy",
        policy,
        "--state-dir",
        tmp_path / "st",
        "--db",
        url,
        "--port",
        "0",
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr and b"\nhint: " in r.stderr
    assert b"s3cret-pw" not in r.stderr and b"Traceback" not in r.stderr


# --- helpers -------------------------------------------------------------------------------


def _wait_no_steward_backends(url: str) -> None:
    deadline = time.monotonic() + 10
    with psycopg.connect(url, autocommit=True) as c:
        while time.monotonic() < deadline:
            row = c.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'enarx-steward'"
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.01)
    raise AssertionError("terminated backends did not go away")


def _sql(url: str, sql: str) -> None:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as c:
            c.execute(sql)
    else:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(sql)


def _count(url: str, table: str) -> int:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url.removeprefix("sqlite://")) as c:
            return int(c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    with psycopg.connect(url) as c:
        row = c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def test_sqlite_stores_opening_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL mode can return SQLITE_BUSY at once (no busy wait) when
    # several connections race; opening retries that within the busy timeout.
    errors: list[BaseException] = []

    def open_one(db: Path, barrier: threading.Barrier) -> None:
        barrier.wait(10)
        try:
            SqliteStore(db).close()
        except BaseException as exc:
            errors.append(exc)

    for round_ in range(100):
        db = tmp_path / f"r{round_}.db"
        barrier = threading.Barrier(6)
        threads = [threading.Thread(target=open_one, args=(db, barrier)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors[0]


def test_attest_session_redeems_and_records_in_one_step(store: Store) -> None:
    store.create_session("s1", "n1", "snp", NOW + 60)
    assert not store.attest_session("other", NOW, "t", "{}", None, "d", NOW + 3600)
    assert not store.attest_session("s1", NOW + 61, "t", "{}", None, "d", NOW + 3600)  # expired
    cmw = b"\x83\x00cmw"
    assert store.attest_session("s1", NOW, "tok", '{"kty":"EC"}', "sha384:ab", "sha384:cd",
                                NOW + 3600, evidence=cmw)
    assert not store.attest_session("s1", NOW, "tok2", "{}", None, "d", NOW + 3600)  # once
    assert store.redeem_nonce("s1", "n1", NOW) is None  # the nonce is spent
    s = store.get_session("s1")
    assert s is not None and s.used and s.attested and s.evidence == cmw
    assert (s.token, s.workload, s.attested_expires_at) == ("tok", "sha384:ab", NOW + 3600)
    store.create_session("s2", "n2", "snp", NOW + 60)
    store.redeem_nonce("s2", "n2", NOW)  # a refused attempt spent it
    assert not store.attest_session("s2", NOW, "t", "{}", None, "d", NOW + 3600)


def test_concurrent_attest_session_succeeds_once(opener: Callable[[], Store]) -> None:
    stores = [opener(), opener()]  # two "replicas"
    stores[0].create_session("s1", "n1", "snp", NOW + 60)
    n = 12
    barrier = threading.Barrier(n)
    results: list[bool] = []
    errors: list[BaseException] = []

    def attest(i: int) -> None:
        try:
            barrier.wait(10)
            results.append(stores[i % 2].attest_session("s1", NOW, f"t{i}", "{}", None, "d",
                                                        NOW + 3600))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attest, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == n and sum(results) == 1


def test_sqlite_group_commit_acknowledges_only_durable_writes(tmp_path: Path) -> None:
    """Concurrent SQLite writers share commits (group commit), yet each call returns only once
    its row is committed: an independent connection sees it at that moment. A failing member
    (duplicate id) and an aborted one (wrong nonce) change nothing for the others."""

    from enarx.steward.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "g.db")
    store.create_session("dup", "n", "snp", NOW + 60)
    n = 24
    barrier = threading.Barrier(n)
    seen: list[bool] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        check = sqlite3.connect(tmp_path / "g.db")
        try:
            barrier.wait(10)
            if i == 0:
                try:
                    store.create_session("dup", "n", "snp", NOW + 60)
                except StoreError:
                    seen.append(True)
                return
            store.create_session(f"s{i}", f"n{i}", "snp", NOW + 60)
            rows = check.execute("SELECT nonce FROM sessions WHERE id = ?", (f"s{i}",)).fetchall()
            assert store.redeem_nonce(f"s{i}", "wrong", NOW) is None  # aborted member
            assert store.attest_session(f"s{i}", NOW, "t", "{}", None, "d", NOW + 600)
            used = check.execute("SELECT used, token FROM sessions WHERE id = ?",
                                 (f"s{i}",)).fetchall()
            seen.append(rows == [(f"n{i}",)] and used == [(1, "t")])
        except BaseException as exc:
            errors.append(exc)
        finally:
            check.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and seen == [True] * n
    store.close()
    reopened = SqliteStore(tmp_path / "g.db")
    try:
        assert all(reopened.get_session(f"s{i}") is not None for i in range(1, n))
    finally:
        reopened.close()


def _trace_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every SQL statement the stores opened after this call send (BEGIN/COMMIT included)."""
    sent: list[str] = []
    sqlite_connect = SqliteStore._connect

    def traced(self: SqliteStore) -> sqlite3.Connection:
        conn = sqlite_connect(self)
        conn.set_trace_callback(sent.append)
        return conn

    monkeypatch.setattr(SqliteStore, "_connect", traced)
    pg_execute, pg_begin = PostgresStore._execute, PostgresStore._begin

    def execute(self: PostgresStore, conn: psycopg.Connection[object], sql: str,
                params: object) -> object:
        sent.append(sql)
        return pg_execute(self, conn, sql, params)  # type: ignore[arg-type]

    def begin(self: PostgresStore, conn: psycopg.Connection[object], write: bool,
              single: bool) -> bool:
        began = pg_begin(self, conn, write, single)  # type: ignore[arg-type]
        if began:
            sent.append("BEGIN")
        return began

    monkeypatch.setattr(PostgresStore, "_execute", execute)
    monkeypatch.setattr(PostgresStore, "_begin", begin)
    return sent


def test_one_round_trip_sends_one_statement_per_step(
    opener: Callable[[], Store], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # auth -> attest (read, write) -> certificate (read, write): every step is one statement
    # (plus the commit a write needs), so a round trip costs few database round trips.
    sent = _trace_statements(monkeypatch)
    store = opener()
    sent.clear()

    def step(fn: Callable[[], object]) -> list[str]:
        start = len(sent)
        fn()
        return [s.split()[0].upper() for s in sent[start:]]

    writes = {"INSERT", "UPDATE", "WITH"}
    created = step(lambda: store.create_session("s1", "n1", "snp", NOW + 60))
    read = step(lambda: store.get_session("s1"))
    attested = step(lambda: store.attest_session("s1", NOW, "t", "{}", None, "d", NOW + 600))
    read_again = step(lambda: store.get_session("s1"))
    recorded = step(lambda: store.record_issuance("ab", NOW, "d", None, "a", "p", "sim", "kbs",
                                                  session_id="s1"))
    assert read == read_again == ["SELECT"]  # no BEGIN/COMMIT around one read
    for got in (created, attested):
        assert "SAVEPOINT" not in got and sum(s in writes for s in got) == 1, got
    if db_url.startswith("postgresql"):
        assert (created, attested) == (["INSERT"], ["UPDATE"])
        assert recorded == ["WITH"]  # claim + record in one statement
    else:
        assert [s for s in recorded if s in writes] == ["UPDATE", "INSERT"]
    assert store.list_issuances()[0].session_id == "s1"


@pytest.fixture
def gated_fsync(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[Path]]]:
    """SQLite's fsyncs, held while the event is clear (it starts set; the paths synced are
    listed)."""
    import enarx.steward.store.sqlite as sqlite_store

    gate = threading.Event()
    gate.set()
    synced: list[Path] = []
    real = sqlite_store._fsync

    def held(path: Path) -> None:
        gate.wait(30)
        real(path)
        synced.append(path)

    monkeypatch.setattr(sqlite_store, "_fsync", held)
    yield gate, synced
    gate.set()


def test_a_sqlite_write_returns_only_after_its_wal_fsync(
    tmp_path: Path, gated_fsync: tuple[threading.Event, list[Path]]
) -> None:
    gate, synced = gated_fsync
    store = SqliteStore(tmp_path / "s.db")
    gate.clear()
    try:
        writer = threading.Thread(
            target=store.create_session, args=("s1", "n1", "snp", NOW + 60))
        writer.start()
        writer.join(0.3)
        assert writer.is_alive()  # committed, visible, but not answered before the fsync
        assert store.get_session("s1") is not None
        gate.set()
        writer.join(30)
        assert not writer.is_alive()
        assert tmp_path / "s.db-wal" in synced
    finally:
        gate.set()
        store.close()


def test_deferred_sqlite_writes_are_awaited_until_on_disk(
    tmp_path: Path, gated_fsync: tuple[threading.Event, list[Path]]
) -> None:
    import asyncio

    gate, synced = gated_fsync
    store = SqliteStore(tmp_path / "d.db")
    gate.clear()
    synced.clear()
    try:
        with store.deferred() as batches:
            store.create_session("s1", "n1", "snp", NOW + 60)  # returns without the fsync
            assert store.attest_session("s1", NOW, "t", "{}", None, "d", NOW + 600)
        assert batches and not synced

        async def wait(timeout: float) -> None:
            await asyncio.wait_for(store.durable(max(batches)), timeout)

        with pytest.raises(TimeoutError):
            asyncio.run(wait(0.3))  # not durable while the fsync is held
        gate.set()
        asyncio.run(wait(30))
        assert tmp_path / "d.db-wal" in synced
    finally:
        gate.set()
        store.close()


def test_a_failed_fsync_fails_the_deferred_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import enarx.steward.store.sqlite as sqlite_store

    store = SqliteStore(tmp_path / "f.db")

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_store, "_fsync", broken)
    try:
        with store.deferred() as batches:
            store.create_session("s1", "n1", "snp", NOW + 60)
        with pytest.raises(StoreError, match="may not have reached the disk"):
            asyncio.run(store.durable(max(batches)))
        with pytest.raises(StoreError, match="may not have reached the disk"):
            store.create_session("s2", "n2", "snp", NOW + 60)  # the threaded path too
    finally:
        store.close()


def test_a_failed_fsync_fails_every_batch_it_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches committed while an fsync runs are synced by the next one together; when that
    one fails, each of them fails (none waits forever)."""
    import asyncio
    import threading

    import enarx.steward.store.sqlite as sqlite_store

    store = SqliteStore(tmp_path / "f.db")
    entered, gate, calls = threading.Event(), threading.Event(), []

    def fsync(path: Path) -> None:
        if not str(path).endswith("-wal"):
            return  # the directory's fsync is not what this is about
        calls.append(path)
        if len(calls) == 1:
            entered.set()
            gate.wait(10)  # the first fsync (batch 1) holds on while two more batches commit
            return
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_store, "_fsync", fsync)
    try:
        with store.deferred() as first:
            store.create_session("s1", "n1", "snp", NOW + 60)
        assert entered.wait(10)  # batch 1's fsync has begun: later batches wait for the next
        with store.deferred() as second:
            store.create_session("s2", "n2", "snp", NOW + 60)
        with store.deferred() as third:
            store.create_session("s3", "n3", "snp", NOW + 60)
        gate.set()

        async def wait(batch: int) -> None:
            await asyncio.wait_for(store.durable(batch), 10)

        asyncio.run(wait(max(first)))
        for batches in (second, third):
            with pytest.raises(StoreError, match="may not have reached the disk"):
                asyncio.run(wait(max(batches)))
    finally:
        store.close()
