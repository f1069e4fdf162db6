"""The layering rules docs/architecture.md states, checked on the sources."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "enarx"


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_nothing_below_the_cli_imports_it() -> None:
    offenders = [
        f"{path.relative_to(SRC)} imports {mod}"
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "cli"
        for mod in _imports(path)
        if mod == "enarx.cli" or mod.startswith("enarx.cli.")
    ]
    assert offenders == []


def test_pure_cores_do_no_io_imports() -> None:
    # attestation/, config and flags take bytes and return typed objects: no HTTP, no
    # subprocesses, no devices.
    io_modules = {"httpx", "subprocess", "socket", "urllib.request", "fcntl"}
    cores = [*SRC.joinpath("attestation").rglob("*.py"), SRC / "config.py", SRC / "flags.py"]
    offenders = [f"{p.relative_to(SRC)} imports {m}" for p in cores
                 for m in _imports(p) if m in io_modules]
    assert offenders == []
