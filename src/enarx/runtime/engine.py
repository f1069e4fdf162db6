"""One wasmtime Engine per setting set, and module compilation through the cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import wasmtime

from enarx.errors import InvalidModule
from enarx.runtime.cache import ModuleCache

__all__ = [
    "COMPONENT_HEADER",
    "LARGE_MODULE",
    "PREVIEW2_HINT",
    "EngineSettings",
    "cache_binding",
    "cache_key",
    "compile_module",
    "get_engine",
    "wasmtime_version",
]


@dataclass(frozen=True)
class EngineSettings:
    fuel: bool = False
    #: Epoch checks (for --timeout) cost a load and compare on every loop back-edge:
    #: only compiled in when a deadline is set.
    epoch: bool = False

    def describe(self) -> str:
        # Anything that changes generated code must be part of the cache key.
        return f"epoch={int(self.epoch)};fuel={int(self.fuel)};opt=speed"


@cache
def wasmtime_version() -> str:
    # The dist-info next to the package names the version; importlib.metadata would cost
    # ~25 ms of start-up on every run for the same answer.
    site = Path(wasmtime.__file__).parent.parent
    found = sorted(p.name for p in site.glob("wasmtime-*.dist-info"))
    if len(found) == 1:
        return found[0].removeprefix("wasmtime-").removesuffix(".dist-info")
    from importlib.metadata import version

    try:
        return version("wasmtime")
    except Exception:
        return "unknown"


@cache
def get_engine(settings: EngineSettings) -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = settings.epoch
    cfg.consume_fuel = settings.fuel
    cfg.cranelift_opt_level = "speed"
    return wasmtime.Engine(cfg)


def cache_binding(wasm: bytes, settings: EngineSettings) -> bytes:
    """What a cached artifact is authenticated for: module digest, wasmtime, engine settings."""
    return _binding(hashlib.sha256(wasm).digest(), settings)


def cache_key(wasm: bytes, settings: EngineSettings) -> str:
    """The entry's file name: a lookup hint only (entries are authenticated, see cache.py)."""
    return _name(hashlib.sha256(wasm).digest(), settings)


def _binding(digest: bytes, settings: EngineSettings) -> bytes:
    parts = (digest, wasmtime_version().encode(), settings.describe().encode())
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _name(digest: bytes, settings: EngineSettings) -> str:
    meta = hashlib.sha256(f"{wasmtime_version()}|{settings.describe()}".encode()).hexdigest()
    return f"{digest.hex()[:40]}-{meta[:16]}"


#: Modules bigger than this get a progress indicator while they compile.
LARGE_MODULE = 2 << 20


def compile_module(
    wasm: bytes,
    settings: EngineSettings,
    *,
    cache: ModuleCache | None = None,
    on_compile: Callable[[int], Callable[[], None]] | None = None,
) -> wasmtime.Module:
    """Compile ``wasm`` (binary or text), reusing the cached artifact when it is intact.

    ``on_compile(size)`` is called before a real compile and returns a function called after
    it: the CLI uses it to show a spinner for large modules.
    """
    engine = get_engine(settings)
    digest = hashlib.sha256(wasm).digest() if cache else b""  # once: modules can be large
    key = _name(digest, settings)
    binding = _binding(digest, settings)
    if cache:
        # Only artifacts this user's key authenticated for exactly this module and engine
        # reach deserialize (wasmtime treats them as trusted native code).
        artifact = cache.load(key, binding)
        if artifact is not None:
            try:
                return wasmtime.Module.deserialize(engine, artifact)
            except wasmtime.WasmtimeError:
                cache.discard(key)  # authentic but unusable (e.g. CPU features): recompile
    done = on_compile(len(wasm)) if on_compile else None
    try:
        module = _compile(engine, wasm)
    finally:
        if done:
            done()
    if cache:
        cache.store(key, binding, bytes(module.serialize()))
    return module


#: Binary header of a component (WASI preview2): magic, then version 0x0d and layer 1.
COMPONENT_HEADER = b"\0asm\x0d\x00\x01\x00"
PREVIEW2_HINT = ("enarx runs WASI preview1 command modules: build for wasm32-wasip1 (wasm32-wasi "
                 "in older toolchains), not wasm32-wasip2, and do not componentize it")


def _compile(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    if not wasm.startswith(b"\0asm"):
        if not wasm.strip():
            raise InvalidModule("not a WebAssembly module: the file is empty")
        try:
            text = wasm.decode()
        except UnicodeDecodeError:
            text = ""
        if not text.lstrip().startswith(("(", ";;")):
            if all(c.isprintable() or c in "\r\n\t" for c in text[:4096]):
                raise InvalidModule(
                    "not a WebAssembly module: the file is text "
                    f"(starts {(text.strip().splitlines() or [''])[0][:32]!r})",
                    hint="pass the compiled .wasm (built for wasm32-wasi), or WebAssembly text "
                    "starting with `(module`",
                )
            raise InvalidModule("not a WebAssembly module (bad magic number)")
        try:
            wasm = bytes(wasmtime.wat2wasm(text))
        except wasmtime.WasmtimeError as e:
            raise InvalidModule(f"invalid WebAssembly text: {_first_line(e)}") from None
    if wasm.startswith(COMPONENT_HEADER):
        raise InvalidModule("this is a WebAssembly component (component model / WASI preview2), "
                            "not a core module", hint=PREVIEW2_HINT)
    # ctypes releases the GIL while wasmtime compiles, so a spinner thread keeps turning.
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as e:
        raise InvalidModule(f"invalid WebAssembly module: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    # wasmtime says "<what failed>\n\nCaused by:\n    <why>": keep the what and the why.
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and ln.strip() != "Caused by:"]
    return ": ".join(lines[:2]) if lines else type(e).__name__
