"""``enarx run``: run a WebAssembly module in a Keep."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from enarx.errors import ConfigError, UsageError, WorkloadNotFound
from enarx.flags import DEFAULT_MAX_MEMORY, MAX_FUEL, MAX_TIMEOUT, parse_size

__all__ = ["RunCommand", "run"]


class RunCommand(click.Command):
    """``enarx run``, also accepting upstream Enarx's order ``run MODULE --wasmcfgfile FILE``.

    The rule: ``enarx run`` options written right after MODULE, before the first guest
    argument, are read as enarx options (with a warning: upstream Enarx takes no guest
    arguments on the command line, so its harness writes them there). From the first other
    argument on, everything goes to the guest; ``--`` right after MODULE (and its options)
    ends enarx's options, and everything after it goes to the guest verbatim. An enarx
    option seen among the guest's arguments without ``--`` is passed on with a warning, so a
    misplaced ``--wasmcfgfile`` is never silently ignored.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from enarx.cli.output import warn

        takes_value: dict[str, bool] = {}
        for p in self.params:
            if isinstance(p, click.Option):
                for name in (*p.opts, *p.secondary_opts):
                    takes_value[name] = not (p.is_flag or p.count)
        takes_value.pop("--help", None)  # `MODULE --help` stays the guest's
        before, module, after = _split_module(args, takes_value)
        if module is None:
            return super().parse_args(ctx, args)
        moved: list[str] = []
        i = 0
        while i < len(after):
            name = after[i].partition("=")[0]
            if after[i] == "--":
                i += 1
                break
            if name not in takes_value:
                break
            n = 2 if takes_value[name] and "=" not in after[i] else 1
            if i + n > len(after):
                raise UsageError(f"{name} after MODULE needs a value",
                                 hint=f"write {name} VALUE, or put it after `--` for the guest")
            moved += after[i : i + n]
            warn(f"{name} after MODULE is read as an enarx option (upstream Enarx's order); "
                 "put it after `--` to pass it to the guest")
            i += n
        guest = after[i:]
        if not (i and after[i - 1] == "--"):
            for a in guest:
                name = a.partition("=")[0]
                if name in takes_value:
                    warn(f"{name} comes after a guest argument, so it is passed to the guest, "
                         "not read by enarx; put enarx options before MODULE")
        return super().parse_args(ctx, [*before, *moved, "--", module, *guest])


def _split_module(
    args: list[str], takes_value: dict[str, bool]
) -> tuple[list[str], str | None, list[str]]:
    """(options before MODULE, MODULE, the rest) of ``enarx run``'s arguments."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            if i + 1 < len(args):
                return args[:i], args[i + 1], args[i + 2 :]
            return args, None, []
        if a.startswith("-") and a != "-":
            name = a.partition("=")[0]
            i += 2 if takes_value.get(name, False) and "=" not in a else 1
            continue
        return args[:i], a, args[i + 1 :]
    return args, None, []


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command(
    cls=RunCommand,
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
    "--vm",
    is_flag=True,
    help="With --backend sim: boot a sim VM Keep, a QEMU VM whose sim-signed SNP reports "
    "carry the image's launch digest (`enarx keep image measure --snp --sim`) and the "
    "workload identity as HOST_DATA. NOT confidential (kvm and sev-snp/tdx hosts always "
    "boot a VM).",
)
@click.option(
    "--firmware",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="sev-snp/tdx on a host (each workload boots in its own confidential VM): the VM "
    "firmware, OVMF.amdsev.fd or TDVF [env: ENARX_SNP_FIRMWARE, ENARX_TDX_FIRMWARE].",
)
@click.option(
    "--dir",
    "dirs",
    multiple=True,
    metavar="HOST[::GUEST][:ro][:enc=KEYFILE]",
    help="Pre-open a host directory at GUEST (default: the same path), read-write, or "
    "read-only with ':ro'; ':enc=KEYFILE' opens an encrypted directory with the 32-byte key "
    "in KEYFILE. Repeatable; fds follow Enarx.toml's files.",
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
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True, max=MAX_TIMEOUT),
              metavar="SECONDS",
              help="Wall-clock limit; the workload is interrupted and enarx exits 124.")
@click.option("--fuel", type=click.IntRange(min=1, max=MAX_FUEL),
              help="Instruction budget (off by default); running out exits 124.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the compiled-module cache.")
@click.option(
    "--no-fd-env",
    is_flag=True,
    help="Do not set FD_COUNT/FD_NAMES (upstream Enarx sets them; plain WASI runtimes do not).",
)
@click.option(
    "--steward",
    envvar="ENARX_STEWARD",
    metavar="URL",
    help="Attest to this steward (https) before the workload starts; its certificate then "
    "serves every tls entry. Overrides Enarx.toml's steward [env: ENARX_STEWARD].",
)
@click.option(
    "--steward-ca",
    envvar="ENARX_STEWARD_CA",
    type=click.Path(dir_okay=False),
    metavar="PEM",
    help="The CA that signs the steward's TLS certificate (`enarx steward ca`); required "
    "with a steward [env: ENARX_STEWARD_CA].",
)
@click.argument("module", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(
    wasmcfgfile: str | None,
    backend: str | None,
    vm: bool,
    firmware: str | None,
    dirs: tuple[str, ...],
    envs: tuple[str, ...],
    max_memory: int | None,
    timeout: float | None,
    fuel: int | None,
    no_cache: bool,
    no_fd_env: bool,
    steward: str | None,
    steward_ca: str | None,
    module: Path,
    args: tuple[str, ...],
) -> None:
    """Run MODULE (a wasm32-wasi command, .wasm or .wat) with ARGS.

    \b
    The guest's exit code becomes enarx's exit code. With no Enarx.toml the guest gets
    stdin, stdout and stderr as fds 0-2; --dir pre-opens follow them.
    \b
    Options go before MODULE. Upstream Enarx's order (`enarx run MODULE --wasmcfgfile
    FILE`) also works: enarx options right after MODULE are read as options, with a
    warning. Everything after `--` (or from the first other argument) goes to the guest.
    \b
    Examples:
      enarx run --backend nil hello.wasm
      enarx run --dir ./data::/data --env MODE=fast app.wasm input.json
      enarx run --wasmcfgfile Enarx.toml --max-memory 256M --timeout 30 app.wasm
      enarx run --steward https://steward:3000 --steward-ca ca.pem --backend sev-snp app.wasm
      enarx run --backend sim --vm --steward https://127.0.0.1:3000 --steward-ca ca.pem app.wasm
    """
    from enarx import platform
    from enarx.cli.output import warn
    from enarx.flags import DEFAULT_TIMEOUT, parse_dir_spec, parse_env_flag
    from enarx.keep.agent import Workload, run_workload
    from enarx.runtime.cache import ModuleCache
    from enarx.runtime.run import RunLimits

    # No Enarx.toml: conf is None and nothing imports the config model (start-up time).
    source, base_dir = _read_config(wasmcfgfile)
    conf = source.config if source is not None else None
    # --dir paths are relative to the current directory, whatever Enarx.toml's location.
    extra_dirs = [_absolute(parse_dir_spec(d)) for d in dirs]
    extra_env = [parse_env_flag(e) for e in envs]
    try:
        wasm = module.read_bytes()
    except FileNotFoundError:
        raise WorkloadNotFound(f"no such module: {module}") from None
    except OSError as e:
        raise WorkloadNotFound(f"cannot read {module}: {e.strerror}") from None

    chosen = platform.select(backend, firmware=firmware)
    if vm and chosen.name not in ("sim", "kvm"):
        raise UsageError(f"--vm boots a sim VM Keep; the {chosen.name} backend cannot",
                         hint="use --backend sim --vm (kvm always boots a VM)")
    if chosen.warning:
        warn(chosen.warning)
    target = _steward(steward, steward_ca, conf, base_dir)
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
    if chosen.vm_mode() is not None or vm:  # one VM per workload: kvm, sim --vm, sev-snp/tdx
        from enarx.vm.launcher import run_cli  # on a host: the same inputs, run inside

        sys.exit(run_cli(wasm, module.name, source, dirs=extra_dirs, args=args,
                         env=extra_env, limits=limits, fd_env=not no_fd_env, steward=target,
                         warn=warn, backend=chosen) & 0xFF)
    code = run_workload(
        Workload(wasm=wasm, argv0=module.name),
        conf,
        chosen,
        extra_dirs=extra_dirs,
        extra_args=args,
        extra_env=extra_env,
        limits=limits,
        # Confidential backends keep no on-disk cache: the host owns that disk, and only a
        # TEE-derived key could authenticate entries against it (see runtime/cache.py).
        cache=None if no_cache or chosen.confidential else ModuleCache.open(warn=warn),
        on_compile=_progress,
        base_dir=base_dir,
        fd_env=not no_fd_env,
        steward=target,
    )
    sys.exit(code & 0xFF if code >= 0 else 1)


def _steward(url: str | None, ca: str | None, conf: Any, base_dir: str) -> Any:
    """The steward to attest to (command line over Enarx.toml), or None without one.

    ``--steward-ca`` is relative to the current directory, ``steward_ca`` to Enarx.toml's.
    """
    if url is None and conf is not None:
        url = conf.steward
    if not url:
        return None
    if ca is None and conf is not None and conf.steward_ca:
        ca = os.path.join(base_dir, os.path.expanduser(conf.steward_ca))
    if ca is None:
        raise UsageError(
            f"steward {url} needs the CA that signs its TLS certificate",
            hint="pass --steward-ca PEM (or steward_ca in Enarx.toml); `enarx steward ca` "
            "prints it. enarx never connects to a steward it cannot authenticate",
        )
    try:
        pem = Path(ca).read_bytes()
    except OSError as e:
        raise UsageError(f"steward CA {ca}: cannot read: {e.strerror}",
                         hint="give the PEM file `enarx steward ca` prints") from None
    from enarx.keep.attest import StewardTarget

    return StewardTarget(url=url, ca_pem=pem)


def _absolute(spec: Any) -> Any:
    from dataclasses import replace

    key = getattr(spec, "encryption_key_file", None)  # :enc=KEYFILE, also cwd-relative
    return replace(spec, host=os.path.abspath(spec.host), guest=spec.guest_path,
                   encryption_key_file=os.path.abspath(key) if key else None)


def _load_config(path: str | None):  # type: ignore[no-untyped-def]
    """Enarx.toml (or None: the upstream default, stdio only). Relative dirs resolve next to it."""
    source, base_dir = _read_config(path)
    return (source.config if source is not None else None), base_dir


def _read_config(path: str | None):  # type: ignore[no-untyped-def]
    """:func:`_load_config` with the file's text and TOML data (``config.Source``): read and
    parsed once, then handed on (a VM Keep's launcher needs all three)."""
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
    return cfg.parse(text, path=path), os.path.dirname(os.path.abspath(path))


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
