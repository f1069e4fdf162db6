"""Rendering shared by every command: errors, warnings, JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from enarx.errors import EnarxError

__all__ = ["error_exit", "print_json", "run_guarded", "warn"]


def warn(message: str) -> None:
    """One loud line on stderr (insecure backends, plaintext sockets, test roots)."""
    click.echo(click.style("warning: ", fg="yellow", bold=True) + message, err=True)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def error_exit(err: EnarxError, *, as_json: bool = False) -> None:
    if as_json:
        print_json({"error": err.to_dict()})
    else:
        click.echo(click.style("error: ", fg="red", bold=True) + err.message, err=True)
        if err.hint:
            click.echo(click.style("hint: ", fg="cyan") + err.hint, err=True)
    sys.exit(err.exit_code)


def run_guarded(command: click.Command, argv: list[str] | None) -> Any:
    """Run a click command so that our errors never surface as tracebacks."""
    try:
        return command.main(args=argv, prog_name="enarx", standalone_mode=True)
    except EnarxError as e:
        error_exit(e)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
