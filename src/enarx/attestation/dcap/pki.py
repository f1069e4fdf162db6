"""X.509 checks both DCAP paths share (dcap-qvl in ``verify.py``, TCB Info v2 in ``legacy.py``).

* ``load_root`` / ``pem_certs`` parse certificates and their names eagerly: ``cryptography``
  decodes names lazily, so a malformed name would otherwise surface as a bare ``ValueError``
  at the first comparison, far from the input that carried it.
* ``verified_pck_path`` is the chain a result reports: the quote's own copy of the root is
  checked against the trust root (dcap-qvl anchors on the root we pass and simply ignores the
  embedded copy, so a forged copy would otherwise be listed as verified).
* ``check_tcb_signer``: TCB Info and QE Identity must be signed by Intel's TCB Signing
  certificate, issued directly by the root (Intel's QVL checks this identity; dcap-qvl 0.7 only
  checks that the signer chains to the root, so a PCK leaf key would do).

Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from enarx.attestation.dcap.quote import ParsedQuote
from enarx.attestation.result import CertInfo
from enarx.errors import ChainInvalid, MalformedEvidence

__all__ = [
    "TCB_SIGNING_CN",
    "cert_info",
    "check_chain_root",
    "check_tcb_signer",
    "der_sha256",
    "load_root",
    "pck_chain",
    "pem_certs",
    "verified_pck_path",
]

#: Common name of the certificate Intel signs TCB Info and QE Identity with.
TCB_SIGNING_CN = "Intel SGX TCB Signing"

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n]*?)-----")


def _names_parse(cert: x509.Certificate) -> None:
    """Force the lazy decoding of both names (raises ValueError when one is malformed)."""
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()


def load_root(data: bytes) -> x509.Certificate:
    """The trust root (PEM or DER); ChainInvalid ``dcap.trust_root`` when it is unusable."""
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if _PEM_CERT in data
            else x509.load_der_x509_certificate(data)
        )
        _names_parse(cert)
    except (ValueError, x509.InvalidVersion) as e:  # InvalidVersion is not a ValueError
        raise ChainInvalid("dcap.trust_root", f"trust root is not a usable certificate: {e}",
                           hint="pass the Intel SGX Root CA (PEM or DER)") from None
    return cert


def pem_certs(data: bytes, check: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, names decoded; MalformedEvidence(check) if not."""
    try:
        certs = x509.load_pem_x509_certificates(data)
        for cert in certs:
            _names_parse(cert)
    except (ValueError, x509.InvalidVersion) as e:
        raise MalformedEvidence(check, f"certificate chain does not parse: {e}") from None
    return certs


def der_sha256(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()


def _same(a: x509.Certificate, b: x509.Certificate) -> bool:
    return hmac.compare_digest(der_sha256(a), der_sha256(b))


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def cert_info(cert: x509.Certificate, when: dt.datetime) -> CertInfo:
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=der_sha256(cert).hex(),
        verify_at=when,
    )


def check_chain_root(pem: bytes, root: x509.Certificate, what: str) -> list[x509.Certificate]:
    """A self-signed certificate at the end of a collateral chain must be the trust root.

    dcap-qvl anchors on the root we pass and would reject a foreign root too; checking it
    here gives the user an error that names the chain. Returns the parsed chain.
    """
    certs = pem_certs(pem, f"dcap.{what}.format")
    if not certs:
        raise MalformedEvidence(f"dcap.{what}.format", f"{what} has no certificate")
    last = certs[-1]
    if last.issuer == last.subject and not _same(last, root):
        raise ChainInvalid(
            "dcap.chain.root",
            f"{what} ends in a root that is not the trusted Intel SGX root CA",
            expected=der_sha256(root).hex(),
            actual=der_sha256(last).hex(),
            hint="use collateral issued by Intel (PCS or a PCCS mirroring it)",
        )
    return certs


def check_tcb_signer(certs: list[x509.Certificate], root: x509.Certificate, field: str) -> None:
    """``certs[0]`` (the key that signed ``field``) must be Intel's TCB Signing certificate,
    issued directly by the trust root: a PCK or any other key chaining to the root is refused."""
    check = f"dcap.{field}.signer"
    signer = certs[0]
    names = [a.value for a in signer.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if names != [TCB_SIGNING_CN]:
        raise ChainInvalid(
            check, f"{field} is not signed by Intel's TCB Signing certificate",
            expected=f"CN={TCB_SIGNING_CN}", actual=signer.subject.rfc4514_string(),
            hint="use the issuer chain Intel PCS serves with this collateral",
        )
    if not _issued_by(signer, root):
        raise ChainInvalid(
            check, f"the {field} signing certificate is not issued by the trust root",
            expected=root.subject.rfc4514_string(), actual=signer.issuer.rfc4514_string(),
            hint="use the issuer chain Intel PCS serves with this collateral",
        )


def verified_pck_path(certs: list[x509.Certificate],
                      root: x509.Certificate) -> list[x509.Certificate]:
    """The quote's PCK chain (leaf first) as verified: every link signed by the next, and the
    embedded root, if any, byte-equal to the trust root. Returns leaf .. trust root."""
    if not certs:
        raise MalformedEvidence("dcap.chain.format", "PCK certificate chain is empty")
    path = list(certs)
    last = path[-1]
    if _same(last, root):
        path.pop()
    elif not _issued_by(last, root):
        raise ChainInvalid(
            "dcap.chain.root",
            "the quote's PCK chain ends in a certificate that is not the trust root",
            expected=f"{root.subject.rfc4514_string()} sha256={der_sha256(root).hex()}",
            actual=f"{last.subject.rfc4514_string()} sha256={der_sha256(last).hex()}",
            hint="the quote's certification data was altered; take the quote as the QE made it",
        )
    for cert, issuer in zip(path, [*path[1:], root], strict=True):
        if not _issued_by(cert, issuer):
            raise ChainInvalid(
                "dcap.chain.signature",
                f"PCK chain: {cert.subject.rfc4514_string()} is not signed by the next "
                "certificate", expected=issuer.subject.rfc4514_string(),
                actual=cert.issuer.rfc4514_string(),
            )
    return [*path, root]


def pck_chain(quote: ParsedQuote) -> tuple[list[x509.Certificate], Any]:
    """The PCK chain of a quote (certification data type 5) and the leaf's SGX extension as
    dcap-qvl parses it (None when it does not parse: the verifier then names the reason)."""
    pem = quote.sig.pck_chain_pem()
    if not pem:
        raise MalformedEvidence(
            "dcap.quote.format", "quote carries no PCK certificate chain",
            expected="certification data type 5", actual=quote.sig.cert_type,
        )
    certs = pem_certs(pem, "dcap.chain.format")
    # dcap-qvl takes the first PEM block of *any* label as the PCK leaf; cryptography skips
    # non-CERTIFICATE blocks. Unless both see the same blocks, the SVNs we report (and the
    # TCB Info v2 path matches) could come from a certificate nobody verified.
    labels = _PEM_BEGIN.findall(pem)
    if len(labels) != len(certs) or any(label != b"CERTIFICATE" for label in labels):
        raise MalformedEvidence(
            "dcap.chain.format", "PCK certification data holds PEM blocks that are not "
            "certificates", expected=f"{len(certs)} CERTIFICATE blocks",
            actual=[label.decode("ascii", "replace")[:40] for label in labels],
        )
    ext = None
    try:
        import dcap_qvl

        if certs:
            ext = dcap_qvl.parse_pck_extension_from_pem(certs[0].public_bytes(Encoding.PEM))
    except ValueError:
        ext = None  # dcap-qvl will reject the quote with a precise reason below
    return certs, ext
