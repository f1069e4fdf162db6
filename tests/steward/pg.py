"""A real PostgreSQL server for the steward tests: ``initdb`` + ``postgres`` in a temp dir on
127.0.0.1 and a free port, started once per test session and stopped (and deleted) at its end.

Debian's ``postgresql`` package provides the binaries (/usr/lib/postgresql/<major>/bin;
scripts/install-toolchains.sh installs it). PostgreSQL refuses to run as root, so under root
the server runs as the ``postgres`` user (else ``nobody``). Without the binaries the tests that
need it skip, and fail under ``CI=true``.

Fixtures: ``postgres`` (the :class:`PgServer`, session-scoped) and ``pg_url`` (a URL to a fresh,
empty database of that server for each test). :func:`start_postgres` is the plain function
for scripts (bench) that need a server outside pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

__all__ = [
    "PgMissing",
    "PgServer",
    "find_pg_bin",
    "free_port",
    "pg_url",
    "postgres",
    "start_postgres",
]

STARTUP_TIMEOUT = 60.0
SUPERUSER = "enarx"


class PgMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres (PG_BIN overrides)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    root = Path("/usr/lib/postgresql")
    found = [d / "bin" for d in root.glob("*") if (d / "bin" / "initdb").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A running server; :meth:`stop` ends it and deletes its directory (idempotent)."""

    def __init__(self, root: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.root = root
        self.port = port
        self.proc = proc
        self._dbs = itertools.count()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t{os.getpid()}_{next(self._dbs)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "server.log").read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: abort sessions, exit
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as() -> dict[str, object]:
    """Popen arguments that drop root to an unprivileged user (empty when not root)."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(name)
            return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    raise PgMissing("running as root and neither user postgres nor nobody exists")


def start_postgres(*, durable: bool = False) -> PgServer:
    """Start a throw-away server. ``durable=False`` turns fsync off (tests need no crash
    safety of the database files); benchmarks pass ``durable=True``."""
    bindir = find_pg_bin()
    if bindir is None:
        raise PgMissing("PostgreSQL is not installed (Debian package postgresql)")
    drop = _run_as()
    root = Path(tempfile.mkdtemp(prefix="enarx-pg-"))
    try:
        if "user" in drop:
            os.chown(root, int(drop["user"]), int(drop["group"]))  # type: ignore[call-overload]
        with open(root / "initdb.log", "wb") as log:
            subprocess.run(
                [
                    bindir / "initdb",
                    "-D",
                    root / "data",
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
                **drop,  # type: ignore[call-overload]
            )
        for _attempt in range(3):
            port = free_port()
            server = _launch(bindir, root, port, durable, drop)
            if server is not None:
                return server
        raise RuntimeError(f"PostgreSQL did not start:\n{(root / 'server.log').read_text()}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _launch(
    bindir: Path, root: Path, port: int, durable: bool, drop: dict[str, object]
) -> PgServer | None:
    settings = [
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={root}",
        "max_connections=200",
        "log_min_messages=warning",
    ]
    if not durable:
        settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    args: list[str | Path] = [bindir / "postgres", "-D", root / "data", "-p", str(port)]
    for s in settings:
        args += ["-c", s]
    log = open(root / "server.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **drop
        )  # type: ignore[call-overload]
    finally:
        log.close()
    server = PgServer(root, port, proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None  # e.g. the port was taken meanwhile: the caller retries
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                atexit.register(server.stop)  # also on an interrupted session
                return server
        except psycopg.OperationalError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("PostgreSQL did not accept connections in time")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """A running PostgreSQL for this test session (skip without it; fail under CI)."""
    try:
        server = start_postgres()
    except PgMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc}: scripts/install-toolchains.sh installs it")
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """URL of a fresh, empty database on the session's server."""
    return postgres.create_database()
