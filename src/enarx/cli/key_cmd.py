"""``enarx key``: signing keys for packages (``enarx key create --out KEY.pem``)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["key"]


@click.group()
def key() -> None:
    """Make and inspect package signing keys (ECDSA P-256).

    \b
    Sign on publish with `enarx package publish --sign KEY.pem`; require the signature
    on deploy with `enarx deploy --signer KEY.pub.pem`.
    """


@key.command("create")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Private key file to write (PKCS#8 PEM, mode 0600); the public key goes "
                   "next to it as <name>.pub.pem.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {private, public, fingerprint} as JSON.")
def create(out: Path, as_json: bool) -> None:
    """Write a new signing key and print its public key's path and fingerprint.

    \b
    Never overwrites an existing file. The fingerprint is sha256:<hex> of the public
    key's SubjectPublicKeyInfo DER (docs/packages.md, "Signatures").
    \b
    Example:
      enarx key create --out signing.pem     # also writes signing.pub.pem
    """
    from enarx.package.sign import create_key

    files = create_key(out)
    if as_json:
        from enarx.cli.output import print_json

        print_json({"private": str(files.private), "public": str(files.public),
                    "fingerprint": files.fingerprint})
        return
    click.echo(f"private key: {files.private} (keep it secret)")
    click.echo(f"public key:  {files.public}")
    click.echo(f"fingerprint: {files.fingerprint}")


@key.command("fingerprint")
@click.argument("public", type=click.Path(dir_okay=False, path_type=Path))
def fingerprint_cmd(public: Path) -> None:
    """Print the fingerprint (sha256:<hex>) of the public key file PUBLIC."""
    from enarx.package.sign import fingerprint, load_public_key

    click.echo(fingerprint(load_public_key(public)))
