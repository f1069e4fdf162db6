"""Build guest programs from the sources in tests/guests, cached by source digest.

Each builder returns the path of a .wasm file. The cache lives in ``$ENARX_GUEST_CACHE``
(default ``~/.cache/enarx-test-guests``) so CI and repeated runs compile each source once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

GUESTS = Path(__file__).parent / "guests"
CACHE = Path(os.environ.get("ENARX_GUEST_CACHE", Path.home() / ".cache" / "enarx-test-guests"))


class ToolchainMissing(Exception):
    """The toolchain for a language is not installed; tests skip (or fail under CI)."""


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:24]


def _cached(name: str, key: str, build) -> Path:  # type: ignore[no-untyped-def]
    out = CACHE / f"{name}-{key}.wasm"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    build(tmp)
    os.replace(tmp, out)
    return out


def zig_cmd() -> list[str]:
    if shutil.which("zig"):
        return ["zig"]
    try:
        import ziglang  # noqa: F401
    except ImportError as e:
        raise ToolchainMissing("zig (pip install ziglang)") from e
    return [sys.executable, "-m", "ziglang"]


def build_c(source: str | Path, *flags: str) -> Path:
    """Compile a C source under tests/guests/c (or an absolute path) for wasm32-wasi."""
    src = Path(source)
    if not src.is_absolute():
        src = GUESTS / "c" / src
    key = _digest(src.read_bytes(), " ".join(flags).encode(), b"zig-c-O2")

    def build(out: Path) -> None:
        cmd = [*zig_cmd(), "cc", "-target", "wasm32-wasi", "-O2", *flags, "-o", str(out), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)

    return _cached(src.stem, key, build)
