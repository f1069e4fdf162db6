"""Certificate chains, CRLs and signatures as the TCB Info v2 path (``legacy.py``) checks them,
with dcap-qvl's rules: the whole chain (trust root included) must be covered by a current CRL
from each issuer, every certificate valid at the verification time, each issuer a CA. Pure.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from enarx.attestation.dcap.collateral import Collateral, _der
from enarx.errors import ChainInvalid, MalformedEvidence, SignatureInvalid

__all__ = ["UPDATE_HINT", "load_crls", "p256_verify", "verify_chain", "window"]

UPDATE_HINT = ("fetch fresh collateral (`enarx platform sgx cache QUOTE --out DIR`), or check "
               "old evidence as of a past time with --at")


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def window(start: dt.datetime, end: dt.datetime, at: dt.datetime, what: str,
            check: str = "dcap.collateral") -> None:
    if at < start:
        raise ChainInvalid(f"{check}.not_yet_valid", f"{what} is not valid yet",
                           expected=f"after {_iso(start)}", actual=_iso(at))
    if at > end:
        raise ChainInvalid(f"{check}.expired", f"{what} has expired",
                           expected=f"before {_iso(end)}", actual=_iso(at),
                           hint=UPDATE_HINT if check == "dcap.collateral" else
                           "a certificate in the chain has expired; fetch the issuer chain again")


def p256_verify(key: Any, data: bytes, sig: bytes, check: str, what: str) -> None:
    """ECDSA P-256 / SHA-256 with Intel's raw r‖s (64 bytes) signature encoding."""
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureInvalid(check, f"{what} signing key is not ECDSA P-256",
                               actual=type(key).__name__)
    if len(sig) != 64:
        raise SignatureInvalid(check, f"{what} signature must be 64 bytes (r‖s)",
                               expected=64, actual=len(sig))
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise SignatureInvalid(check, f"{what} signature does not verify") from None


def load_crls(collateral: Collateral) -> list[x509.CertificateRevocationList]:
    crls = []
    for field in ("pck_crl", "root_ca_crl"):
        try:
            crls.append(x509.load_der_x509_crl(_der(getattr(collateral, field), field)))
        except (ValueError, x509.InvalidVersion) as e:
            raise MalformedEvidence("dcap.crl.format", f"{field} does not parse: {e}") from None
    return crls


def _check_revocation(cert: x509.Certificate, issuer: x509.Certificate,
                      crls: Sequence[x509.CertificateRevocationList], at: dt.datetime) -> None:
    """Like dcap-qvl (webpki: whole chain, unknown status denied, CRL expiry enforced)."""
    name = cert.subject.rfc4514_string()
    mine = [c for c in crls if c.issuer == issuer.subject]
    if not mine:
        raise ChainInvalid("dcap.crl.missing", f"no CRL from the issuer of {name}",
                           expected=issuer.subject.rfc4514_string(),
                           actual=[c.issuer.rfc4514_string() for c in crls], hint=UPDATE_HINT)
    for crl in mine:
        try:
            ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        except (TypeError, UnsupportedAlgorithm):
            ok = False
        if not ok:
            raise ChainInvalid("dcap.crl.signature",
                               f"CRL of {issuer.subject.rfc4514_string()} is not signed by it")
        try:
            usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
            if not usage.crl_sign:
                raise ChainInvalid("dcap.crl.signature", "CRL issuer may not sign CRLs")
        except x509.ExtensionNotFound:
            pass
        if crl.next_update_utc is None:
            raise MalformedEvidence("dcap.crl.format", "CRL has no nextUpdate")
        window(crl.last_update_utc, crl.next_update_utc, at,
                f"CRL of {issuer.subject.rfc4514_string()}")
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise ChainInvalid("dcap.pck.revoked", f"{name} is revoked",
                               expected="not revoked", actual=f"serial {cert.serial_number:x}")


def verify_chain(certs: Sequence[x509.Certificate], root: x509.Certificate,
                 crls: Sequence[x509.CertificateRevocationList], at: dt.datetime,
                 what: str) -> None:
    """``certs`` (leaf first, optionally ending in the root) must chain to ``root`` at ``at``,
    with no certificate (the root included) revoked."""
    try:
        _verify_chain(list(certs), root, crls, at, what)
    # cryptography parses names, keys, extensions and CRL entries lazily.
    except (ValueError, UnsupportedAlgorithm) as e:
        raise MalformedEvidence("dcap.chain.format", f"{what}: {e}") from None


def _verify_chain(path: list[x509.Certificate], root: x509.Certificate,
                  crls: Sequence[x509.CertificateRevocationList], at: dt.datetime,
                  what: str) -> None:
    if not path:
        raise MalformedEvidence("dcap.chain.format", f"{what} has no certificate")
    root_der = root.public_bytes(Encoding.DER)
    last = path[-1]
    if last.issuer == last.subject:
        der = last.public_bytes(Encoding.DER)
        if not hmac.compare_digest(hashlib.sha256(der).digest(),
                                   hashlib.sha256(root_der).digest()):
            raise ChainInvalid(
                "dcap.chain.root", f"{what} ends in a root that is not the trusted Intel SGX root",
                expected=hashlib.sha256(root_der).hexdigest(), actual=hashlib.sha256(der).hexdigest(),
                hint="use collateral issued by Intel (PCS or a PCCS mirroring it)",
            )
        path.pop()
    path.append(root)
    for cert in path:
        window(cert.not_valid_before_utc, cert.not_valid_after_utc, at,
                cert.subject.rfc4514_string(), "dcap.chain")
    for cert, issuer in zip(path, [*path[1:], root], strict=True):
        _check_issued_by(cert, issuer, root, what)
        _check_revocation(cert, issuer, crls, at)


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, root: x509.Certificate,
                     what: str) -> None:
    name = cert.subject.rfc4514_string()
    if cert.issuer != issuer.subject:
        raise ChainInvalid("dcap.chain.root" if issuer is root else "dcap.chain.signature",
                           f"{what}: {name} is not issued by the next certificate",
                           expected=issuer.subject.rfc4514_string(),
                           actual=cert.issuer.rfc4514_string())
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise ChainInvalid("dcap.chain.signature",
                           f"{what}: signature of {name} does not verify") from None
    try:
        ca = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise ChainInvalid("dcap.chain.ca", f"{what}: issuer of {name} is not a CA",
                           actual=issuer.subject.rfc4514_string())
