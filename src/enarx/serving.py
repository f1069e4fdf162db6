"""What ``enarx steward serve`` and ``enarx registry serve`` share: the listening socket and a
uvicorn server that says "listening" once it accepts and exits cleanly on SIGTERM/SIGINT.

uvicorn is imported only when a server is built (the CLI starts faster without it)."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

from enarx.errors import ResourceError

__all__ = ["bind", "server_class", "warn"]


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (plain HTTP, test roots): the servers' loud line, as
    ``enarx.cli.output.warn`` is the CLI's (servers do not import the CLI layer)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


def bind(addr: str, port: int, *, hint: str = "pick another --port or --addr",
         inheritable: bool = False) -> socket.socket:
    """A TCP socket listening on ``addr``:``port`` (0: a free port), or a :class:`ResourceError`.

    ``inheritable``: the socket is shared with worker processes.
    """
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:
        sock.close()
        raise ResourceError(f"cannot listen on {addr}:{port}: {getattr(exc, 'strerror', exc)}",
                            hint=hint) from None
    if inheritable:
        sock.set_inheritable(True)
    return sock


def server_class() -> Any:
    """A ``uvicorn.Server`` subclass built as ``(config, url, log)``.

    Once uvicorn accepts, it logs ``{"event": "listening", "url": url}`` to ``log`` (nothing
    when ``url`` is empty: one announcement for workers sharing a socket). Stopped by
    SIGTERM/SIGINT the process exits 0: uvicorn would re-raise the signal after shutting
    down, killing the process before its clean-up.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, url: str = "",
                     log: logging.Logger | None = None) -> None:
            super().__init__(config)
            self.url = url
            self.log = log

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            sigs = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.url and self.log is not None:
                self.log.info(json.dumps({"event": "listening", "url": self.url}))

    return _Server
