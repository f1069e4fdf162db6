"""Adversarial-review checks of the TLS socket handle, in process (no Keep binary needed)."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import tracemalloc

from enarx.keep import tls
from enarx.wasi.sockets import TcpListener, TlsStream

_MiB = 1 << 20


def _client(port: int, got: list[str]) -> None:
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


def test_tls_gather_write_of_large_buffers_is_not_joined_into_one_copy() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    listener = TcpListener(server, tls.server_context("test", tls.self_signed()))
    got: list[str] = []
    client = threading.Thread(target=_client, args=(server.getsockname()[1], got), daemon=True)
    client.start()
    stream = listener.sock_accept(0)
    assert isinstance(stream, TlsStream)
    a, b = bytearray(b"a" * 16 * _MiB), bytearray(b"b" * 16 * _MiB)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        n = stream.write([memoryview(a), memoryview(b)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    stream.close()
    client.join()
    listener.close()
    assert n == 32 * _MiB
    assert got == [_sha(bytes(a) + bytes(b))]
    assert peak < 8 * _MiB  # the old join held a 32 MiB copy


def test_tls_small_gather_still_arrives_in_order() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    listener = TcpListener(server, tls.server_context("test", tls.self_signed()))
    got: list[str] = []
    client = threading.Thread(target=_client, args=(server.getsockname()[1], got), daemon=True)
    client.start()
    stream = listener.sock_accept(0)
    parts = [memoryview(b"head "), memoryview(b""), memoryview(b"body")]
    assert stream.write(parts) == 9
    stream.close()
    client.join()
    listener.close()
    assert got == [_sha(b"head body")]
