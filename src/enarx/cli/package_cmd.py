"""``enarx package``: publish, inspect and fetch packages at any SPEC (docs/packages.md).

SPEC forms: ``[HOST/]USER/REPO:TAG`` (drawbridge; HOST defaults to ``$ENARX_REGISTRY``),
``oci://HOST[:PORT]/NAME:TAG``, ``https://…`` (a module URL), ``file://DIR``. Plain http
only to loopback hosts unless ``--allow-insecure``.

Shared by ``enarx user`` and ``enarx repo``: :func:`registry_options` (``--ca-bundle``,
``--credential-helper``, ``--allow-insecure``) and :func:`progress_factory` (rich bars on a
terminal, one summary line otherwise).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = ["client_options", "package", "progress_factory", "registry_options"]


def registry_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--ca-bundle``, ``--credential-helper``, ``--allow-insecure`` (in that order)."""
    fn = click.option("--allow-insecure", is_flag=True,
                      help="allow plain http to hosts that are not loopback addresses")(fn)
    fn = click.option("--credential-helper", envvar="ENARX_CREDENTIAL_HELPER",
                      help="program run as `HELPER show HOST` to print the registry token "
                           "(else $ENARX_REGISTRY_TOKEN, else the keyring)")(fn)
    fn = click.option("--ca-bundle", envvar="ENARX_CA_BUNDLE",
                      type=click.Path(exists=True, dir_okay=False, path_type=Path),
                      help="CA certificates (PEM) to trust for the registry, e.g. "
                           "`enarx registry serve`'s STATE_DIR/ca.crt")(fn)
    return fn


def client_options(ca_bundle: Path | None, credential_helper: str | None,
                   allow_insecure: bool) -> Any:
    from enarx.package.fetch import ClientOptions

    return ClientOptions(allow_insecure=allow_insecure, credential_helper=credential_helper,
                         ca_bundle=ca_bundle, default_host=_default_host())


def _default_host() -> str | None:
    import os

    return os.environ.get("ENARX_REGISTRY") or None


def parse(spec: str) -> Any:
    from enarx.package.spec import parse_spec

    return parse_spec(spec, default_host=_default_host())


@contextmanager
def progress_factory(verb: str, label: str) -> Iterator[Callable[[int], Callable[[int], None]]]:
    """Yields ``start(total_bytes) -> advance(n)``. On a terminal: a rich progress bar on
    stderr; otherwise one line when done (``fetched 20.1 MB in 1.2 s``)."""
    done = [0]
    started = [time.monotonic()]
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        bar = Progress("[progress.description]{task.description}", BarColumn(),
                       DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                       console=Console(stderr=True), transient=False)

        short = label if len(label) <= 40 else "…" + label[-39:]

        def start_tty(total: int) -> Callable[[int], None]:
            task = bar.add_task(f"{verb} {short}", total=total)

            def advance(n: int) -> None:
                done[0] += n
                bar.advance(task, n)
            return advance

        with bar:
            yield start_tty
        return

    def start(total: int) -> Callable[[int], None]:
        started[0] = time.monotonic()

        def advance(n: int) -> None:
            done[0] += n
        return advance

    yield start
    secs = max(time.monotonic() - started[0], 1e-6)
    click.echo(f"{verb} {label}: {done[0] / 1e6:.1f} MB in {secs:.1f} s "
               f"({done[0] / 1e6 / secs:.1f} MB/s)", err=True)


@click.group()
def package() -> None:
    """Publish, inspect and fetch packages (main.wasm + Enarx.toml + data files).

    \b
      enarx package publish 127.0.0.1:8443/alice/app:1.0.0 ./app --sign key.pem
      enarx package info 127.0.0.1:8443/alice/app:1.0.0
      enarx package fetch 127.0.0.1:8443/alice/app:1.0.0 --out ./app-copy --signer key.pub.pem
    """


@package.command()
@click.argument("spec", metavar="SPEC")
@click.argument("directory", metavar="DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--sign", "sign_key", type=click.Path(dir_okay=False, path_type=Path),
              help="sign the package with this key (`enarx key create`)")
@click.option("--encrypt", is_flag=True,
              help="encrypt every file with a fresh content key stored in the steward")
@click.option("--steward", envvar="ENARX_STEWARD", help="steward URL (with --encrypt)")
@click.option("--steward-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the steward's CA certificate PEM (with --encrypt)")
@click.option("--admin-token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="the steward's admin token (its STATE_DIR/admin-token; with --encrypt)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@registry_options
def publish(spec: str, directory: Path, sign_key: Path | None, encrypt: bool,
            steward: str | None, steward_ca: Path | None, admin_token_file: Path | None,
            as_json: bool, ca_bundle: Path | None, credential_helper: str | None,
            allow_insecure: bool) -> None:
    """Publish the package directory DIR at SPEC.

    SPEC is [HOST/]USER/REPO:TAG (HOST defaults to $ENARX_REGISTRY), oci://HOST/NAME:TAG or
    file://DIR. Drawbridge tags are immutable: publish each version once.

    With --encrypt, the registry receives ciphertext only and the content key goes to the
    steward (admin API) at the resource path printed; the steward releases it only to a
    Keep whose workload identity its policy's [resources] section lists for that path.
    """
    from enarx.cli.output import print_json
    from enarx.errors import UsageError
    from enarx.package.publish import EncryptTo
    from enarx.package.publish import publish as do_publish

    target = parse(spec)
    opts = client_options(ca_bundle, credential_helper, allow_insecure)
    key = None
    if sign_key is not None:
        from enarx.package.sign import load_private_key

        key = load_private_key(sign_key)
    enc = None
    if encrypt:
        if not steward or not admin_token_file:
            raise UsageError("--encrypt needs --steward and --admin-token-file",
                             hint="the content key is stored in the steward through its "
                                  "admin API (docs/deploy.md)")
        from enarx.client.steward_admin import StewardAdmin, read_admin_token

        enc = EncryptTo(StewardAdmin(steward, read_admin_token(admin_token_file), steward_ca))
    elif steward or admin_token_file:
        raise UsageError("--steward/--admin-token-file only make sense with --encrypt")
    with progress_factory("uploaded", target.raw) as progress:
        result = do_publish(target, directory, opts, sign_key=key, encrypt=enc,
                            progress=progress)
    if as_json:
        print_json(result.to_json())
        return
    click.echo(f"published {result.spec}")
    click.echo(f"  identity {result.identity}")
    if result.encrypted:
        click.echo(f"  tree     {result.tree} (ciphertext)")
    click.echo(f"  size     {result.size} bytes" + ("  signed" if result.signed else ""))
    if result.key_resource:
        click.echo("the content key is stored in the steward; grant it to this workload in "
                   "the steward policy:")
        click.echo("  [resources]")
        click.echo(f'  "{result.key_resource}" = ["{result.identity}"]')


@package.command()
@click.argument("spec", metavar="SPEC")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@registry_options
def info(spec: str, as_json: bool, ca_bundle: Path | None, credential_helper: str | None,
         allow_insecure: bool) -> None:
    """Show a package: identity, files, signature and encryption (nothing is verified
    against a signer here; `package fetch --signer` and `deploy --signer` do that)."""
    from enarx.cli.output import print_json
    from enarx.package.fetch import package_info

    data = package_info(parse(spec), client_options(ca_bundle, credential_helper,
                                                    allow_insecure))
    if as_json:
        print_json(data)
        return
    click.echo(f"package  {data['spec']} ({data['kind']})")
    click.echo(f"identity {data['identity']}")
    if data["encrypted"]:
        click.echo(f"tree     {data['tree']} (ciphertext)")
        click.echo(f"key      steward resource {data['key']}")
    signed = "yes (not verified here: fetch with --signer)" if data["signed"] else "no"
    click.echo(f"signed   {signed}")
    click.echo(f"size     {data['size']} bytes in {len(data['files'])} files")
    for path, f in data["files"].items():
        click.echo(f"  {f['length']:>12}  {path}  ({f['type']})")
    if "tags" in data:
        click.echo(f"tags     {', '.join(data['tags'])}")


@package.command()
@click.argument("spec", metavar="SPEC")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="new directory to write the package to (must not exist)")
@click.option("--signer", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="require a valid signature by this public key (KEY.pub.pem)")
@registry_options
def fetch(spec: str, out: Path, signer: Path | None, ca_bundle: Path | None,
          credential_helper: str | None, allow_insecure: bool) -> None:
    """Fetch the package at SPEC into the new directory --out, verifying every digest (and
    the signature with --signer). Nothing is written unless every check passes."""
    from enarx.package.fetch import fetch_to_dir

    target = parse(spec)
    pub = None
    if signer is not None:
        from enarx.package.sign import load_public_key

        pub = load_public_key(signer)
    with progress_factory("fetched", target.raw) as progress:
        resolved = fetch_to_dir(target, out, client_options(ca_bundle, credential_helper,
                                                            allow_insecure),
                                signer=pub, progress=progress)
    files = len(resolved.tree.files)
    line = f"fetched {target.raw} to {out} ({files} files, tree {resolved.tree.identity})"
    if resolved.signer:
        line += f", signed by {resolved.signer}"
    click.echo(line)
