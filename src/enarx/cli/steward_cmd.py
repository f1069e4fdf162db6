"""``enarx steward``: run the attestation service (``serve``) and print its CA (``ca``)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["ca", "secret", "serve", "steward"]

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
@click.option("--collateral", type=click.Path(file_okay=False, path_type=Path),
              help="Intel collateral cache (files as for `enarx attest verify --collateral`, "
              "optionally in <fmspc>/ sub-directories) for TDX/SGX quotes sent without it")
@click.option("--sgx-qe-identity", "sgx_qe_identity",
              type=click.Path(dir_okay=False, path_type=Path),
              help="SGX QE Identity (qe_identity.json, with qe_identity_issuer_chain.pem next "
              "to it) to check upstream SGX CSRs, which carry none")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="steward processes sharing the port (replicas are stateless; with "
              "SQLite they share the file)")
def serve(policy: Path, addr: str, port: int, state: Path | None, db: str | None,
          key: Path | None, crt: Path | None, sans: tuple[str, ...],
          insecure_http: bool, collateral: Path | None,
          sgx_qe_identity: Path | None, workers: int) -> None:
    """Serve the steward over HTTPS until interrupted.

    On first start it creates its CA (P-384 key + self-signed certificate), an EAR signing
    key and an admin token in the state directory (or the database, when replicas share
    one). One JSON line per attestation goes to stderr; metrics are at /metrics.
    """
    from enarx.steward.server import serve as run_server

    run_server(policy, addr=addr, port=port, state=state, db=db, key=key, crt=crt,
               sans=sans, insecure_http=insecure_http, collateral=collateral,
               sgx_qe_identity=sgx_qe_identity, workers=workers)


@steward.command()
@click.option("--state-dir", "state", type=click.Path(file_okay=False, path_type=Path),
              help="the steward's state directory")
@click.option("--db", default=None, help="read the CA from this database instead")
def ca(state: Path | None, db: str | None) -> None:
    """Print the steward's CA certificate (PEM): give it to Keeps (--steward-ca) and clients."""
    from enarx.steward.server import default_state_dir, read_ca_pem

    click.echo(read_ca_pem(state or default_state_dir(), db).decode("ascii"), nl=False)


@steward.group()
def secret() -> None:
    """Store secrets (resources) in the steward through its admin API.

    \b
      enarx steward secret put app/key/db --file db.key --steward https://127.0.0.1:3000 \\
          --steward-ca steward-ca.pem --admin-token-file STATE_DIR/admin-token

    A Keep receives a resource only after attesting, as a JWE wrapped to its one-time key,
    and only when the policy's [resources] section grants the path to its workload.
    """


@secret.command("put")
@click.argument("path")
@click.option("--file", "file", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="file holding the secret's bytes")
@click.option("--steward", "url", required=True, envvar="ENARX_STEWARD",
              help="the steward's URL (https://; plain http only on loopback)")
@click.option("--steward-ca", "ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the steward's CA certificate PEM (`enarx steward ca`)")
@click.option("--admin-token-file", "token_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="file holding the admin token (the steward's STATE_DIR/admin-token)")
def put(path: str, file: Path, url: str, ca: Path | None, token_file: Path) -> None:
    """Store FILE's bytes as resource PATH ("repo/type/tag"), replacing any previous value."""
    from enarx.client.steward_admin import StewardAdmin, read_admin_token, validate_resource_path

    validate_resource_path(path)
    admin = StewardAdmin(url, read_admin_token(token_file), ca)
    admin.put_resource(path, file.read_bytes())
    click.echo(f"stored resource {path} ({file.stat().st_size} bytes)")


@secret.command("delete")
@click.argument("path")
@click.option("--steward", "url", required=True, envvar="ENARX_STEWARD",
              help="the steward's URL (https://; plain http only on loopback)")
@click.option("--steward-ca", "ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the steward's CA certificate PEM (`enarx steward ca`)")
@click.option("--admin-token-file", "token_file", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="file holding the admin token (the steward's STATE_DIR/admin-token)")
def delete(path: str, url: str, ca: Path | None, token_file: Path) -> None:
    """Delete resource PATH ("repo/type/tag") from the steward."""
    from enarx.client.steward_admin import StewardAdmin, read_admin_token, validate_resource_path

    validate_resource_path(path)
    StewardAdmin(url, read_admin_token(token_file), ca).delete_resource(path)
    click.echo(f"deleted resource {path}")
