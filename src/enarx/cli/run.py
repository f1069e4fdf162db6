"""``enarx run``: run a WebAssembly module in a Keep."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from enarx.errors import ConfigError, UsageError, WorkloadNotFound
from enarx.flags import DEFAULT_MAX_MEMORY, parse_size


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--wasmcfgfile",
    envvar="ENARX_WASMCFGFILE",
    type=click.Path(dir_okay=False),
    help="Enarx.toml with args, env, files and limits [env: ENARX_WASMCFGFILE].",
)
@click.option(
    "--backend",
    envvar="ENARX_BACKEND",
    help="nil, sim, kvm, sev-snp, tdx or sgx; default: the first available of "
    "sev-snp, tdx, sgx, kvm, nil [env: ENARX_BACKEND].",
)
@click.option(
    "--dir",
    "dirs",
    multiple=True,
    metavar="HOST[::GUEST][:ro]",
    help="Pre-open a host directory at GUEST (default: the same path), read-write, or "
    "read-only with ':ro'. Repeatable; fds follow Enarx.toml's files.",
)
@click.option("--env", "envs", multiple=True, metavar="KEY=VALUE",
              help="Set a guest environment variable (overrides [env]). Repeatable.")
@click.option(
    "--max-memory",
    callback=_size,
    metavar="SIZE",
    help="Cap linear memory (e.g. 64M); growth beyond it fails, so malloc returns NULL. "
    "Default: 4G (the wasm32 maximum).",
)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Wall-clock limit; the workload is interrupted and enarx exits 124.")
@click.option("--fuel", type=click.IntRange(min=1),
              help="Instruction budget (off by default); running out exits 124.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the compiled-module cache.")
@click.option(
    "--no-fd-env",
    is_flag=True,
    help="Do not set FD_COUNT/FD_NAMES (upstream Enarx sets them; plain WASI runtimes do not).",
)
@click.argument("module", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    wasmcfgfile: str | None,
    backend: str | None,
    dirs: tuple[str, ...],
    envs: tuple[str, ...],
    max_memory: int | None,
    timeout: float | None,
    fuel: int | None,
    no_cache: bool,
    no_fd_env: bool,
    module: Path,
    args: tuple[str, ...],
) -> None:
    """Run MODULE (a wasm32-wasi command, .wasm or .wat) with ARGS.

    \b
    The guest's exit code becomes enarx's exit code. With no Enarx.toml the guest gets
    stdin, stdout and stderr as fds 0-2; --dir pre-opens follow them.
    \b
    Examples:
      enarx run --backend nil hello.wasm
      enarx run --dir ./data::/data --env MODE=fast app.wasm input.json
      enarx run --wasmcfgfile Enarx.toml --max-memory 256M --timeout 30 app.wasm
    """
    from enarx import platform
    from enarx.cli.output import warn
    from enarx.flags import DEFAULT_TIMEOUT, parse_dir_spec, parse_env_flag
    from enarx.keep.agent import Workload, run_workload
    from enarx.runtime.cache import ModuleCache
    from enarx.runtime.run import RunLimits

    # No Enarx.toml: conf is None and nothing imports the config model (start-up time).
    conf, base_dir = _load_config(wasmcfgfile)
    # --dir paths are relative to the current directory, whatever Enarx.toml's location.
    extra_dirs = [_absolute(parse_dir_spec(d)) for d in dirs]
    extra_env = [parse_env_flag(e) for e in envs]
    try:
        wasm = module.read_bytes()
    except FileNotFoundError:
        raise WorkloadNotFound(f"no such module: {module}") from None
    except OSError as e:
        raise WorkloadNotFound(f"cannot read {module}: {e.strerror}") from None

    chosen = platform.select(backend)
    if chosen.warning:
        warn(chosen.warning)
    if conf is not None and conf.steward:
        # Never let a configured steward look as if it had been used.
        warn(f"steward {conf.steward} is configured, but this release does not attest to a "
             "steward yet: the Keep gets no steward-issued certificate (TLS listeners use a "
             "self-signed one)")
    limits = RunLimits(
        max_memory=max_memory
        if max_memory is not None
        else (conf.limits.max_memory if conf else DEFAULT_MAX_MEMORY),
        timeout=timeout if timeout is not None else (conf.limits.timeout if conf else DEFAULT_TIMEOUT),
        fuel=fuel if fuel is not None else (conf.limits.fuel if conf else None),
    )
    if limits.max_memory > DEFAULT_MAX_MEMORY:
        raise UsageError("--max-memory above 4G is meaningless for wasm32", hint="use 4G or less")
    sys.stdout.flush()
    code = run_workload(
        Workload(wasm=wasm, argv0=module.name),
        conf,
        chosen,
        extra_dirs=extra_dirs,
        extra_args=args,
        extra_env=extra_env,
        limits=limits,
        cache=None if no_cache else ModuleCache(),
        on_compile=_progress,
        base_dir=base_dir,
        fd_env=not no_fd_env,
    )
    sys.exit(code & 0xFF if code >= 0 else 1)


def _absolute(spec: Any) -> Any:
    from dataclasses import replace

    return replace(spec, host=os.path.abspath(spec.host), guest=spec.guest_path)


def _load_config(path: str | None):  # type: ignore[no-untyped-def]
    """Enarx.toml (or None: the upstream default, stdio only). Relative dirs resolve next to it."""
    if path is None:
        return None, "."
    from enarx import config as cfg

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no such file", path=path, hint="create one with `enarx config init`"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", path=path) from None
    return cfg.loads(text, path=path), os.path.dirname(os.path.abspath(path))


def _progress(size: int) -> Callable[[], None]:
    """A spinner on a terminal while a large module compiles (once per module version)."""
    from enarx.runtime.engine import LARGE_MODULE

    if size < LARGE_MODULE:
        return lambda: None
    text = f"compiling {size / (1 << 20):.1f} MiB module (cached for later runs)"
    if not sys.stderr.isatty():
        click.echo(f"enarx: {text}", err=True)
        return lambda: None
    from rich.console import Console

    status = Console(stderr=True).status(text)
    status.start()
    return status.stop
