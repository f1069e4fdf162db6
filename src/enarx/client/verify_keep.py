"""Verify a running Keep from the outside: its TLS certificate, and the evidence inside it.

:func:`verify_keep` connects to a Keep's ``tls`` listener and, without trusting the steward's
word for anything it can check itself:

1. ``keep.tls``       completes a TLS handshake whose certificate chains to the steward CA
                       the caller names (``ca_pem``);
2. ``keep.evidence``  takes the evidence out of the leaf certificate (``id-pe-cmw``) and
                       re-verifies it with enarx's own verifiers against vendor roots plus the
                       roots the caller passes (``trust_roots``: the sim ARK for tests);
3. ``keep.binding``   checks that REPORT_DATA is SHA-384 of the certificate's runtime data and
                       that this runtime data names the certificate's own public key — so the
                       key serving this connection is the one generated inside that Keep;
4. ``keep.workload``  checks the workload identity bound in the runtime data equals the
                       certificate's workload extension and, when given, ``workload``.

Each failure raises a typed :mod:`enarx.errors` error naming the failed check (exit 4 from
the CLI). ``enarx verify-keep`` is the command-line form.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import socket
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.errors import (
    AttestationError,
    ChainInvalid,
    MalformedEvidence,
    ResourceError,
    UsageError,
)

__all__ = ["KeepReport", "verify_certificate", "verify_keep"]

_TIMEOUT = 10.0


@dataclass(frozen=True)
class KeepReport:
    """What was verified about a Keep. ``trust_root`` says whether the evidence chains to a
    vendor root (``vendor``) or only to a root the caller passed (``explicit``, e.g. sim)."""

    platform: str
    measurement: str
    tcb_status: str
    workload: str | None
    product: str
    debug: bool
    trust_root: str
    serial: str
    not_after: str
    subject_public_key_sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_keep(
    host: str,
    port: int,
    ca_pem: bytes,
    workload: str | None = None,
    *,
    trust_roots: Sequence[bytes] = (),
    timeout: float = _TIMEOUT,
    at: dt.datetime | None = None,
) -> KeepReport:
    """Connect to ``host:port`` and verify the Keep behind it (see the module docstring).

    ``ca_pem``: PEM of the steward CA; ``workload``: the expected ``sha384:<hex>`` identity
    (``enarx identity``); ``trust_roots``: extra evidence roots (PEM or DER), e.g. the sim ARK.
    """
    leaf_der = _handshake(host, port, ca_pem, timeout)
    return verify_certificate(leaf_der, ca_pem, workload, trust_roots=trust_roots, at=at)


def verify_certificate(
    leaf_der: bytes,
    ca_pem: bytes,
    workload: str | None = None,
    *,
    trust_roots: Sequence[bytes] = (),
    at: dt.datetime | None = None,
) -> KeepReport:
    """Verify a Keep certificate (DER) as :func:`verify_keep` does after the handshake."""
    from enarx.steward.extensions import find_cmw, find_workload
    from enarx.workload import identity_matches, parse_identity

    if workload is not None:
        parse_identity(workload)
    try:
        leaf = x509.load_der_x509_certificate(leaf_der)
    except (ValueError, x509.InvalidVersion) as e:
        raise MalformedEvidence("keep.tls", f"the Keep's certificate does not parse: {e}"
                                ) from None
    _check_issuer(leaf, ca_pem)
    cmw = find_cmw(leaf)
    if cmw is None:
        raise AttestationError(
            "keep.evidence", "the Keep's certificate carries no evidence",
            hint="the Keep ran without a TEE (nil) or its certificate was issued for an "
            "upstream CSR: nothing can be re-verified",
        )
    if cmw.platform != "snp":
        raise AttestationError(
            "keep.evidence", f"re-verifying {cmw.platform} evidence is not supported yet",
            hint="verify-keep re-verifies SEV-SNP (and sim) evidence",
        )
    from enarx.attestation.snp.verify import SnpVerifier

    roots = [_der(r) for r in trust_roots]
    if not cmw.certs:
        raise AttestationError("keep.evidence", "the evidence carries no VCEK certificate")
    ev = SnpVerifier(roots).verify(cmw.report, cert=cmw.certs[0], chain=cmw.certs[1:], at=at)
    # keep.binding: report_data = SHA-384(runtime data) || 16 zero bytes, and the runtime
    # data names the key that serves this certificate.
    expected = hashlib.sha384(cmw.runtime_data).digest().ljust(64, b"\0")
    if not hmac.compare_digest(expected, ev.report_data):
        raise AttestationError("keep.binding",
                               "the report does not bind the certificate's runtime data",
                               expected=expected, actual=ev.report_data)
    claims = cmw.runtime_claims()
    jwk = claims.get("tee-pubkey")
    leaf_spki = _spki(leaf.public_key())
    if not isinstance(jwk, dict) or not hmac.compare_digest(_jwk_spki(jwk), leaf_spki):
        raise AttestationError(
            "keep.binding", "the evidence is for another key than the certificate's",
            hint="the certificate was not issued for the key the Keep attested",
        )
    bound = claims.get("workload")
    present, in_cert = find_workload(leaf)
    if bound is not None and not isinstance(bound, str):
        raise MalformedEvidence("keep.workload", "the runtime data's workload is not text")
    if present and not (bound == in_cert or (bound is not None and in_cert is not None
                                             and identity_matches(bound, in_cert))):
        raise AttestationError("keep.workload",
                               "the certificate's workload differs from the attested one",
                               expected=bound, actual=in_cert)
    if workload is not None and not identity_matches(workload, bound):
        raise AttestationError("keep.workload", "the Keep runs another workload",
                               expected=workload, actual=bound,
                               hint="compare with `enarx identity MODULE --wasmcfgfile F`")
    root_fp = ev.chain[-1].sha256 if ev.chain else ""
    explicit = {hashlib.sha256(r).hexdigest() for r in roots}
    return KeepReport(
        platform=ev.platform.value,
        measurement=ev.measurement.hex(),
        tcb_status=ev.tcb.status.value,
        workload=bound,
        product=ev.product,
        debug=ev.debug,
        trust_root="explicit" if root_fp.lower().replace(":", "") in explicit else "vendor",
        serial=f"{leaf.serial_number:x}",
        not_after=leaf.not_valid_after_utc.isoformat(),
        subject_public_key_sha256=hashlib.sha256(leaf_spki).hexdigest(),
    )


# --- helpers --------------------------------------------------------------------------------


def _handshake(host: str, port: int, ca_pem: bytes, timeout: float) -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    # The Keep is identified by its attested key, not by a DNS name: the chain to the
    # steward CA is required, the host name is not checked.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError):
        raise UsageError("the steward CA holds no PEM certificate",
                         hint="pass the PEM `enarx steward ca` prints to --ca") from None
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as s:
            der = s.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as e:
        raise ChainInvalid("keep.tls",
                           f"the Keep's certificate does not chain to the steward CA "
                           f"({e.verify_message})",
                           hint="--ca must be the CA of the steward the Keep attested to") from None
    except (OSError, ssl.SSLError) as e:
        raise ResourceError(f"{host}:{port}: cannot complete a TLS handshake: {e}",
                            hint="check HOST:PORT is the Keep's tls listener") from None
    if not der:
        raise ChainInvalid("keep.tls", "the Keep presented no certificate")
    return der


def _check_issuer(leaf: x509.Certificate, ca_pem: bytes) -> None:
    """The leaf is signed by one of ``ca_pem``'s certificates and valid now."""
    from cryptography.exceptions import InvalidSignature

    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except (ValueError, x509.InvalidVersion):
        raise UsageError("the steward CA holds no PEM certificate",
                         hint="pass the PEM `enarx steward ca` prints to --ca") from None
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ChainInvalid("keep.tls", "the Keep's certificate is outside its validity",
                           expected=f"{leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}",
                           actual=now.isoformat())
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            return
        except (InvalidSignature, ValueError, TypeError):
            continue
    raise ChainInvalid("keep.tls", "the Keep's certificate is not issued by the steward CA",
                       hint="--ca must be the CA of the steward the Keep attested to")


def _der(cert: bytes) -> bytes:
    if b"-----BEGIN" in cert:
        try:
            return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        except (ValueError, x509.InvalidVersion):
            raise UsageError("a --trust-root file holds no PEM certificate") from None
    return cert


def _spki(key: Any) -> bytes:
    out: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return out


def _jwk_spki(jwk: dict[str, Any]) -> bytes:
    """SubjectPublicKeyInfo of an EC JWK (P-256/P-384/P-521); b"" when it is not one."""
    curves: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(),
                                           "P-521": ec.SECP521R1()}
    try:
        curve = curves[jwk["crv"]]
        if jwk.get("kty") != "EC":
            return b""

        def num(v: str) -> int:
            return int.from_bytes(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), "big")

        pub = ec.EllipticCurvePublicNumbers(num(jwk["x"]), num(jwk["y"]), curve).public_key()
    except (KeyError, TypeError, ValueError):
        return b""
    return _spki(pub)

