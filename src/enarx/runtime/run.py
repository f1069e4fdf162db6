"""Instantiate a compiled module under limits, run ``_start``, map the outcome to an exit code.

Every limit covers every phase: the wall-clock timer is armed before instantiation (a
module's ``start`` section runs inside it), the store caps the count of memories, tables and
instances as well as their sizes (wasmtime's ``memory_size`` is per memory), and host calls
charge fuel for the bytes they move (:mod:`enarx.wasi.fuel`). docs/limits.md states the bound.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import wasmtime

from enarx.errors import Interrupted, InvalidModule, OutOfFuel, Timeout, Trap, UsageError
from enarx.flags import MAX_FUEL, MAX_TIMEOUT
from enarx.runtime.engine import PREVIEW2_HINT, EngineSettings, get_engine

__all__ = [
    "MAX_INSTANCES", "MAX_MEMORIES", "MAX_TABLES", "MAX_TABLE_ELEMENTS", "MIN_TABLE_ELEMENTS",
    "TABLE_ELEMENT_BYTES", "Host", "RunLimits", "run", "table_elements",
]  # fmt: skip

#: One linear memory, one instance: wasmtime's memory limit is per memory, so a second
#: memory would double the host memory a guest can take.
MAX_MEMORIES = 1
MAX_INSTANCES = 1
#: Tables per store, and the element cap of each (wasmtime: 8 host bytes per element).
MAX_TABLES = 4
TABLE_ELEMENT_BYTES = 8
MIN_TABLE_ELEMENTS = 1 << 12
MAX_TABLE_ELEMENTS = 1 << 20


def table_elements(max_memory: int) -> int:
    """The per-table element cap: 1/256 of ``max_memory`` (so all tables together hold at
    most 1/8 of it), never under 4096 elements nor over 1M (8 MiB)."""
    return max(MIN_TABLE_ELEMENTS, min(MAX_TABLE_ELEMENTS, max_memory // 256))


@dataclass(frozen=True)
class RunLimits:
    max_memory: int
    timeout: float | None = None
    fuel: int | None = None

    def __post_init__(self) -> None:
        # The CLI and Enarx.toml check these too; this is the last line before a timer
        # thread or wasmtime's u64 fuel counter would take a value it cannot represent.
        if self.timeout is not None and not (
            math.isfinite(self.timeout) and 0 < self.timeout <= MAX_TIMEOUT
        ):
            raise UsageError(
                f"invalid timeout {self.timeout!r}: it must be a number of seconds above 0 "
                f"and at most {MAX_TIMEOUT:.0f}",
                hint="pass e.g. --timeout 30, or leave the timeout out for no limit",
            )
        if self.fuel is not None and not 0 < self.fuel <= MAX_FUEL:
            raise UsageError(
                f"invalid fuel {self.fuel}: it must be between 1 and 2^64-1",
                hint="leave --fuel out for no instruction budget",
            )
        if not 0 <= self.max_memory <= 4 << 30:
            raise UsageError(f"invalid max_memory {self.max_memory}", hint="use 4G or less")

    @property
    def settings(self) -> EngineSettings:
        return EngineSettings(fuel=self.fuel is not None, epoch=self.timeout is not None)


class Host(Protocol):
    """What the runtime needs of the WASI host (enarx.wasi.host.WasiHost)."""

    exit_code: int | None
    timed_out: bool
    out_of_fuel: bool
    fuel_metered: bool
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
    store.set_limits(
        memory_size=limits.max_memory,
        table_elements=table_elements(limits.max_memory),
        instances=MAX_INSTANCES,
        tables=MAX_TABLES,
        memories=MAX_MEMORIES,
    )
    if limits.fuel is not None:
        store.set_fuel(limits.fuel)
        host.fuel_metered = True  # host calls charge for the bytes they move
    timer: threading.Timer | None = None
    if limits.timeout is not None:
        store.set_epoch_deadline(1)
        host.deadline = time.monotonic() + limits.timeout
        timer = threading.Timer(limits.timeout, engine.increment_epoch)
        timer.daemon = True
    linker = wasmtime.Linker(engine)
    host.link(linker)
    if timer:
        timer.start()  # before instantiation: a module's start section runs inside it
    try:
        instance = _instantiate(linker, store, module, limits.max_memory)
        exports = instance.exports(store)
        start = exports.get("_start")
        if not isinstance(start, wasmtime.Func):
            # wasmtime's default-function rule, as upstream Enarx: the export named "".
            # Its results, if any, are ignored; it must take no parameters.
            start = exports.get("")
            if isinstance(start, wasmtime.Func) and start.type(store).params:
                raise InvalidModule("the module's default export \"\" takes parameters",
                                    hint="export a `_start` (or \"\") function taking none")
        if not isinstance(start, wasmtime.Func):
            raise InvalidModule(
                "the module has no `_start` function: it is not a WASI command",
                hint="build an executable (not a library/reactor) for wasm32-wasi",
            )
        start(store)
    except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
        if host.exit_code is not None:
            return host.exit_code
        raise _trap_error(e, host) from None
    except KeyboardInterrupt:
        # The native fast path ends a read that SIGINT interrupted; Python raises here.
        raise Interrupted("interrupted") from None
    finally:
        if timer:
            timer.cancel()
    return 0 if host.exit_code is None else host.exit_code


def _instantiate(
    linker: wasmtime.Linker, store: wasmtime.Store, module: wasmtime.Module, max_memory: int
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
        if "count too high" in msg or "exceeds table limits" in msg:
            raise InvalidModule(
                f"the module needs more than enarx allows: {msg}",
                hint=f"enarx allows {MAX_MEMORIES} linear memory and {MAX_TABLES} tables of at "
                f"most {table_elements(max_memory)} elements here (a larger --max-memory "
                "allows larger tables); see docs/limits.md",
            ) from None
        if "memory" in msg and ("limit" in msg or "minimum" in msg or "grow" in msg):
            raise InvalidModule(
                f"the module's initial memory does not fit: {msg}",
                hint="raise --max-memory",
            ) from None
        raise InvalidModule(f"cannot instantiate the module: {msg}") from None


def _trap_error(t: wasmtime.Trap | wasmtime.WasmtimeError, host: Host) -> Trap:
    code = t.trap_code if isinstance(t, wasmtime.Trap) else None
    if isinstance(getattr(host, "host_error", None), KeyboardInterrupt):
        return Interrupted("interrupted")
    if code == wasmtime.TrapCode.INTERRUPT or host.timed_out:
        return Timeout("timeout: the workload ran past its wall-clock limit")
    if code == wasmtime.TrapCode.OUT_OF_FUEL or host.out_of_fuel:
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
