"""steward.ca: certificates that OpenSSL and Python's ssl accept, with the right contents."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.errors import ConfigError, UsageError
from enarx.steward.ca import StewardCA, general_name, general_names
from enarx.steward.extensions import (
    CmwEvidence,
    cmw_extension,
    find_cmw,
    find_workload,
    workload_extension,
)

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl not installed")
WORKLOAD = "sha384:" + "ab" * 48


@pytest.fixture(scope="module")
def ca() -> StewardCA:
    return StewardCA.create("test steward CA")


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30,
                          check=False)


def leaf(ca: StewardCA, **kw: object) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    exts = [cmw_extension(CmwEvidence("snp", b"R" * 1184, (b"vcek",), b'{"nonce":"n"}')),
            workload_extension(WORKLOAD)]
    cert = ca.issue(key.public_key(), ["keep.example.com", "127.0.0.1"],
                    dt.timedelta(hours=24), exts, **kw)  # type: ignore[arg-type]
    return key, cert


def test_ca_certificate(ca: StewardCA) -> None:
    cert = ca.cert
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey) and ca.key.curve.name == "secp384r1"
    assert cert.subject == cert.issuer
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=3000)


def test_leaf_contents(ca: StewardCA) -> None:
    key, cert = leaf(ca)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == ca.cert.subject
    assert 0 < cert.serial_number < 1 << 160
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert dt.timedelta(hours=24) <= life <= dt.timedelta(hours=24, minutes=6)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_cert_sign
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["keep.example.com"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    ev = find_cmw(cert)
    assert ev is not None and ev.report == b"R" * 1184 and ev.certs == (b"vcek",)
    assert find_workload(cert) == (True, WORKLOAD)
    assert all(not e.critical for e in cert.extensions
               if isinstance(e.value, x509.UnrecognizedExtension))
    cert.verify_directly_issued_by(ca.cert)


def test_serials_are_random_and_serial_can_be_given(ca: StewardCA) -> None:
    serials = {leaf(ca)[1].serial_number for _ in range(8)}
    assert len(serials) == 8
    assert leaf(ca, serial=12345)[1].serial_number == 12345


def test_validity_is_cut_at_the_ca_expiry() -> None:
    now = dt.datetime.now(dt.UTC)
    short = StewardCA.create("short", now=now, validity=dt.timedelta(hours=1))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = short.issue(key.public_key(), [], dt.timedelta(days=30), now=now)
    assert cert.not_valid_after_utc == short.cert.not_valid_after_utc
    with pytest.raises(ValueError):
        short.issue(key.public_key(), [], dt.timedelta(0), now=now)


@needs_openssl
def test_openssl_parses_and_verifies(ca: StewardCA, tmp_path: Path) -> None:
    _, cert = leaf(ca)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "leaf.pem").write_bytes(pem(cert))
    text = openssl("x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text.stdout
    assert "DNS:keep.example.com, IP Address:127.0.0.1" in text.stdout
    assert "1.3.6.1.5.5.7.1.35" in text.stdout or "id-pe-cmw" in text.stdout.lower()
    assert "1.3.6.1.4.1.58270.2.1" in text.stdout
    for purpose in ("sslserver", "sslclient"):
        ok = openssl("verify", "-purpose", purpose, "-CAfile", str(tmp_path / "ca.pem"),
                     str(tmp_path / "leaf.pem"))
        assert ok.returncode == 0 and ": OK" in ok.stdout, ok.stderr
    other = StewardCA.create("other")
    (tmp_path / "other.pem").write_bytes(other.cert_pem)
    bad = openssl("verify", "-CAfile", str(tmp_path / "other.pem"), str(tmp_path / "leaf.pem"))
    assert bad.returncode != 0


def test_server_cert_serves_tls_for_localhost_and_loopback(ca: StewardCA,
                                                          tmp_path: Path) -> None:
    key_pem, chain_pem = ca.server_cert(["steward.internal"])
    (tmp_path / "key.pem").write_bytes(key_pem)
    (tmp_path / "chain.pem").write_bytes(chain_pem)
    chain = x509.load_pem_x509_certificates(chain_pem)
    assert chain[1] == ca.cert
    san = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "steward.internal"]
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"hi")
                except (ssl.SSLError, OSError):
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ssl.create_default_context(cadata=ca.cert_pem.decode())
        for host in ("localhost", "127.0.0.1"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    client.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.recv(2) == b"hi"
        thread.join(timeout=10)


def test_from_pem_round_trip_and_refusals(ca: StewardCA) -> None:
    again = StewardCA.from_pem(ca.key_pem(), ca.cert_pem)
    assert again.cert == ca.cert
    key = ec.generate_private_key(ec.SECP256R1())
    _, cert = leaf(again)
    cert.verify_directly_issued_by(ca.cert)
    other_key = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    with pytest.raises(ConfigError, match="does not belong"):
        StewardCA.from_pem(other_key, ca.cert_pem)
    with pytest.raises(ConfigError, match="not an unencrypted PEM"):
        StewardCA.from_pem(b"garbage", ca.cert_pem)
    with pytest.raises(ConfigError, match="not PEM"):
        StewardCA.from_pem(ca.key_pem(), b"garbage")
    # A leaf certificate is not a CA, even with its own key.
    leaf_cert = ca.issue(key.public_key(), [], dt.timedelta(hours=1))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with pytest.raises(ConfigError, match="not a CA") as e:
        StewardCA.from_pem(key_pem, pem(leaf_cert), path="crt.pem")
    assert e.value.exit_code == 2 and "crt.pem" in e.value.message


def test_rsa_ca_from_pem_signs_too(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    rca = StewardCA.from_pem(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), pem(cert))
    issued = rca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), ["a.example"],
                       dt.timedelta(hours=1))
    issued.verify_directly_issued_by(cert)


@pytest.mark.parametrize("bad", ["", "a..b", "-a.example", "a_b.example", "x" * 64 + ".com",
                                 "*.com", "exa mple.com", "a.example/x"])
def test_bad_sans_are_usage_errors(ca: StewardCA, bad: str) -> None:
    with pytest.raises(UsageError):
        general_names([bad])


def test_good_sans() -> None:
    names = general_names(["Keep.Example.com.", "*.svc.example", "::1", "10.0.0.1",
                           "keep.example.com"])
    assert names == [x509.DNSName("keep.example.com"), x509.DNSName("*.svc.example"),
                     x509.IPAddress(ipaddress.ip_address("::1")),
                     x509.IPAddress(ipaddress.ip_address("10.0.0.1"))]


def test_unsupported_key_types(ca: StewardCA) -> None:
    with pytest.raises(UsageError):
        ca.issue(ed25519.Ed25519PrivateKey.generate().public_key(), [], dt.timedelta(hours=1))


@pytest.mark.parametrize("name", ["\u212aeep.example", "keep.\u0130xample", "ke\u00e9p.example"])
def test_non_ascii_names_are_refused_not_folded(name: str) -> None:
    # str.lower() maps KELVIN SIGN to "k": folding first would issue "keep.example" for a
    # name the policy never saw.
    with pytest.raises(UsageError):
        general_names([name])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_general_name(text: str) -> None:
    try:
        g = general_name(text)
    except UsageError:
        return
    if isinstance(g, x509.DNSName):
        assert g.value.isascii() and g.value == text.removesuffix(".").lower()


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["key", "cert"]))
def test_fuzz_from_pem(junk: bytes, which: str) -> None:
    ca = _SHARED
    body = b"-----BEGIN CERTIFICATE-----\n" + junk + b"\n-----END CERTIFICATE-----\n"
    with contextlib.suppress(ConfigError):
        if which == "key":
            StewardCA.from_pem(junk, ca.cert_pem)
        else:
            StewardCA.from_pem(ca.key_pem(), body)


_SHARED = StewardCA.create("fuzz")


def test_expired_or_future_ca_refuses_to_issue() -> None:
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    old = StewardCA.create("old", now=start, validity=dt.timedelta(days=1))
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ConfigError, match="not valid now") as e:
        old.issue(key, [], dt.timedelta(hours=1))
    assert e.value.hint and "renew" in e.value.hint
    with pytest.raises(ConfigError):
        old.server_cert()
    with pytest.raises(ConfigError):
        old.issue(key, [], dt.timedelta(hours=1), now=start - dt.timedelta(days=1))
    assert old.issue(key, [], dt.timedelta(hours=1), now=start).not_valid_after_utc == \
        start + dt.timedelta(hours=1)


def _pem_files(tmp: Path, name: str, key: ec.EllipticCurvePrivateKey,
               chain: list[x509.Certificate]) -> tuple[Path, Path]:
    k, c = tmp / f"{name}.key", tmp / f"{name}.pem"
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    c.write_bytes(b"".join(pem(x) for x in chain))
    return k, c


def test_keep_leaves_work_for_mutual_tls(ca: StewardCA, tmp_path: Path) -> None:
    """A Keep certificate with its evidence extensions serves TLS, and another Keep's
    certificate authenticates as a TLS client to it (serverAuth + clientAuth)."""
    server_key, server_cert = leaf(ca)
    client_key, client_cert = leaf(ca)
    sk, sc = _pem_files(tmp_path, "server", server_key, [server_cert, ca.cert])
    ck, cc = _pem_files(tmp_path, "client", client_key, [client_cert, ca.cert])
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(sc, sk)
    server_ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    seen: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    seen.append(tls.getpeercert(binary_form=True))
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as e:
                seen.append(e)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        client = ssl.create_default_context(cadata=ca.cert_pem.decode())
        client.load_cert_chain(cc, ck)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="keep.example.com") as tls:
            assert tls.recv(2) == b"ok"
            served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        thread.join(timeout=10)
    assert find_cmw(served) is not None and find_workload(served) == (True, WORKLOAD)
    assert seen == [client_cert.public_bytes(serialization.Encoding.DER)]
