"""``enarx repo``: register and show repositories of a drawbridge registry.

``REPO`` is ``[HOST/]USER/NAME`` (HOST defaults to ``$ENARX_REGISTRY``). A private repository
is readable by its owner's token and by Keeps presenting a steward-issued client certificate
whose attested workload identity is listed with ``--allow-workload`` (docs/packages.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from enarx.cli.package_cmd import client_options, registry_options
from enarx.cli.user_cmd import client_for, split_target

__all__ = ["repo"]


@click.group()
def repo() -> None:
    """Repositories of a drawbridge registry.

    \b
      enarx repo register 127.0.0.1:8443/alice/app
      enarx repo register 127.0.0.1:8443/alice/secret-app --private \\
          --allow-workload sha384:...
      enarx repo info 127.0.0.1:8443/alice/app
    """


@repo.command()
@click.argument("target", metavar="[HOST/]USER/REPO")
@click.option("--private", is_flag=True,
              help="readable only with the owner's token or an allowed Keep certificate")
@click.option("--allow-workload", "workloads", multiple=True, metavar="sha384:HEX",
              help="workload identity whose Keeps may read this private repository "
                   "(repeatable; `enarx package info` prints a package's identity)")
@registry_options
def register(target: str, private: bool, workloads: tuple[str, ...], ca_bundle: Path | None,
             credential_helper: str | None, allow_insecure: bool) -> None:
    """Register REPO (needs a token for its user)."""
    from enarx.errors import UsageError
    from enarx.workload import parse_identity

    if workloads and not private:
        raise UsageError("--allow-workload only applies to --private repositories",
                         hint="public repositories are readable by anyone")
    for w in workloads:
        parse_identity(w)
    spec, (user, name) = split_target(target, repo=True)
    with client_for(spec, client_options(ca_bundle, credential_helper, allow_insecure)) as c:
        created = c.repo_register(user, name, public=not private, workloads=list(workloads))
    kind = "private" if private else "public"
    click.echo(f"registered {kind} repository {user}/{name}" if created
               else f"repository {user}/{name} already exists")


@repo.command()
@click.argument("target", metavar="[HOST/]USER/REPO")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@registry_options
def info(target: str, as_json: bool, ca_bundle: Path | None, credential_helper: str | None,
         allow_insecure: bool) -> None:
    """Show REPO: public or private, and its tags."""
    from enarx.cli.output import print_json

    spec, (user, name) = split_target(target, repo=True)
    with client_for(spec, client_options(ca_bundle, credential_helper, allow_insecure)) as c:
        data = c.repo_info(user, name)
    if as_json:
        print_json(data)
        return
    click.echo(f"repository {user}/{name} ({'public' if data.get('public') else 'private'})")
    for w in data.get("workloads", []):
        click.echo(f"  allows workload {w}")
    click.echo(f"tags: {', '.join(data['tags']) if data['tags'] else '(none)'}")
