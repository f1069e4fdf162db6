"""``http.server`` servers for tests that stay quiet when a client resets its connection.

socketserver prints "Exception occurred during processing of request from ..." and a
traceback for every exception a request handler lets escape. A client that resets the
connection (a pooled keep-alive connection dropped, a fault a test injects on purpose) is
not the server's error, so that case alone prints nothing here; every other exception
still prints, as before.
"""

from __future__ import annotations

import sys
from http.server import HTTPServer, ThreadingHTTPServer
from typing import Any

__all__ = ["QuietHTTPServer", "QuietResets", "QuietThreadingHTTPServer"]


class QuietResets:
    """A mixin for socketserver servers (put it first): no traceback for
    ``ConnectionResetError``."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionResetError):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]


class QuietHTTPServer(QuietResets, HTTPServer):
    pass


class QuietThreadingHTTPServer(QuietResets, ThreadingHTTPServer):
    pass
