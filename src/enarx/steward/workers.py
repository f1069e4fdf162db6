"""``enarx steward serve --workers N``: N steward processes sharing one listening socket.

Replicas are stateless apart from the database, so workers are N copies of the single
process, forked after the socket is bound (and before any thread or database connection
exists); each loads the state and opens its own connections. The parent only supervises:
SIGTERM/SIGINT are passed on to every worker, and when one worker dies the others are
stopped, so the service never runs silently short-handed. Exit status: 0 when every worker
exited 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

__all__ = ["run_workers"]


def run_workers(count: int, child: Callable[[int], None]) -> int:
    """Fork ``count`` workers running ``child(index)``; wait for them; the exit status."""
    pids: list[int] = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                child(index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # report, never a traceback
                sys.stderr.write(f"enarx steward: worker {index}: {exc}\n")
                code = getattr(exc, "exit_code", 1)
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)

    def forward(signum: int, frame: FrameType | None) -> None:
        _signal_all(pids, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while pids:
            pid, wstatus = os.waitpid(-1, 0)
            if pid not in pids:
                continue
            pids.remove(pid)
            if os.waitstatus_to_exitcode(wstatus) != 0:
                status = 1
                _signal_all(pids, signal.SIGTERM)  # one died: stop the rest
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
