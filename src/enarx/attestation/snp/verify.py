"""AMD SEV-SNP attestation report verification, hand-written.

It is hand-written because no maintained Python library exists for it (the reference
implementations are Go's go-sev-guest and Rust's virtee/sev); the split follows
go-sev-guest: ``abi`` (bytes), this module and ``chain`` (signatures, certificates), and
``enarx.attestation.policy`` (appraisal).

Order of checks, each failing with a typed error that names it:

1. ``snp.size``            the report is 1184 bytes;
2. ``snp.chain.*``         VCEK/VLEK -> ASK/ASVK -> trusted ARK, RSA-PSS SHA-384, validity at
                           ``at``, CRLs (cached, see ``chain``);
3. ``snp.signature``       ECDSA P-384 SHA-384 over bytes 0x000..0x29F with the leaf key.
                           It runs before any field is interpreted, so tampering anywhere
                           in the signed region is reported as a signature failure;
4. ``snp.version`` etc.    field validation (``abi.parse_report``);
5. ``snp.signing_key``     KEY_INFO says VCEK/VLEK and the certificate is of that kind;
6. ``snp.product``         CPUID product (v3+) agrees with the certificate and the ARK;
7. ``snp.tcb``             the certificate's SPL extensions equal REPORTED_TCB (not
                           CURRENT_TCB: the VCEK is derived from the reported TCB);
8. ``snp.chip_id``         VCEK hwID equals CHIP_ID (Turin: first 8 bytes), unless
                           CHIP_ID is all zero (host MaskChipId).
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from enarx.attestation.result import Platform, Tcb, TcbStatus, VerifiedEvidence
from enarx.attestation.snp.abi import (
    ECDSA_COMPONENT_SIZE,
    REPORT_SIZE,
    SIGNATURE_OFFSET,
    SIGNED_SIZE,
    SnpReport,
    parse_report,
)
from enarx.attestation.snp.chain import CACHE_SIZE, ChainVerifier, VerifiedChain
from enarx.attestation.snp.kds import vcek_path
from enarx.errors import ChainInvalid, MalformedEvidence, SignatureInvalid, TcbMismatch

__all__ = ["SnpVerifier", "verify_report"]

_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
_BASE_SPLS = ("bootloader", "tee", "snp", "microcode")


class SnpVerifier:
    """A reusable SEV-SNP verifier: it owns its trust anchors (the shipped AMD ARKs plus
    ``trust_roots``) and a warm cache of verified chains (``chains``), so a service that
    checks many reports keeps one instance; nothing is shared between instances."""

    def __init__(self, trust_roots: Sequence[bytes] = (), *,
                 cache_size: int = CACHE_SIZE) -> None:
        self.chains = ChainVerifier(trust_roots, cache_size=cache_size)

    def verify(
        self,
        report: bytes,
        *,
        cert: bytes | None = None,
        chain: Sequence[bytes] = (),
        crls: Sequence[bytes] = (),
        at: dt.datetime | None = None,
        trust_roots: Sequence[bytes] = (),
    ) -> VerifiedEvidence:
        """Verify an SEV-SNP report and return its authenticated contents (see
        ``verify_report`` for the arguments; ``trust_roots`` adds to the instance's)."""
        return _verify(self.chains, report, cert, chain, trust_roots, crls, at)


def verify_report(
    report: bytes,
    *,
    cert: bytes | None = None,
    chain: Sequence[bytes] = (),
    trust_roots: Sequence[bytes] = (),
    crls: Sequence[bytes] = (),
    at: dt.datetime | None = None,
) -> VerifiedEvidence:
    """Verify an SEV-SNP report and return its authenticated contents.

    ``cert`` is the VCEK or VLEK (PEM or DER); ``chain`` may add intermediates (KDS
    ``cert_chain`` layout: ASK/ASVK then ARK); ``trust_roots`` adds roots trusted besides
    the shipped AMD ARKs; ``crls`` are checked when given; ``at`` (default: now, naive means
    UTC) is the time at which every certificate must be valid. One-shot: nothing is cached
    (keep an ``SnpVerifier`` to reuse verified chains).
    """
    chains = ChainVerifier(trust_roots, cache_size=0)
    return _verify(chains, report, cert, chain, (), crls, at)


def _verify(
    chains: ChainVerifier,
    report: bytes,
    cert: bytes | None,
    chain: Sequence[bytes],
    trust_roots: Sequence[bytes],
    crls: Sequence[bytes],
    at: dt.datetime | None,
) -> VerifiedEvidence:
    at = _normalise_time(at)
    if not isinstance(report, bytes | bytearray | memoryview):
        raise MalformedEvidence("snp.size", "report must be bytes", actual=type(report).__name__)
    report = bytes(report)
    if len(report) != REPORT_SIZE:
        raise MalformedEvidence(
            "snp.size", "attestation report has the wrong size",
            expected=REPORT_SIZE, actual=len(report),
        )
    if cert is None:
        raise ChainInvalid(
            "snp.chain.vcek", "no VCEK or VLEK certificate given",
            hint="pass it (--cert): from the extended report, or fetched from AMD KDS with "
            "`enarx platform snp vcek REPORT --out vcek.pem`",
        )
    verified = chains.verify(cert, chain, crls, at=at, trust_roots=trust_roots)
    _check_signature(report, verified)
    rep = parse_report(report)
    _check_signing_key(rep, verified)
    product = _product(rep, verified)
    tcb = _check_tcb(rep, verified, product)
    _check_chip_id(rep, verified, product)
    return _result(rep, verified, product, tcb, at)


def _normalise_time(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=dt.UTC)
    try:
        return at.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 shifted across UTC
        raise MalformedEvidence("snp.time", "verification time is out of range",
                                expected="a time between years 1 and 9999 in UTC",
                                actual=str(at)) from None


def _check_signature(report: bytes, verified: VerifiedChain) -> None:
    sig = report[SIGNATURE_OFFSET:]
    r = int.from_bytes(sig[:ECDSA_COMPONENT_SIZE], "little")
    s = int.from_bytes(sig[ECDSA_COMPONENT_SIZE : 2 * ECDSA_COMPONENT_SIZE], "little")
    try:
        verified.leaf.public_key.verify(
            encode_dss_signature(r, s), report[:SIGNED_SIZE], _ECDSA_SHA384
        )
    except (InvalidSignature, ValueError):
        raise SignatureInvalid(
            "snp.signature",
            f"report signature does not verify with the {verified.kind.upper()}",
            expected=f"ECDSA P-384 signature by {verified.leaf.sha256.hex()[:16]}…",
            actual="invalid signature",
            hint="the report was altered, or it comes from another chip or TCB than the "
            "certificate",
        ) from None


def _check_signing_key(rep: SnpReport, verified: VerifiedChain) -> None:
    if rep.signing_key_name.lower() != verified.kind:
        raise SignatureInvalid(
            "snp.signing_key", "KEY_INFO names another signing key than the certificate",
            expected=rep.signing_key_name, actual=verified.kind.upper(),
        )


def _base_product(name: str | None) -> str | None:
    # productName is "Milan-B0" style (product-stepping) on older VCEKs, plain on newer.
    return name.split("-", 1)[0] if name else None


def _product(rep: SnpReport, verified: VerifiedChain) -> str:
    from_cert = _base_product(verified.leaf.product_name())
    from_cpuid = rep.product
    for name, other in (("certificate productName", from_cert),
                        ("ARK", verified.root_product)):
        if from_cpuid and other and other != from_cpuid:
            raise ChainInvalid(
                "snp.product", f"the report's CPUID product differs from the {name}",
                expected=from_cpuid, actual=other,
            )
    if from_cert and verified.root_product and from_cert != verified.root_product:
        raise ChainInvalid(
            "snp.product", "the certificate's productName differs from its ARK",
            expected=verified.root_product, actual=from_cert,
        )
    product = from_cpuid or from_cert or verified.root_product
    if product is None:
        raise MalformedEvidence(
            "snp.product", "cannot tell the product from CPUID, certificate or ARK",
            hint="pass the VCEK issued for this report",
        )
    return product


def _check_tcb(rep: SnpReport, verified: VerifiedChain, product: str) -> dict[str, int]:
    reported = rep.tcb("reported", product).to_dict()
    spls = verified.leaf.spls()
    wanted = (*_BASE_SPLS, "fmc") if product == "Turin" else _BASE_SPLS
    missing = [n for n in wanted if n not in spls]
    if missing:
        raise TcbMismatch(
            "snp.tcb", f"the {verified.kind.upper()} lacks TCB extensions",
            expected=list(wanted), actual=sorted(spls),
        )
    cert_tcb = {n: spls[n] for n in wanted}
    rep_tcb = {n: reported[n] for n in wanted}
    if cert_tcb != rep_tcb:
        hint = None
        if verified.kind == "vcek":
            hint = f"the matching VCEK is at KDS {vcek_path(rep, product)}"
        raise TcbMismatch(
            "snp.tcb", f"REPORTED_TCB differs from the {verified.kind.upper()}'s TCB",
            expected=cert_tcb, actual=rep_tcb, hint=hint,
        )
    return reported


def _check_chip_id(rep: SnpReport, verified: VerifiedChain, product: str) -> None:
    # VLEKs are not chip-bound. A host with MaskChipId set reports an all-zero CHIP_ID (the
    # report has no flag for it); the chip-unique VCEK signature still binds the chip. The
    # MASK_CHIP_KEY bit is about the VCEK, not CHIP_ID, so it never switches the check off.
    chip = rep.chip_id[:8] if product == "Turin" else rep.chip_id
    if verified.kind != "vcek" or not any(rep.chip_id):
        return
    hw_id = verified.leaf.hw_id() or b""
    if not hmac.compare_digest(hw_id, chip):
        raise TcbMismatch(
            "snp.chip_id", "CHIP_ID differs from the VCEK's hwID",
            expected=hw_id, actual=chip,
        )


def _fw(major: int, minor: int, build: int) -> str:
    return f"{major}.{minor}.{build}"


def _result(
    rep: SnpReport, verified: VerifiedChain, product: str, reported: dict[str, int],
    at: dt.datetime,
) -> VerifiedEvidence:
    attributes: dict[str, Any] = {
        "policy": {**rep.policy_bits(), "raw": rep.policy},
        "platform_info": {**rep.platform_info_bits(), "raw": rep.platform_info},
        "key_info": {
            "signing_key": rep.signing_key_name,
            "mask_chip_key": rep.mask_chip_key,
            "author_key_en": rep.author_key_en,
            "raw": rep.key_info,
        },
        "signing_key": rep.signing_key_name,
        "vmpl": rep.vmpl,
        "guest_svn": rep.guest_svn,
        "family_id": rep.family_id,
        "image_id": rep.image_id,
        "chip_id": rep.chip_id,
        "report_id": rep.report_id,
        "report_id_ma": rep.report_id_ma,
        "cpuid": None if rep.cpuid_family is None else {
            "family": rep.cpuid_family, "model": rep.cpuid_model, "stepping": rep.cpuid_stepping,
        },
        "product_name": verified.leaf.product_name(),
        "csp_id": verified.leaf.csp_id(),
        "firmware": {
            "current": _fw(rep.current_major, rep.current_minor, rep.current_build),
            "committed": _fw(rep.committed_major, rep.committed_minor, rep.committed_build),
        },
        "launch_tcb": rep.tcb("launch", product).to_dict(),
        "launch_mit_vector": rep.launch_mit_vector,
        "current_mit_vector": rep.current_mit_vector,
    }
    return VerifiedEvidence(
        platform=Platform.SNP,
        product=product,
        version=rep.version,
        measurement=rep.measurement,
        report_data=rep.report_data,
        debug=rep.debug,
        tcb=Tcb(
            status=TcbStatus.UP_TO_DATE,
            reported=reported,
            committed=rep.tcb("committed", product).to_dict(),
            current=rep.tcb("current", product).to_dict(),
        ),
        signer=rep.id_key_digest,
        author_key_digest=rep.author_key_digest,
        host_data=rep.host_data,
        attributes=attributes,
        chain=verified.cert_infos(at),
        verified_at=at,
    )
