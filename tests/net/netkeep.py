"""Run `enarx run` with network entries as a background process, and talk to it.

Listeners are configured with port 0: the Keep binds a free port and prints
``listening on ADDR:PORT``; :class:`Keep` parses that (and the certificate fingerprint
and public-key pin of TLS listeners) from its stderr while the workload runs.
"""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import pytest

from tests.guestbuild import ToolchainMissing, build_c

ENARX = Path(sys.executable).with_name("enarx")
STARTUP = 120.0  # seconds: the first run compiles the module
IO_TIMEOUT = 30.0  # seconds for any single socket operation in a test

_LISTEN_RE = re.compile(
    r"enarx: files\[(\d+)\] \(([^)]*)\): listening on (\S+):(\d+) \((tcp|tls)\)"
)
_FP_RE = re.compile(r"enarx: files\[\d+\] \(([^)]*)\): certificate .* sha256 Fingerprint=(\S+)")
_PIN_RE = re.compile(r"enarx: files\[\d+\] \(([^)]*)\): public key pin (\S+)")


def guest(name: str) -> Path:
    try:
        return build_c(name)
    except ToolchainMissing as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"toolchain missing: {e}")


def need_tool(name: str) -> str:
    """Path of a client binary (openssl, curl); skip without it, fail under CI."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} not installed (scripts/install-toolchains.sh)")
        pytest.skip(f"{name} not installed (scripts/install-toolchains.sh)")
    return path


def toml(*entries: str, stdio: bool = True) -> str:
    """Enarx.toml text: stdin/stdout/stderr then the given [[files]] bodies."""
    head = ['kind = "stdin"', 'kind = "stdout"', 'kind = "stderr"'] if stdio else []
    return "".join(f"[[files]]\n{body.strip()}\n\n" for body in (*head, *entries))


def listen(name: str, prot: str, addr: str = "127.0.0.1", extra: str = "") -> str:
    return f'kind = "listen"\nname = "{name}"\nprot = "{prot}"\naddr = "{addr}"\nport = 0\n{extra}'


class _Lines:
    """Collects a pipe's lines in a thread so a test can wait for one while the Keep runs."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._t.start()

    def _pump(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first new line matching ``pattern``, or None at EOF or timeout."""
        end = time.monotonic() + timeout
        rx = re.compile(pattern)
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            if m := rx.search(line):
                return m
        return None

    def join(self, timeout: float) -> None:
        self._t.join(timeout)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class Keep:
    """``enarx run --backend nil --wasmcfgfile CFG WASM ARGS`` in the background."""

    def __init__(
        self,
        tmp_path: Path,
        wasm: Path,
        config: str,
        args: Sequence[str] = (),
        *,
        flags: Sequence[str] = (),
        cache: Path | None = None,
    ) -> None:
        cfg = tmp_path / "Enarx.toml"
        cfg.write_text(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        if cache is not None:
            env["ENARX_CACHE_DIR"] = str(cache)
        self.proc = subprocess.Popen(
            [str(ENARX), "run", "--backend", "nil", *flags, "--wasmcfgfile", str(cfg), str(wasm),
             *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=env,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout = _Lines(self.proc.stdout)
        self.stderr = _Lines(self.proc.stderr)
        self.ports: dict[str, tuple[str, int, str]] = {}  # name -> (host, port, prot)
        self.fingerprint: dict[str, str] = {}
        self.pin: dict[str, str] = {}

    def wait_listening(self, count: int) -> Keep:
        """Wait until ``count`` listeners are up (and their TLS details printed)."""
        tls_left = -1
        end = time.monotonic() + STARTUP
        while len(self.ports) < count or tls_left > 0:
            m = self.stderr.wait_for(r"enarx: files|error", max(0.1, end - time.monotonic()))
            if m is None:
                self.fail("the Keep did not start listening")
            line = m.string
            if lm := _LISTEN_RE.search(line):
                host, port, prot = lm.group(3).strip("[]"), int(lm.group(4)), lm.group(5)
                self.ports[lm.group(2)] = (host, port, prot)
                if prot == "tls":
                    tls_left = max(tls_left, 0) + 2
            elif fm := _FP_RE.search(line):
                self.fingerprint[fm.group(1)] = fm.group(2)
                tls_left -= 1
            elif pm := _PIN_RE.search(line):
                self.pin[pm.group(1)] = pm.group(2)
                tls_left -= 1
            elif "error" in line:
                self.fail("the Keep failed to start")
        return self

    def addr(self, name: str) -> tuple[str, int]:
        host, port, _ = self.ports[name]
        return host, port

    def connect(self, name: str) -> socket.socket:
        s = socket.create_connection(self.addr(name), timeout=IO_TIMEOUT)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def connect_tls(self, name: str, **ctx_kw: object) -> ssl.SSLSocket:
        """A TLS client that pins the Keep's certificate by its printed fingerprint."""
        ctx = pinning_context(**ctx_kw)  # type: ignore[arg-type]
        s = ctx.wrap_socket(self.connect(name), server_hostname="enarx-keep")
        assert_pinned(s, self.fingerprint[name])
        return s

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.fail(f"the Keep did not exit within {timeout}s")
        self.kill()  # the process is gone: this joins the readers and closes the pipes
        return rc, self.stdout.text, self.stderr.text

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stdout.join(5)
        self.stderr.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def fail(self, why: str) -> None:
        self.kill()
        pytest.fail(f"{why}\n--- stdout\n{self.stdout.text}\n--- stderr\n{self.stderr.text}")


def pinning_context(
    cert: Path | None = None, key: Path | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    """No CA can vouch for a self-signed one-time key: trust comes from the pin instead."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.maximum_version = max_version
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def fingerprint(der: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def assert_pinned(s: ssl.SSLSocket, expected: str) -> None:
    import hmac

    der = s.getpeercert(binary_form=True)
    assert der is not None
    assert hmac.compare_digest(fingerprint(der), expected), "certificate does not match the pin"


def recv_until(s: socket.socket, end: bytes = b"\n") -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def recv_all(s: socket.socket) -> bytes:
    parts = []
    while chunk := s.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


StartKeep = Callable[..., Keep]
