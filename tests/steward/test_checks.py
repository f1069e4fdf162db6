"""The steward's request checks: what a client sent that is refused, and how refusals read."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enarx.steward.checks import check_binding, jsonable, load_csr, refusal, spki
from enarx.steward.errors import BadRequest, Refused


def _csr() -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keep")]))
           .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding

    return csr.public_bytes(Encoding.DER), key


def test_a_csr_must_be_der_and_self_signed() -> None:
    der, key = _csr()
    assert spki(load_csr(der).public_key()) == spki(key.public_key())
    for bad, words in ((b"", "empty body"), (b"PEM?", "not a DER PKCS#10"),
                       (der[:-8] + bytes(8), "not a DER|signature does not verify")):
        with pytest.raises(BadRequest, match=words):
            load_csr(bad)


def test_report_data_must_bind_the_session_and_the_refusal_names_the_rule() -> None:
    ev = SimpleNamespace(report_data=b"\1" * 64)  # all check_binding reads of the evidence
    check_binding(ev, b"\1" * 64)
    with pytest.raises(Refused) as e:
        check_binding(ev, b"\2" * 64)
    assert e.value.failed[0]["rule"] == "report_data"
    assert e.value.failed[0]["actual"] == "01" * 64


def test_refusals_carry_json_ready_rules() -> None:
    failed = [{"rule": "snp.hash", "expected": jsonable([b"\xaa"]), "actual": jsonable(b"\xbb"),
               "message": "measurement not allowed"}]
    assert failed[0]["expected"] == ["aa"] and failed[0]["actual"] == "bb"
    r = refusal("attestation refused", failed)
    assert r.message == "attestation refused: snp.hash: measurement not allowed"
    assert r.failed == failed
    assert jsonable({"k": (1, None, object)})["k"][:2] == [1, None]
