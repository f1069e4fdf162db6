"""Limits that hold in every phase: instantiation and the start function, host calls,
blocking I/O; and the host memory a guest can make enarx spend (docs/limits.md).

Host memory is the peak RSS of the real `enarx run` process (wait4's ru_maxrss), compared
with a baseline run in the same test: the bound is asserted, never a timing. Single host calls
with raw guest arguments (tests.wasi.rawguest) are measured in process with tracemalloc.
"""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import wasmtime

from enarx.runtime.run import MAX_TABLES, TABLE_ELEMENT_BYTES, table_elements
from enarx.wasi.abi import Errno
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.fdtable import FdTable, NullHandle
from enarx.wasi.guestmem import MAX_IO_BYTES, MAX_IOVECS
from enarx.wasi.pathcalls import MAX_PATH
from tests.cliutil import ENARX, RunEnarx
from tests.guestbuild import build_c
from tests.wasi.rawguest import (
    PAGE,
    RIGHT_FD_READ,
    RIGHT_FD_WRITE,
    Guest,
    MiB,
    Rescue,
    host_peak,
    iovec_array,
)

NIL = ("--backend", "nil")
_READ_RIGHTS = (1 << 1) | (1 << 3)  # FD_READ | FD_FDSTAT_SET_FLAGS


@dataclass
class Measured:
    returncode: int
    stdout: bytes
    stderr: bytes
    peak_rss: int  # bytes


@pytest.fixture
def measured(module_cache: Path) -> Callable[..., Measured]:
    """``measured(*args)`` runs `enarx` and reports its peak RSS (this child only)."""

    def go(*args: str | os.PathLike[str], timeout: float = 120) -> Measured:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        env["ENARX_CACHE_DIR"] = str(module_cache)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.Popen(
                [str(ENARX), *map(str, args)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
            )  # fmt: skip
            killer = threading.Timer(timeout, p.kill)
            killer.start()
            try:
                _, status, usage = os.wait4(p.pid, 0)
            finally:
                killer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            out.seek(0)
            err.seek(0)
            return Measured(p.returncode, out.read(), err.read(), usage.ru_maxrss * 1024)

    return go


def _wat(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.wat"
    path.write_text(text)
    return path


_EXIT = '(import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'


def _filled(tmp_path: Path) -> Path:
    """The baseline: one memory grown to 16 MiB and every page of it touched."""
    return _wat(tmp_path, "filled", f"""(module {_EXIT} (memory (export "memory") 1)
      (func (export "_start")
        (drop (memory.grow (i32.const 255)))
        (memory.fill (i32.const 0) (i32.const 1) (i32.const 0x1000000))))""")


# --- every phase: the start function ------------------------------------------------------


def test_a_start_function_that_loops_forever_meets_the_timeout(
    enarx: RunEnarx, tmp_path: Path
) -> None:
    wat = _wat(tmp_path, "start", """(module (memory (export "memory") 1)
      (func $spin (loop (br 0))) (start $spin) (func (export "_start")))""")
    t0 = time.monotonic()
    r = enarx("run", *NIL, "--timeout", "1", wat, timeout=60)
    assert r.returncode == 124, r.stderr
    assert b"timeout" in r.stderr and b"Traceback" not in r.stderr
    assert time.monotonic() - t0 < 30  # ended by the limit, not by the test's kill


# --- memory: one memory, bounded tables ---------------------------------------------------


def test_sixteen_memories_cannot_multiply_max_memory(
    measured: Callable[..., Measured], tmp_path: Path
) -> None:
    base = measured("run", *NIL, "--max-memory", "16M", _filled(tmp_path))
    assert base.returncode == 0, base.stderr
    grow = "".join(
        f"(drop (memory.grow {i} (i32.const 256)))"
        f"(memory.fill {i} (i32.const 0) (i32.const 1) (i32.const 0x1000000))"
        for i in range(16)
    )
    mems = "".join("(memory 0)" for _ in range(15))
    wat = _wat(tmp_path, "mems", f"""(module (memory (export "memory") 0) {mems}
      (func (export "_start") {grow}))""")
    r = measured("run", *NIL, "--max-memory", "16M", wat)
    assert r.returncode == 2, r.stderr
    assert b"memory count" in r.stderr and b"hint:" in r.stderr
    assert b"Traceback" not in r.stderr
    assert r.peak_rss <= base.peak_rss + 8 * MiB


def test_table_growth_is_bounded_by_max_memory(
    measured: Callable[..., Measured], tmp_path: Path
) -> None:
    base = measured("run", *NIL, "--max-memory", "16M", _filled(tmp_path))
    # table.grow by 50M entries, then by the cap, then by one more: exit code says which
    # succeeded (0: the huge one refused, the cap granted, one past it refused).
    cap = table_elements(16 * MiB)
    wat = _wat(tmp_path, "table", f"""(module {_EXIT} (memory (export "memory") 1)
      (table 0 funcref)
      (func (export "_start")
        (if (i32.ne (table.grow 0 (ref.null func) (i32.const 50000000)) (i32.const -1))
          (then (call $exit (i32.const 1))))
        (if (i32.ne (table.grow 0 (ref.null func) (i32.const {cap})) (i32.const 0))
          (then (call $exit (i32.const 2))))
        (if (i32.ne (table.grow 0 (ref.null func) (i32.const 1)) (i32.const -1))
          (then (call $exit (i32.const 3))))))""")
    r = measured("run", *NIL, "--max-memory", "16M", wat)
    assert r.returncode == 0, r.stderr
    # All tables together stay within an eighth of --max-memory (docs/limits.md).
    assert MAX_TABLES * cap * TABLE_ELEMENT_BYTES <= 16 * MiB // 8
    assert r.peak_rss <= base.peak_rss + 8 * MiB


def test_a_module_needing_a_larger_table_is_refused_clearly(
    enarx: RunEnarx, tmp_path: Path
) -> None:
    wat = _wat(tmp_path, "bigtable", """(module (memory (export "memory") 1)
      (table 60000000 funcref) (func (export "_start")))""")
    r = enarx("run", *NIL, "--max-memory", "16M", wat)
    assert r.returncode == 2, r.stderr
    assert b"table" in r.stderr and b"hint:" in r.stderr and b"Traceback" not in r.stderr


# --- validation of the limits themselves --------------------------------------------------


_NOOP = '(module (memory (export "memory") 1) (func (export "_start")))'


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "-1", "0"])
def test_a_timeout_that_cannot_be_armed_is_bad_input(
    enarx: RunEnarx, tmp_path: Path, value: str
) -> None:
    wat = _wat(tmp_path, "noop", _NOOP)
    r = enarx("run", *NIL, "--timeout", value, wat)
    assert r.returncode == 2, r.stderr
    assert b"timeout" in r.stderr and b"Traceback" not in r.stderr
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(f"[limits]\ntimeout = {value}\n")
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, wat)
    assert r.returncode == 2, r.stderr
    assert b"limits.timeout" in r.stderr and b"Traceback" not in r.stderr


@pytest.mark.parametrize("value", [1 << 64, (1 << 64) + 1, 1 << 70])
def test_fuel_that_wasmtime_cannot_hold_is_bad_input(
    enarx: RunEnarx, tmp_path: Path, value: int
) -> None:
    wat = _wat(tmp_path, "noop", _NOOP)
    r = enarx("run", *NIL, "--fuel", str(value), wat)
    assert r.returncode == 2, r.stderr
    assert b"fuel" in r.stderr and b"Traceback" not in r.stderr
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(f"[limits]\nfuel = {value}\n")
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, wat)
    assert r.returncode == 2, r.stderr
    assert b"limits.fuel" in r.stderr


def test_the_largest_fuel_still_runs(enarx: RunEnarx, tmp_path: Path) -> None:
    r = enarx("run", *NIL, "--fuel", str((1 << 64) - 1), _wat(tmp_path, "noop", _NOOP))
    assert r.returncode == 0, r.stderr


# --- fuel pays for host work --------------------------------------------------------------


def _random_loop(tmp_path: Path, calls: int, size: int) -> Path:
    return _wat(tmp_path, "rnd", f"""(module
      (import "wasi_snapshot_preview1" "random_get" (func $r (param i32 i32) (result i32)))
      (memory (export "memory") {max(1, size // 65536)})
      (func (export "_start") (local $i i32)
        (loop $l
          (drop (call $r (i32.const 0) (i32.const {size})))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const {calls}))))))""")


def test_random_get_is_paid_for_by_the_byte(enarx: RunEnarx, tmp_path: Path) -> None:
    wat = _random_loop(tmp_path, 16, 64 * MiB)
    r = enarx("run", *NIL, "--fuel", "2000", wat)
    assert r.returncode == 124, r.stderr
    assert b"fuel" in r.stderr and b"Traceback" not in r.stderr
    # Enough fuel for the bytes (1 unit per 8) and the loop: it runs to the end.
    small = _random_loop(tmp_path, 16, MiB)
    assert enarx("run", *NIL, "--fuel", str(3 * MiB), small).returncode == 0


def test_writes_stop_where_the_fuel_ends(enarx: RunEnarx, tmp_path: Path) -> None:
    # 1000 writes of 64 KiB to stdout would take 8M units; 100k pays for about 800 KB.
    wat = _wat(tmp_path, "wr", """(module
      (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 2)
      (func (export "_start") (local $i i32)
        (i32.store (i32.const 0) (i32.const 1024))
        (i32.store (i32.const 4) (i32.const 65536))
        (loop $l
          (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))))""")
    r = enarx("run", *NIL, "--fuel", "100000", wat)
    assert r.returncode == 124, r.stderr
    assert b"fuel" in r.stderr
    assert 0 < len(r.stdout) <= 100000 * 8


# --- blocking I/O -------------------------------------------------------------------------


def test_a_fifo_switched_to_nonblocking_answers_eagain(ops) -> None:  # type: ignore[no-untyped-def]
    fifo = ops.box / "fifo"
    os.mkfifo(fifo)
    # The host holds both ends open and never writes: a blocking read would wait forever.
    held = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    rescue = threading.Timer(10, lambda: os.write(held, b"x"))  # only if the read blocked
    rescue.start()
    try:
        res = ops(
            f"open|3|fifo|0|{_READ_RIGHTS}|0|0",
            "setflags|$|4",  # NONBLOCK
            "fdstat|$",
            "read|$|16",
            deadline=time.monotonic() + 30,
        )
    finally:
        rescue.cancel()
        os.close(held)
    assert res[0][0] == "0" and res[1] == ["0"]
    assert res[2][2] == "4"
    assert res[3] == [str(int(Errno.AGAIN)), ""]


# --- host memory for directory listings ---------------------------------------------------


def test_open_directories_do_not_hold_their_listings(
    measured: Callable[..., Measured], tmp_path: Path
) -> None:
    box = tmp_path / "many"
    box.mkdir()
    for i in range(4000):
        (box / f"file-with-a-longish-name-{i:05}").touch()
    wasm = build_c("wasi_dirs.c")
    args = ("run", *NIL, "--max-memory", "32M", "--dir", f"{box}::/sandbox", wasm)
    base = measured(*args, "1", "seq")
    assert base.stdout == b"ok 4002 4002\n", base.stderr
    # 250 open directory fds, each part-way through the listing, then each read to the end.
    many = measured(*args, "250", "seq")
    assert many.stdout == b"ok 4002 4002\n", many.stderr
    assert many.peak_rss <= base.peak_rss + 16 * MiB


def test_interleaved_listings_of_many_fds_are_complete(enarx: RunEnarx, tmp_path: Path) -> None:
    box = tmp_path / "some"
    box.mkdir()
    for i in range(600):
        (box / f"f{i}").touch()
    (box / "sub").mkdir()
    # 40 streams read one entry each per round: more than the host keeps open at once.
    r = enarx("run", *NIL, "--dir", f"{box}::/sandbox", build_c("wasi_dirs.c"), "40", "rr")
    assert r.stdout == b"ok 603 603\n", r.stderr


@pytest.mark.parametrize(
    "kw",
    [{"timeout": float("inf")}, {"timeout": float("nan")}, {"timeout": 1e300},
     {"fuel": 1 << 64}, {"fuel": 0}, {"max_memory": (4 << 30) + 1}],
)  # fmt: skip
def test_run_limits_refuse_what_cannot_be_enforced(kw: dict[str, float]) -> None:
    # The last line behind the CLI and Enarx.toml checks (e.g. --timeout nan passes click).
    from enarx.errors import UsageError
    from enarx.runtime.run import RunLimits

    with pytest.raises(UsageError) as err:
        RunLimits(max_memory=kw.pop("max_memory", 1 << 20), **kw)  # type: ignore[arg-type]
    assert err.value.exit_code == 2 and err.value.hint


# --- host calls: what a guest's raw pointers, lengths and counts make the host allocate ----


def test_random_get_fills_guest_memory_without_a_host_copy_of_its_size() -> None:
    g = Guest("random_get", pages=(32 * MiB) // PAGE + 1)
    err, used = host_peak(lambda: g(PAGE, 32 * MiB))
    assert err == 0
    assert g.read(PAGE, 64) != bytes(64) and g.read(PAGE + 32 * MiB - 64, 64) != bytes(64)
    assert used < 8 * MiB


def test_random_get_of_4gib_into_one_page_is_efault_without_allocating() -> None:
    g = Guest("random_get")
    err, used = host_peak(lambda: g(0, 0xFFFFFFFF))
    assert err == Errno.FAULT
    assert used < 8 * MiB


def test_a_huge_iovec_count_is_a_short_write_not_millions_of_host_objects() -> None:
    count = (16 * MiB) // 8 - 1
    g = Guest("fd_write", pages=16 * MiB // PAGE, handles=[NullHandle()])
    g.write(8, iovec_array(count, 0, 1))
    err, used = host_peak(lambda: g(0, 8, count, 0))
    assert err == 0
    assert g.u32(0) == MAX_IOVECS  # the first IOV_MAX buffers were written
    assert used < 4 * MiB


def test_aliased_gigabyte_iovecs_are_capped_at_max_rw_count() -> None:
    gib = 1 << 30
    g = Guest("fd_write", pages=gib // PAGE, handles=[NullHandle()])
    g.write(8, iovec_array(3, 0, gib))  # three views of the same 1 GiB
    assert g(0, 8, 3, 0) == 0
    assert g.u32(0) == MAX_IO_BYTES  # fits the u32 result; never 3 GiB of work


def test_iovec_array_beyond_memory_is_efault() -> None:
    g = Guest("fd_write", handles=[NullHandle()])
    assert g(0, 8, 0x2000_0000, 0) == Errno.FAULT  # 4 GiB of iovecs in a 64 KiB memory
    g.write(8, iovec_array(1, PAGE - 4, 8))  # one buffer crossing the end
    assert g(0, 8, 1, 0) == Errno.FAULT


def test_a_32mib_path_is_nametoolong_without_a_walk(tmp_path: Path) -> None:
    g = Guest(
        "path_create_directory",
        pages=32 * MiB // PAGE + 1,
        handles=[DirHandle.preopen(str(tmp_path), "/d", readonly=False)],
    )
    g.write(0, b"a/" * (16 * MiB))
    err, used = host_peak(lambda: g(0, 0, 32 * MiB))
    assert err == Errno.NAMETOOLONG
    assert used < 4 * MiB
    assert list(tmp_path.iterdir()) == []


def test_a_path_of_path_max_bytes_still_resolves(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    g = Guest("path_filestat_get", handles=[DirHandle.preopen(str(tmp_path), "/d")])
    path = b"./" * ((MAX_PATH - 2) // 2) + b"/f"  # "//" is one separator
    assert len(path) == MAX_PATH
    g.write(0, path)
    assert g(0, 0, 0, len(path), 8192) == 0
    assert g.read(8192 + 16, 1) == b"\x04"  # filetype: regular file
    g.write(0, b"." + path)
    assert g(0, 0, 0, len(path) + 1, 8192) == Errno.NAMETOOLONG


def test_poll_oneoff_with_a_million_subscriptions_is_einval() -> None:
    nsubs = (64 * MiB) // 48 - 1  # zeroed memory: clock subscriptions that fire at once
    g = Guest("poll_oneoff", pages=64 * MiB // PAGE)
    err, used = host_peak(lambda: g(0, 0, nsubs, 64 * MiB - 4))
    assert err == Errno.INVAL
    assert used < 4 * MiB
    assert g(0, 0, 1, 64 * MiB - 4) == 0  # a sane count still works
    assert g.u32(64 * MiB - 4) == 1


# --- the fd table: a guest cannot open fds without bound, nor leak one ---------------------


def _open_guest(tmp_path: Path, limit: int) -> Guest:
    (tmp_path / "f").write_bytes(b"x")
    table = FdTable(limit=limit)
    table.add(DirHandle.preopen(str(tmp_path), "/d"))
    g = Guest("path_open", fds=table)
    g.write(0, b"f")
    return g


def test_opening_files_forever_meets_emfile_at_the_table_limit(tmp_path: Path) -> None:
    g = _open_guest(tmp_path, limit=8)
    errors = [g(0, 0, 0, 1, 0, RIGHT_FD_READ, 0, 0, 100) for _ in range(10)]
    assert errors == [0] * 7 + [Errno.MFILE] * 3
    assert len(g.fds) == 8
    assert FdTable().limit <= 4096  # the default cap
    # Closing one makes room again.
    g.fds.close(5)
    assert g(0, 0, 0, 1, 0, RIGHT_FD_READ, 0, 0, 100) == 0 and g.u32(100) == 5
    g.fds.close_all()


def test_path_open_with_a_bad_result_pointer_leaves_no_fd(tmp_path: Path) -> None:
    g = _open_guest(tmp_path, limit=64)
    assert g(0, 0, 0, 1, 0, RIGHT_FD_READ, 0, 0, PAGE - 2) == Errno.FAULT
    assert len(g.fds) == 1
    g.fds.close_all()


# --- blocking I/O: FIFOs in a pre-open ----------------------------------------------------


def _open_and_close(path: Path, flags: int) -> None:
    os.close(os.open(path, flags))


def test_opening_a_fifo_in_a_preopen_does_not_block_the_host(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    g = Guest("path_open", handles=[DirHandle.preopen(str(tmp_path), "/d")])
    g.write(0, b"fifo")
    with Rescue(lambda: _open_and_close(fifo, os.O_WRONLY)) as rescue:
        assert g(0, 0, 0, 4, 0, RIGHT_FD_READ, 0, 0, 100) == 0
    assert not rescue.needed
    g.fds.close(g.u32(100))
    # Writing to a FIFO nobody reads is refused at once (the kernel's ENXIO).
    with Rescue(lambda: _open_and_close(fifo, os.O_RDONLY)) as rescue:
        assert g(0, 0, 0, 4, 0, RIGHT_FD_WRITE, 0, 0, 100) == Errno.NXIO
    assert not rescue.needed
    g.fds.close_all()


def test_blocking_read_of_a_silent_fifo_ends_at_the_deadline(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    g = Guest("path_open", handles=[DirHandle.preopen(str(tmp_path), "/d")])
    g.write(0, b"fifo")
    with Rescue(lambda: _open_and_close(fifo, os.O_WRONLY)):
        assert g(0, 0, 0, 4, 0, RIGHT_FD_READ, 0, 0, 100) == 0
    fd = g.u32(100)
    # The host (say) holds the write end open and never writes.
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    reader = Guest("fd_read", fds=g.fds)
    reader.host.deadline = time.monotonic() + 0.3
    reader.write(0, struct.pack("<II", 64, 16))
    try:
        with (
            Rescue(lambda: os.write(writer, b"x")) as rescue,
            pytest.raises(wasmtime.WasmtimeError, match="deadline reached"),
        ):
            reader(fd, 0, 1, 200)
    finally:
        os.close(writer)
    assert not rescue.needed
    assert reader.host.timed_out
    g.fds.close_all()
