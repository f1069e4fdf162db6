"""Adversarial guests calling single imports with raw arguments (a hand-written module per
call, so any pointer, length or count can be passed): what the host allocates, which errno
comes back, and that nothing leaks or hangs.

Host allocation is measured with tracemalloc: a guest must not make the Python host
allocate in proportion to a length or count it chose.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from enarx.wasi.abi import Errno
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.fdtable import FdTable, Handle, NullHandle
from enarx.wasi.guestmem import MAX_IO_BYTES, MAX_IOVECS
from enarx.wasi.host import SIGNATURES, WasiHost
from enarx.wasi.pathcalls import MAX_PATH
from enarx.wasi.sockets import TcpListener, TcpStream

_ENGINE = wasmtime.Engine()
_MiB = 1 << 20
_PAGE = 1 << 16
_RIGHT_FD_READ = 1 << 1
_RIGHT_FD_WRITE = 1 << 6


class Guest:
    """One instance whose export ``go`` forwards its arguments to one WASI import."""

    def __init__(
        self,
        name: str,
        *,
        pages: int = 1,
        handles: Sequence[Handle] = (),
        fds: FdTable | None = None,
    ) -> None:
        self.fds = FdTable() if fds is None else fds
        for h in handles:
            self.fds.add(h)
        sig, _ = SIGNATURES[name]
        kinds = sig[1:] if sig.startswith("m") else sig
        params = " ".join("i32" if k == "i" else "i64" for k in kinds)
        gets = " ".join(f"local.get {i}" for i in range(len(kinds)))
        wat = f"""(module
          (import "wasi_snapshot_preview1" "{name}" (func $f (param {params}) (result i32)))
          (memory (export "memory") {pages})
          (func (export "go") (param {params}) (result i32) {gets} call $f))"""
        self.host = WasiHost(args=[b"guest"], env=[], fds=self.fds)
        self.store = wasmtime.Store(_ENGINE)
        linker = wasmtime.Linker(_ENGINE)
        self.host.link(linker)
        inst = linker.instantiate(self.store, wasmtime.Module(_ENGINE, wat))
        exports = inst.exports(self.store)
        self.memory = exports["memory"]
        self.go = exports["go"]
        assert isinstance(self.memory, wasmtime.Memory) and isinstance(self.go, wasmtime.Func)

    def write(self, offset: int, data: bytes) -> None:
        self.memory.write(self.store, data, offset)

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, offset, offset + n))

    def u32(self, offset: int) -> int:
        return int.from_bytes(self.read(offset, 4), "little")

    def __call__(self, *args: int) -> int:
        result = self.go(self.store, *args)
        if self.host.host_error is not None:
            raise self.host.host_error
        assert isinstance(result, int)
        return result


@pytest.fixture
def peak() -> Iterator[Callable[[Callable[[], Any]], tuple[Any, int]]]:
    """Run a call under tracemalloc; returns (result, peak bytes the host allocated)."""

    def measure(call: Callable[[], Any]) -> tuple[Any, int]:
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = call()
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    yield measure


def _iovec_array(count: int, buf: int, length: int) -> bytes:
    return struct.pack("<II", buf, length) * count


# --- memory and allocation ----------------------------------------------------------------


def test_random_get_fills_guest_memory_without_a_host_copy_of_its_size(peak) -> None:  # type: ignore[no-untyped-def]
    g = Guest("random_get", pages=(32 * _MiB) // _PAGE + 1)
    err, used = peak(lambda: g(_PAGE, 32 * _MiB))
    assert err == 0
    assert g.read(_PAGE, 64) != bytes(64) and g.read(_PAGE + 32 * _MiB - 64, 64) != bytes(64)
    assert used < 8 * _MiB


def test_random_get_of_4gib_into_one_page_is_efault_without_allocating(peak) -> None:  # type: ignore[no-untyped-def]
    g = Guest("random_get")
    err, used = peak(lambda: g(0, 0xFFFFFFFF))
    assert err == Errno.FAULT
    assert used < 8 * _MiB


def test_a_huge_iovec_count_is_a_short_write_not_millions_of_host_objects(peak) -> None:  # type: ignore[no-untyped-def]
    count = (16 * _MiB) // 8 - 1
    g = Guest("fd_write", pages=16 * _MiB // _PAGE, handles=[NullHandle()])
    g.write(8, _iovec_array(count, 0, 1))
    err, used = peak(lambda: g(0, 8, count, 0))
    assert err == 0
    assert g.u32(0) == MAX_IOVECS  # the first IOV_MAX buffers were written
    assert used < 4 * _MiB


def test_aliased_gigabyte_iovecs_are_capped_at_max_rw_count() -> None:
    gib = 1 << 30
    g = Guest("fd_write", pages=gib // _PAGE, handles=[NullHandle()])
    g.write(8, _iovec_array(3, 0, gib))  # three views of the same 1 GiB
    assert g(0, 8, 3, 0) == 0
    assert g.u32(0) == MAX_IO_BYTES  # fits the u32 result; never 3 GiB of work


def test_iovec_array_beyond_memory_is_efault() -> None:
    g = Guest("fd_write", handles=[NullHandle()])
    assert g(0, 8, 0x2000_0000, 0) == Errno.FAULT  # 4 GiB of iovecs in a 64 KiB memory
    g.write(8, _iovec_array(1, _PAGE - 4, 8))  # one buffer crossing the end
    assert g(0, 8, 1, 0) == Errno.FAULT


def test_a_32mib_path_is_nametoolong_without_a_walk(tmp_path: Path, peak) -> None:  # type: ignore[no-untyped-def]
    g = Guest(
        "path_create_directory",
        pages=32 * _MiB // _PAGE + 1,
        handles=[DirHandle.preopen(str(tmp_path), "/d", readonly=False)],
    )
    g.write(0, b"a/" * (16 * _MiB))
    err, used = peak(lambda: g(0, 0, 32 * _MiB))
    assert err == Errno.NAMETOOLONG
    assert used < 4 * _MiB
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


def test_poll_oneoff_with_a_million_subscriptions_is_einval(peak) -> None:  # type: ignore[no-untyped-def]
    nsubs = (64 * _MiB) // 48 - 1  # zeroed memory: clock subscriptions that fire at once
    g = Guest("poll_oneoff", pages=64 * _MiB // _PAGE)
    err, used = peak(lambda: g(0, 0, nsubs, 64 * _MiB - 4))
    assert err == Errno.INVAL
    assert used < 4 * _MiB
    assert g(0, 0, 1, 64 * _MiB - 4) == 0  # a sane count still works
    assert g.u32(64 * _MiB - 4) == 1


def _sub_clock(userdata: int, timeout_ns: int) -> bytes:
    return struct.pack("<QB7xIxxxxQQH6x", userdata, 0, 1, timeout_ns, 0, 0)  # monotonic


def _sub_fd(userdata: int, tag: int, fd: int) -> bytes:
    return struct.pack("<QB7xI28x", userdata, tag, fd)


def _events(g: Guest, at: int, n: int) -> list[tuple[int, int, int]]:
    """(userdata, errno, type) of each event."""
    return [struct.unpack_from("<QHB", g.read(at + 32 * i, 32)) for i in range(n)]


def test_poll_with_a_forever_clock_still_reports_a_ready_fd() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"x")
        g = Guest("poll_oneoff", handles=[TcpStream(a)])
        g.write(0, _sub_clock(1, 2**64 - 1) + _sub_fd(2, 1, 0))  # UINT64_MAX ns, fd_read
        assert g(0, 1024, 2, 2048) == 0
        assert g.u32(2048) == 1
        assert _events(g, 1024, 1) == [(2, 0, 1)]
        g.fds.close_all()


def test_poll_with_only_a_forever_clock_ends_at_the_deadline() -> None:
    g = Guest("poll_oneoff")
    g.host.deadline = time.monotonic() + 0.2
    g.write(0, _sub_clock(1, 2**64 - 1))
    with pytest.raises(wasmtime.WasmtimeError, match="deadline reached"):
        g(0, 1024, 1, 2048)
    assert g.host.timed_out


def test_poll_for_read_and_write_on_one_fd_reports_both() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"x")
        g = Guest("poll_oneoff", handles=[TcpStream(a)])
        g.write(0, _sub_fd(7, 1, 0) + _sub_fd(8, 2, 0))  # libc poll(POLLIN|POLLOUT)
        assert g(0, 1024, 2, 2048) == 0
        assert sorted(_events(g, 1024, g.u32(2048))) == [(7, 0, 1), (8, 0, 2)]
        g.fds.close_all()


# --- sockets --------------------------------------------------------------------------------


def test_sock_recv_peek_with_no_buffers_answers_zero() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"hello")
        g = Guest("sock_recv", handles=[TcpStream(a)])
        assert g(0, 0, 0, 1, 100, 104) == 0  # RECV_PEEK, zero iovecs
        assert g.u32(100) == 0
        g.fds.close_all()


def test_sock_accept_into_a_full_table_refuses_and_closes_the_connection() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    table = FdTable(limit=1)
    table.add(TcpListener(server))
    g = Guest("sock_accept", fds=table)
    with socket.create_connection(server.getsockname()) as client:
        client.settimeout(30)  # a guard against a hang, not a timing assertion
        assert g(0, 0, 100) == Errno.MFILE
        assert client.recv(1) == b""  # the Keep closed it: no fd leaked
    assert len(table) == 1
    table.close_all()


# --- fd table -------------------------------------------------------------------------------


def _open_guest(tmp_path: Path, limit: int) -> Guest:
    (tmp_path / "f").write_bytes(b"x")
    table = FdTable(limit=limit)
    table.add(DirHandle.preopen(str(tmp_path), "/d"))
    g = Guest("path_open", fds=table)
    g.write(0, b"f")
    return g


def test_opening_files_forever_meets_emfile_at_the_table_limit(tmp_path: Path) -> None:
    g = _open_guest(tmp_path, limit=8)
    errors = [g(0, 0, 0, 1, 0, _RIGHT_FD_READ, 0, 0, 100) for _ in range(10)]
    assert errors == [0] * 7 + [Errno.MFILE] * 3
    assert len(g.fds) == 8
    assert FdTable().limit <= 4096  # the default cap
    # Closing one makes room again.
    g.fds.close(5)
    assert g(0, 0, 0, 1, 0, _RIGHT_FD_READ, 0, 0, 100) == 0 and g.u32(100) == 5
    g.fds.close_all()


def test_path_open_with_a_bad_result_pointer_leaves_no_fd(tmp_path: Path) -> None:
    g = _open_guest(tmp_path, limit=64)
    assert g(0, 0, 0, 1, 0, _RIGHT_FD_READ, 0, 0, _PAGE - 2) == Errno.FAULT
    assert len(g.fds) == 1
    g.fds.close_all()


# --- read-only pre-opens and FIFOs -------------------------------------------------------


def test_hard_link_out_of_a_readonly_preopen_is_erofs(tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "secret").write_bytes(b"original")
    g = Guest(
        "path_link",
        handles=[
            DirHandle.preopen(str(ro), "/ro", readonly=True),
            DirHandle.preopen(str(rw), "/rw", readonly=False),
        ],
    )
    g.write(0, b"secret")
    g.write(16, b"copy")
    assert g(0, 0, 0, 6, 1, 16, 4) == Errno.ROFS
    assert not (rw / "copy").exists()
    assert (ro / "secret").stat().st_nlink == 1
    # Linking inside the writable pre-open still works.
    (rw / "mine").write_bytes(b"m")
    g.write(0, b"mine")
    assert g(1, 0, 0, 4, 1, 16, 4) == 0
    assert (rw / "copy").read_bytes() == b"m"


class _Rescue:
    """Runs ``action`` only if the guest's call is still stuck after a long grace period,
    so a regression fails the test instead of hanging the run. Not a timing assertion."""

    def __init__(self, action: Callable[[], object]) -> None:
        self.done = threading.Event()
        self.needed = False
        self._thread = threading.Thread(target=self._run, args=(action,), daemon=True)
        self._thread.start()

    def _run(self, action: Callable[[], object]) -> None:
        if not self.done.wait(30):
            self.needed = True
            action()

    def __enter__(self) -> _Rescue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self._thread.join()


def _open_and_close(path: Path, flags: int) -> None:
    os.close(os.open(path, flags))


def test_opening_a_fifo_in_a_preopen_does_not_block_the_host(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    g = Guest("path_open", handles=[DirHandle.preopen(str(tmp_path), "/d")])
    g.write(0, b"fifo")
    with _Rescue(lambda: _open_and_close(fifo, os.O_WRONLY)) as rescue:
        assert g(0, 0, 0, 4, 0, _RIGHT_FD_READ, 0, 0, 100) == 0
    assert not rescue.needed
    g.fds.close(g.u32(100))
    # Writing to a FIFO nobody reads is refused at once (the kernel's ENXIO).
    with _Rescue(lambda: _open_and_close(fifo, os.O_RDONLY)) as rescue:
        assert g(0, 0, 0, 4, 0, _RIGHT_FD_WRITE, 0, 0, 100) == Errno.NXIO
    assert not rescue.needed
    g.fds.close_all()


def test_blocking_read_of_a_silent_fifo_ends_at_the_deadline(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    g = Guest("path_open", handles=[DirHandle.preopen(str(tmp_path), "/d")])
    g.write(0, b"fifo")
    with _Rescue(lambda: _open_and_close(fifo, os.O_WRONLY)):
        assert g(0, 0, 0, 4, 0, _RIGHT_FD_READ, 0, 0, 100) == 0
    fd = g.u32(100)
    # The host (say) holds the write end open and never writes.
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    reader = Guest("fd_read", fds=g.fds)
    reader.host.deadline = time.monotonic() + 0.3
    reader.write(0, struct.pack("<II", 64, 16))
    try:
        with (
            _Rescue(lambda: os.write(writer, b"x")) as rescue,
            pytest.raises(wasmtime.WasmtimeError, match="deadline reached"),
        ):
            reader(fd, 0, 1, 200)
    finally:
        os.close(writer)
    assert not rescue.needed
    assert reader.host.timed_out
    g.fds.close_all()
