"""poll_oneoff over two listeners (tcp on IPv4, tls on IPv6) and a clock, concurrent clients.

The TLS client's line arrives in one record but the guest reads it 4 bytes at a time with a
poll before each read: the rest sits decrypted inside the Keep while the socket is quiet, so
this fails (the guest's poll times out) unless poll counts that buffered plaintext.

In process: poll_oneoff with raw subscriptions on one socket fd (a clock of UINT64_MAX ns,
read and write interest on the same fd).
"""

from __future__ import annotations

import socket
import threading

from enarx.wasi.sockets import TcpStream
from tests.net.netkeep import IO_TIMEOUT, StartKeep, guest, listen, pinning_context, toml
from tests.wasi.rawguest import Guest, events, sub_clock, sub_fd


def test_poll_loop_over_two_listeners(start_keep: StartKeep) -> None:
    per_listener = 4
    config = toml(listen("plain", "tcp", "127.0.0.1"), listen("secure", "tls", "::1"))
    keep = start_keep(guest("net_poll.c"), config, [str(2 * per_listener)]).wait_listening(2)
    replies: dict[str, bytes] = {}
    errors: list[BaseException] = []

    def client(name: str, i: int) -> None:
        line = (f"{name}-{i}-" * 40).encode() + b"\n"  # ~400 bytes: many 4-byte reads
        try:
            s: socket.socket = keep.connect(name)
            if name == "secure":
                s = pinning_context().wrap_socket(s)
            with s:
                s.sendall(line)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            replies[f"{name}-{i}"] = data
            assert data == (b"3:" if name == "plain" else b"4:") + line
        except BaseException as e:
            errors.append(e)

    # All clients at once: both listeners have connections pending at the same time.
    threads = [
        threading.Thread(target=client, args=(name, i), daemon=True)
        for i in range(per_listener)
        for name in ("plain", "secure")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(IO_TIMEOUT * 2)
    rc, out, err = keep.finish()
    assert not errors, errors
    assert len(replies) == 2 * per_listener
    assert rc == 0, out + err
    lines = out.splitlines()
    assert lines.count("served on fd 3") == per_listener
    assert lines.count("served on fd 4") == per_listener
    assert lines[-1].startswith(f"done: {2 * per_listener} connections")
    # The plaintext warning: once for the tcp entry, never for the tls one.
    assert err.count("plaintext tcp") == 1
    assert "warning: files[3] (plain): plaintext tcp" in err


# --- poll_oneoff on one socket fd, called directly with raw subscriptions -----------------


def test_poll_with_a_forever_clock_still_reports_a_ready_socket() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"x")
        g = Guest("poll_oneoff", handles=[TcpStream(a)])
        g.write(0, sub_clock(1, 2**64 - 1) + sub_fd(2, 1, 0))  # UINT64_MAX ns, fd_read
        assert g(0, 1024, 2, 2048) == 0
        assert g.u32(2048) == 1
        assert events(g, 1024, 1) == [(2, 0, 1)]
        g.fds.close_all()


def test_poll_for_read_and_write_on_one_socket_reports_both() -> None:
    a, b = socket.socketpair()
    with b:
        b.sendall(b"x")
        g = Guest("poll_oneoff", handles=[TcpStream(a)])
        g.write(0, sub_fd(7, 1, 0) + sub_fd(8, 2, 0))  # libc poll(POLLIN|POLLOUT)
        assert g(0, 1024, 2, 2048) == 0
        assert sorted(events(g, 1024, g.u32(2048))) == [(7, 0, 1), (8, 0, 2)]
        g.fds.close_all()
