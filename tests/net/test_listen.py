"""`kind = "listen"`: pre-opened listeners, many connections, blocking and non-blocking.

Reproduces upstream Enarx's listen_tcp / listen_tls scenarios (blocking -> explicitly
blocking -> non-blocking accept on the same listener, and the same three modes on every
stream), with Python clients on 127.0.0.1 and ::1. In process: ``sock_accept``/``sock_recv`` called with
raw arguments (tests.wasi.rawguest) and the TLS stream's gathering write.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading

import pytest

from enarx.keep import tls
from enarx.wasi.abi import Errno
from enarx.wasi.fdtable import FdTable
from enarx.wasi.sockets import TcpListener, TcpStream, TlsStream
from tests.net.netkeep import StartKeep, guest, listen, recv_all, toml
from tests.wasi.rawguest import Guest, MiB, host_peak


def peer_scenario(s: socket.socket) -> None:
    """The other side of net_scenario's stream scenario (upstream's assert_stream)."""
    f = s.makefile("rwb", buffering=0)
    r = s.makefile("rb")
    for line in (b"first line\n", b"second line\n"):
        f.write(line)
        assert r.readline() == line
    assert r.readline() == b"go\n"  # the guest saw EAGAIN on its non-blocking read
    f.write(b"third line\n")
    assert r.readline() == b"third line\n"


@pytest.mark.parametrize(
    ("prot", "addr"), [("tcp", "127.0.0.1"), ("tcp", "::1"), ("tls", "127.0.0.1"), ("tls", "::")]
)
def test_upstream_listen_scenario(start_keep: StartKeep, prot: str, addr: str) -> None:
    keep = start_keep(
        guest("net_scenario.c"), toml(listen("ingest", prot, addr)), ["listen"]
    ).wait_listening(1)
    if addr == "::":  # the default address takes IPv4 too
        keep.ports["ingest"] = ("127.0.0.1", keep.ports["ingest"][1], prot)
    for i in range(3):
        if i == 2:
            assert keep.stdout.wait_for("nonblocking accept EAGAIN", 60), keep.stdout.text
        with keep.connect_tls("ingest") if prot == "tls" else keep.connect("ingest") as s:
            peer_scenario(s)
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.splitlines() == [
        "FD_COUNT=4 FD_NAMES=stdin:stdout:stderr:ingest",
        "default accept fd=4",
        "default stream ok",
        "blocking accept fd=4",
        "blocking stream ok",
        "nonblocking accept EAGAIN",
        "nonblocking accept fd=4",
        "nonblocking stream ok",
        "done",
    ]
    warning = (
        "warning: files[3] (ingest): plaintext tcp — the host can read and change this traffic"
    )
    assert err.count(warning) == (1 if prot == "tcp" else 0)


@pytest.mark.parametrize("mode", ["block", "nonblock"])
@pytest.mark.parametrize("prot", ["tcp", "tls"])
def test_echo_many_connections(start_keep: StartKeep, prot: str, mode: str) -> None:
    count = 12
    keep = start_keep(
        guest("net_echo.c"), toml(listen("echo", prot)), [str(count), mode]
    ).wait_listening(1)
    sent = 0
    for i in range(count):
        # Sizes from one byte to 1 MiB: larger than any socket or TLS buffer on the way.
        payload = os.urandom(1 if i == 0 else min(1 << 20, 37 * 4**i))
        with keep.connect_tls("echo") if prot == "tls" else keep.connect("echo") as s:
            got = bytearray()
            view = memoryview(payload)
            # Interleave sending and receiving so neither side's buffers fill up.
            while view:
                n = s.send(view[:65536])
                view = view[n:]
                s.setblocking(False)
                try:
                    while chunk := s.recv(1 << 20):
                        got += chunk
                except (BlockingIOError, ssl.SSLWantReadError):
                    pass
                s.settimeout(30)
            while len(got) < len(payload) and (chunk := s.recv(1 << 20)):
                got += chunk
            if isinstance(s, ssl.SSLSocket):
                s.unwrap()  # close_notify: the guest's read returns 0 and it closes too
            else:
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b""
        assert bytes(got) == payload, f"connection {i}: {len(got)} of {len(payload)} bytes"
        sent += len(payload)
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.startswith(f"served {count} connections, {sent} bytes, {mode}ing accept")


@pytest.mark.parametrize("prot", ["tcp", "tls"])
def test_closed_peer_is_eof_and_server_goes_on(start_keep: StartKeep, prot: str) -> None:
    keep = start_keep(guest("net_echo.c"), toml(listen("echo", prot)), ["3", "block"])
    keep.wait_listening(1)
    # 1: connect and hang up at once (for TLS: before the handshake finished).
    keep.connect("echo").close()
    # 2: hang up mid-stream without a TLS close_notify.
    s = keep.connect_tls("echo") if prot == "tls" else keep.connect("echo")
    s.sendall(b"partial")
    assert s.recv(7) == b"partial"
    s.close()
    # 3: a normal connection still works.
    with keep.connect_tls("echo") if prot == "tls" else keep.connect("echo") as s:
        s.sendall(b"still here\n")
        assert s.recv(64) == b"still here\n"
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.splitlines()[-1] == "served 3 connections, 18 bytes, blocking accept"


@pytest.mark.parametrize("prot", ["tcp", "tls"])
def test_sock_shutdown_write_keeps_reading(start_keep: StartKeep, prot: str) -> None:
    """After shutdown(SHUT_WR) the client sees EOF while the guest can still read."""
    keep = start_keep(
        guest("net_scenario.c"), toml(listen("half", prot)), ["halfclose"]
    ).wait_listening(1)
    with keep.connect_tls("half") if prot == "tls" else keep.connect("half") as s:
        s.sendall(b"ping\n")
        assert recv_all(s) == b"ping\n"  # EOF arrives although the guest's fd is open
        s.sendall(b"after the shutdown\n")
        if isinstance(s, ssl.SSLSocket):
            s.unwrap()
        else:
            s.shutdown(socket.SHUT_WR)
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.splitlines()[-3:] == ["after shutdown: after the shutdown", "eof", "done"]


def test_blocking_accept_ends_at_the_timeout(start_keep: StartKeep) -> None:
    keep = start_keep(
        guest("net_echo.c"), toml(listen("idle", "tcp")), ["1", "block"], flags=["--timeout", "1"]
    ).wait_listening(1)
    rc, _out, err = keep.finish()
    assert rc == 124, err
    assert "timeout" in err


def test_port_in_use_is_a_clear_error(enarx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "Enarx.toml"
        cfg.write_text(
            toml(f'kind = "listen"\nname = "web"\nprot = "tcp"\naddr = "127.0.0.1"\nport = {port}')
        )
        r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, guest("net_echo.c"), "1")
    assert r.returncode == 2
    err = r.stderr.decode()
    assert f"files[3] (web): cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


# --- sock_accept / sock_recv called directly with raw arguments ----------------------------


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


def test_sock_recv_peek_with_no_buffers_answers_zero() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"hello")
        g = Guest("sock_recv", handles=[TcpStream(a)])
        assert g(0, 0, 0, 1, 100, 104) == 0  # RECV_PEEK, zero iovecs
        assert g.u32(100) == 0
        g.fds.close_all()


# --- TLS streams: a gathering write (in process) -------------------------------------------


def _tls_client(port: int, got: list[str]) -> None:
    """Reads to EOF and keeps only a digest: tracemalloc sees this thread too."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # this test is about data, not identity
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port)) as raw:
        raw.settimeout(30)  # a guard against a hang, not a timing assertion
        with ctx.wrap_socket(raw) as s:
            while chunk := s.recv(1 << 16):
                digest.update(chunk)
    got.append(digest.hexdigest())


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tls_accept() -> tuple[TcpListener, TlsStream, threading.Thread, list[str]]:
    server = socket.create_server(("127.0.0.1", 0))
    listener = TcpListener(server, tls.server_context("test", tls.self_signed()))
    got: list[str] = []
    client = threading.Thread(
        target=_tls_client, args=(server.getsockname()[1], got), daemon=True
    )
    client.start()
    stream = listener.sock_accept(0)
    assert isinstance(stream, TlsStream)
    return listener, stream, client, got


def test_tls_gather_write_of_large_buffers_is_not_joined_into_one_copy() -> None:
    listener, stream, client, got = _tls_accept()
    a, b = bytearray(b"a" * 16 * MiB), bytearray(b"b" * 16 * MiB)
    n, peak = host_peak(lambda: stream.write([memoryview(a), memoryview(b)]))
    stream.close()
    client.join()
    listener.close()
    assert n == 32 * MiB
    assert got == [_sha(bytes(a) + bytes(b))]
    assert peak < 8 * MiB  # a joined copy would hold 32 MiB


def test_tls_small_gather_still_arrives_in_order() -> None:
    listener, stream, client, got = _tls_accept()
    parts = [memoryview(b"head "), memoryview(b""), memoryview(b"body")]
    assert stream.write(parts) == 9
    stream.close()
    client.join()
    listener.close()
    assert got == [_sha(b"head body")]
