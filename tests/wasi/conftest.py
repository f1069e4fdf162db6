"""Fixtures for the WASI shim tests (runner in wasirun.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.wasi.wasirun import Run, run_guest


@pytest.fixture
def run() -> Callable[..., Run]:
    return run_guest


@pytest.fixture
def ops(tmp_path: Path) -> Callable[..., list[list[str]]]:
    """Run wasi_ops commands with tmp_path/'sandbox' pre-opened as fd 3 ("/sandbox")."""
    box = tmp_path / "sandbox"
    box.mkdir()

    def go(*cmds: str, readonly: bool = False, **kw: object) -> list[list[str]]:
        r = run_guest("wasi_ops.c", cmds, dirs=[(box, "/sandbox", readonly)], **kw)  # type: ignore[arg-type]
        return r.results()

    go.box = box  # type: ignore[attr-defined]
    return go
