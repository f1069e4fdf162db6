"""The agent inside a VM Keep, and the framed protocol it speaks with the host launcher.

One virtio-serial port (``org.enarx.agent``) carries frames ``type:u8 len:u32be payload``.
host -> guest: ``R`` request (JSON: argv0, args, env, limits, config text), ``M`` module bytes,
``I`` a stdin chunk, ``E`` stdin end. guest -> host: ``H`` ready (sent first), ``O``/``e`` a
stdout/stderr chunk, ``X`` the exit (JSON ``{"code": n}``, always last).

Inside, the agent runs ``enarx run --backend nil`` on the module as a child process, so exit
codes, traps (134) and timeouts (124) are exactly nil's. Run as ``python3 -m enarx.vm.agent``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from enarx.errors import EnarxError
from enarx.vm.shares import inner_dir_args, mount_all, write_keys
from enarx.vm.simlaunch import prepare_inner, steward_args

__all__ = ["FRAME_LIMIT", "PORT_NAME", "encode", "main", "read_frame"]

PORT_NAME = "org.enarx.agent"
_HEAD = struct.Struct(">BI")
#: No frame (the module is the largest) may exceed this; a bigger length is a broken peer.
FRAME_LIMIT = 1 << 30
_CHUNK = 64 * 1024


def encode(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEAD.pack(kind[0], len(payload)) + payload


def read_frame(read: Callable[[int], bytes]) -> tuple[bytes, bytes] | None:
    """The next (type, payload) via ``read(n)`` (returns b"" at end), or None at a clean end."""
    head = _read_exact(read, _HEAD.size, allow_eof=True)
    if head is None:
        return None
    kind, size = _HEAD.unpack(head)
    if size > FRAME_LIMIT:
        raise ValueError(f"frame of {size} bytes exceeds the protocol limit")
    body = _read_exact(read, size, allow_eof=False)
    return bytes([kind]), body or b""


def _read_exact(read: Callable[[int], bytes], n: int, *, allow_eof: bool) -> bytes | None:
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = read(min(n - got, 1 << 20))
        if not chunk:
            if allow_eof and got == 0:
                return None
            raise EOFError(f"peer closed after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _port_path() -> str:
    base = os.environ.get("ENARX_VM_PORTS", "/dev/virtio-ports")
    path = os.path.join(base, PORT_NAME)
    for _ in range(200):
        if os.path.exists(path):
            return path
        sysfs = "/sys/class/virtio-ports"
        for vport in sorted(os.listdir(sysfs)) if os.path.isdir(sysfs) else []:
            try:
                with open(os.path.join(sysfs, vport, "name")) as f:
                    if f.read().strip() == PORT_NAME:
                        return os.path.join("/dev", vport)
            except OSError:
                continue
        time.sleep(0.05)
    raise SystemExit(f"enarx-agent: no virtio-serial port named {PORT_NAME}")


class _Port:
    """The port's fd; reads that return 0 before the host connected are retried."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.lock = threading.Lock()
        self.connected = False

    def read(self, n: int) -> bytes:
        while True:
            data = os.read(self.fd, n)
            if data or self.connected:
                self.connected = True if data else self.connected
                return data
            time.sleep(0.02)  # host not connected yet: virtio-serial reads return 0

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        with self.lock:
            view = memoryview(encode(kind, payload))
            while view:
                view = view[os.write(self.fd, view):]


#: What the inner `enarx run --backend nil` prints first on stderr (platform/nil.py).
_INNER_WARNING = (b"warning: nil backend: the workload is NOT confidential; the host can read "
                  b"and change its memory\n")
#: ... and the inner `--backend sim` of a sim VM Keep (platform/sim.py).
_SIM_WARNING = (b"warning: sim backend: evidence is signed by a locally made test chain; "
                b"NOT confidential\n")


def _command(req: dict[str, Any], module: str, config: str | None) -> list[str]:
    # An SNP/TDX host launch (vm/hostlaunch.py): that backend, here in guest mode.
    inner = req.get("backend") if req.get("backend") in ("sev-snp", "tdx") else "nil"
    if isinstance(req.get("sim"), dict):  # a sim VM Keep (vm/simlaunch.py)
        inner = "sim"
    argv = [sys.executable, "-m", "enarx.cli.main", "run", "--backend", inner, "--no-cache"]
    if config is not None:
        argv += ["--wasmcfgfile", config]
    for key, value in req.get("env", []):
        argv += ["--env", f"{key}={value}"]
    if req.get("max_memory") is not None:
        argv += ["--max-memory", str(req["max_memory"])]
    if req.get("timeout") is not None:
        argv += ["--timeout", repr(float(req["timeout"]))]
    if req.get("fuel") is not None:
        argv += ["--fuel", str(req["fuel"])]
    if not req.get("fd_env", True):
        argv.append("--no-fd-env")
    argv += inner_dir_args(req.get("dirs"))  # shares mounted by serve() (vm/shares.py)
    argv += steward_args(req.get("steward"), os.path.dirname(module))  # vm/simlaunch.py
    return [*argv, "--", module, *req.get("args", [])]


def _net_env(net: Any, workdir: str) -> dict[str, str] | None:
    """The inner run's environment with networking (request key ``net``, vm/network.py):
    the host's loopback address for the Keep's clients (vm/guestnet.py), and the PEM files
    its socket entries name written where Enarx.toml expects them. None: no NIC."""
    if not isinstance(net, dict):
        return None
    for name, text in (net.get("files") or {}).items():
        path = os.path.join(workdir, os.path.expanduser(str(name)))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(str(text))
    from enarx.vm.guestnet import HOST_LOOPBACK, HOST_LOOPBACK_ENV, LISTEN_PORTS_ENV

    return {**os.environ, HOST_LOOPBACK_ENV: str(net.get("host_loopback") or HOST_LOOPBACK),
            LISTEN_PORTS_ENV: json.dumps(net.get("picked") or {})}


def _feed_stdin(port: _Port, child: subprocess.Popen[bytes]) -> None:
    stdin = child.stdin
    assert stdin is not None
    try:
        while (frame := read_frame(port.read)) is not None:
            kind, body = frame
            if kind == b"I":
                stdin.write(body)
                stdin.flush()
            elif kind == b"E":
                break
    except (OSError, EOFError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            stdin.close()


def serve(port: _Port, workdir: str) -> int:
    port.send(b"H")
    first = read_frame(port.read)
    second = read_frame(port.read)
    if first is None or second is None or first[0] != b"R" or second[0] != b"M":
        raise SystemExit("enarx-agent: protocol error: expected a request and a module")
    req = json.loads(first[1])
    name = os.path.basename(str(req.get("argv0") or "module.wasm")) or "module.wasm"
    module = os.path.join(workdir, name)
    with open(module, "wb") as f:
        f.write(second[1])
    config = None
    if req.get("config") is not None:
        config = os.path.join(workdir, "Enarx.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(req["config"])
    try:
        mount_all(req.get("dirs"))
        write_keys(req.get("dirs"), workdir)
    except OSError as e:
        port.send(b"e", f"error: VM Keep: {e.strerror}\nhint: the image's kernel needs its "
                  "9p modules: `enarx keep image build --force`\n".encode())
        port.send(b"X", json.dumps({"code": 3}).encode())
        return 0
    env = _net_env(req.get("net"), workdir)
    try:  # the steward's CA, the sim chip and launch (vm/simlaunch.py)
        if attest_env := prepare_inner(req, workdir):
            env = {**(env or os.environ), **attest_env}
    except (OSError, ValueError, KeyError, EnarxError) as e:
        port.send(b"e", f"error: VM Keep: cannot prepare attestation: {e}\nhint: rebuild the "
                  "image (`enarx keep image build --force`)\n".encode())
        port.send(b"X", json.dumps({"code": 3}).encode())
        return 0
    argv = _command(req, module, config)
    if req.get("mode") == "deploy":  # `enarx deploy --backend kvm` (vm/vmdeploy.py)
        from enarx.vm.vmdeploy import inner_command

        argv, deploy_env = inner_command(req, workdir)
        env = {**(env or os.environ), **deploy_env}
    child = subprocess.Popen(argv, cwd=workdir, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    threading.Thread(target=_feed_stdin, args=(port, child), daemon=True).start()
    sel = selectors.DefaultSelector()
    assert child.stdout is not None and child.stderr is not None
    sel.register(child.stdout, selectors.EVENT_READ, b"O")
    sel.register(child.stderr, selectors.EVENT_READ, b"e")
    open_streams = 2
    # The inner run is `--backend nil` only as the VM's runtime: the host already printed the
    # kvm backend's warning, so the inner nil warning (always its first stderr line) is
    # dropped; every other byte passes through unchanged.
    warning = _SIM_WARNING if isinstance(req.get("sim"), dict) else _INNER_WARNING
    pending: bytes | None = b""
    while open_streams:
        for key, _ in sel.select():
            data = os.read(key.fd, _CHUNK)
            if data and key.data == b"e" and pending is not None:
                pending += data
                if len(pending) < len(warning) and warning.startswith(pending):
                    continue  # not enough bytes yet to tell
                if pending.startswith(warning):
                    pending = pending[len(warning):]
                data, pending = pending, None
                if not data:
                    continue
            if data:
                port.send(key.data, data)
            else:
                if key.data == b"e" and pending:
                    port.send(b"e", pending)
                    pending = None
                sel.unregister(key.fileobj)
                open_streams -= 1
    code = child.wait()
    port.send(b"X", json.dumps({"code": code}).encode())
    return 0


def main() -> int:
    port = _Port(_port_path())
    with tempfile.TemporaryDirectory(prefix="enarx-keep-") as workdir:
        return serve(port, workdir)


if __name__ == "__main__":
    sys.exit(main())
