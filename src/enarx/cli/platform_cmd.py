"""``enarx platform``: what this host can run, with a fix hint for every failed check."""

from __future__ import annotations

import click


@click.group()
def platform() -> None:
    """Inspect this host's Keep backends."""


@platform.command("info")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """List every backend with its checks (pass/fail and how to fix)."""
    from dataclasses import asdict

    from enarx import platform as plat
    from enarx.cli.output import print_json
    from enarx.errors import EnarxError
    from enarx.platform.base import Check

    rows = []
    for name in plat.BACKENDS:
        try:
            backend = plat.get(name)
            checks = backend.probe()
            confidential = backend.confidential
        except EnarxError as e:
            checks = [Check("backend module", False, e.message, "this build lacks the backend")]
            confidential = False
        rows.append(
            {
                "backend": name,
                "available": all(c.passed for c in checks),
                "confidential": confidential,
                "checks": [asdict(c) for c in checks],
            }
        )
    default = plat.select(None).name
    if as_json:
        print_json({"default": default, "backends": rows})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Keep backends (default: {default})")
    for col in ("backend", "check", "result", "detail / fix"):
        table.add_column(col)
    for row in rows:
        for i, c in enumerate(row["checks"]):
            mark = "[green]pass[/]" if c["passed"] else "[red]fail[/]"
            detail = c["detail"] if c["passed"] else f"{c['detail']} [cyan]→ {c['hint']}[/]"
            table.add_row(row["backend"] if i == 0 else "", c["name"], mark, detail)
        table.add_section()
    Console().print(table)
