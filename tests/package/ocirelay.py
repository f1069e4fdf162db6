"""A fault-injecting HTTP relay in front of a real registry (a test tool, not a registry).

:class:`Relay` listens on 127.0.0.1, forwards every request byte for byte to the upstream
registry (``Host`` unchanged, so the registry's upload ``Location`` URLs point back at the
relay) and returns its answer, unless ``fault(method, path)`` says otherwise:

- ``("status", N)``: answer ``N`` with an OCI error body without forwarding;
- ``("cut", None)``: read the request, then close the connection without answering;
- ``("slow", seconds)``: wait, then forward;
- ``("challenge", value)``: answer 401 with ``WWW-Authenticate: value``;
- ``("json", doc)``: answer 200 with ``doc`` as JSON (e.g. a token endpoint);
- ``("json_status", (N, doc[, content_type]))``: answer ``N`` with ``doc`` as JSON;
- ``("add_header", (name, value))``: forward, and add that header to the registry's answer
  (e.g. ``OCI-Subject``, to play a registry with the referrers API: a protocol fake).

``seen`` records ``(method, path)`` of every request that reached the relay, ``auth`` its
``Authorization`` header (or None), ``bodies`` ``(method, path, body)``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.quiethttp import QuietThreadingHTTPServer

Fault = tuple[str, Any] | None

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class Relay:
    def __init__(self, upstream: str,
                 fault: Callable[[str, str], Fault] = lambda m, p: None) -> None:
        self.upstream = upstream
        self.fault = fault
        self.seen: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.bodies: list[tuple[str, str, bytes]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                try:
                    self._relay()
                except OSError:  # the client went away mid-answer
                    self.close_connection = True

            def _relay(self) -> None:
                path = self.path.split("?", 1)[0]
                relay.seen.append((self.command, path))
                relay.auth.append(self.headers.get("Authorization"))
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                relay.bodies.append((self.command, path, body))
                f = relay.fault(self.command, path)
                if f is not None and f[0] == "cut":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if f is not None and f[0] in ("status", "challenge"):
                    data = json.dumps({"errors": [{"code": "UNAVAILABLE",
                                                   "message": "injected by the relay"}]})
                    self.send_response(int(f[1]) if f[0] == "status" else 401)
                    if f[0] == "challenge":
                        self.send_header("WWW-Authenticate", str(f[1]))
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data.encode())
                    return
                if f is not None and f[0] in ("json", "json_status"):
                    status, doc, *ctype = (200, f[1]) if f[0] == "json" else f[1]
                    raw = json.dumps(doc).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", ctype[0] if ctype else "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    return
                if f is not None and f[0] == "slow":
                    time.sleep(float(f[1]))
                host, _, port = relay.upstream.partition(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    if f is not None and f[0] == "add_header":
                        self.send_header(*f[1])
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except OSError:  # either side went away (e.g. the client timed out)
                    self.close_connection = True
                finally:
                    conn.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.server = QuietThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = False  # server_close() waits for every handler
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
