"""The steward's request checks and refusal shapes: pure helpers the service composes.

CSR loading and self-signature check, SPKI bytes, trust-root fingerprints, the REPORT_DATA
binding check (constant time), and the JSON form of failed policy rules that every refusal
carries. No I/O, no state.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from enarx.attestation.result import VerifiedEvidence
from enarx.errors import AttestationError
from enarx.steward.errors import BadRequest, Refused

__all__ = ["check_binding", "failures", "fingerprint", "jsonable", "load_csr", "refusal", "spki",
           "verification_failed"]


def fingerprint(cert_pem_or_der: bytes) -> str:
    try:
        cert = (x509.load_pem_x509_certificate(cert_pem_or_der)
                if cert_pem_or_der.lstrip().startswith(b"-----")
                else x509.load_der_x509_certificate(cert_pem_or_der))
    except (ValueError, x509.InvalidVersion) as exc:
        raise BadRequest(f"trust root is not a certificate: {exc}") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def failures(appraisal: Any) -> list[dict[str, Any]]:
    out = []
    for f in getattr(appraisal, "failed", []):
        out.append({"rule": str(f.rule), "expected": jsonable(f.expected),
                    "actual": jsonable(f.actual), "message": str(f.message)})
    return out


def jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, str | int | float | bool):
        return v
    return str(v)


def verification_failed(exc: AttestationError) -> Refused:
    failed = [{"rule": exc.check, "expected": jsonable(exc.expected),
               "actual": jsonable(exc.actual), "message": exc.detail}]
    return Refused(f"evidence did not verify: {exc.message}", failed=failed,
                   hint=exc.hint or "the evidence must come from a genuine TEE and bind this "
                   "request's nonce and key")


def load_csr(csr_der: bytes) -> x509.CertificateSigningRequest:
    if not csr_der:
        raise BadRequest("empty body: expected a DER PKCS#10 certificate request")
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise BadRequest("body is not a DER PKCS#10 certificate request",
                         hint="send the CSR as DER with Content-Type: application/pkcs10") from None
    try:
        ok = csr.is_signature_valid
    except (UnsupportedAlgorithm, ValueError):  # e.g. an unknown signature algorithm
        ok = False
    if not ok:
        raise BadRequest("the CSR's signature does not verify with its own key")
    return csr


def spki(key: Any) -> bytes:
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def check_binding(ev: VerifiedEvidence, expected: bytes) -> None:
    """REPORT_DATA must be the key-broker binding of this session (constant-time compare)."""
    if not hmac.compare_digest(ev.report_data, expected):
        raise Refused("the evidence does not bind this request's nonce, key and workload",
                      failed=[{"rule": "report_data", "expected": expected.hex(),
                               "actual": ev.report_data.hex(),
                               "message": "REPORT_DATA must be SHA-384(JCS(runtime-data))"}],
                      hint="make the evidence for this session's nonce and this key")


def refusal(prefix: str, failed: list[dict[str, Any]]) -> Refused:
    return Refused(prefix + ": " + "; ".join(f"{f['rule']}: {f['message']}" for f in failed),
                   failed=failed,
                   hint="the failed rules list what the policy expected and what it got")
