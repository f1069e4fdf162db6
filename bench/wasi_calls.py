"""Cost of one WASI host call, in-process: ns per fd_write of 16 bytes from a C guest.

Rows: a StdioHandle on /dev/null through the native path and through the Python path
(``ENARX_NATIVE=0``), each without and with a deadline, and the NullHandle (Python only, no
syscall: the shim's own cost). CPU time, best of three, so other load matters less.

Usage: python bench/wasi_calls.py [writes]   (default 1,000,000)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from enarx.wasi import native
from enarx.wasi.fdtable import FdTable, NullHandle, StdioHandle
from enarx.wasi.host import WasiHost
from tests.guestbuild import build_c


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(build_c("wasi_bench.c")))
    devnull = os.open(os.devnull, os.O_WRONLY)

    def run(count: int, *, use_native: bool, null_handle: bool, deadline: bool) -> float:
        os.environ["ENARX_NATIVE"] = "1" if use_native else "0"
        fds = FdTable()
        for i in range(3):
            fds.add(StdioHandle(i))
        fds.add(NullHandle() if null_handle else StdioHandle(devnull))
        host = WasiHost(
            args=[b"bench", b"3", str(count).encode()], env=[], fds=fds,
            deadline=time.monotonic() + 3600 if deadline else None,
        )  # fmt: skip
        store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        host.link(linker)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        t0 = time.process_time()
        start(store)
        elapsed = time.process_time() - t0
        if host.exit_code not in (None, 0):
            raise SystemExit(f"guest failed with exit code {host.exit_code}")
        return elapsed

    cases = [
        ("StdioHandle(/dev/null), native", True, False, False),
        ("StdioHandle(/dev/null), native, deadline", True, False, True),
        ("StdioHandle(/dev/null), Python", False, False, False),
        ("StdioHandle(/dev/null), Python, deadline", False, False, True),
        ("NullHandle (no syscall), Python", False, True, False),
    ]
    if native.library() is None:
        print("(no C compiler: native rows skipped)")
        cases = [c for c in cases if not c[1]]
    for label, use_native, null_handle, deadline in cases:
        best = min(
            run(n, use_native=use_native, null_handle=null_handle, deadline=deadline)
            for _ in range(3)
        )
        print(f"{label:45s} {best / n * 1e9:6.0f} ns/call")
    os.close(devnull)


if __name__ == "__main__":
    main()
