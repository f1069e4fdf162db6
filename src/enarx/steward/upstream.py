"""Upstream Enarx CSRs: PKCS#10 requests carrying evidence under 1.3.6.1.4.1.58270.1.x.

An upstream Keep makes a one-time key, puts a hash of its DER SubjectPublicKeyInfo into
REPORT_DATA (SNP: SHA-384, SGX: SHA-256, zero-padded to 64 bytes) and sends a CSR with an empty
subject whose only attribute is ``extensionRequest`` holding one non-critical extension:

* ``1.3.6.1.4.1.58270.1.1`` KVM: empty value (no evidence at all);
* ``1.3.6.1.4.1.58270.1.2`` SGX: ``SEQUENCE { quote OCTET STRING, crls CrlList,
  SEQUENCE { SEQUENCE OF Certificate (TCB Signing chain), tcbInfo OCTET STRING (PCS JSON) } }``;
* ``1.3.6.1.4.1.58270.1.3`` SNP: ``SEQUENCE { SEQUENCE { vcek Certificate, crls CrlList },
  report OCTET STRING }``;

where ``CrlList ::= SEQUENCE { SEQUENCE OF SEQUENCE { url UTF8String, crl CertificateList } }``
(one level deeper than it reads). ``parse_upstream_csr`` decodes all of that (pure, strict DER,
typed ``ProtocolError`` on anything malformed); ``verify_upstream`` verifies the evidence with
our verifiers and checks the SPKI binding. Upstream's SGX evidence has no QE Identity, which
DCAP verification needs (the QE report is appraised against it); unless the caller supplies
one it is refused with check ``upstream.sgx.qe_identity``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from asn1crypto import core  # type: ignore[import-untyped]
from asn1crypto import crl as acrl
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation.result import VerifiedEvidence
from enarx.errors import AttestationError, EnarxError, ProtocolError

__all__ = [
    "OID_KVM",
    "OID_SGX",
    "OID_SNP",
    "UpstreamCsr",
    "expected_report_data_upstream",
    "parse_upstream_bundle",
    "parse_upstream_csr",
    "verify_upstream",
]

OID_KVM = "1.3.6.1.4.1.58270.1.1"
OID_SGX = "1.3.6.1.4.1.58270.1.2"
OID_SNP = "1.3.6.1.4.1.58270.1.3"
_KINDS: dict[str, Literal["kvm", "sgx", "snp"]] = {
    OID_KVM: "kvm", OID_SGX: "sgx", OID_SNP: "snp",
}
_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
_SAN = "2.5.29.17"
_HINT = "send a CSR as upstream Enarx Keeps make it (see docs/steward.md, upstream route)"

Kind = Literal["kvm", "sgx", "snp"]


# --- ASN.1 ----------------------------------------------------------------------------------


class _CrlListEntry(core.Sequence):  # type: ignore[misc]
    _fields = [("url", core.UTF8String), ("crl", acrl.CertificateList)]


class _CrlEntries(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _CrlListEntry


class _CrlList(core.Sequence):  # type: ignore[misc]
    _fields = [("crls", _CrlEntries)]


class _SnpCertificates(core.Sequence):  # type: ignore[misc]
    _fields = [("vcek", ax509.Certificate), ("crl", _CrlList)]


class _SnpEvidence(core.Sequence):  # type: ignore[misc]
    _fields = [("crts", _SnpCertificates), ("report", core.OctetString)]


class _Certificates(core.SequenceOf):  # type: ignore[misc]
    _child_spec = ax509.Certificate


class _TcbPackage(core.Sequence):  # type: ignore[misc]
    _fields = [("crts", _Certificates), ("report", core.OctetString)]


class _SgxEvidence(core.Sequence):  # type: ignore[misc]
    _fields = [("quote", core.OctetString), ("crl", _CrlList), ("tcb", _TcbPackage)]


class _CertReqs(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.Any


# --- the parsed request -----------------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamCsr:
    """A verified-signature upstream CSR and its decoded evidence (not yet verified)."""

    der: bytes
    public_key: Any  # cryptography public key
    spki_der: bytes
    kind: Kind
    report: bytes = b""  # SNP attestation report or SGX quote v3
    certs: tuple[bytes, ...] = ()  # SNP: (VCEK,); SGX: TCB Signing chain as sent
    crls: tuple[tuple[str, bytes], ...] = ()  # (url, DER CRL)
    tcb_info: bytes = b""  # SGX: the PCS TCB Info document, exact bytes
    sans: tuple[str, ...] = field(default=())  # DNS names / IPs requested in subjectAltName


def _bad(message: str) -> ProtocolError:
    return ProtocolError("InvalidRequest", message, hint=_HINT)


def _strict(spec: type[core.Asn1Value], data: bytes, what: str) -> Any:
    """Decode ``data`` as ``spec`` completely (every nested value, no trailing bytes)."""
    try:
        value = spec.load(data, strict=True)
        if spec is _CertReqs:
            for item in value:  # split only: each CSR is then parsed on its own
                item.dump()
        else:
            value.native  # noqa: B018 -- forces asn1crypto's lazy parse of every member
        return value
    except EnarxError:
        raise
    except Exception as e:  # asn1crypto raises ValueError, TypeError, KeyError, ... lazily
        raise _bad(f"{what} is not valid DER: {type(e).__name__}: {e}"[:300]) from None


def _crls(value: Any, what: str) -> tuple[tuple[str, bytes], ...]:
    out = []
    for entry in value["crls"]:
        der = entry["crl"].dump()
        try:
            x509.load_der_x509_crl(der)
        except ValueError as e:
            raise _bad(f"{what}: CRL from {entry['url'].native} does not parse: {e}") from None
        out.append((str(entry["url"].native), der))
    return tuple(out)


def _cert(der: bytes, what: str) -> bytes:
    try:
        with warnings.catch_warnings():
            # AMD issues VCEKs with serial 0 (see attestation/snp/certs.py).
            warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
            x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as e:
        raise _bad(f"{what} does not parse: {e}") from None
    return der


def parse_upstream_csr(der: bytes) -> UpstreamCsr:
    """Decode an upstream CSR (``application/pkcs10``): signature, attributes, the one
    58270.1.x evidence extension (non-critical) and optional SANs. ``ProtocolError`` else."""
    if not isinstance(der, bytes | bytearray | memoryview) or not der:
        raise _bad("the body is empty; expected a DER PKCS#10 certificate request")
    der = bytes(der)
    try:
        csr = x509.load_der_x509_csr(der)
        sig_ok = csr.is_signature_valid
        attributes = list(csr.attributes)
        extensions = list(csr.extensions)
        public_key = csr.public_key()
        spki = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except (ValueError, TypeError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as e:
        raise _bad(f"not a DER PKCS#10 certificate request: {e}"[:300]) from None
    except Exception as e:  # cryptography raises a few odd types for unsupported keys
        raise _bad(f"certificate request is not supported: {type(e).__name__}: {e}"[:300]) \
            from None
    if not sig_ok:
        raise _bad("the certificate request's signature does not verify")
    for attr in attributes:
        if attr.oid.dotted_string != _EXTENSION_REQUEST:
            raise _bad(f"unsupported CSR attribute {attr.oid.dotted_string} "
                       "(only extensionRequest is allowed)")
    evidence: list[x509.Extension[Any]] = []
    sans: tuple[str, ...] = ()
    for ext in extensions:
        oid = ext.oid.dotted_string
        if oid in _KINDS:
            evidence.append(ext)
        elif oid == _SAN and isinstance(ext.value, x509.SubjectAlternativeName):
            names = list(ext.value)
            if not all(isinstance(n, x509.DNSName | x509.IPAddress) for n in names):
                raise _bad("only DNS names and IP addresses may be requested as SANs")
            sans = tuple(str(n.value) for n in names)
        else:
            raise _bad(f"extension {oid} is not supported in an upstream CSR")
    if len(evidence) != 1:
        raise ProtocolError(
            "Unauthorized" if not evidence else "InvalidRequest",
            "the request carries no attestation evidence" if not evidence
            else "the request carries more than one evidence extension",
            hint=_HINT,
        )
    ext = evidence[0]
    kind = _KINDS[ext.oid.dotted_string]
    if ext.critical:
        raise _bad(f"the {kind} evidence extension must not be critical")
    value = ext.value.value if isinstance(ext.value, x509.UnrecognizedExtension) else b""
    base = UpstreamCsr(der=der, public_key=public_key, spki_der=spki, kind=kind, sans=sans)
    if kind == "kvm":
        if value:
            raise _bad("the kvm evidence extension must be empty")
        return base
    if kind == "snp":
        ev = _strict(_SnpEvidence, value, "snp evidence")
        return replace(
            base,
            report=bytes(ev["report"].native),
            certs=(_cert(ev["crts"]["vcek"].dump(), "snp VCEK"),),
            crls=_crls(ev["crts"]["crl"], "snp"),
        )
    ev = _strict(_SgxEvidence, value, "sgx evidence")
    return replace(
        base,
        report=bytes(ev["quote"].native),
        certs=tuple(_cert(c.dump(), "sgx TCB certificate") for c in ev["tcb"]["crts"]),
        crls=_crls(ev["crl"], "sgx"),
        tcb_info=bytes(ev["tcb"]["report"].native),
    )


def parse_upstream_bundle(der: bytes) -> list[UpstreamCsr]:
    """Decode ``application/vnd.steward.pkcs10-bundle.v1``: ``SEQUENCE OF CertReq``."""
    seq = _strict(_CertReqs, bytes(der), "CSR bundle")
    if len(seq) == 0:
        raise _bad("the CSR bundle is empty")
    return [parse_upstream_csr(item.dump()) for item in seq]


def expected_report_data_upstream(spki_der: bytes, kind: str) -> bytes:
    """REPORT_DATA an upstream Keep of ``kind`` puts in its evidence for this key."""
    if kind == "snp":
        digest = hashlib.sha384(spki_der).digest()
    elif kind == "sgx":
        digest = hashlib.sha256(spki_der).digest()
    else:
        raise ValueError(f"{kind} evidence carries no report_data")
    return digest.ljust(64, b"\0")


# --- verification -----------------------------------------------------------------------------


def verify_upstream(
    csr: UpstreamCsr,
    *,
    at: dt.datetime | None = None,
    trust_roots: Sequence[bytes] = (),
    snp_verifier: Any = None,
    sgx_qe_identity: tuple[bytes, bytes] | None = None,
    sgx_trust_root: bytes | None = None,
) -> VerifiedEvidence | None:
    """Verify the CSR's evidence as of ``at`` (default now) and its binding to the CSR key.

    Returns None for KVM (no evidence: the policy decides whether ``kvm`` is allowed). SNP is
    verified by ``SnpVerifier`` (``snp_verifier`` to reuse one, else one over
    ``trust_roots``) with the VCEK and CRLs from the CSR; SGX by ``verify_quote`` once a QE
    Identity (``(document, issuer chain PEM)``) is supplied, since the CSR carries none.
    Raises ``AttestationError`` subclasses naming the failed check.
    """
    if csr.kind == "kvm":
        return None
    if csr.kind == "snp":
        from enarx.attestation.snp.verify import SnpVerifier

        verifier = snp_verifier if snp_verifier is not None else SnpVerifier(trust_roots)
        ev: VerifiedEvidence = verifier.verify(
            csr.report, cert=csr.certs[0], crls=[c for _, c in csr.crls], at=at
        )
        from enarx.attestation.snp.certs import load_cert

        vcek = load_cert(csr.certs[0], "vcek").public_key
        key = csr.public_key
        if not (isinstance(vcek, ec.EllipticCurvePublicKey)
                and isinstance(key, ec.EllipticCurvePublicKey)
                and key.curve.name == vcek.curve.name):
            raise AttestationError(
                "upstream.snp.key", "the CSR key must be of the VCEK's type (EC P-384)",
                expected="EC P-384", actual=type(csr.public_key).__name__,
            )
    else:
        ev = _verify_sgx(csr, at, sgx_qe_identity, sgx_trust_root)
        key = csr.public_key
        if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
            raise AttestationError(
                "upstream.sgx.key", "the CSR key must be of the PCK's type (EC P-256)",
                expected="EC P-256", actual=type(key).__name__,
            )
    want = expected_report_data_upstream(csr.spki_der, csr.kind)
    size = 48 if csr.kind == "snp" else 32
    if not hmac.compare_digest(ev.report_data[:size], want[:size]):
        raise AttestationError(
            "upstream.report_data", "REPORT_DATA does not bind the CSR's public key",
            expected=want[:size], actual=ev.report_data[:size],
            hint="the evidence was made for another key",
        )
    return ev


def _verify_sgx(
    csr: UpstreamCsr,
    at: dt.datetime | None,
    qe_identity: tuple[bytes, bytes] | None,
    trust_root: bytes | None,
) -> VerifiedEvidence:
    from enarx.attestation.dcap.collateral import Collateral
    from enarx.attestation.dcap.verify import verify_quote

    if qe_identity is None:
        raise AttestationError(
            "upstream.sgx.qe_identity",
            "upstream SGX evidence carries the quote, TCB Info, its signing chain and CRLs but "
            "no QE Identity (enclaveIdentity JSON and its issuer chain), without which the "
            "quoting enclave cannot be appraised",
            expected="QE Identity collateral", actual="absent",
            hint="attest with the key-broker protocol (/kbs/v0) instead",
        )
    root_crl = pck_crl = b""
    for url, der in csr.crls:
        if "pckcrl" in url and not pck_crl:
            pck_crl = der if _pck_crl_matches(csr.report, der) else pck_crl
        elif "RootCA" in url:
            root_crl = der
    missing = [name for name, der in (("Root CA", root_crl), ("PCK CA", pck_crl)) if not der]
    if missing:
        raise AttestationError(
            "upstream.sgx.crl", "the evidence carries no CRL from the " + " or ".join(missing),
            expected="Intel Root CA CRL and the CRL of the PCK CA that issued the PCK",
            actual=[url for url, _ in csr.crls],
        )
    chain_pem = b"".join(
        x509.load_der_x509_certificate(c).public_bytes(Encoding.PEM) for c in csr.certs
    )
    collateral = Collateral(
        tcb_info=csr.tcb_info, tcb_info_issuer_chain=chain_pem,
        qe_identity=qe_identity[0], qe_identity_issuer_chain=qe_identity[1],
        pck_crl=pck_crl, root_ca_crl=root_crl,
    )
    return verify_quote(csr.report, collateral, at=at, trust_root=trust_root)


def _pck_crl_matches(quote: bytes, crl_der: bytes) -> bool:
    """Whether the CRL is issued by the PCK CA named in the quote's embedded PCK chain."""
    from enarx.attestation.dcap.pki import pck_chain
    from enarx.attestation.dcap.quote import parse_quote

    try:
        certs, _ = pck_chain(parse_quote(quote))
        crl = x509.load_der_x509_crl(crl_der)
    except (EnarxError, ValueError):
        return False
    return any(c.subject == crl.issuer for c in certs[1:2])
