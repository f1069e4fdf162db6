"""``enarx registry``: run the embedded drawbridge-compatible registry (``serve``) and make
bearer tokens for its users (``token create``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["gc", "registry", "serve", "token", "token_create", "token_revoke"]

_STATE_HELP = ("directory for the database, the blobs and the TLS files "
               "(default: $XDG_STATE_HOME/enarx/registry)")
_DB_HELP = ("database URL: sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB "
            "(default: STATE_DIR/registry.db)")


@click.group()
def registry() -> None:
    """The package registry: drawbridge's API, blobs on disk, SQLite or PostgreSQL.

    \b
      enarx registry serve --state-dir /var/lib/enarx-registry     HTTPS on 127.0.0.1:8443
      enarx registry token create --user alice                     prints a bearer token
    """


@registry.command()
@click.option("--addr", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535),
              help="port to listen on (0: any free port)")
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help=_STATE_HELP)
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--steward-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="steward CA (PEM): Keeps presenting a certificate it issued may read "
              "private repositories that allow their workload")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path),
              help="TLS certificate chain (PEM) instead of the generated one")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path),
              help="TLS key (PEM) for --tls-cert")
@click.option("--san", "sans", multiple=True,
              help="extra name for the generated TLS certificate (repeatable)")
@click.option("--max-blob", type=click.IntRange(1), default=None,
              help="largest file accepted, in bytes (default 1 GiB)")
@click.option("--idle-timeout", type=click.FloatRange(0.1, 3600), default=None,
              help="seconds an upload may send nothing before it is dropped (default 60)")
@click.option("--insecure-http", is_flag=True,
              help="serve plain HTTP (loopback, or behind a TLS-terminating proxy)")
def serve(addr: str, port: int, state: Path | None, db: str | None, steward_ca: Path | None,
          tls_cert: Path | None, tls_key: Path | None, sans: tuple[str, ...],
          max_blob: int | None, idle_timeout: float | None, insecure_http: bool) -> None:
    """Serve the registry until interrupted.

    On first start it makes a TLS CA in the state directory; clients trust STATE_DIR/ca.crt.
    Prints {"event": "listening", "url": ...} on stderr once it accepts connections.
    """
    from enarx.registry.server import serve as run_server

    run_server(addr=addr, port=port, state=state, db=db, steward_ca=steward_ca,
               insecure_http=insecure_http, tls_cert=tls_cert, tls_key=tls_key, sans=sans,
               max_blob=max_blob, idle_timeout=idle_timeout)


@registry.command()
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help=_STATE_HELP)
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--pending-hours", type=click.FloatRange(0), default=24.0, show_default=True,
              help="drop unfinished uploads (pending tags) older than this")
def gc(state: Path | None, db: str | None, pending_hours: float) -> None:
    """Drop unfinished uploads and delete blob files no package uses any more.

    Safe while the registry serves; blobs written within the last hour are kept.
    """
    from enarx.registry.gc import collect
    from enarx.registry.server import default_state_dir, open_registry

    database, blobs = open_registry(state or default_state_dir(), db)
    try:
        report = collect(database, blobs, pending_after=pending_hours * 3600)
    finally:
        database.close()
    for tag in report.pending_tags:
        click.echo(f"dropped unfinished upload {tag}", err=True)
    click.echo(f"deleted {report.blobs} unused blob(s), {report.bytes} bytes", err=True)


@registry.group()
def token() -> None:
    """Bearer tokens for registry users."""


@token.command("create")
@click.option("--user", required=True, help="the user the token acts as")
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help=_STATE_HELP)
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--read", "read_only", is_flag=True,
              help="A read token: it reads the tags and directories of USER's private "
              "repositories (what `enarx deploy` needs before the Keep attests), no file "
              "contents, and writes nothing.")
def token_create(user: str, state: Path | None, db: str | None, read_only: bool) -> None:
    """Make a bearer token for USER and print it (stdout; it is stored only hashed).

    The token writes USER's repositories and reads USER's private ones. With --read it only
    reads their metadata: give that one to the hosts that deploy (the Keep fetches the files
    with its steward-issued certificate). Give it to the client as ENARX_REGISTRY_TOKEN or
    through a credential helper.
    """
    database = _open(user, state, db)
    try:
        click.echo(database.create_token(user, read_only=read_only))
    finally:
        database.close()


@token.command("revoke")
@click.option("--user", required=True, help="the user whose tokens stop working")
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help=_STATE_HELP)
@click.option("--db", default=None, help=_DB_HELP)
def token_revoke(user: str, state: Path | None, db: str | None) -> None:
    """Revoke every token of USER (a running registry refuses them at once)."""
    database = _open(user, state, db)
    try:
        n = database.revoke_tokens(user)
    finally:
        database.close()
    click.echo(f"revoked {n} token{'s' if n != 1 else ''} of {user}", err=True)


def _open(user: str, state: Path | None, db: str | None) -> Any:
    from enarx.errors import UsageError
    from enarx.registry.names import InvalidName, check_user
    from enarx.registry.server import default_state_dir, open_db

    try:
        check_user(user)
    except InvalidName as exc:
        raise UsageError(str(exc), hint="user names are letters and digits") from None
    return open_db(state or default_state_dir(), db)
