"""Networking of VM Keeps: forwarded listeners with TLS inside the VM, outward connections, the
host-loopback mapping (enarx.vm.guestnet) and the QEMU netdev arguments (enarx.vm.network).

One test boots a VM (TLS listener pinned with curl + tcp and tls connects to servers on the
host's loopback); the rest run without booting.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enarx.errors import ResourceError, UsageError
from enarx.vm import guestnet, network
from enarx.vm.network import Forward, NetSpec
from enarx.vm.qemu import VmSpec, command_line
from tests.cliutil import ENARX, RunEnarx
from tests.guestbuild import build_c
from tests.net.netkeep import need_tool
from tests.net.netpki import Pki, make_pki
from tests.quiethttp import QuietHTTPServer

KVM = ("--backend", "kvm")
BOOT = 400.0  # seconds until the Keep listens: image, TCG boot, Python + wasmtime in the VM


# --- helpers -----------------------------------------------------------------------------------


def _free_port(addr: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


class _LineEcho:
    """A one-connection server on ``addr``: reads a line, answers it, records it, and waits
    for the client to close."""

    def __init__(self, addr: str = "127.0.0.1", ctx: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server((addr, 0))
        self.port = int(self.sock.getsockname()[1])
        self.ctx = ctx
        self.got = b""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(60)
            if self.ctx is not None:
                conn = self.ctx.wrap_socket(conn, server_side=True)
            with conn:
                while not self.got.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    self.got += chunk
                conn.sendall(self.got)
                # then wait for the Keep to close (as servers do): closing with bytes unread
                # would reset the connection, and QEMU's user networking may then drop the
                # answer before it reaches the VM
                with contextlib.suppress(OSError, ssl.SSLError):
                    while conn.recv(1024):
                        pass
        except (OSError, ssl.SSLError) as e:
            self.error = e

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)


class _Relay:
    """One connection relayed to ``target`` through the host, every byte recorded."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.seen = bytearray()
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: tuple[str, int]) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.sock.accept()
            upstream = socket.create_connection(target, timeout=120)
            pumps = [threading.Thread(target=self._pump, args=(a, b), daemon=True)
                     for a, b in ((client, upstream), (upstream, client))]
            for t in pumps:
                t.start()
            for t in pumps:
                t.join(150)
            client.close()
            upstream.close()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.seen += data
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)


def _toml(*entries: str) -> str:
    body = ['kind = "stdin"', 'kind = "stdout"', 'kind = "stderr"', *entries]
    return "".join(f"[[files]]\n{e.strip()}\n\n" for e in body)


def _listen(port: int, prot: str = "tls", addr: str = "127.0.0.1") -> str:
    return f'kind = "listen"\nname = "web"\nprot = "{prot}"\naddr = "{addr}"\nport = {port}'


def _connect(name: str, host: str, port: int, prot: str, extra: str = "") -> str:
    return (f'kind = "connect"\nname = "{name}"\nprot = "{prot}"\nhost = "{host}"\n'
            f"port = {port}\n{extra}")


# --- one boot: TLS listener pinned from the host, tcp and tls connects outward ---------------


def test_tls_listener_pinned_by_curl_and_connects_to_the_hosts_loopback(
        tmp_path: Path, vm_env: dict[str, str], module_cache: Path) -> None:
    curl = need_tool("curl")
    pki = make_pki(tmp_path / "pki")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    plain, tls = _LineEcho(), _LineEcho(ctx=server_ctx)
    (tmp_path / "ca.pem").write_bytes(pki.ca.read_bytes())  # relative to Enarx.toml
    cfg = tmp_path / "Enarx.toml"
    # port = 0: the host picks a free port, forwards it and the VM listens on the same one
    cfg.write_text(_toml(_listen(0), _connect("echo", "127.0.0.1", plain.port, "tcp"),
                         _connect("secure", "localhost", tls.port, "tls", 'trust = "ca.pem"')))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    env.update(vm_env, ENARX_CACHE_DIR=str(module_cache))
    env.setdefault("ENARX_VM_BOOT_TIMEOUT", "240")
    proc = subprocess.Popen([str(ENARX), "run", *KVM, "--wasmcfgfile", str(cfg),
                             str(build_c("vm_net.c")), "4", "5"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        err: list[str] = []
        deadline = time.monotonic() + BOOT
        pin = None
        while pin is None and time.monotonic() < deadline:
            line = proc.stderr.readline().decode()
            if not line:
                break
            err.append(line)
            if m := re.search(r"public key pin (\S+)", line):
                pin = m.group(1)
        assert pin is not None, "".join(err)
        text = "".join(err)
        # the host forwards the configured address and the port it picked; TLS in the VM
        m = re.search(r"files\[3\] \(web\): host 127\.0\.0\.1:(\d+) -> VM Keep port (\d+) "
                      r"\(TLS terminated inside the VM", text)
        assert m is not None and m.group(1) == m.group(2), text
        port = int(m.group(1))
        assert port != 0 and f"listening on 127.0.0.1:{port} (tls)" in text
        assert "self-signed, one-time key" in text
        url = f"https://127.0.0.1:{port}/"
        base = [curl, "--silent", "--show-error", "--http0.9", "--tlsv1.3", "-k",
                "--max-time", "120"]
        bad = subprocess.run([*base, "--pinnedpubkey", "sha256//" + "A" * 43 + "=", url],
                             capture_output=True, timeout=150)
        assert bad.returncode == 90, bad.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
        relay = _Relay(("127.0.0.1", port))  # what the host's side of the forward carries
        try:
            good = subprocess.run([*base, "--pinnedpubkey", pin,
                                   f"https://127.0.0.1:{relay.port}/"], capture_output=True,
                                  timeout=150)
        finally:
            relay.close()
        assert good.returncode == 0, good.stderr
        assert good.stdout.startswith(b"vm:GET / HTTP/1.1\r\n"), good.stdout
        # TLS ends inside the VM: the host relayed records, never the request or the answer
        assert b"\x17\x03\x03" in relay.seen
        assert b"GET / HTTP" not in relay.seen and b"vm:GET" not in relay.seen
        out, rest = proc.communicate(timeout=120)
        assert proc.returncode == 0, text + rest.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        plain.close()
        tls.close()
    lines = out.decode().splitlines()
    # tcp to 127.0.0.1 and tls to localhost (checked against ca.pem for "localhost") both
    # reached the servers on this host's loopback
    assert lines[:2] == ["4:hello from the keep", "5:hello from the keep"], out
    assert lines[-1] == "served"
    assert plain.got == b"hello from the keep\n" and tls.got == b"hello from the keep\n"
    assert plain.error is None and tls.error is None


# --- refused before booting ------------------------------------------------------------------


def test_port_in_use_is_refused_before_booting(enarx: RunEnarx, tmp_path: Path) -> None:
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(_toml(_listen(port, "tcp")))
    try:
        start = time.monotonic()
        r = enarx("run", *KVM, "--wasmcfgfile", cfg, build_c("vm_net.c"),
                  env={"ENARX_VM_IMAGE_CACHE": str(tmp_path / "no-image"),
                       "ENARX_VM_ACCEL": "tcg"})
        took = time.monotonic() - start
    finally:
        holder.close()
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert f"files[3] (web): cannot forward 127.0.0.1:{port} into the VM Keep" in err
    assert "Address already in use" in err and "hint: another program holds this port" in err
    assert "Traceback" not in err and "TCG" not in err  # nothing booted, no image built
    assert not (tmp_path / "no-image").exists()
    assert took < 60


def test_ipv6_listen_addresses_are_refused(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(_toml(_listen(8443, addr="fe80::1")))
    r = enarx("run", *KVM, "--wasmcfgfile", cfg, build_c("vm_net.c"),
              env={"ENARX_VM_IMAGE_CACHE": str(tmp_path / "no-image")})
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "files[3] (web): cannot forward the IPv6 address fe80::1 into a VM Keep" in err
    assert "hint: listen on `::` (all addresses)" in err
    assert not (tmp_path / "no-image").exists()


# --- QEMU arguments (no boot) ----------------------------------------------------------------


def _entries(*texts: str) -> list[object]:
    from enarx import config

    files = config.loads(_toml(*texts)).files
    assert files is not None
    return list(files)


def test_plan_and_qemu_args() -> None:
    assert network.plan(_entries()) is None  # no socket entries: no NIC at all
    net = network.plan(_entries(_listen(8443), _listen(8080, "tcp", "::").replace("web", "p")))
    assert net == NetSpec(forwards=(Forward("127.0.0.1", 8443, "tls", "files[3] (web)"),
                                    Forward("0.0.0.0", 8080, "tcp", "files[4] (p)")),
                          outbound=False)
    assert network.qemu_args(net) == [
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8443-:8443,"
        "hostfwd=tcp:0.0.0.0:8080-:8080",
        "-device", "virtio-net-pci,netdev=net0,romfile="]
    out = network.plan(_entries(_connect("db", "localhost", 5432, "tls")))
    assert out == NetSpec(outbound=True)
    assert network.qemu_args(out)[1] == "user,id=net0,restrict=off"
    assert network.plan(_entries(), outbound=True) == NetSpec(outbound=True)
    assert network.plan(_entries(_listen(443, addr="::1")), ) == NetSpec(
        forwards=(Forward("127.0.0.1", 443, "tls", "files[3] (web)"),))
    named = network.plan(_entries(_listen(9000, addr="localhost")),
                         resolve=lambda name, where: "127.0.0.1")
    assert named is not None and named.forwards[0].host_addr == "127.0.0.1"
    with pytest.raises(UsageError, match="already used by files\\[3\\]"):
        network.plan(_entries(_listen(8443), _listen(8443, "tcp").replace("web", "b")))
    # port = 0: the host picks each one (here 40001, 40002) and tells the VM which
    picks = iter([40001, 40002])
    zero = network.plan(_entries(_listen(0), _listen(0, "tcp").replace("web", "b")),
                        pick=lambda addr: next(picks))
    assert zero is not None
    assert [(f.port, f.picked) for f in zero.forwards] == [(40001, True), (40002, True)]
    assert network.request(zero, {})["picked"] == {"files[3] (web)": 40001,
                                                   "files[4] (b)": 40002}

    spec = VmSpec(kernel="k", initrd="i", append="a", agent_socket="s", console_log="c")
    plain = command_line("tcg", spec)
    assert "-netdev" not in plain and not any("virtio-net" in a for a in plain)
    from dataclasses import replace

    with_net = command_line("tcg", replace(spec, net=net))
    assert with_net[:len(plain)] == plain and with_net[len(plain):] == network.qemu_args(net)


def test_qemu_forwarding_error_becomes_the_port_in_use_error() -> None:
    net = NetSpec(forwards=(Forward("127.0.0.1", 8443, "tls", "files[3] (web)"),))
    qemu_says = ("qemu-system-x86_64: -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"
                 "8443-:8443: Could not set up host forwarding rule 'tcp:127.0.0.1:8443-:8443'")
    e = network.qemu_error(qemu_says, net)
    assert isinstance(e, ResourceError) and e.exit_code == 2
    assert e.message == ("files[3] (web): cannot forward 127.0.0.1:8443 into the VM Keep: "
                         "Address already in use")
    assert e.hint is not None and "another program holds this port" in e.hint
    assert network.qemu_error("qemu: some other failure", net) is None


def test_check_ports_finds_a_held_port_and_accepts_a_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        with pytest.raises(ResourceError, match="Address already in use"):
            network.check_ports(NetSpec(forwards=(Forward("127.0.0.1", port, "tcp", "w"),)))
    network.check_ports(NetSpec(forwards=(Forward("127.0.0.1", _free_port(), "tcp", "w"),)))


def test_pem_files_of_socket_entries_are_read_for_the_vm(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("CA PEM\n")
    files = _entries(_connect("db", "localhost", 5432, "tls", 'trust = "ca.pem"'),
                     _connect("web", "example.org", 443, "tls"))
    assert network.resolve_files(files, str(tmp_path)) == {"ca.pem": "CA PEM\n"}
    with pytest.raises(ResourceError, match=r"cannot read ca\.pem"):
        network.resolve_files(files, str(tmp_path / "elsewhere"))


# --- the guest's view of the host's loopback (no boot) --------------------------------------


def test_loopback_mapping_is_pure_and_only_for_loopback_hosts() -> None:
    for host in ("127.0.0.1", "localhost", "LOCALHOST", "::1", "[::1]", "127.1.2.3",
                 "api.localhost"):
        assert guestnet.is_loopback(host), host
        assert guestnet.dial_host(host, "10.0.2.2") == "10.0.2.2"
        assert guestnet.dial_host(host, None) == host  # not in a VM Keep: unchanged
    for host in ("10.0.2.2", "example.org", "192.168.1.1", "localhost.example.org", "::2"):
        assert not guestnet.is_loopback(host), host
        assert guestnet.dial_host(host, "10.0.2.2") == host
    with pytest.raises(ValueError, match="not an IP address"):
        guestnet.dial_host("localhost", "gateway")
    assert guestnet.forward_addr("::") == "0.0.0.0"
    assert guestnet.forward_addr("::1") == "127.0.0.1"
    assert guestnet.forward_addr("192.0.2.7") == "192.0.2.7"
    assert guestnet.forward_addr("::ffff:192.0.2.7") == "192.0.2.7"
    assert guestnet.forward_addr("keep.example") is None
    assert guestnet.shown_addr("::") == "0.0.0.0" and guestnet.shown_addr("fe80::1") == "fe80::1"
    env = {guestnet.HOST_LOOPBACK_ENV: "10.0.2.2"}
    assert guestnet.listen_addr("127.0.0.1", env) == "0.0.0.0"
    assert guestnet.listen_addr("127.0.0.1", {}) == "127.0.0.1"
    ports = {guestnet.LISTEN_PORTS_ENV: '{"files[3] (web)": 40001}'}
    assert guestnet.listen_port("files[3] (web)", 0, ports) == 40001
    assert guestnet.listen_port("files[4] (b)", 0, ports) == 0  # not picked: any port
    assert guestnet.listen_port("files[3] (web)", 8443, ports) == 8443  # fixed stays
    assert guestnet.listen_port("files[3] (web)", 0, {}) == 0
    assert guestnet.listen_port("files[3] (web)", 0, {guestnet.LISTEN_PORTS_ENV: "[1]"}) == 0


@contextlib.contextmanager
def _https_on(addr: str, pki: Pki) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server on ``addr`` (certificate for localhost/127.0.0.1/::1) that answers
    every GET with the Host header it received."""
    hosts: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hosts.append(self.headers["Host"])
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer((addr, 0), Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield int(server.server_address[1]), hosts
    finally:
        server.shutdown()
        server.server_close()
        t.join(10)


def test_http_clients_dial_the_mapped_address_and_verify_the_original_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server listens on 127.0.0.2 only, with a certificate for localhost: a client asked
    for https://localhost reaches it only through the mapping, and the TLS check passes
    only if it is made against "localhost" (not the dialled address)."""
    pki = make_pki(tmp_path / "pki")
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    monkeypatch.delenv(guestnet.HOST_LOOPBACK_ENV, raising=False)
    assert guestnet.httpx_transport(ctx) is None  # outside a VM Keep: httpx's own transport
    with _https_on("127.0.0.2", pki) as (port, hosts):
        monkeypatch.setenv(guestnet.HOST_LOOPBACK_ENV, "127.0.0.2")
        transport = guestnet.httpx_transport(ctx)
        assert transport is not None
        with httpx.Client(transport=transport) as client:
            r = client.get(f"https://localhost:{port}/x")
        assert (r.status_code, r.text) == (200, "ok")
        conn = guestnet.https_connection("localhost", port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/y")
            assert conn.getresponse().read() == b"ok"
        finally:
            conn.close()
        assert hosts == [f"localhost:{port}", f"localhost:{port}"]
        monkeypatch.delenv(guestnet.HOST_LOOPBACK_ENV)
        # nothing listens on 127.0.0.1:port
        with pytest.raises(httpx.ConnectError), httpx.Client(verify=ctx) as client:
            client.get(f"https://localhost:{port}/x")


def test_keep_connect_entries_use_the_mapping(enarx: RunEnarx, tmp_path: Path) -> None:
    """keep/sockets.py as the inner run in a VM uses it: `localhost` dials the mapped
    address (here 127.0.0.2, where the server is), TLS still checks "localhost"."""
    pki = make_pki(tmp_path / "pki")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    tls = _LineEcho("127.0.0.2", ctx)
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(_toml('kind = "null"',
                         _connect("db", "localhost", tls.port, "tls", f'trust = "{pki.ca}"')))
    try:
        r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, build_c("vm_net.c"), "4",
                  env={guestnet.HOST_LOOPBACK_ENV: "127.0.0.2"}, timeout=60,
                  input=b"")
    finally:
        tls.close()
    assert b"4:hello from the keep\n" in r.stdout, r.stderr
    assert tls.got == b"hello from the keep\n"
