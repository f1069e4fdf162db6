"""args/env, exit codes, stdio streaming, clocks, random, poll, sockets-not-yet."""

from __future__ import annotations

import os
import threading
import time

import pytest
import wasmtime

from enarx.wasi.abi import Errno
from tests.wasi.rawguest import Guest, sub_clock
from tests.wasi.wasirun import run_guest


def test_args_env_and_exit_code() -> None:
    r = run_guest("wasi_args.c", ["7", "two words", "ü"], env=[(b"K", b"V"), (b"E", b"")])
    assert r.exit_code == 7
    assert r.lines == [
        "arg:wasi_args.c",
        "arg:7",
        "arg:two words",
        "arg:ü",
        "env:K=V",
        "env:E=",
    ]


def test_exit_zero_returns_none_exit_code() -> None:
    r = run_guest("wasi_args.c", ["0"])
    assert r.host.exit_code is None and r.trap is None and r.exit_code == 0


def test_proc_exit_from_raw_call() -> None:
    r = run_guest("wasi_ops.c", ["misc|6", "exit|42", "misc|6"])
    assert r.exit_code == 42
    assert r.trap is not None
    # sched_yield ok, proc_raise ENOSYS; nothing runs after proc_exit
    assert r.results() == [["0", str(Errno.NOSYS)], [""]]


def test_stdin_to_stdout_several_mib_byte_exact() -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    r = run_guest("wasi_cat.c", stdin=data)
    assert r.exit_code == 0
    assert r.stdout == data


def test_stdout_closed_pipe_gives_epipe_not_crash() -> None:
    rd, wr = os.pipe()
    os.close(rd)
    try:
        from enarx.wasi.fdtable import StdioHandle

        r = run_guest("wasi_ops.c", ["write|3|hello"], extra=[StdioHandle(wr)])
    finally:
        os.close(wr)
    assert r.results() == [[str(Errno.PIPE), "0"]]


def test_random_get_differs() -> None:
    r = run_guest("wasi_ops.c", ["random|32", "random|32", "random|0"])
    (e1, a), (e2, b), (e3, c) = r.results()
    assert (e1, e2, e3) == ("0", "0", "0")
    assert len(a) == 64 and len(b) == 64 and a != b and c == ""


def test_clocks() -> None:
    r = run_guest("wasi_ops.c", ["clock|1", "sleep|1000000|0", "clock|1", "clock|0", "clock|2",
                                 "clock|3", "clock|9"])  # fmt: skip
    res = r.results()
    m1, m2 = int(res[0][1]), int(res[2][1])
    assert res[0][0] == "0" and m2 > m1  # monotonic increases (a 1 ms sleep in between)
    for row in res[0], res[3], res[4], res[5]:
        assert row[0] == "0" and row[2] == "0" and int(row[3]) >= 1
    assert int(res[3][1]) > 1_600_000_000 * 10**9  # realtime is wall-clock ns
    assert res[6][0] == str(Errno.INVAL)


def test_poll_clock_relative_and_absolute() -> None:
    r = run_guest("wasi_ops.c", ["poll|2000000|0|-|-", "poll|2000000|1|-|-", "poll|0|0|-|-"])
    for row in r.results():
        assert row[:2] == ["0", "1"]
        assert row[2] == f"100:0:{0}:0:0"


def test_poll_stdin_readiness() -> None:
    rd, wr = os.pipe()
    try:
        # Data waiting: fd_read event with its byte count, before the 10 s clock.
        os.write(wr, b"abc")
        r = run_guest("wasi_ops.c", ["poll|10000000000|0|0|-", "read|0|3"], stdin=rd)
        assert r.results() == [["0", "1", "200:0:1:3:0"], ["0", b"abc".hex()]]
        # No data: the clock fires first.
        r = run_guest("wasi_ops.c", ["poll|1000000|0|0|-"], stdin=rd)
        assert r.results() == [["0", "1", "100:0:0:0:0"]]
        # Data arriving while blocked wakes the poll (no clock at all).
        t = threading.Timer(0.05, os.write, (wr, b"x"))
        t.start()
        r = run_guest("wasi_ops.c", ["poll|-|0|0|-"], stdin=rd)
        t.join()
        assert r.results() == [["0", "1", "200:0:1:1:0"]]
        # Writer gone: hang-up is reported.
        os.read(rd, 10)
        os.close(wr)
        wr = -1
        r = run_guest("wasi_ops.c", ["poll|-|0|0|-"], stdin=rd)
        assert r.results() == [["0", "1", "200:0:1:0:1"]]
    finally:
        os.close(rd)
        if wr >= 0:
            os.close(wr)


def test_poll_bad_fd_and_always_ready_handles() -> None:
    from enarx.wasi.fdtable import NullHandle

    r = run_guest("wasi_ops.c", ["poll|-|0|77|-", "poll|-|0|-|3"], extra=[NullHandle()])
    assert r.results() == [["0", "1", f"200:{Errno.BADF}:1:0:0"], ["0", "1", "300:0:2:0:0"]]


def test_poll_sleep_past_deadline_traps_as_timeout() -> None:
    import time

    r = run_guest("wasi_ops.c", ["poll|60000000000|0|-|-", "exit|3"],
                  deadline=time.monotonic() + 0.05)  # fmt: skip
    assert r.host.timed_out is True
    assert r.host.exit_code is None
    assert r.stdout == b""


def test_blocking_stdin_read_past_deadline_traps_as_timeout() -> None:
    import time

    rd, wr = os.pipe()
    try:
        r = run_guest("wasi_ops.c", ["read|0|4"], stdin=rd, deadline=time.monotonic() + 0.05)
    finally:
        os.close(rd)
        os.close(wr)
    assert r.host.timed_out is True


def test_sockets_are_not_sockets_yet() -> None:
    r = run_guest("wasi_ops.c", ["sock|1", "sock|99"])
    assert r.results() == [[str(Errno.NOTSOCK)] * 4, [str(Errno.BADF)] * 4]


def test_stdio_fdstat_and_bad_fds() -> None:
    r = run_guest("wasi_ops.c", ["fdstat|1", "fdstat|5", "close|5", "seek|1|0|0", "prestat|1"])
    res = r.results()
    assert res[0][0] == "0"
    assert res[1] == [str(Errno.BADF), "0", "0", "0", "0"]
    assert res[2] == [str(Errno.BADF)]
    assert res[3][0] in (str(Errno.NOTCAPABLE), str(Errno.SPIPE))
    assert res[4] == [str(Errno.BADF)]


def test_fdtable_numbers_in_order_and_missing_preopen_is_typed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from enarx.errors import ResourceError
    from enarx.wasi.dirhandle import DirHandle
    from enarx.wasi.fdtable import FdTable, NullHandle, StdioHandle

    fds = FdTable()
    assert [fds.add(StdioHandle(i)) for i in range(3)] == [0, 1, 2]
    assert fds.add(NullHandle()) == 3
    assert fds.add(DirHandle.preopen(str(tmp_path), "/data", readonly=True)) == 4
    with pytest.raises(ResourceError) as exc:
        DirHandle.preopen(str(tmp_path / "nope"), "/x")
    assert exc.value.hint
    fds.close_all()
    assert len(fds) == 0


def test_poll_with_only_a_forever_clock_ends_at_the_deadline() -> None:
    g = Guest("poll_oneoff")
    g.host.deadline = time.monotonic() + 0.2
    g.write(0, sub_clock(1, 2**64 - 1))  # UINT64_MAX ns: no overflow, no wait past it
    with pytest.raises(wasmtime.WasmtimeError, match="deadline reached"):
        g(0, 1024, 1, 2048)
    assert g.host.timed_out
