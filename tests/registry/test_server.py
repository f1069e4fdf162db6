"""``enarx registry serve`` as a real process on 127.0.0.1: TLS with its own CA, tokens from
``enarx registry token create``, private repositories read with steward-issued client
certificates, interrupted uploads, clean stop."""

from __future__ import annotations

import datetime as dt
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.steward.ca import StewardCA
from enarx.steward.extensions import workload_extension
from tests.cliutil import ENARX
from tests.registry.server import API, Pkg, RegistryServer, content_digest, register

OTHER = "sha384:" + "ab" * 48


def _pkg() -> Pkg:
    return Pkg({"main.wasm": (b"\0asm\x01\0\0\0PRIVATE-MARKER", "application/wasm"),
                "data/x.txt": (b"x" * 5000, "text/plain")})


def _keep_cert(ca: StewardCA, tmp: Path, name: str, identity: str | None,
               *, validity: dt.timedelta = dt.timedelta(hours=1)) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    ext = [workload_extension(identity)]
    cert = ca.issue(key.public_key(), ["keep.local"], validity, ext)
    crt, kf = tmp / f"{name}.crt", tmp / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return crt, kf


def _client(srv: RegistryServer, cert: tuple[Path, Path] | None = None,
            token: str | None = None) -> httpx.Client:
    assert srv.ca is not None
    ctx = ssl.create_default_context(cafile=str(srv.ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, verify=ctx, headers=headers, timeout=30)


@pytest.fixture
def steward_ca(tmp_path: Path) -> tuple[StewardCA, Path]:
    ca = StewardCA.create("test steward CA")
    pem = tmp_path / "steward-ca.pem"
    pem.write_bytes(ca.cert_pem)
    return ca, pem


@pytest.fixture
def tls_registry(tmp_path: Path, steward_ca: tuple[StewardCA, Path]) -> Iterator[RegistryServer]:
    srv = RegistryServer(tmp_path / "reg", "--steward-ca", str(steward_ca[1]), tls=True)
    yield srv
    srv.stop()


def test_private_repo_readable_by_allowed_keep_certificates(
        tmp_path: Path, tls_registry: RegistryServer,
        steward_ca: tuple[StewardCA, Path]) -> None:
    srv, (ca, _) = tls_registry, steward_ca
    assert srv.url.startswith("https://127.0.0.1:")
    token = srv.token("alice")
    pkg = _pkg()
    with _client(srv, token=token) as owner:
        register(owner, "alice", "app", public=False, workloads=[OTHER])
        assert set(pkg.publish(owner, "alice", "app", "1.0.0")) == {201}
    tree = f"{API}/alice/app/_tag/1.0.0/tree/main.wasm"
    own = _keep_cert(ca, tmp_path, "own", pkg.identity)        # the package's own identity
    listed = _keep_cert(ca, tmp_path, "listed", OTHER)          # in the repo's allow list
    stranger = _keep_cert(ca, tmp_path, "stranger", "sha384:" + "cd" * 48)
    unbound = _keep_cert(ca, tmp_path, "unbound", None)
    rogue_ca = StewardCA.create("rogue")
    rogue = _keep_cert(rogue_ca, tmp_path, "rogue", pkg.identity)
    with _client(srv, own) as c:
        r = c.get(tree)
        assert r.status_code == 200 and r.content == pkg.nodes["main.wasm"][0]
        assert c.get(f"{API}/alice/app/_tag/1.0.0").status_code == 200
        # the tag list is metadata: any steward-issued Keep certificate reads it
        assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
    with _client(srv, listed) as c:
        assert c.get(tree).status_code == 200
        assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
    with _client(srv, stranger) as c:  # metadata yes (to attest), contents no
        assert c.get(f"{API}/alice/app/_tag/1.0.0").status_code == 200
        assert c.get(f"{API}/alice/app/_tag/1.0.0/tree/").status_code == 200
        r = c.get(tree)
        assert r.status_code == 403 and "allow" in r.json()["hint"]
        assert "PRIVATE-MARKER" not in r.text
    with _client(srv, unbound) as c:  # a certificate that binds no workload grants nothing
        assert c.get(tree).status_code == 401
    with _client(srv) as c:
        r = c.get(tree)
        assert r.status_code == 401 and "steward" in r.json()["hint"]
    # a certificate from another CA does not even complete the TLS handshake
    with _client(srv, rogue) as c, pytest.raises(httpx.HTTPError):
        c.get(tree)
    # one JSON line per write or refusal, and never the token
    log = "\n".join(srv.lines)
    assert '"status": 403' in log and '"method": "PUT"' in log
    assert token not in log and "PRIVATE-MARKER" not in log
    # the server's own key and CA key are private
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE((srv.state / name).stat().st_mode) == 0o600


def test_expired_keep_certificate_is_refused(tmp_path: Path, tls_registry: RegistryServer,
                                             steward_ca: tuple[StewardCA, Path]) -> None:
    srv, (ca, _) = tls_registry, steward_ca
    pkg = _pkg()
    with _client(srv, token=srv.token("alice")) as owner:
        register(owner, "alice", "app", public=False)
        pkg.publish(owner, "alice", "app", "1.0.0")
    old = _keep_cert(ca, tmp_path, "old", pkg.identity, validity=dt.timedelta(seconds=1))
    time.sleep(2.5)
    with _client(srv, old) as c, pytest.raises(httpx.HTTPError):
        c.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm")


def _raw_put(url: str, path: str, headers: dict[str, str], body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        head = f"PUT {path} HTTP/1.1\r\nhost: {host}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode() + body)
        time.sleep(0.3)  # then hang up mid-body


def test_interrupted_upload_leaves_nothing(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg")
    try:
        token = srv.token("alice")
        pkg = Pkg({"main.wasm": (b"\0asm" + b"M" * 300_000, "application/wasm")})
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            register(c, "alice", "app")
            pkg.publish(c, "alice", "app", "1.0.0", skip={"main.wasm"})
            body, mtype = pkg.nodes["main.wasm"]
            _raw_put(srv.url, f"{API}/alice/app/_tag/1.0.0/tree/main.wasm", {
                "authorization": f"Bearer {token}", "content-type": mtype,
                "content-length": str(len(body)), "content-digest": content_digest(body)},
                body[: len(body) // 2])
            deadline = time.monotonic() + 10
            while list((srv.state / "blobs" / "tmp").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert list((srv.state / "blobs" / "tmp").iterdir()) == []
            assert c.get(f"{API}/alice/app/_tag").json() == []
            assert c.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm").status_code == 404
            # the upload can simply be done again
            r = c.put(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm", content=body,
                      headers={"content-type": mtype, "content-digest": content_digest(body)})
            assert r.status_code == 201
            assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
    finally:
        assert srv.stop(signal.SIGTERM) == 0


def test_restart_keeps_packages_and_tokens(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg")
    token = srv.token("alice")
    pkg = _pkg()
    with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
        register(c, "alice", "app")
        pkg.publish(c, "alice", "app", "1.0.0")
    assert srv.stop(signal.SIGINT) == 0
    srv = RegistryServer(tmp_path / "reg")
    try:
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            r = c.get(f"{API}/alice/app/_tag/1.0.0/tree/data/x.txt")
            assert r.content == b"x" * 5000
            assert c.put(f"{API}/alice/app2", json={"public": True}).status_code == 201
    finally:
        srv.stop()


def test_bad_command_lines(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(ENARX), "registry", *args], capture_output=True, timeout=60)

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    for args in (["serve", "--state-dir", str(tmp_path / "s"), "--steward-ca", str(bad)],
                 ["serve", "--state-dir", str(tmp_path / "s"), "--steward-ca",
                  str(tmp_path / "missing.pem")],
                 ["serve", "--state-dir", str(tmp_path / "s"), "--tls-cert", str(bad)],
                 ["serve", "--db", "mysql://x", "--state-dir", str(tmp_path / "s")],
                 ["token", "create", "--user", "not valid!", "--state-dir", str(tmp_path)]):
        out = run(*args)
        err = out.stderr.decode()
        assert out.returncode == 2, (args, err)
        assert "error:" in err and "hint:" in err and "Traceback" not in err, err
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        out = run("serve", "--insecure-http", "--port", str(busy.getsockname()[1]),
                  "--state-dir", str(tmp_path / "s2"))
        assert out.returncode == 2 and b"cannot listen" in out.stderr
    finally:
        busy.close()


def test_full_disk_during_upload_is_a_clear_error(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg", fsize_limit=400_000)
    try:
        token = srv.token("alice")
        pkg = Pkg({"main.wasm": (b"\0asm" + b"F" * 600_000, "application/wasm")})
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            register(c, "alice", "app")
            codes = pkg.publish(c, "alice", "app", "1.0.0")
            assert codes[:2] == [201, 201] and codes[2] == 507
            body, mtype = pkg.nodes["main.wasm"]
            r = c.put(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm", content=body,
                      headers={"content-type": mtype, "content-digest": content_digest(body)})
            assert r.status_code == 507 and "free space" in r.json()["hint"]
            assert list((srv.state / "blobs" / "tmp").iterdir()) == []
            assert c.get(f"{API}/alice/app/_tag").json() == []
            # smaller packages still go through: the registry stays usable and consistent
            small = Pkg({"main.wasm": (b"\0asm small", "application/wasm")})
            assert set(small.publish(c, "alice", "app", "1.0.1")) == {201}
            assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.1"]
    finally:
        assert srv.stop() == 0


def test_token_create_and_restart_spare_uploads_in_progress(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg")
    try:
        token = srv.token("alice")
        pkg = Pkg({"main.wasm": (b"\0asm" + b"P" * 400_000, "application/wasm")})
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            register(c, "alice", "app")
            pkg.publish(c, "alice", "app", "1.0.0", skip={"main.wasm"})
        body, mtype = pkg.nodes["main.wasm"]
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            head = (f"PUT {API}/alice/app/_tag/1.0.0/tree/main.wasm HTTP/1.1\r\nhost: {host}\r\n"
                    f"authorization: Bearer {token}\r\ncontent-type: {mtype}\r\n"
                    f"content-length: {len(body)}\r\ncontent-digest: {content_digest(body)}"
                    "\r\nconnection: close\r\n\r\n")
            s.sendall(head.encode() + body[:200_000])
            tmp = srv.state / "blobs" / "tmp"
            deadline = time.monotonic() + 10
            while not list(tmp.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list(tmp.iterdir())
            srv.token("bob")  # opens the same state directory meanwhile
            assert list(tmp.iterdir())  # the upload's temp file is still there
            s.sendall(body[200_000:])
            reply = s.recv(100)
        assert reply.startswith(b"HTTP/1.1 201"), reply
    finally:
        srv.stop()


def test_remove_stale_only_removes_old_leftovers(tmp_path: Path) -> None:
    import os

    from enarx.registry.blobs import BlobStore

    blobs = BlobStore(tmp_path / "blobs")
    old, fresh = blobs.tmp / "upload-old", blobs.tmp / "upload-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert blobs.remove_stale() == 1
    assert not old.exists() and fresh.exists()


def test_encrypted_package_readable_by_its_plaintext_identity(
        tmp_path: Path, tls_registry: RegistryServer,
        steward_ca: tuple[StewardCA, Path]) -> None:
    from enarx.package.crypt import MANIFEST_MEDIA_TYPE, MANIFEST_NAME, Manifest

    srv, (ca, _) = tls_registry, steward_ca
    plain = "sha384:" + "5a" * 48
    manifest = Manifest(plain, "enarx-package/key/" + "5a" * 48).to_bytes()
    enc = Pkg({"main.wasm": (b"ciphertext" * 100, "application/vnd.enarx.package.encrypted.v1"),
               MANIFEST_NAME: (manifest, MANIFEST_MEDIA_TYPE)})
    # the same manifest under another media type is just a file: it grants nothing
    disguised = Pkg({"main.wasm": (b"other" * 100, "application/wasm"),
                     MANIFEST_NAME: (manifest, "application/json")})
    with _client(srv, token=srv.token("alice")) as owner:
        register(owner, "alice", "vault", public=False)
        assert set(enc.publish(owner, "alice", "vault", "1.0.0")) == {201}
        assert set(disguised.publish(owner, "alice", "vault", "2.0.0")) == {201}
    keep = _keep_cert(ca, tmp_path, "keep", plain)
    with _client(srv, keep) as c:
        r = c.get(f"{API}/alice/vault/_tag/1.0.0/tree/main.wasm")
        assert r.status_code == 200 and r.content == b"ciphertext" * 100
        assert c.get(f"{API}/alice/vault/_tag/2.0.0/tree/main.wasm").status_code == 403
        # the manifest is metadata (what a Keep reads to know what to attest as) ...
        other = _keep_cert(ca, tmp_path, "other", OTHER)
    with _client(srv, other) as c:
        r = c.get(f"{API}/alice/vault/_tag/1.0.0/tree/{MANIFEST_NAME}")
        assert r.status_code == 200 and r.content == manifest
        # ... the manifest-named file of a plaintext package is not, nor the ciphertext
        assert c.get(f"{API}/alice/vault/_tag/2.0.0/tree/{MANIFEST_NAME}").status_code == 403
        assert c.get(f"{API}/alice/vault/_tag/1.0.0/tree/main.wasm").status_code == 403


def test_a_read_token_reads_private_metadata_but_no_contents_and_writes_nothing(
        tls_registry: RegistryServer) -> None:
    srv = tls_registry
    pkg = _pkg()
    with _client(srv, token=srv.token("alice")) as owner:
        register(owner, "alice", "app", public=False)
        assert set(pkg.publish(owner, "alice", "app", "1.0.0")) == {201}
        register(owner, "alice", "pub", public=True)
    read = srv.token("alice", "--read")
    assert read and read != srv.token("alice")
    base = f"{API}/alice/app/_tag/1.0.0"
    with _client(srv, token=read) as c:
        assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
        assert c.get(base).content == pkg.tag_body()
        assert c.get(f"{base}/tree/").content == pkg.nodes[""][0]
        assert c.get(f"{base}/tree/data").content == pkg.nodes["data"][0]
        for path in ("main.wasm", "data/x.txt"):
            r = c.get(f"{base}/tree/{path}")
            assert r.status_code == 403 and "Keep" in r.json()["hint"], r.text
            assert "PRIVATE-MARKER" not in r.text
        body = b"\0asm\x01\0\0\0"
        r = c.put(f"{API}/alice/pub/_tag/2.0.0", content=body, headers={
            "content-type": "application/vnd.drawbridge.entry.v1+json",
            "content-digest": content_digest(body)})
        assert r.status_code == 403 and "read token" in r.json()["detail"]
    with _client(srv, token=srv.token("bob", "--read")) as c:  # another user's: nothing
        assert c.get(base).status_code == 403
    # revoking alice's tokens revokes her read tokens too
    out = subprocess.run([str(ENARX), "registry", "token", "revoke", "--user", "alice",
                          "--state-dir", str(srv.state)], capture_output=True, check=True)
    assert b"revoked 3 tokens" in out.stderr
    with _client(srv, token=read) as c:
        assert c.get(base).status_code == 401


def test_stalled_upload_times_out_and_leaves_nothing(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg", "--idle-timeout", "1")
    try:
        token = srv.token("alice")
        pkg = Pkg({"main.wasm": (b"\0asm" + b"S" * 100_000, "application/wasm")})
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            register(c, "alice", "app")
            pkg.publish(c, "alice", "app", "1.0.0", skip={"main.wasm"})
        body, mtype = pkg.nodes["main.wasm"]
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.settimeout(20)
            head = (f"PUT {API}/alice/app/_tag/1.0.0/tree/main.wasm HTTP/1.1\r\nhost: {host}\r\n"
                    f"authorization: Bearer {token}\r\ncontent-type: {mtype}\r\n"
                    f"content-length: {len(body)}\r\ncontent-digest: {content_digest(body)}"
                    "\r\n\r\n")
            s.sendall(head.encode() + body[:1000])  # ... and then nothing
            reply = b""
            while b"}" not in reply and (chunk := s.recv(4096)):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"publish again" in reply
        assert list((srv.state / "blobs" / "tmp").iterdir()) == []
    finally:
        srv.stop()


def test_revoked_tokens_are_refused_at_once(tmp_path: Path) -> None:
    srv = RegistryServer(tmp_path / "reg")
    try:
        token, other = srv.token("alice"), srv.token("bob")
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {token}"}) as c:
            assert c.put(f"{API}/alice", json={"subject": "alice"}).status_code == 201
            out = subprocess.run([str(ENARX), "registry", "token", "revoke", "--user", "alice",
                                  "--state-dir", str(srv.state)], capture_output=True,
                                 timeout=60, check=True)
            assert b"revoked 1 token of alice" in out.stderr
            r = c.get(f"{API}/alice")
            assert r.status_code == 401 and r.json()["detail"] == "unknown bearer token"
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {other}"}) as c:
            assert c.put(f"{API}/bob", json={"subject": "bob"}).status_code == 201
    finally:
        srv.stop()


def test_two_registries_share_one_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Replicas: one PostgreSQL, one blob directory (here: the same state directory)."""
    a = RegistryServer(tmp_path / "reg", "--db", pg_url)
    b = RegistryServer(tmp_path / "reg", "--db", pg_url)
    try:
        token = a.token("alice", "--db", pg_url)
        pkg = _pkg()
        with httpx.Client(base_url=a.url, headers={"authorization": f"Bearer {token}"}) as c:
            register(c, "alice", "app")
            assert set(pkg.publish(c, "alice", "app", "1.0.0")) == {201}
        with httpx.Client(base_url=b.url, headers={"authorization": f"Bearer {token}"}) as c:
            assert c.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
            r = c.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm")
            assert r.content == pkg.nodes["main.wasm"][0]
            assert c.put(f"{API}/alice/app", json={"public": True}).status_code == 409
        assert not (tmp_path / "reg" / "registry.db").exists()
    finally:
        a.stop()
        b.stop()
