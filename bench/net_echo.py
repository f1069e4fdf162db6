"""Echo through a listen socket in the Keep vs outside it: round trips/s and bulk MB/s.

Servers (each serves one connection at a time, on 127.0.0.1):
  keep-tcp     tests/guests/c/net_echo.c (wasm32-wasi) in `enarx run --backend nil`, prot=tcp
  native-tcp   the same C program compiled natively with gcc
  asyncio-tcp  a Python asyncio echo server
  keep-tls     net_echo.wasm behind a prot=tls listener (TLS 1.3 terminated in the Keep)
  python-tls   a Python ssl echo server (TLS 1.3, a P-384 key, like the Keep's)

The client is Python in this process (the same for every server), so ratios compare servers.
Wall-clock numbers: run on a quiet machine; each figure is the best of --rounds.

Usage: python bench/net_echo.py [--seconds 2] [--bulk-mb 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, for tests.*
from tests.guestbuild import build_c  # noqa: E402 (needs the path above)

ENARX = Path(sys.executable).with_name("enarx")
SOURCE = ROOT / "tests" / "guests" / "c" / "net_echo.c"

Connect = Callable[[], socket.socket]

ASYNCIO_SERVER = """
import asyncio
async def echo(r, w):
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()
async def main():
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    print("listening on", srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()
asyncio.run(main())
"""

SSL_SERVER = """
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
ctx.load_cert_chain(sys.argv[1])
ls = socket.create_server(("127.0.0.1", 0))
print("listening on", ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(c, server_side=True) as s:
        try:
            while data := s.recv(65536):
                s.sendall(data)
        except (ssl.SSLError, OSError):
            pass
"""


@contextmanager
def server(cmd: list[str], port_re: str, stream: str = "stdout", **kw: object) -> Iterator[int]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        **kw,  # type: ignore[call-overload]
    )
    try:
        pipe = proc.stdout if stream == "stdout" else proc.stderr
        assert pipe is not None
        for raw in pipe:
            if m := re.search(port_re, raw.decode()):
                port = int(m.group(1))
                break
        else:
            raise SystemExit(f"server {cmd[0]} did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        # Keep draining so a chatty server never blocks on a full pipe.
        threading.Thread(target=lambda: pipe.read(), daemon=True).start()
        yield port
    finally:
        proc.kill()
        proc.wait()


def keep_server(wasm: Path, prot: str, tmp: Path) -> Iterator[int]:
    cfg = tmp / f"Enarx-{prot}.toml"
    cfg.write_text(
        "".join(f'[[files]]\nkind = "{k}"\n' for k in ("stdin", "stdout", "stderr"))
        + f'[[files]]\nkind = "listen"\nname = "echo"\nprot = "{prot}"\n'
        'addr = "127.0.0.1"\nport = 0\n'
    )
    return server(
        [str(ENARX), "run", "--backend", "nil", "--wasmcfgfile", str(cfg), str(wasm), "0", "block"],
        r"listening on 127\.0\.0\.1:(\d+)",
        stream="stderr",
    )


def tcp_client(port: int) -> Connect:
    def connect() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    return connect


def tls_client(port: int) -> Connect:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # a benchmark: no secrets, trust is not the point

    def connect() -> socket.socket:
        return ctx.wrap_socket(tcp_client(port)(), server_hostname="bench")

    return connect


def round_trips(connect: Connect, seconds: float, size: int = 64) -> float:
    msg = b"x" * size
    with connect() as s:
        s.sendall(msg)
        s.recv(size)  # warm-up (and the TLS handshake)
        n, end = 0, time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            s.sendall(msg)
            got = 0
            while got < size:
                got += len(s.recv(size - got))
            n += 1
        return n / (time.perf_counter() - t0)


def bulk(connect: Connect, total: int, chunk: int = 65536) -> float:
    block = os.urandom(chunk)
    with connect() as s:
        s.sendall(block)
        got = 0
        while got < chunk:
            got += len(s.recv(chunk))

        def send() -> None:
            for _ in range(total // chunk):
                s.sendall(block)

        t0 = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        got = 0
        buf = bytearray(1 << 20)
        while got < total:
            n = s.recv_into(buf)
            if not n:
                raise SystemExit("server closed early")
            got += n
        sender.join()
        return total / (time.perf_counter() - t0) / 1e6


def measure(
    clients: dict[str, Connect], args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    """Best of ``rounds``; rounds are interleaved across servers so load spikes hit all alike."""
    best: dict[str, tuple[float, float]] = {name: (0.0, 0.0) for name in clients}
    for _ in range(args.rounds):
        for name, connect in clients.items():
            rt = round_trips(connect, args.seconds)
            mb = bulk(connect, args.bulk_mb << 20)
            best[name] = (max(best[name][0], rt), max(best[name][1], mb))
    for name, (rt, mb) in best.items():
        print(f"{name:<12} {rt:>10,.0f} round trips/s {mb:>10,.1f} MB/s", flush=True)
    return best


def self_signed_pem(tmp: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    from enarx.keep.tls import self_signed

    ident = self_signed("bench")
    pem = ident.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ) + ident.cert.public_bytes(serialization.Encoding.PEM)
    path = tmp / "bench.pem"
    path.write_bytes(pem)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per round-trip measurement")
    ap.add_argument("--bulk-mb", type=int, default=64, help="MiB echoed per bulk measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    wasm = build_c(SOURCE)
    with tempfile.TemporaryDirectory(prefix="enarx-bench-") as d, ExitStack() as stack:
        tmp = Path(d)
        clients: dict[str, Connect] = {}
        clients["keep-tcp"] = tcp_client(stack.enter_context(keep_server(wasm, "tcp", tmp)))
        if shutil.which("gcc"):
            native = tmp / "net_echo"
            subprocess.run(["gcc", "-O2", "-o", str(native), str(SOURCE)], check=True)
            port = stack.enter_context(server([str(native), "0", "block", "0"], r"on (\d+)"))
            clients["native-tcp"] = tcp_client(port)
        port = stack.enter_context(server([sys.executable, "-c", ASYNCIO_SERVER], r"on (\d+)"))
        clients["asyncio-tcp"] = tcp_client(port)
        clients["keep-tls"] = tls_client(stack.enter_context(keep_server(wasm, "tls", tmp)))
        pem = self_signed_pem(tmp)
        port = stack.enter_context(
            server([sys.executable, "-c", SSL_SERVER, str(pem)], r"on (\d+)")
        )
        clients["python-tls"] = tls_client(port)
        results = measure(clients, args)

    print("\nratios (Keep / reference; round trips, bulk):")
    for keep, ref in (("keep-tcp", "native-tcp"), ("keep-tcp", "asyncio-tcp"),
                      ("keep-tls", "python-tls")):  # fmt: skip
        if keep in results and ref in results:
            (kr, kb), (rr, rb) = results[keep], results[ref]
            print(f"  {keep} / {ref:<12} {kr / rr:5.2f}x  {kb / rb:5.2f}x")


if __name__ == "__main__":
    main()
