"""Run one workload: config + module bytes in, exit code out.

The data flow of ``enarx run`` (DESIGN.md): config -> backend -> files -> compile -> run.
Attestation to a steward slots in between files and run once the steward exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enarx.flags import DEFAULT_FILES, fd_environment
from enarx.runtime.cache import ModuleCache
from enarx.runtime.engine import compile_module
from enarx.runtime.run import RunLimits, run

if TYPE_CHECKING:  # the config model (pydantic) is not imported for a run without Enarx.toml
    from enarx.config import Config
    from enarx.platform.base import Backend


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
) -> int:
    from enarx.keep.files import open_files
    from enarx.wasi.host import WasiHost

    module = compile_module(workload.wasm, limits.settings, cache=cache, on_compile=on_compile)
    # No config: stdio as fds 0-2 (upstream's default); --dir pre-opens follow the files.
    files = [*(config.effective_files if config else DEFAULT_FILES), *extra_dirs]
    fds = open_files(files, stdio=stdio, base_dir=base_dir)
    # FD_COUNT/FD_NAMES come first (config validation refuses user values for them);
    # --env flags override Enarx.toml's env.
    env = {
        **(fd_environment(files) if fd_env else {}),
        **(config.env if config else {}),
        **dict(extra_env),
    }
    args = [workload.argv0, *(config.args if config else ()), *extra_args]
    host = WasiHost(
        args=[a.encode() for a in args],
        env=[(k.encode(), v.encode()) for k, v in env.items()],
        fds=fds,
        deadline=None,
    )
    try:
        return run(module, host, limits)
    finally:
        close = getattr(fds, "close_all", None)
        if close:
            close()
