"""The tests' HTTP servers print no traceback when a client resets its connection (and still
print one for any other error a handler lets escape)."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from tests.package.ocirelay import Relay
from tests.quiethttp import QuietThreadingHTTPServer


def _reset(port: int) -> None:
    """Connect, send half a request, and close with a TCP reset (SO_LINGER 0)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        status = conn.getresponse().status
    finally:
        conn.close()
    return status


def test_a_client_reset_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    relay = Relay("127.0.0.1:9", fault=lambda method, path: ("status", 503))
    try:
        port = int(relay.host.rsplit(":", 1)[1])
        for _ in range(3):
            _reset(port)
        # answered after the resets were accepted (one at a time, in order); stop() then
        # waits for every handler thread, so anything they print is printed by now
        assert _get(port, "/v2/") == 503
    finally:
        relay.stop()
    err = capsys.readouterr().err
    assert err == ""


def test_other_handler_errors_still_print(capsys: pytest.CaptureFixture[str]) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raise ValueError("a bug in the handler")

        def log_message(self, *args: object) -> None:
            pass

    server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(http.client.RemoteDisconnected):
            _get(int(server.server_address[1]), "/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    err = capsys.readouterr().err
    assert "Exception occurred during processing of request" in err
    assert "ValueError: a bug in the handler" in err
