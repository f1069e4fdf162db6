"""TLS listeners against real clients (openssl s_client, curl, Python ssl): TLS 1.3 only,
pinned by the printed fingerprint / public-key pin, mTLS, and only ciphertext on the wire."""

from __future__ import annotations

import hmac
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.net.netkeep import (
    IO_TIMEOUT,
    Keep,
    StartKeep,
    guest,
    listen,
    need_tool,
    pinning_context,
    toml,
)
from tests.net.netpki import Pki, make_pki

MARKER = b"PLAINTEXT-MARKER-5f3a9c"


def two_listeners(start_keep: StartKeep, count: int, extra: str = "") -> Keep:
    """net_poll with a TLS listener on fd 3 and a plaintext one on fd 4."""
    config = toml(listen("web", "tls", extra=extra), listen("plain", "tcp"))
    return start_keep(guest("net_poll.c"), config, [str(count)]).wait_listening(2)


def test_openssl_s_client_sees_tls13_and_the_pinned_certificate(start_keep: StartKeep) -> None:
    keep = two_listeners(start_keep, 1)
    host, port = keep.addr("web")
    r = subprocess.run(
        [need_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-ign_eof"],
        input=MARKER + b"\n", capture_output=True, timeout=IO_TIMEOUT,
    )  # fmt: skip
    out = r.stdout.decode()
    assert f"3:{MARKER.decode()}" in out
    assert re.search(r"New, TLSv1\.3, Cipher is TLS_", out), out
    pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", out, re.S)
    assert pem, out
    # Pin: openssl's own fingerprint of the certificate it received equals the printed one.
    fp = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=pem.group(0).encode(), capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    assert hmac.compare_digest(fp, f"sha256 Fingerprint={keep.fingerprint['web']}")
    cert = x509.load_pem_x509_certificate(pem.group(0).encode())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert cert.subject == cert.issuer  # self-signed: no steward configured
    rc, gout, err = keep.finish()
    assert rc == 0, gout + err


def test_guest_close_sends_close_notify(start_keep: StartKeep) -> None:
    """A guest that just closes its connection ends TLS with close_notify, so clients can
    tell the end of the stream from a truncation (openssl s_client then exits 0)."""
    keep = two_listeners(start_keep, 2)
    host, port = keep.addr("web")
    ctx = pinning_context()
    with ctx.wrap_socket(socket.create_connection((host, port), timeout=IO_TIMEOUT),
                         suppress_ragged_eofs=False) as s:
        s.sendall(b"bye\n")
        data = b""
        while chunk := s.recv(64):  # SSLEOFError here = closed without close_notify
            data += chunk
    assert data == b"3:bye\n"
    r = subprocess.run(
        [need_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-ign_eof"],
        input=b"again\n", capture_output=True, timeout=IO_TIMEOUT,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert b"3:again" in r.stdout
    rc, out, err = keep.finish()
    assert rc == 0, out + err


def test_openssl_s_client_tls12_is_refused(start_keep: StartKeep) -> None:
    keep = two_listeners(start_keep, 2)
    host, port = keep.addr("web")
    r = subprocess.run(
        [need_tool("openssl"), "s_client", "-connect", f"{host}:{port}", "-tls1_2"],
        input=b"x\n", capture_output=True, timeout=IO_TIMEOUT,
    )  # fmt: skip
    assert r.returncode != 0
    assert b"alert protocol version" in r.stdout + r.stderr
    with keep.connect_tls("web") as s:  # TLS 1.3 still works afterwards
        s.sendall(b"after\n")
        assert s.recv(64) == b"3:after\n"
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.splitlines()[:2] == ["dropped on fd 3", "served on fd 3"]


def test_curl_with_pinned_public_key(start_keep: StartKeep) -> None:
    keep = two_listeners(start_keep, 2)
    host, port = keep.addr("web")
    url = f"https://{host}:{port}/"
    base = [need_tool("curl"), "--silent", "--show-error", "--http0.9", "--tlsv1.3", "-k"]
    wrong = "sha256//" + "A" * 43 + "="
    bad = subprocess.run([*base, "--pinnedpubkey", wrong, url], capture_output=True, timeout=30)
    assert bad.returncode == 90, bad.stderr  # CURLE_SSL_PINNEDPUBKEYNOTMATCH
    good = subprocess.run(
        [*base, "--pinnedpubkey", keep.pin["web"], url], capture_output=True, timeout=30
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout == b"3:GET / HTTP/1.1\r\n"  # net_poll's answer: its fd and our line
    rc, out, err = keep.finish()
    assert rc == 0, out + err


class Relay:
    """A TCP relay in front of the Keep that records every byte in each direction."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = bytearray()
        self.down = bytearray()
        self.ls = socket.create_server(("127.0.0.1", 0))
        self.port = self.ls.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []

    def serve_one(self) -> None:
        self.ls.settimeout(IO_TIMEOUT)
        client, _ = self.ls.accept()
        upstream = socket.create_connection(self.target, timeout=IO_TIMEOUT)
        self.socks += [client, upstream]
        for src, dst, log in ((client, upstream, self.up), (upstream, client, self.down)):
            t = threading.Thread(target=self._pump, args=(src, dst, log), daemon=True)
            t.start()
            self.threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray) -> None:
        try:
            while data := src.recv(65536):
                log += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def join(self) -> None:
        for t in self.threads:
            t.join(IO_TIMEOUT)
        for s in (*self.socks, self.ls):
            s.close()


@contextmanager
def relay(keep: Keep, name: str) -> Iterator[Relay]:
    r = Relay(keep.addr(name))
    t = threading.Thread(target=r.serve_one, daemon=True)
    t.start()
    yield r
    t.join(IO_TIMEOUT)
    r.join()


def test_host_side_wire_carries_only_ciphertext(start_keep: StartKeep) -> None:
    keep = two_listeners(start_keep, 2)
    with relay(keep, "web") as tls_wire:
        ctx = pinning_context()
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", tls_wire.port))) as s:
            s.sendall(MARKER + b"\n")
            assert s.recv(100) == b"3:" + MARKER + b"\n"
    # The same through the plaintext listener: the relay does see the marker there.
    with (
        relay(keep, "plain") as tcp_wire,
        socket.create_connection(("127.0.0.1", tcp_wire.port)) as s,
    ):
        s.sendall(MARKER + b"\n")
        assert s.recv(100) == b"4:" + MARKER + b"\n"
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert MARKER in tcp_wire.up and MARKER in tcp_wire.down
    for wire in (tls_wire.up, tls_wire.down):
        assert MARKER not in wire
        assert b"\x17\x03\x03" in wire  # TLS application-data records
    assert tls_wire.down[:3] == b"\x16\x03\x03"  # the Keep's first bytes: a handshake record


def test_mutual_tls_with_client_ca(start_keep: StartKeep, pki: Pki) -> None:
    keep = two_listeners(start_keep, 3, extra=f'client_ca = "{pki.ca}"')
    assert any("clients must present a certificate" in line for line in keep.stderr.lines)
    # No client certificate: the Keep aborts the handshake (TLS 1.3: seen on first read).
    with pytest.raises((ssl.SSLError, ConnectionError)), keep.connect_tls("web") as s:
        s.sendall(b"anonymous\n")
        s.recv(64)
    # A certificate from another CA: refused too.
    other = pki.dir / "other-ca"

    stranger = make_pki(other, "stranger CA")
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        keep.connect_tls("web", cert=stranger.client_cert, key=stranger.client_key) as s,
    ):
        s.sendall(b"stranger\n")
        s.recv(64)
    with keep.connect_tls("web", cert=pki.client_cert, key=pki.client_key) as s:
        s.sendall(b"trusted\n")
        assert s.recv(64) == b"3:trusted\n"
    rc, out, err = keep.finish()
    assert rc == 0, out + err
    assert out.splitlines()[:3] == ["dropped on fd 3", "dropped on fd 3", "served on fd 3"]


def test_bad_client_ca_file_names_the_entry(enarx, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "Enarx.toml"
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    cfg.write_text(toml(listen("web", "tls", extra='client_ca = "junk.pem"')))
    r = enarx("run", "--backend", "nil", "--wasmcfgfile", cfg, guest("net_poll.c"))
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "files[3] (web): client_ca file" in err and "junk.pem" in err
    assert "Traceback" not in err
