"""Shared fixtures: run the real `enarx` entry point as a user would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cliutil import ENARX, RunEnarx


@pytest.fixture(scope="session")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("module-cache")


@pytest.fixture
def enarx(module_cache: Path) -> RunEnarx:
    """``enarx(*args, input=b"", env={...}, cwd=...)`` -> CompletedProcess with bytes output."""

    def run(
        *args: str | os.PathLike[str],
        input: bytes = b"",
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[bytes]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        if "ENARX_NATIVE" in os.environ:  # `ENARX_NATIVE=0 pytest` tests the Python path
            full_env["ENARX_NATIVE"] = os.environ["ENARX_NATIVE"]
        full_env["ENARX_CACHE_DIR"] = str(module_cache)
        full_env.update(env or {})
        return subprocess.run(
            [str(ENARX), *map(str, args)],
            input=input,
            capture_output=True,
            env=full_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )

    return run
