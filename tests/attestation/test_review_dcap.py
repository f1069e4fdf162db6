"""Adversarial review, DCAP: the TCB an SGX/TDX result reports must come from the PCK
certificate that was verified, never from other bytes the attacker put next to it."""

from __future__ import annotations

import base64
import datetime as dt
import struct
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dcap_support import load_dcap

from enarx.attestation.dcap.quote import HEADER_LEN, SGX_REPORT_LEN, parse_quote
from enarx.errors import AttestationError, MalformedEvidence
from enarx.platform.collateral import Fetcher, fetch_dcap_collateral

SGX_EXT = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
# DER prefix of the OIDs 1.2.840.113741.1.13.1.2.<n> (TCB components, PCESVN, CPUSVN).
_TCB_OID_PREFIX = bytes.fromhex("060B2A864886F84D010D0102")


def _raised_tcb_extension(leaf: x509.Certificate) -> bytes:
    """The leaf's Intel SGX extension with every TCB SVN raised to at least 127, in place."""
    value = bytearray(leaf.extensions.get_extension_for_oid(SGX_EXT).value.value)  # type: ignore[attr-defined]
    i = 0
    while (i := value.find(_TCB_OID_PREFIX, i)) != -1:
        j = i + len(_TCB_OID_PREFIX) + 1  # skip the last arc byte
        if value[j] == 0x02 and value[j + 1] == 1 and value[j + 2] < 0x7F:  # 1-byte INTEGER
            value[j + 2] = 0x7F
        if value[j] == 0x04 and value[j + 1] == 16:  # CPUSVN OCTET STRING
            for k in range(j + 2, j + 18):
                value[k] = max(value[k], 0x7F)
        i = j
    return bytes(value)


def _self_made_pck(extension: bytes) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(5)
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=9000))
            .add_extension(x509.UnrecognizedExtension(SGX_EXT, extension), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _with_cert_data(quote: bytes, cert_data: bytes) -> bytes:
    """A v3 quote with its certification data (PCK chain) replaced; nothing signed changes."""
    parsed = parse_quote(quote)
    body_end = HEADER_LEN + SGX_REPORT_LEN
    sig = parsed.raw[body_end + 4:]
    auth_len = struct.unpack_from("<H", sig, 64 + 64 + 384 + 64)[0]
    cd_at = 64 + 64 + 384 + 64 + 2 + auth_len
    cert_type = struct.unpack_from("<H", sig, cd_at)[0]
    new_sig = sig[:cd_at] + struct.pack("<HI", cert_type, len(cert_data)) + cert_data
    return parsed.raw[:body_end] + struct.pack("<I", len(new_sig)) + new_sig


def _smuggled_quote(name: str) -> bytes:
    """The vector's quote with a self-made 'PCK' (better TCB) in a non-CERTIFICATE PEM block
    ahead of the genuine chain."""
    v = load_dcap("sgx", name)
    parsed = parse_quote(v.quote)
    leaf = x509.load_pem_x509_certificates(parsed.sig.pck_chain_pem())[0]
    fake = _self_made_pck(_raised_tcb_extension(leaf))
    block = b"-----BEGIN JUNK-----\n" + base64.encodebytes(fake) + b"-----END JUNK-----\n"
    return _with_cert_data(v.quote, block + parsed.sig.cert_data)


def test_tcb_info_v2_path_cannot_be_fed_a_better_tcb_from_an_unverified_pem_block() -> None:
    # dcaprs-sgx-v3 is OutOfDate. The forged block carries higher SVNs; if the TCB level were
    # matched against it, the quote would come out with a better status.
    v = load_dcap("sgx", "dcaprs-sgx-v3")
    quote = _smuggled_quote("dcaprs-sgx-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(quote)
    assert err.value.check == "dcap.chain.format"
    assert err.value.expected is not None and err.value.actual is not None


def test_dcap_qvl_path_rejects_the_same_smuggled_block() -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    quote = _smuggled_quote("dcapqvl-sgx-v3")
    with pytest.raises(AttestationError):
        v.verify(quote)


@pytest.mark.parametrize("name", ["dcaprs-sgx-v3", "dcapqvl-sgx-v3"])
def test_reported_tcb_is_the_verified_pck_certificates(name: str) -> None:
    # The genuine quote: Tcb.reported (what min_tcb policies judge) equals the SVNs in the
    # PCK leaf that the chain check verified, decoded here independently of enarx.
    v = load_dcap("sgx", name)
    leaf = x509.load_pem_x509_certificates(parse_quote(v.quote).sig.pck_chain_pem())[0]
    ext = leaf.extensions.get_extension_for_oid(SGX_EXT).value.value  # type: ignore[attr-defined]
    at = ext.find(_TCB_OID_PREFIX + b"\x12")  # CPUSVN, arc 18
    assert ext[at + 13] == 0x04 and ext[at + 14] == 16
    cpu_svn = list(ext[at + 15 : at + 31])
    ev = v.verify()
    assert [ev.tcb.reported[f"sgx_comp{i:02d}"] for i in range(1, 17)] == cpu_svn


def test_far_time_is_a_typed_error_not_an_overflow() -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    east = dt.timezone(dt.timedelta(hours=1))
    with pytest.raises(MalformedEvidence) as err:
        v.verify(at=dt.datetime.min.replace(tzinfo=east))
    assert err.value.check == "dcap.time"


# --- collateral fetched from a PCCS that writes times without a zone ---------------------------


@pytest.fixture
def pccs() -> Iterator[dict[str, tuple[bytes, dict[str, str]]]]:
    """A real HTTP server on 127.0.0.1; the dict maps path+query -> (body, headers)."""
    routes: dict[str, tuple[bytes, dict[str, str]]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, headers = routes.get(self.path, (b"", {}))
            self.send_response(200 if body else 404)
            for k, val in headers.items():
                self.send_header(k, val)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    routes["_url"] = (f"http://127.0.0.1:{server.server_address[1]}".encode(), {})
    yield routes
    server.shutdown()
    server.server_close()


def test_zoneless_next_update_from_a_pccs_is_read_as_utc(
    pccs: dict[str, tuple[bytes, dict[str, str]]], tmp_path: Path,
) -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    url = pccs["_url"][0].decode()
    chain = urllib.parse.quote(v.files["tcb_info_issuer_chain.pem"].decode())
    fmspc = v.manifest["evidence"]["fmspc"].upper()
    zoneless = v.files["tcb_info.json"].replace(b'Z"', b'"')
    assert zoneless != v.files["tcb_info.json"]
    pccs[f"/sgx/certification/v4/tcb?fmspc={fmspc}"] = (
        zoneless, {"TCB-Info-Issuer-Chain": chain})
    pccs["/sgx/certification/v4/qe/identity"] = (
        v.files["qe_identity.json"], {"SGX-Enclave-Identity-Issuer-Chain": chain})
    pccs["/sgx/certification/v4/pckcrl?ca=processor&encoding=der"] = (
        v.files["pck_crl.der"], {"SGX-PCK-CRL-Issuer-Chain": chain})
    pccs["/root.der"] = (v.files["root_ca_crl.der"], {})
    files = fetch_dcap_collateral(v.quote, Fetcher(tmp_path / "cache"), pcs_url=url,
                                  root_crl_url=f"{url}/root.der")
    assert files["tcb_info.json"] == zoneless
