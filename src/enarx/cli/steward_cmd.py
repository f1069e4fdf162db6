"""``enarx steward``: run the attestation service (``serve``) and print its CA (``ca``)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["ca", "serve", "steward"]

_STATE_HELP = ("directory for the CA key and certificate, EAR key, admin token and the SQLite "
               "database (default: $XDG_STATE_HOME/enarx/steward)")
_DB_HELP = ("database URL: sqlite:///PATH.db or postgresql://USER@HOST:PORT/DB "
            "(default: STATE_DIR/steward.db); replicas share one PostgreSQL")


@click.group()
def steward() -> None:
    """The steward: attests Keeps, issues their certificates, releases their secrets.

    \b
      enarx steward serve --policy steward.toml       HTTPS on 127.0.0.1:3000
      enarx steward ca > steward-ca.pem               the CA Keeps and clients trust
    """


@steward.command()
@click.option("--policy", "policy", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="steward.toml: what evidence and workloads are accepted")
@click.option("--addr", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=3000, show_default=True, type=click.IntRange(0, 65535),
              help="port to listen on (0: any free port)")
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help=_STATE_HELP)
@click.option("--db", default=None, help=_DB_HELP)
@click.option("--key", envvar="STEWARD_KEY", type=click.Path(dir_okay=False, path_type=Path),
              help="CA key PEM (env STEWARD_KEY); with --crt, instead of the generated CA")
@click.option("--crt", envvar="STEWARD_CRT", type=click.Path(dir_okay=False, path_type=Path),
              help="CA certificate PEM (env STEWARD_CRT)")
@click.option("--san", "sans", multiple=True,
              help="extra name for the steward's TLS certificate (repeatable); localhost and "
              "127.0.0.1 are always included")
@click.option("--insecure-http", is_flag=True,
              help="serve plain HTTP, for use behind a TLS-terminating proxy only")
def serve(policy: Path, addr: str, port: int, state: Path | None, db: str | None,
          key: Path | None, crt: Path | None, sans: tuple[str, ...],
          insecure_http: bool) -> None:
    """Serve the steward over HTTPS until interrupted.

    On first start it creates its CA (P-384 key + self-signed certificate), an EAR signing
    key and an admin token in the state directory (or the database, when replicas share
    one). One JSON line per attestation goes to stderr; metrics are at /metrics.
    """
    from enarx.steward.server import serve as run_server

    run_server(policy, addr=addr, port=port, state=state, db=db, key=key, crt=crt,
               sans=sans, insecure_http=insecure_http)


@steward.command()
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help="the steward's state directory")
@click.option("--db", default=None, help="read the CA from this database instead")
def ca(state: Path | None, db: str | None) -> None:
    """Print the steward's CA certificate (PEM): give it to Keeps (--steward-ca) and clients."""
    from enarx.steward.server import default_state_dir, read_ca_pem

    click.echo(read_ca_pem(state or default_state_dir(), db).decode("ascii"), nl=False)
