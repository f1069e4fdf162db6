"""``enarx config``: write and check Enarx.toml."""

from __future__ import annotations

import os
from pathlib import Path

import click

from enarx.errors import ConfigError

__all__ = ["check", "config", "init"]


@click.group()
def config() -> None:
    """Work with Enarx.toml (the workload's configuration)."""


@config.command("init", short_help="Write a commented template Enarx.toml.")
@click.argument("path", default="Enarx.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(path: Path, force: bool) -> None:
    """Write a commented template Enarx.toml to PATH (default ./Enarx.toml)."""
    from enarx.config import TEMPLATE

    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise ConfigError(
            "already exists; not overwriting", path=str(path), hint="pass --force to replace it"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot create: {e.strerror}", path=str(path)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(TEMPLATE)
    click.echo(f"wrote {path}")


@config.command("check")
@click.argument("path", default="Enarx.toml", type=click.Path(dir_okay=False, path_type=Path))
def check(path: Path) -> None:
    """Validate an Enarx.toml and print the fds the workload will get."""
    from enarx.cli.run import _load_config
    from enarx.config import file_name

    conf, _ = _load_config(str(path))
    for fd, f in enumerate(conf.effective_files):
        click.echo(f"fd {fd}: {f.kind:8} {file_name(f)}")
    click.echo(f"{path}: ok")
