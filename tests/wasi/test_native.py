"""The native fd_read/fd_write path (enarx.wasi.native) against the Python path.

Every parity test runs twice: ``native`` (the C callback, skipped when no compiler can build
it) and ``python`` (``ENARX_NATIVE=0``), and both must give the same, stated answer.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from enarx.wasi import native
from enarx.wasi.abi import Errno
from enarx.wasi.fdtable import FdTable, StdioHandle
from enarx.wasi.host import WasiHost
from tests.cliutil import ENARX, RunEnarx
from tests.guestbuild import build_c
from tests.wasi.wasirun import run_guest

NIL = ("--backend", "nil")
ALL = "0x3fffffff"
FAULT, BADF, NOTCAPABLE = int(Errno.FAULT), int(Errno.BADF), int(Errno.NOTCAPABLE)


@pytest.fixture(params=["native", "python"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "native":
        if native.library() is None:
            pytest.skip("no C compiler: the native path cannot be built here")
        monkeypatch.setenv("ENARX_NATIVE", "1")
    else:
        monkeypatch.setenv("ENARX_NATIVE", "0")
    yield request.param


def _env(mode: str) -> dict[str, str]:
    return {"ENARX_NATIVE": "1" if mode == "native" else "0"}


def rawio(*cmds: str, stdin: bytes | int = b"") -> tuple[list[str], bytes, WasiHost]:
    r = run_guest("wasi_rawio.c", cmds, stdin=stdin)
    assert r.exit_code == 0, r.stderr
    return r.stderr.decode().splitlines(), r.stdout, r.host


# --- the native path is really used ------------------------------------------------------
def test_native_path_serves_stdio_and_files(mode: str, tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    r = run_guest(
        "wasi_ops.c",
        [f"open|3|f|1|{ALL}|0|0", "write|$|abc", "seek|$|0|0", "read|$|3"],
        dirs=[(box, "/sandbox", False)],
    )
    assert r.results()[1:] == [["0", "3"], ["0", "0"], ["0", "616263"]]
    stats = r.host.native_stats()
    if mode == "python":
        assert stats is None
    else:
        # path_open hands the new fd to C: the file write, the file read and stdout
        # (buffered by libc, written at exit) all went through C.
        assert stats is not None
        served, fallback = stats
        assert fallback == 0 and served >= 3


def test_unknown_fds_fall_back_to_python(mode: str) -> None:
    lines, _, host = rawio("w|7|ok", "r|7|ok")
    assert lines == [f"{BADF} 0", f"{BADF} 0"]
    if mode == "native":
        stats = host.native_stats()
        assert stats is not None and stats[1] == 2  # both handed to Python


# --- parity: errno for errno, byte for byte ----------------------------------------------
def test_write_ok_and_efault(mode: str) -> None:
    lines, out, _ = rawio("w|1|ok", "w|1|iov", "w|1|buf", "w|1|out")
    assert lines == ["0 6", f"{FAULT} 0", f"{FAULT} 0", f"{FAULT} 0"]
    # A bad result pointer faults after the write, as the Python path does.
    assert out == b"hello\nhello\n"


def test_read_ok_and_efault(mode: str) -> None:
    lines, _, _ = rawio("r|0|ok", "r|0|iov", "r|0|buf", "r|0|out", "r|0|ok", stdin=b"abcdefgh")
    assert lines[0] == "0 8 6162636465666768"
    assert lines[1:4] == [f"{FAULT} 0"] * 3
    assert lines[4] == "0 0"  # EOF


def test_iovec_count_is_capped(mode: str) -> None:
    lines, out, _ = rawio("many|1|1030", "many|1|0", "many|1|3")
    assert lines == ["0 1024", "0 0", "0 3"]
    letters = bytes(ord("a") + i % 26 for i in range(1024))
    assert out == letters + b"abc"


def test_closed_renumbered_and_rights_dropped_fds(mode: str, tmp_path: Path) -> None:
    box = tmp_path / "box"
    box.mkdir()
    r = run_guest(
        "wasi_ops.c",
        [
            f"open|3|a|1|{ALL}|0|0",  # fd 4
            f"open|3|b|1|{ALL}|0|0",  # fd 5
            "write|4|A",
            "renumber|4|5",  # fd 5 is now file a; fd 4 is gone
            "write|4|x",
            "write|5|B",
            "close|5",
            f"open|3|c|1|{ALL}|0|0",  # guest fd 4 again, and likely a's old host fd
            "write|5|z",  # closed: must not reach c through a stale host fd
            "write|4|C",
            "setrights|4|0|0",
            "write|4|y",
        ],
        dirs=[(box, "/sandbox", False)],
    )
    assert [x[0] for x in r.results()[2:]] == [
        "0", "0", str(BADF), "0", "0", "0", str(BADF), "0", "0", str(NOTCAPABLE),
    ]  # fmt: skip
    assert (box / "a").read_bytes() == b"AB"
    assert (box / "b").read_bytes() == b""
    assert (box / "c").read_bytes() == b"C"


# --- whole runs through the CLI -----------------------------------------------------------
def test_six_mib_stdin_to_stdout_is_byte_exact(mode: str, enarx: RunEnarx) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)
    r = enarx("run", *NIL, build_c("cli_cat.c"), input=data, env=_env(mode))
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_short_writes_to_a_full_nonblocking_pipe_are_finished(
    mode: str, module_cache: Path
) -> None:
    # stdout is a non-blocking pipe read slowly: writes come back short or EAGAIN, and
    # the host must finish each one (as a blocking write would), in order.
    data = os.urandom(2 * 1024 * 1024 + 5)
    rd, wr = os.pipe()
    fcntl.fcntl(wr, fcntl.F_SETFL, fcntl.fcntl(wr, fcntl.F_GETFL) | os.O_NONBLOCK)
    env = {**os.environ, "ENARX_CACHE_DIR": str(module_cache), **_env(mode)}
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(rd, 65536):
            got.extend(chunk)
            time.sleep(0.001)

    t = threading.Thread(target=drain)
    t.start()
    try:
        proc = subprocess.run(
            [str(ENARX), "run", *NIL, str(build_c("cli_cat.c"))],
            input=data, stdout=wr, stderr=subprocess.PIPE, env=env, timeout=120, check=False,
        )  # fmt: skip
    finally:
        os.close(wr)
        t.join(timeout=60)
        os.close(rd)
    assert proc.returncode == 0, proc.stderr
    assert bytes(got) == data


def test_deadline_ends_a_blocked_read(mode: str) -> None:
    rd, wr = os.pipe()  # nobody writes: the guest's read blocks
    try:
        t0 = time.monotonic()
        r = run_guest("wasi_rawio.c", ["r|0|ok"], stdin=rd, deadline=time.monotonic() + 0.3)
        elapsed = time.monotonic() - t0
    finally:
        os.close(rd)
        os.close(wr)
    assert r.host.timed_out
    assert r.trap is not None and "deadline reached" in str(r.trap)
    assert elapsed < 30


def test_bad_iovec_faults_before_waiting_for_the_deadline(mode: str) -> None:
    rd, wr = os.pipe()  # nobody writes; the read must fault at once, not time out
    try:
        r = run_guest("wasi_rawio.c", ["r|0|iov", "r|0|buf"], stdin=rd,
                      deadline=time.monotonic() + 60)  # fmt: skip
    finally:
        os.close(rd)
        os.close(wr)
    assert not r.host.timed_out
    assert r.stderr.decode().splitlines() == [f"{FAULT} 0", f"{FAULT} 0"]


def test_timeout_ends_a_write_to_a_pipe_nobody_reads(mode: str, module_cache: Path) -> None:
    env = {**os.environ, "ENARX_CACHE_DIR": str(module_cache), **_env(mode)}
    proc = subprocess.Popen(
        [str(ENARX), "run", *NIL, "--timeout", "1", str(build_c("cli_yes.c"))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 124


def test_fuel_metering_sends_every_call_to_python(mode: str) -> None:
    # With fuel on, reads and writes are charged by the Python path: none are served in C.
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    engine = wasmtime.Engine(cfg)
    module = wasmtime.Module.from_file(engine, str(build_c("wasi_rawio.c")))
    with open(os.devnull, "wb") as null:
        fds = FdTable()
        for _ in range(3):
            fds.add(StdioHandle(null.fileno()))
        host = WasiHost(args=[b"rawio", b"w|1|ok", b"w|1|ok"], env=[], fds=fds)
        store = wasmtime.Store(engine)
        store.set_fuel(10_000_000)
        linker = wasmtime.Linker(engine)
        host.link(linker)
        start = linker.instantiate(store, module).exports(store)["_start"]
        assert isinstance(start, wasmtime.Func)
        start(store)
    stats = host.native_stats()
    if mode == "native":
        assert stats is not None
        assert stats[0] == 0 and stats[1] >= 4  # 2 writes + 2 result lines, all in Python
    else:
        assert stats is None


def test_python_path_reuses_its_poll_object_under_a_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A poll object per call doubled the cost of every stdio call under --timeout.
    monkeypatch.setenv("ENARX_NATIVE", "0")
    r = run_guest("wasi_rawio.c", ["r|0|ok"] * 5, stdin=b"x" * 300,
                  deadline=time.monotonic() + 60)  # fmt: skip
    assert r.stderr.decode().splitlines()[0] == "0 64 " + "78" * 64
    # Five reads of stdin and five writes to stderr: one poll object for each.
    events = sorted(ev for _fd, ev in r.host._pollers)
    assert events == sorted([select.POLLIN | select.POLLPRI, select.POLLOUT])


# --- where the library lives --------------------------------------------------------------
@pytest.fixture
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    if native.library() is None:
        pytest.skip("no C compiler: the native path cannot be built here")
    cache, state = tmp_path / "cache", tmp_path / "state"
    monkeypatch.setenv("ENARX_NATIVE_DIR", str(cache))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return cache, state / "enarx" / "native"


def test_library_is_built_private_and_its_digest_recorded_outside_the_cache(
    private_dirs: tuple[Path, Path],
) -> None:
    cache, records = private_dirs
    assert native._load_or_build() is not None
    (lib,) = cache.glob("fastio-*.so")
    (record,) = records.glob("fastio-*.sha256")
    assert lib.stem == record.stem
    for d in (cache, records):
        assert d.stat().st_mode & 0o777 == 0o700
    for f in (lib, record):
        assert f.stat().st_mode & 0o777 == 0o600
    assert record.read_text() == hashlib.sha256(lib.read_bytes()).hexdigest()


def test_a_tampered_library_is_not_loaded_but_rebuilt(private_dirs: tuple[Path, Path]) -> None:
    cache, records = private_dirs
    assert native._load_or_build() is not None
    (lib,) = cache.glob("fastio-*.so")
    (record,) = records.glob("fastio-*.sha256")
    tampered = b"\x7fELF not the library we built"
    lib.write_bytes(tampered)
    assert native._load_or_build() is not None  # loading the tampered file would raise
    assert lib.read_bytes() != tampered  # rebuilt, and recorded anew
    assert record.read_text() == hashlib.sha256(lib.read_bytes()).hexdigest()


def test_a_cache_dir_others_can_write_is_not_used(private_dirs: tuple[Path, Path]) -> None:
    cache, _ = private_dirs
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    assert native._load_or_build() is None  # the run falls back to Python
    assert list(cache.iterdir()) == []


def test_ctrl_c_ends_a_run_blocked_reading_stdin(mode: str, module_cache: Path) -> None:
    # Python's SIGINT handler makes the blocked read fail with EINTR: the native path must
    # not retry it forever (the handler only runs once control is back in Python).
    env = {**os.environ, "ENARX_CACHE_DIR": str(module_cache), **_env(mode)}
    rd, wr = os.pipe()
    proc = subprocess.Popen(
        [str(ENARX), "run", *NIL, str(build_c("cli_cat.c"))],
        stdin=rd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(rd)
    try:
        os.write(wr, b"ping\n")
        assert proc.stdout is not None
        assert proc.stdout.read(5) == b"ping\n"  # the guest echoed it: now it waits in fd_read
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    finally:
        proc.kill()
        os.close(wr)
        _, err = proc.communicate()
    # Not a hang, and the same answer on both paths: 128 + SIGINT with one line.
    assert code == 130, err
    assert err.decode().strip().endswith("error: interrupted"), err


def test_a_broken_compiler_never_fails_a_run(
    tmp_path: Path, module_cache: Path, enarx: RunEnarx
) -> None:
    # The first run builds the library; a compiler that fails must only mean the Python
    # path: same output, exit 0, and none of the compiler's noise on stderr.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cc").write_text("#!/bin/sh\necho 'cc: internal compiler error' >&2\nexit 1\n")
    (fake / "cc").chmod(0o755)
    data = os.urandom(100_000)
    r = enarx(
        "run", *NIL, build_c("cli_cat.c"), input=data,
        env={"PATH": f"{fake}:{os.environ['PATH']}", "ENARX_NATIVE_DIR": str(tmp_path / "c"),
             "XDG_STATE_HOME": str(tmp_path / "s")},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    assert b"compiler" not in r.stderr
    assert not list((tmp_path / "c").glob("*.so"))  # nothing was built or cached
