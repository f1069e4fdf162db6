"""Instantiate a compiled module under limits, run ``_start``, map the outcome to an exit code."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import wasmtime

from enarx.errors import InvalidModule, OutOfFuel, Timeout, Trap
from enarx.runtime.engine import PREVIEW2_HINT, EngineSettings, get_engine


@dataclass(frozen=True)
class RunLimits:
    max_memory: int
    timeout: float | None = None
    fuel: int | None = None

    @property
    def settings(self) -> EngineSettings:
        return EngineSettings(fuel=self.fuel is not None, epoch=self.timeout is not None)


class Host(Protocol):
    """What the runtime needs of the WASI host (enarx.wasi.host.WasiHost)."""

    exit_code: int | None
    timed_out: bool
    deadline: float | None

    def link(self, linker: wasmtime.Linker) -> None: ...


_TRAP_TEXT = {
    wasmtime.TrapCode.UNREACHABLE: "unreachable executed",
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "out-of-bounds memory access",
    wasmtime.TrapCode.STACK_OVERFLOW: "call stack exhausted",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "integer divide by zero",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "integer overflow",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "invalid conversion to integer",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "indirect call to a null table entry",
    wasmtime.TrapCode.BAD_SIGNATURE: "indirect call type mismatch",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "undefined table element",
    wasmtime.TrapCode.HEAP_MISALIGNED: "misaligned memory access",
}


def run(module: wasmtime.Module, host: Host, limits: RunLimits) -> int:
    """Run a WASI command module; returns the guest's exit code or raises a Trap subtype."""
    engine = get_engine(limits.settings)
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=limits.max_memory)
    if limits.fuel is not None:
        store.set_fuel(limits.fuel)
    timer: threading.Timer | None = None
    if limits.timeout is not None:
        store.set_epoch_deadline(1)
        host.deadline = time.monotonic() + limits.timeout
        timer = threading.Timer(limits.timeout, engine.increment_epoch)
        timer.daemon = True
    linker = wasmtime.Linker(engine)
    host.link(linker)
    try:
        instance = _instantiate(linker, store, module)
        start = instance.exports(store).get("_start")
        if not isinstance(start, wasmtime.Func):
            raise InvalidModule(
                "the module has no `_start` function: it is not a WASI command",
                hint="build an executable (not a library/reactor) for wasm32-wasi",
            )
        if timer:
            timer.start()
        start(store)
    except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
        if host.exit_code is not None:
            return host.exit_code
        raise _trap_error(e, host) from None
    finally:
        if timer:
            timer.cancel()
    return 0 if host.exit_code is None else host.exit_code


def _instantiate(
    linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module
) -> wasmtime.Instance:
    try:
        return linker.instantiate(store, module)
    except wasmtime.Trap:
        raise  # a trap in a start function is the workload's own
    except wasmtime.WasmtimeError as e:
        msg = _one_line(e)
        if "unknown import" in msg and "`wasi:" in msg:
            raise InvalidModule(
                f"the module imports WASI preview2 interfaces: {msg}", hint=PREVIEW2_HINT
            ) from None
        if "unknown import" in msg:
            raise InvalidModule(
                f"cannot link the module: {msg}",
                hint="enarx provides wasi_snapshot_preview1 only; build for wasm32-wasi (preview1)",
            ) from None
        if "memory" in msg and ("limit" in msg or "minimum" in msg or "grow" in msg):
            raise InvalidModule(
                f"the module's initial memory does not fit: {msg}",
                hint="raise --max-memory",
            ) from None
        raise InvalidModule(f"cannot instantiate the module: {msg}") from None


def _trap_error(t: wasmtime.Trap | wasmtime.WasmtimeError, host: Host) -> Trap:
    code = t.trap_code if isinstance(t, wasmtime.Trap) else None
    if code == wasmtime.TrapCode.INTERRUPT or host.timed_out:
        return Timeout("timeout: the workload ran past its wall-clock limit")
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return OutOfFuel("trap: the workload ran out of fuel")
    what = _TRAP_TEXT.get(code) if code is not None else None
    if what is None:
        what = _one_line(t).removeprefix("wasm trap: ")
    frames = t.frames if isinstance(t, wasmtime.Trap) else None
    where = ""
    if frames:
        f = frames[0]
        name = f.func_name or f"#{f.func_index}"
        where = f" in func {name}"
        if f.module_offset is not None:
            where += f" at offset {f.module_offset:#x}"
    return Trap(f"trap: {what}{where}")


_NOISE = re.compile(r"^(\d+:\s+0x[0-9a-f]+ - |Caused by|error while|wasm backtrace|note:)")


def _one_line(e: BaseException) -> str:
    """The informative line of a wasmtime error (its text also holds a backtrace)."""
    for line in str(e).splitlines():
        line = line.strip()
        if line and not _NOISE.match(line):
            return line
    return type(e).__name__
