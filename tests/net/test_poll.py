"""poll_oneoff over two listeners (tcp on IPv4, tls on IPv6) and a clock, concurrent clients.

The TLS client's line arrives in one record but the guest reads it 4 bytes at a time with a
poll before each read: the rest sits decrypted inside the Keep while the socket is quiet, so
this fails (the guest's poll times out) unless poll counts that buffered plaintext.
"""

from __future__ import annotations

import socket
import threading

from tests.net.netkeep import IO_TIMEOUT, StartKeep, guest, listen, pinning_context, toml


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
