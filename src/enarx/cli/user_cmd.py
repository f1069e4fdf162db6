"""``enarx user``: register and show users of a drawbridge registry.

USER is ``[HOST/]NAME`` or ``http[s]://HOST/NAME`` (HOST defaults to ``$ENARX_REGISTRY``).
Registering needs a bearer token for that user (``enarx registry token create --user NAME``
on the registry host), given as ``$ENARX_REGISTRY_TOKEN`` or by a credential helper.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from enarx.cli.package_cmd import client_options, registry_options

__all__ = ["client_for", "split_target", "user"]


def split_target(text: str, *, repo: bool) -> tuple[Any, list[str]]:
    """(Spec of the registry, [user] or [user, repo]) from ``[HOST/]USER[/REPO]`` or a URL.

    Reuses the SPEC parser (host, port and name rules, loopback test) on a synthetic tag."""
    from enarx.cli.package_cmd import parse
    from enarx.errors import UsageError
    from enarx.package.errors import SpecError

    want = 2 if repo else 1
    rest = text.split("://", 1)[1] if "://" in text else text
    names = rest.rstrip("/").split("/")
    shape = "[HOST/]USER/REPO" if repo else "[HOST/]USER"
    if len(names) not in (want, want + 1) or not all(names):
        raise UsageError(f"{text!r} is not {shape}")
    synthetic = text.rstrip("/") + ("" if repo else "/x") + ":0.0.0"
    try:
        spec = parse(synthetic)
    except SpecError as e:
        raise UsageError(e.message.replace(synthetic, text).replace(":0.0.0", ""),
                         hint=f"write {shape}, e.g. 127.0.0.1:8443/alice"
                              + ("/app" if repo else "")
                              + ", or set ENARX_REGISTRY to the registry's host") from None
    spec = dataclasses.replace(spec, raw=text)  # messages name what the user wrote
    return spec, [spec.user, spec.repo] if repo else [spec.user]


def client_for(spec: Any, opts: Any) -> Any:
    from enarx.package.drawbridge import DrawbridgeClient
    from enarx.package.spec import check_transport

    check_transport(spec, allow_insecure=opts.allow_insecure)
    return DrawbridgeClient(spec.base_url, token=opts.token_for(spec.host),
                            verify=opts.verify(), timeout=opts.timeout)


@click.group()
def user() -> None:
    """Users of a drawbridge registry (`enarx registry serve`).

    \b
      export ENARX_REGISTRY_TOKEN=$(enarx registry token create --user alice)   # on the host
      enarx user register 127.0.0.1:8443/alice --ca-bundle STATE_DIR/ca.crt
    """


@user.command()
@click.argument("target", metavar="[HOST/]USER")
@click.option("--subject", help="the user's subject (default: the user name)")
@registry_options
def register(target: str, subject: str | None, ca_bundle: Path | None,
             credential_helper: str | None, allow_insecure: bool) -> None:
    """Register USER (needs a token for USER)."""
    spec, (name,) = split_target(target, repo=False)
    with client_for(spec, client_options(ca_bundle, credential_helper, allow_insecure)) as c:
        created = c.user_register(name, subject)
    click.echo(f"registered user {name}" if created else f"user {name} already exists")


@user.command()
@click.argument("target", metavar="[HOST/]USER")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@registry_options
def info(target: str, as_json: bool, ca_bundle: Path | None, credential_helper: str | None,
         allow_insecure: bool) -> None:
    """Show USER's record."""
    from enarx.cli.output import print_json

    spec, (name,) = split_target(target, repo=False)
    with client_for(spec, client_options(ca_bundle, credential_helper, allow_insecure)) as c:
        record = c.user_info(name)
    if as_json:
        print_json(record)
    else:
        click.echo(f"user {name}: subject {record.get('subject')!r}")
