"""Cost of one WASI host call: ns per fd_write (16 bytes to a NullHandle) from a C guest.

Usage: python bench/wasi_calls.py [writes]   (default 1,000,000)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from enarx.wasi.fdtable import FdTable, NullHandle, StdioHandle
from enarx.wasi.host import WasiHost

from guestbuild import build_c


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(build_c("wasi_bench.c")))

    def run(count: int) -> float:
        fds = FdTable()
        for i in range(3):
            fds.add(StdioHandle(i))
        fds.add(NullHandle())
        host = WasiHost(args=[b"bench", b"3", str(count).encode()], env=[], fds=fds)
        store = wasmtime.Store(engine)
        linker = wasmtime.Linker(engine)
        host.link(linker)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        # CPU time, not wall time: the number should not depend on what else runs.
        t0 = time.process_time()
        start(store)
        elapsed = time.process_time() - t0
        if host.exit_code not in (None, 0):
            raise SystemExit(f"guest failed with exit code {host.exit_code}")
        return elapsed

    elapsed = min(run(n) for _ in range(3))  # best of three
    print(f"fd_write x{n}: {elapsed:.3f} s, {elapsed / n * 1e9:.0f} ns/call")


if __name__ == "__main__":
    main()
