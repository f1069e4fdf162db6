"""``enarx verify-keep HOST:PORT --ca PEM``: check a running Keep before trusting it."""

from __future__ import annotations

from pathlib import Path

import click

from enarx.errors import EnarxError, UsageError

__all__ = ["verify_keep"]


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot read: {e.strerror or e}",
                         hint=f"give the {what} as a PEM file") from None


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{value!r} is not HOST:PORT",
                         hint="e.g. 127.0.0.1:8443 or [::1]:8443 (the Keep's tls listener)")
    return host, int(port)


@click.command("verify-keep")
@click.argument("address", metavar="HOST:PORT")
@click.option("--ca", "ca", required=True, type=click.Path(dir_okay=False), metavar="PEM",
              help="The steward's CA certificate (`enarx steward ca`).")
@click.option("--workload", metavar="sha384:HEX",
              help="Require this workload identity (`enarx identity MODULE`).")
@click.option("--trust-root", "trust_roots", multiple=True, type=click.Path(dir_okay=False),
              metavar="PEM", help="Trust evidence chaining to this root as well as the vendor "
              "roots (e.g. the sim ARK). Repeatable.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds for the connection and handshake.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_keep(address: str, ca: str, workload: str | None, trust_roots: tuple[str, ...],
                timeout: float, as_json: bool) -> None:
    """Connect to a Keep at HOST:PORT and verify it independently of the steward.

    \b
    Checks, in order: the TLS certificate chains to --ca (keep.tls); the evidence embedded
    in the certificate verifies with enarx's own verifiers against the vendor roots (plus
    --trust-root) (keep.evidence); the evidence binds the certificate's key (keep.binding);
    the attested workload is --workload when given (keep.workload). Exit 0 only when all
    pass; exit 4 naming the failed check; exit 2 for bad arguments or no TLS listener.
    \b
    Example:
      enarx verify-keep 127.0.0.1:8443 --ca steward-ca.pem --workload sha384:...
    """
    from enarx.cli.output import error_exit, print_json, warn
    from enarx.client.verify_keep import verify_keep as verify

    try:
        host, port = _address(address)
        ca_pem = _read(ca, "steward CA")
        roots = [_read(r, "trust root") for r in trust_roots]
        report = verify(host, port, ca_pem, workload, trust_roots=roots, timeout=timeout)
    except EnarxError as e:
        error_exit(e, as_json=as_json)
        return
    if as_json:
        print_json(report.to_dict())
        return
    if report.trust_root != "vendor":
        warn("the evidence chains to a root given with --trust-root, not to a vendor root "
             "(a test chain such as sim's is NOT confidential)")
    click.echo(f"verified Keep at {host}:{port}")
    for key, value in report.to_dict().items():
        click.echo(f"  {key}: {value}")
