"""Run one workload: config + module bytes in, exit code out.

The data flow of ``enarx run`` (docs/architecture.md): config -> backend -> compile ->
attest (with a steward) -> files -> run. With a steward, the Keep attests before any file or
socket is opened and before the guest runs a single instruction; a refusal ends the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enarx.flags import DEFAULT_FILES, fd_environment
from enarx.runtime.cache import ModuleCache
from enarx.runtime.engine import compile_module
from enarx.runtime.run import RunLimits, run

if TYPE_CHECKING:  # the config model (pydantic) is not imported for a run without Enarx.toml
    from enarx.config import Config
    from enarx.keep.attest import Attested, StewardTarget
    from enarx.keep.release import Released
    from enarx.keep.tls import KeepIdentity
    from enarx.platform.base import Backend
    from enarx.wasi.memfs import MemTree


__all__ = ["Workload", "run_workload"]


@dataclass
class Workload:
    wasm: bytes
    argv0: str = "main.wasm"


def run_workload(
    workload: Workload,
    config: Config | None,
    backend: Backend,
    *,
    extra_dirs: Sequence[Any] = (),
    extra_args: Sequence[str] = (),
    extra_env: Sequence[tuple[str, str]] = (),
    limits: RunLimits,
    cache: ModuleCache | None = None,
    on_compile: Callable[[int], Callable[[], None]] | None = None,
    stdio: tuple[int, int, int] = (0, 1, 2),
    base_dir: str = ".",
    fd_env: bool = True,
    identity: KeepIdentity | None = None,
    steward: StewardTarget | None = None,
    released: Released | None = None,
    package: MemTree | None = None,
) -> int:
    """Run ``workload``; returns its exit code.

    ``identity`` is the Keep's TLS identity for this run; without one, a TLS entry gets a
    fresh self-signed one-time key (created here, per run: no process-global identity).
    With ``steward``, the Keep first attests (evidence binding its one-time key and the
    workload identity) and the issued certificate becomes ``identity``; a refusal raises
    (``AttestationRefused``, exit 4) and the workload never starts. Enarx.toml
    ``[[secrets]]`` are then released by the steward (or come in ``released``, when the
    caller attested: ``enarx deploy``) and reach the guest as env vars and in-memory files.
    ``package`` (deploy) is the decrypted package tree: ``dir`` entries resolve inside it,
    in memory, and never on the host disk.
    """
    from enarx.keep.files import needs_tls, open_files
    from enarx.wasi.host import WasiHost

    secrets = list(config.secrets) if config is not None else []
    if secrets and steward is None and released is None:
        from enarx.errors import UsageError

        raise UsageError(
            "Enarx.toml declares [[secrets]], which only a steward releases",
            hint="pass --steward URL --steward-ca PEM (or set steward in Enarx.toml)",
        )
    # No config: stdio as fds 0-2 (upstream's default); --dir pre-opens follow the files.
    files = [*(config.effective_files if config else DEFAULT_FILES), *extra_dirs]
    dir_key_paths = _dir_key_resources(files) if package is None else []
    if dir_key_paths and steward is None:
        from enarx.errors import UsageError

        raise UsageError(
            f"an encrypted directory's key ({dir_key_paths[0]}) is a steward resource, which "
            "only a steward releases",
            hint="pass --steward URL --steward-ca PEM (or set steward in Enarx.toml), or use "
                 "encryption_key_file for a local key",
        )
    module = compile_module(workload.wasm, limits.settings, cache=cache, on_compile=on_compile)
    dir_keys: dict[str, bytes] = {}
    if steward is not None:
        identity, attested = _attest(workload, config, backend, steward.with_listeners(files),
                                     extra_dirs=extra_dirs, extra_args=extra_args,
                                     extra_env=extra_env, fd_env=fd_env)
        if secrets:  # released only now, after a successful attestation
            from enarx.keep.release import release_secrets

            released = release_secrets(steward, attested, secrets)
        if dir_key_paths:  # encrypted directories' keys: memory only, after attestation
            from enarx.keep.release import release_dir_keys

            dir_keys = release_dir_keys(steward, attested, dir_key_paths)
    if identity is None and needs_tls(files):
        from enarx.keep.tls import self_signed

        identity = self_signed()
    fds = open_files(files, stdio=stdio, base_dir=base_dir, identity=identity,
                     secret_files=released.files if released is not None else None,
                     package=package, dir_keys=dir_keys)
    # FD_COUNT/FD_NAMES come first (config validation refuses user values for them);
    # --env flags override Enarx.toml's env.
    env = {
        **(fd_environment(files) if fd_env else {}),
        **(config.env if config else {}),
        **dict(extra_env),
        **(dict(released.env) if released is not None else {}),
    }
    args = [workload.argv0, *(config.args if config else ()), *extra_args]
    # os.fsencode: an argument or --env taken from a non-UTF-8 command line reaches us as
    # surrogate-escaped str; the guest gets the original bytes, as a native program would.
    host = WasiHost(
        args=[os.fsencode(a) for a in args],
        env=[(os.fsencode(k), os.fsencode(v)) for k, v in env.items()],
        fds=fds,
        deadline=None,
    )
    try:
        return run(module, host, limits)
    finally:
        close = getattr(fds, "close_all", None)
        if close:
            close()


def _attest(
    workload: Workload,
    config: Config | None,
    backend: Backend,
    steward: StewardTarget,
    **merged: Any,
) -> tuple[KeepIdentity, Attested]:
    """Attest to ``steward`` for exactly what will run; the issued identity (leaf + CA)."""
    import sys

    from enarx.keep.attest import attest_keep
    from enarx.workload import identity_of

    ident = identity_of(workload.wasm, config, **merged)
    attested = attest_keep(steward, backend, ident)
    issued = attested.identity()
    print(f"enarx: attested to {steward.url}: workload {ident}; certificate serial "
          f"{issued.cert.serial_number:x}, valid until "
          f"{issued.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}", file=sys.stderr, flush=True)
    return issued, attested


def _dir_key_resources(files: Sequence[Any]) -> list[str]:
    if not any(getattr(f, "encryption_key", None) for f in files):
        return []  # no import of the release (network) module for ordinary runs
    from enarx.keep.release import dir_key_resources

    return dir_key_resources(files)
