"""Run C guests through WasiHost + wasmtime directly (independent of the CLI/runtime)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.fdtable import FdTable, Handle, StdioHandle
from enarx.wasi.host import WasiHost
from tests.guestbuild import ToolchainMissing, build_c

_ENGINE = wasmtime.Engine()
_MODULES: dict[str, wasmtime.Module] = {}


@dataclass
class Run:
    exit_code: int
    stdout: bytes
    stderr: bytes
    host: WasiHost
    trap: Exception | None

    @property
    def lines(self) -> list[str]:
        return self.stdout.decode().splitlines()

    def results(self) -> list[list[str]]:
        """wasi_ops output: one list of fields per command (name dropped)."""
        return [line.split(" ")[1:] for line in self.lines]


def guest(name: str) -> Path:
    try:
        return build_c(name)
    except ToolchainMissing as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"toolchain missing: {e}")


def run_guest(
    name: str,
    args: Sequence[str | bytes] = (),
    *,
    env: Sequence[tuple[bytes, bytes]] = (),
    stdin: bytes | int = b"",
    dirs: Sequence[tuple[str | Path, str, bool]] = (),
    extra: Sequence[Handle] = (),
    deadline: float | None = None,
) -> Run:
    """Run tests/guests/c/<name>; fds: 0-2 stdio, then ``dirs`` (host, guest, readonly),
    then ``extra`` handles. ``stdin`` is data (via a temp file) or a host fd to read."""
    wasm = guest(name)
    key = str(wasm)
    if key not in _MODULES:
        _MODULES[key] = wasmtime.Module.from_file(_ENGINE, key)
    with tempfile.TemporaryFile() as fin, tempfile.TemporaryFile() as fout, \
            tempfile.TemporaryFile() as ferr:  # fmt: skip
        if isinstance(stdin, bytes):
            fin.write(stdin)
            fin.seek(0)
            in_fd = fin.fileno()
        else:
            in_fd = stdin
        fds = FdTable()
        fds.add(StdioHandle(in_fd))
        fds.add(StdioHandle(fout.fileno()))
        fds.add(StdioHandle(ferr.fileno()))
        for host_path, guest_path, ro in dirs:
            fds.add(DirHandle.preopen(str(host_path), guest_path, readonly=ro))
        for h in extra:
            fds.add(h)
        argv = [name.encode()] + [a.encode() if isinstance(a, str) else a for a in args]
        host = WasiHost(args=argv, env=list(env), fds=fds, deadline=deadline)
        store = wasmtime.Store(_ENGINE)
        linker = wasmtime.Linker(_ENGINE)
        host.link(linker)
        trap: Exception | None = None
        try:
            inst = linker.instantiate(store, _MODULES[key])
            start = inst.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            trap = e
        finally:
            fds.close_all()
        if host.host_error is not None:
            raise host.host_error
        if trap is not None and host.exit_code is None and not host.timed_out:
            raise AssertionError(f"guest trapped: {trap}")
        fout.seek(0)
        ferr.seek(0)
        return Run(
            exit_code=host.exit_code if host.exit_code is not None else 0,
            stdout=fout.read(),
            stderr=ferr.read(),
            host=host,
            trap=trap,
        )
