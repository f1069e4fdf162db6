"""``enarx identity``: the workload identity a Keep would attest for MODULE and its config,
or for a package (a directory or a package SPEC: the package's tree digest)."""

from __future__ import annotations

from pathlib import Path

import click

from enarx.cli.run import RunCommand, _load_config
from enarx.errors import UsageError, WorkloadNotFound

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
              help="Print {identity, module_sha384, config} (a package: {identity, tree, "
              "encrypted, files}) as JSON.")
@click.option("--allow-insecure", is_flag=True,
              help="A package SPEC may use plain http:// to a host that is not loopback.")
@click.argument("module", metavar="MODULE|PACKAGE")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def identity(
    wasmcfgfile: str | None,
    dirs: tuple[str, ...],
    envs: tuple[str, ...],
    no_fd_env: bool,
    as_json: bool,
    allow_insecure: bool,
    module: str,
    args: tuple[str, ...],
) -> None:
    """Print the workload identity (sha384:<hex>) of MODULE run with ARGS, or of a PACKAGE.

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
    \b
    A PACKAGE (a directory with main.wasm, or a SPEC: file://DIR, HOST/USER/REPO:TAG,
    oci://HOST/NAME:TAG, https://...) is identified by its tree digest, which is what
    `enarx deploy` attests; its Enarx.toml is part of the tree, so --env, --dir,
    --wasmcfgfile and ARGS do not apply. An encrypted package's identity is that of its
    plaintext tree.
      enarx identity ./my-package
      enarx identity 127.0.0.1:8080/alice/app:1.0.0
    """
    import hashlib

    from enarx.cli.output import print_json
    from enarx.flags import parse_dir_spec, parse_env_flag
    from enarx.workload import effective_config, workload_identity

    if _is_package(module):
        if wasmcfgfile or dirs or envs or no_fd_env or args:
            raise UsageError(
                "--wasmcfgfile, --env, --dir, --no-fd-env and ARGS do not apply to a package",
                hint="a package's identity is its tree digest; put the configuration in the "
                "package's Enarx.toml")
        _package_identity(module, as_json=as_json, allow_insecure=allow_insecure)
        return
    module_path = Path(module)
    conf, _ = _load_config(wasmcfgfile)  # the same reading and errors as `enarx run`
    extra_dirs = [parse_dir_spec(d) for d in dirs]
    extra_env = [parse_env_flag(e) for e in envs]
    try:
        wasm = module_path.read_bytes()
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


_SPEC_PREFIXES = ("file://", "oci://", "oci+http://", "https://", "http://")


def _is_package(arg: str) -> bool:
    """A directory, a URL-form SPEC or a drawbridge slug (``[HOST/]USER/REPO:TAG`` that is not
    an existing file); anything else is a module path, as before."""
    if arg.startswith(_SPEC_PREFIXES) or Path(arg).is_dir():
        return True
    return not Path(arg).exists() and arg.count("/") in (1, 2) and ":" in arg.rsplit("/", 1)[-1]


def _package_identity(arg: str, *, as_json: bool, allow_insecure: bool) -> None:
    import os

    from enarx.cli.output import print_json
    from enarx.package.errors import PackageError
    from enarx.package.fetch import ClientOptions, package_info
    from enarx.package.spec import parse_spec

    text = arg if arg.startswith(_SPEC_PREFIXES) or not Path(arg).is_dir() else f"file://{arg}"
    spec = parse_spec(text, default_host=os.environ.get("ENARX_REGISTRY") or None)
    info = package_info(spec, ClientOptions(allow_insecure=allow_insecure,
                                            default_host=os.environ.get("ENARX_REGISTRY")))
    if not info.get("encrypted") and "main.wasm" not in info.get("files", {}):
        raise PackageError(f"{arg} has no main.wasm at its root",
                           hint="a package is a directory with main.wasm, an optional "
                           "Enarx.toml and optional data files")
    if as_json:
        print_json({k: info[k] for k in ("identity", "tree", "encrypted", "files") if k in info})
    else:
        click.echo(info["identity"])


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
