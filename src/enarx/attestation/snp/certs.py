"""AMD SEV-SNP certificates: VCEK/VLEK leaves, ASK/ASVK intermediates, ARK roots.

Certificates are parsed once into :class:`AmdCert`, a plain snapshot of what the verifier
needs, so nothing later touches the ``cryptography`` object again. That matters because AMD
issues every VCEK and VLEK with serial number 0, which RFC 5280 forbids: ``cryptography``
(46..50) loads such certificates but emits a ``CryptographyDeprecationWarning`` on load and on
every ``serial_number`` access, and says a future release will refuse them. We silence exactly
that warning, locally, here; tests/attestation/test_snp_certs.py pins the behaviour so a
``cryptography`` that refuses them fails in our tests rather than in production.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from enarx.attestation.result import CertInfo
from enarx.errors import MalformedEvidence

# AMD's OID arc for VCEK/VLEK extensions (AMD "VCEK certificate and KDS interface" spec).
_AMD = "1.3.6.1.4.1.3704.1"
OID_STRUCT_VERSION = f"{_AMD}.1"
OID_PRODUCT_NAME = f"{_AMD}.2"
OID_HWID = f"{_AMD}.4"
OID_CSPID = f"{_AMD}.5"
#: TCB component -> extension OID (the value is a DER INTEGER).
SPL_OIDS: dict[str, str] = {
    "bootloader": f"{_AMD}.3.1",  # blSPL
    "tee": f"{_AMD}.3.2",  # teeSPL
    "snp": f"{_AMD}.3.3",  # snpSPL
    "microcode": f"{_AMD}.3.8",  # ucodeSPL
    "fmc": f"{_AMD}.3.9",  # fmcSPL (Turin)
}

# AMD signs ARK/ASK/VCEK with RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt.
PSS_SHA384 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

__all__ = [
    "OID_CSPID", "OID_HWID", "OID_PRODUCT_NAME", "OID_STRUCT_VERSION", "PSS_SHA384",
    "SPL_OIDS", "AmdCert", "crl_signed_by", "is_p384", "load_cert", "load_certs", "load_crl",
    "pss_verifies", "to_der", "to_pem",
]

_SERIAL_WARNING = r"Parsed a serial number which wasn't positive"


@dataclass(frozen=True)
class AmdCert:
    """What the verifier needs from one certificate, extracted once."""

    der: bytes = field(repr=False)
    sha256: bytes
    subject: x509.Name
    issuer: x509.Name
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    public_key: Any = field(repr=False)
    tbs: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    signature_oid: str
    amd_extensions: dict[str, bytes] = field(repr=False)
    # RFC 4514 renderings, made once: rendering names costs more than the report check.
    subject_str: str = ""
    issuer_str: str = ""
    #: BasicConstraints cA and, if KeyUsage is present, keyCertSign: may it issue certificates?
    can_issue: bool = False

    @property
    def self_issued(self) -> bool:
        return self.subject == self.issuer

    def cert_info(self, at: dt.datetime | None = None) -> CertInfo:
        return CertInfo(
            subject=self.subject_str,
            issuer=self.issuer_str,
            not_before=self.not_before,
            not_after=self.not_after,
            sha256=self.sha256.hex(),
            verify_at=at,
        )

    # --- AMD extensions -------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``vcek`` (hwID extension), ``vlek`` (cspID extension) or ``ca``."""
        if OID_HWID in self.amd_extensions:
            return "vcek"
        if OID_CSPID in self.amd_extensions:
            return "vlek"
        return "ca"

    def product_name(self) -> str | None:
        raw = self.amd_extensions.get(OID_PRODUCT_NAME)
        return None if raw is None else _der_ia5(raw, "productName")

    def csp_id(self) -> str | None:
        raw = self.amd_extensions.get(OID_CSPID)
        return None if raw is None else _der_ia5(raw, "cspID")

    def hw_id(self) -> bytes | None:
        return self.amd_extensions.get(OID_HWID)

    def spls(self) -> dict[str, int]:
        """TCB SPLs present in the certificate, by component name."""
        return {
            name: _der_int(self.amd_extensions[oid], name)
            for name, oid in SPL_OIDS.items()
            if oid in self.amd_extensions
        }

    # --- signatures -----------------------------------------------------------------------

    def signed_by(self, issuer: AmdCert) -> bool:
        """True if ``issuer``'s RSA key made this certificate's RSA-PSS SHA-384 signature."""
        if self.signature_oid != SignatureAlgorithmOID.RSASSA_PSS.dotted_string:
            return False
        return pss_verifies(issuer.public_key, self.signature, self.tbs)

    def valid_at(self, at: dt.datetime) -> bool:
        return self.not_before <= at <= self.not_after


def load_certs(data: bytes, role: str) -> list[AmdCert]:
    """Parse one DER certificate or a PEM bundle. ``role`` names the check on failure."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidence(f"snp.cert.{role}", "certificate must be bytes")
    data = bytes(data)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
            )
            if b"-----BEGIN" in data:
                parsed = x509.load_pem_x509_certificates(data)
            else:
                parsed = [x509.load_der_x509_certificate(data)]
            return [_snapshot(c) for c in parsed]
    except MalformedEvidence:
        raise
    except Exception as exc:  # cryptography raises ValueError and friends for bad DER
        raise MalformedEvidence(
            f"snp.cert.{role}", f"certificate does not parse: {exc}",
            hint="pass a PEM or DER X.509 certificate",
        ) from None


def load_cert(data: bytes, role: str) -> AmdCert:
    certs = load_certs(data, role)
    if len(certs) != 1:
        raise MalformedEvidence(
            f"snp.cert.{role}", "expected exactly one certificate", expected=1, actual=len(certs)
        )
    return certs[0]


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            crl = x509.load_pem_x509_crl(bytes(data))
        else:
            crl = x509.load_der_x509_crl(bytes(data))
        crl.issuer.rfc4514_string()  # names decode lazily: a malformed one fails here
    except Exception as exc:
        raise MalformedEvidence("snp.crl", f"CRL does not parse: {exc}",
                                hint="pass the CRL AMD KDS serves (DER or PEM)") from None
    return crl


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: AmdCert) -> bool:
    return pss_verifies(issuer.public_key, crl.signature, crl.tbs_certlist_bytes)


def pss_verifies(key: Any, signature: bytes, data: bytes) -> bool:
    """True if ``key`` is RSA and made ``signature`` over ``data`` with AMD's PSS-SHA384."""
    if not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(signature, data, PSS_SHA384, hashes.SHA384())
    except (InvalidSignature, ValueError):
        return False
    return True


def is_p384(key: Any) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)


def to_der(cert: AmdCert) -> bytes:
    return cert.der


def to_pem(der: bytes) -> bytes:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _snapshot(c: x509.Certificate) -> AmdCert:
    der = c.public_bytes(serialization.Encoding.DER)
    amd: dict[str, bytes] = {}
    for ext in c.extensions:
        oid = ext.oid.dotted_string
        if oid.startswith(_AMD + ".") and isinstance(ext.value, x509.UnrecognizedExtension):
            amd[oid] = ext.value.value
    return AmdCert(
        der=der,
        sha256=hashlib.sha256(der).digest(),
        subject=c.subject,
        issuer=c.issuer,
        serial=c.serial_number,
        not_before=c.not_valid_before_utc,
        not_after=c.not_valid_after_utc,
        public_key=c.public_key(),
        tbs=c.tbs_certificate_bytes,
        signature=c.signature,
        signature_oid=c.signature_algorithm_oid.dotted_string,
        amd_extensions=amd,
        subject_str=c.subject.rfc4514_string(),
        issuer_str=c.issuer.rfc4514_string(),
        can_issue=_can_issue(c),
    )


def _can_issue(c: x509.Certificate) -> bool:
    try:
        if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return False
    except x509.ExtensionNotFound:
        return False
    try:
        return c.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        return True


def _der_int(raw: bytes, name: str) -> int:
    """Decode a short DER INTEGER (AMD SPL extensions hold 0..255)."""
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2 or raw[1] > 8:
        raise MalformedEvidence(f"snp.cert.{name}", "SPL extension is not a DER INTEGER",
                                actual=raw)
    return int.from_bytes(raw[2:], "big", signed=True)


def _der_ia5(raw: bytes, name: str) -> str:
    if len(raw) < 2 or raw[0] != 0x16 or raw[1] != len(raw) - 2:
        raise MalformedEvidence(f"snp.cert.{name}", "extension is not a short IA5String",
                                actual=raw)
    try:
        return raw[2:].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedEvidence(f"snp.cert.{name}", "extension is not ASCII") from None
