"""The engine: compiling untrusted bytes, the module cache, the progress hook."""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.errors import InvalidModule
from enarx.runtime.cache import ModuleCache
from enarx.runtime.engine import LARGE_MODULE, EngineSettings, compile_module

HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello" / "hello.wasm"


@given(st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_random_bytes_compile_or_raise_invalid_module(blob: bytes) -> None:
    with contextlib.suppress(InvalidModule):
        compile_module(blob, EngineSettings())


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
@settings(max_examples=150, deadline=None)
def test_mutated_module_compiles_or_raises_invalid_module(pos: int, value: int) -> None:
    wasm = bytearray(HELLO.read_bytes())
    wasm[pos % len(wasm)] = value
    with contextlib.suppress(InvalidModule):
        compile_module(bytes(wasm), EngineSettings())


def _big_module(size: int) -> bytes:
    # A valid module whose bytes are mostly one data segment: large, yet quick to compile.
    data = "\\00" * 16
    text = (
        '(module (memory (export "memory") 64)'
        f' (data (i32.const 0) "{data}")'
        ' (func (export "_start")))'
    )
    import wasmtime

    base = wasmtime.wat2wasm(text)
    # Append a custom section of the wanted size (id 0, LEB128 length, name length 1, "x").
    payload = b"\x01x" + b"\0" * size
    n, leb = len(payload), bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        leb.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(base) + b"\x00" + bytes(leb) + payload


def test_progress_hook_runs_for_large_modules_only(tmp_path: Path) -> None:
    calls: list[int] = []

    def hook(size: int):  # type: ignore[no-untyped-def]
        calls.append(size)
        return lambda: calls.append(-1)

    cache = ModuleCache(tmp_path, secrets.token_bytes(32))
    big = _big_module(LARGE_MODULE + 1024)
    compile_module(big, EngineSettings(), cache=cache, on_compile=hook)
    assert calls[0] == len(big) and calls[-1] == -1
    calls.clear()
    compile_module(big, EngineSettings(), cache=cache, on_compile=hook)
    assert calls == []  # cached: nothing to compile, nothing to show


def test_large_module_shows_progress_on_the_cli(enarx, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    module = tmp_path / "big.wasm"
    module.write_bytes(_big_module(LARGE_MODULE + 1024))
    env = {"ENARX_CACHE_DIR": str(tmp_path / "cache")}
    first = enarx("run", "--backend", "nil", module, env=env)
    assert first.returncode == 0, first.stderr
    assert b"compiling 2.0 MiB module" in first.stderr
    second = enarx("run", "--backend", "nil", module, env=env)
    assert second.returncode == 0 and b"compiling" not in second.stderr


@pytest.mark.parametrize("fuel", [False, True])
def test_cache_keys_differ_by_engine_settings(tmp_path: Path, fuel: bool) -> None:
    cache = ModuleCache(tmp_path, secrets.token_bytes(32))
    compile_module(HELLO.read_bytes(), EngineSettings(fuel=fuel), cache=cache)
    compile_module(HELLO.read_bytes(), EngineSettings(fuel=not fuel), cache=cache)
    assert len(list(tmp_path.glob("*.cwasm"))) == 2
