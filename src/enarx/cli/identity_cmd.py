"""``enarx identity``: the workload identity a Keep would attest for MODULE and its config."""

from __future__ import annotations

from pathlib import Path

import click

from enarx.cli.run import RunCommand
from enarx.errors import ConfigError, WorkloadNotFound

__all__ = ["identity"]


@click.command(
    # The same argument rules as `enarx run` (options right after MODULE are read as options,
    # upstream's order), so one command line gives the identity `enarx run` attests.
    cls=RunCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option("--wasmcfgfile", envvar="ENARX_WASMCFGFILE", type=click.Path(dir_okay=False),
              help="Enarx.toml the Keep runs with [env: ENARX_WASMCFGFILE].")
@click.option("--dir", "dirs", multiple=True, metavar="HOST[::GUEST][:ro]",
              help="A --dir the Keep is started with (as for `enarx run`). Repeatable.")
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="An --env the Keep is started with (as for `enarx run`). Repeatable.")
@click.option("--no-fd-env", is_flag=True, help="The Keep runs with --no-fd-env.")
@click.option("--json", "as_json", is_flag=True,
              help="Print {identity, module_sha384, config} as JSON.")
@click.argument("module", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def identity(
    wasmcfgfile: str | None,
    dirs: tuple[str, ...],
    envs: tuple[str, ...],
    no_fd_env: bool,
    as_json: bool,
    module: Path,
    args: tuple[str, ...],
) -> None:
    """Print the workload identity (sha384:<hex>) of MODULE run with ARGS.

    \b
    It is what a Keep binds into its attestation evidence and what a steward policy's
    `[workload] allow` lists: SHA-384 over the module and the effective configuration
    (Enarx.toml merged with --env, --dir and ARGS exactly as `enarx run` merges them).
    Pass the same options you pass to `enarx run`, in the same order; limits and the
    steward URL do not count.
    \b
    Examples:
      enarx identity app.wasm
      enarx identity --wasmcfgfile Enarx.toml app.wasm
      enarx identity --env MODE=fast app.wasm input.json
    """
    import hashlib

    from enarx.cli.output import print_json
    from enarx.flags import parse_dir_spec, parse_env_flag
    from enarx.workload import effective_config, workload_identity

    conf = _load_config(wasmcfgfile)
    extra_dirs = [parse_dir_spec(d) for d in dirs]
    extra_env = [parse_env_flag(e) for e in envs]
    try:
        wasm = module.read_bytes()
    except FileNotFoundError:
        raise WorkloadNotFound(f"no such module: {module}") from None
    except OSError as e:
        raise WorkloadNotFound(f"cannot read {module}: {e.strerror}") from None
    eff = effective_config(conf, extra_dirs=extra_dirs, extra_args=args,
                           extra_env=extra_env, fd_env=not no_fd_env)
    ident = workload_identity(wasm, eff)
    if as_json:
        print_json({"identity": ident, "module_sha384": hashlib.sha384(wasm).hexdigest(),
                    "config": eff})
    else:
        click.echo(ident)


def _load_config(path: str | None):  # type: ignore[no-untyped-def]
    if path is None:
        return None
    from enarx import config as cfg

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", path=path,
                          hint="create one with `enarx config init`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=path) from None
    return cfg.loads(text, path=path)


def _accept_run_options(command: click.Command) -> None:
    """Accept (and ignore) every other `enarx run` option, hidden.

    The same command line must give the same merge: without this, ``enarx identity app.wasm
    --backend sim x`` would pass ``--backend sim`` to the guest while ``enarx run`` reads it
    as an option, and the printed identity would silently differ from the attested one.
    """
    from enarx.cli.run import run

    have = {name for p in command.params if isinstance(p, click.Option) for name in p.opts}
    extra = [
        click.Option(list(p.opts), is_flag=p.is_flag, hidden=True, expose_value=False)
        for p in run.params
        if isinstance(p, click.Option) and not set(p.opts) & have
    ]
    command.params[:0] = extra


_accept_run_options(identity)
