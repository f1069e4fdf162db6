"""A real ``enarx steward serve`` / ``enarx registry serve`` in the background for tests: a
subprocess on a free port (``--port 0``), ready once it logs its "listening" line, always
stopped (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.cliutil import ENARX

__all__ = ["START_TIMEOUT", "ServerProcess", "clean_env"]

START_TIMEOUT = 60.0


def clean_env(extra: Mapping[str, str] | None = None,
              drop: tuple[str, ...] = ("ENARX_",)) -> dict[str, str]:
    """This process's environment without variables starting with ``drop``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra or {})
    return env


class ServerProcess:
    """``enarx KIND serve --port 0 ARGS``: its stderr ``lines``, ``url`` once it listens.

    Raises RuntimeError (with the log) when it does not say "listening" in time; the process
    is stopped first.
    """

    def __init__(self, kind: str, args: Sequence[str], env: Mapping[str, str],
                 *, preexec_fn: Callable[[], None] | None = None,
                 timeout: float = START_TIMEOUT) -> None:
        self.proc = subprocess.Popen([str(ENARX), kind, "serve", "--port", "0", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=dict(env),
                                     start_new_session=True, preexec_fn=preexec_fn)
        self.lines: list[str] = []
        self.url = ""
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._done.wait(timeout):
            self.stop()
            raise RuntimeError(f"{kind} did not start:\n{self.stderr}")
        if not self.url:
            self.stop()
            raise RuntimeError(f"{kind} exited:\n{self.stderr}")

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if '"listening"' in line and not self.url:
                self.url = json.loads(line)["url"]
                self._done.set()
        self._done.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def events(self, kind: str) -> list[dict[str, Any]]:
        """The JSON log lines whose "event" is ``kind``."""
        out = []
        for line in self.lines:
            if line.startswith("{"):
                obj = json.loads(line)
                if obj.get("event") == kind:
                    out.append(obj)
        return out

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` and wait for the exit; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(20)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """End the process (``sig``, then SIGKILL after 20 s); its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode
