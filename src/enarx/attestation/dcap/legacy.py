"""Verify SGX quotes v3 whose collateral is TCB Info **v2** (flat ``sgxtcbcompNNsvn`` keys).

This path is hand-written only because dcap-qvl (0.7) cannot decode TCB Info v2, which PCS API
v3 (and PCCS caches filled from it) still serve. Everything else goes through dcap-qvl
(``verify.py``). It performs the same checks, in the same order and with the same check names,
as the dcap-qvl path, so a caller cannot tell the two apart except by the collateral accepted:

1. both CRLs: signature by their issuer, thisUpdate <= at <= nextUpdate; the trust root and
   every certificate below it are looked up (a certificate without a CRL from its issuer fails);
2. TCB Info: window, TCB Signing chain to the trust root, the signer is Intel's TCB Signing
   certificate issued by the root (``pki.check_tcb_signer``), ECDSA P-256 signature over the
   exact bytes of the ``tcbInfo`` value;
3. QE Identity (v2, id "QE"): the same;
4. PCK chain from the quote (certification data type 5) to the trust root;
5. QE report signature by the PCK key; QE REPORT_DATA[0:32] == SHA-256(attestation key ‖ QE
   auth data);
6. QE report against QE Identity (MRSIGNER, production QE, ISVPRODID, masked MISCSELECT and
   ATTRIBUTES) and the QE TCB level (first level with isvsvn <= the QE's ISVSVN);
7. quote signature by the attestation key over header ‖ ISV enclave report;
8. FMSPC and PCE ID of the PCK certificate equal the TCB Info's; platform TCB level = the first
   level, in the order Intel publishes them (highest first), whose 16 component SVNs and PCESVN
   are all <= the PCK certificate's;
9. status = the worse of platform and QE status, advisories merged (dcap-qvl's rule); Revoked
   and debug enclaves are refused.

Beyond dcap-qvl we also require the PCE ID to match (Intel's QVL does). The PCK certificate's
SGX extensions are read with dcap-qvl's own parser (the one ``verify.py`` uses), so both paths
report the same ``Tcb.reported`` and attributes. Chains and CRLs are checked by ``chain.py``,
the signer identity and the reported chain by ``pki.py`` (shared with ``verify.py``). Pure:
no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.attestation.dcap.chain import load_crls, p256_verify, verify_chain, window
from enarx.attestation.dcap.collateral import Collateral, signed_json_value
from enarx.attestation.dcap.evidence import build_evidence
from enarx.attestation.dcap.pki import (
    check_tcb_signer,
    pck_chain,
    pem_certs,
    verified_pck_path,
)
from enarx.attestation.dcap.quote import (
    HEADER_LEN,
    INTEL_QE_VENDOR_ID,
    SGX_REPORT_LEN,
    ParsedQuote,
    SgxReport,
    parse_sgx_report,
)
from enarx.attestation.result import VerifiedEvidence
from enarx.errors import (
    AttestationError,
    MalformedEvidence,
    SignatureInvalid,
    TcbMismatch,
)

__all__ = [
    "COMPONENTS", "SEVERITY", "QeIdentity", "QeTcbLevel", "TcbInfoV2", "TcbLevel",
    "check_qe_identity", "match_qe_level", "match_tcb_level", "merge_status",
    "parse_qe_identity", "parse_tcb_info_v2", "verify_chain", "verify_sgx_tcb_info_v2",
]

#: dcap-qvl's TCB statuses and their severity (worse = higher); merging keeps the worse.
SEVERITY = {
    "UpToDate": 0,
    "SWHardeningNeeded": 1,
    "ConfigurationNeeded": 2,
    "ConfigurationAndSWHardeningNeeded": 3,
    "OutOfDate": 4,
    "OutOfDateConfigurationNeeded": 5,
    "Revoked": 6,
}
COMPONENTS = 16
# v3 signature data: quote signature (64) ‖ attestation key (64) ‖ QE report (384) ‖ ...
_QE_REPORT_AT = HEADER_LEN + SGX_REPORT_LEN + 4 + 128


# --- parsed collateral -----------------------------------------------------------------------


@dataclass(frozen=True)
class TcbLevel:
    components: tuple[int, ...]  # sgxtcbcomp01svn .. sgxtcbcomp16svn
    pce_svn: int
    status: str
    tcb_date: str
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TcbInfoV2:
    issue_date: dt.datetime
    next_update: dt.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeTcbLevel:
    isv_svn: int
    status: str
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class QeIdentity:
    id: str
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isv_prod_id: int
    levels: tuple[QeTcbLevel, ...]


class _Fields:
    """Typed access to one JSON object; every bad field becomes MalformedEvidence(check)."""

    def __init__(self, obj: Any, check: str, where: str) -> None:
        if not isinstance(obj, dict):
            raise MalformedEvidence(check, f"{where} must be a JSON object",
                                    actual=type(obj).__name__)
        self.obj: dict[str, Any] = obj
        self.check = check
        self.where = where

    def value(self, key: str) -> Any:
        if key not in self.obj:
            raise MalformedEvidence(self.check, f"{self.where}.{key} is missing", expected=key)
        return self.obj[key]

    def integer(self, key: str, hi: int) -> int:
        v = self.value(key)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise MalformedEvidence(self.check, f"{self.where}.{key} must be an integer",
                                    expected=f"0..{hi}", actual=repr(v)[:40])
        return v

    def text(self, key: str) -> str:
        v = self.value(key)
        if not isinstance(v, str):
            raise MalformedEvidence(self.check, f"{self.where}.{key} must be a string",
                                    actual=type(v).__name__)
        return v

    def hexbytes(self, key: str, size: int) -> bytes:
        v = self.text(key)
        try:
            b = bytes.fromhex(v)
        except ValueError:
            b = b""
        if len(b) != size:
            raise MalformedEvidence(self.check, f"{self.where}.{key} must be {size} bytes in hex",
                                    expected=2 * size, actual=v[:80])
        return b

    def date(self, key: str) -> dt.datetime:
        v = self.text(key)
        try:
            parsed = dt.datetime.fromisoformat(v)
            d = parsed.astimezone(dt.UTC) if parsed.tzinfo is not None else None
        except (ValueError, OverflowError):  # overflow: year 1 or 9999 shifted across UTC
            d = None
        if d is None:
            raise MalformedEvidence(self.check, f"{self.where}.{key} must be an RFC 3339 time",
                                    expected="e.g. 2025-02-13T03:29:42Z", actual=v[:40])
        return d

    def status(self, key: str) -> str:
        v = self.text(key)
        if v not in SEVERITY:
            raise MalformedEvidence(self.check, f"{self.where}.{key} is not a known TCB status",
                                    expected=sorted(SEVERITY), actual=v[:40])
        return v

    def advisories(self) -> tuple[str, ...]:
        v = self.obj.get("advisoryIDs", [])
        if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
            raise MalformedEvidence(self.check, f"{self.where}.advisoryIDs must be strings")
        return tuple(v)

    def items(self, key: str) -> list[Any]:
        v = self.value(key)
        if not isinstance(v, list):
            raise MalformedEvidence(self.check, f"{self.where}.{key} must be a list",
                                    actual=type(v).__name__)
        return v


def _load_json(body: bytes, check: str) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:  # unreachable from Collateral; direct callers
        raise MalformedEvidence(check, f"not valid JSON: {e}") from None
    except RecursionError:
        raise MalformedEvidence(check, "JSON is nested too deeply") from None


def parse_tcb_info_v2(body: bytes) -> TcbInfoV2:
    """Parse the exact ``tcbInfo`` value of a TCB Info v2 document (SGX, tcbType 0)."""
    check = "dcap.tcb_info.format"
    f = _Fields(_load_json(body, check), check, "tcbInfo")
    version = f.integer("version", 255)
    if version != 2:
        raise MalformedEvidence("dcap.tcb_info.version", "this path handles TCB Info v2 only",
                                expected=2, actual=version)
    if f.obj.get("id", "SGX") != "SGX":  # v2 has no "id"; some caches add it
        raise TcbMismatch("dcap.tcb_info.type", "TCB Info is not for SGX", expected="SGX",
                          actual=repr(f.obj.get("id"))[:40])
    if (tcb_type := f.integer("tcbType", 2**32 - 1)) != 0:
        raise MalformedEvidence(check, "unknown tcbType (component layout)", expected=0,
                                actual=tcb_type)
    levels = []
    for i, raw in enumerate(f.items("tcbLevels")):
        lf = _Fields(raw, check, f"tcbInfo.tcbLevels[{i}]")
        tf = _Fields(lf.value("tcb"), check, f"tcbInfo.tcbLevels[{i}].tcb")
        levels.append(TcbLevel(
            components=tuple(tf.integer(f"sgxtcbcomp{n:02d}svn", 255)
                             for n in range(1, COMPONENTS + 1)),
            pce_svn=tf.integer("pcesvn", 0xFFFF),
            status=lf.status("tcbStatus"),
            tcb_date=lf.text("tcbDate"),
            advisory_ids=lf.advisories(),
        ))
    return TcbInfoV2(
        issue_date=f.date("issueDate"),
        next_update=f.date("nextUpdate"),
        fmspc=f.hexbytes("fmspc", 6),
        pce_id=f.hexbytes("pceId", 2),
        tcb_evaluation_data_number=f.integer("tcbEvaluationDataNumber", 2**32 - 1),
        levels=tuple(levels),
    )


def parse_qe_identity(body: bytes) -> QeIdentity:
    """Parse the exact ``enclaveIdentity`` value of a QE Identity (v2) document."""
    check = "dcap.qe_identity.format"
    f = _Fields(_load_json(body, check), check, "enclaveIdentity")
    levels = []
    for i, raw in enumerate(f.items("tcbLevels")):
        lf = _Fields(raw, check, f"enclaveIdentity.tcbLevels[{i}]")
        tf = _Fields(lf.value("tcb"), check, f"enclaveIdentity.tcbLevels[{i}].tcb")
        levels.append(QeTcbLevel(tf.integer("isvsvn", 0xFFFF), lf.status("tcbStatus"),
                                 lf.advisories()))
    return QeIdentity(
        id=f.text("id"),
        version=f.integer("version", 255),
        issue_date=f.date("issueDate"),
        next_update=f.date("nextUpdate"),
        # dcap-qvl reads the 4 hex bytes as a little-endian u32, like REPORT.MISCSELECT.
        miscselect=int.from_bytes(f.hexbytes("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(f.hexbytes("miscselectMask", 4), "little"),
        attributes=f.hexbytes("attributes", 16),
        attributes_mask=f.hexbytes("attributesMask", 16),
        mrsigner=f.hexbytes("mrsigner", 32),
        isv_prod_id=f.integer("isvprodid", 0xFFFF),
        levels=tuple(levels),
    )


# --- TCB matching ----------------------------------------------------------------------------


def match_tcb_level(levels: Sequence[TcbLevel], cpu_svn: bytes, pce_svn: int) -> TcbLevel:
    """Intel's rule: the first level whose every component SVN and PCESVN is <= the platform's
    (from the PCK certificate). No such level: the platform's TCB is not supported."""
    if len(cpu_svn) != COMPONENTS:
        raise MalformedEvidence("dcap.pck.format", "PCK CPUSVN must have 16 components",
                                expected=COMPONENTS, actual=len(cpu_svn))
    for level in levels:
        if level.pce_svn <= pce_svn and all(
            want <= have for want, have in zip(level.components, cpu_svn, strict=True)
        ):
            return level
    raise TcbMismatch(
        "dcap.tcb.no_match", "No matching TCB level found in TCB Info",
        expected="a level with every SVN <= the platform's",
        actual={"cpu_svn": list(cpu_svn), "pce_svn": pce_svn},
        hint="the platform's TCB is not listed in the TCB Info (unsupported or "
        "pre-production TCB)",
    )


def match_qe_level(levels: Sequence[QeTcbLevel], isv_svn: int) -> QeTcbLevel:
    """The first QE Identity level whose isvsvn is <= the QE's ISVSVN (highest first)."""
    for level in levels:
        if isv_svn >= level.isv_svn:
            return level
    if not levels:
        raise TcbMismatch("dcap.qe.tcb", "No TCB levels found in QE Identity")
    raise TcbMismatch("dcap.qe.tcb", "QE ISVSVN is below the minimum in QE Identity",
                      expected=f">= {levels[-1].isv_svn}", actual=isv_svn,
                      hint="update the platform software (DCAP QE)")


def merge_status(
    platform: tuple[str, Sequence[str]], qe: tuple[str, Sequence[str]]
) -> tuple[str, tuple[str, ...]]:
    """dcap-qvl's merge: the worse status; platform advisories first, then new QE ones.
    A Revoked result is refused (dcap-qvl accepts every other status, OutOfDate included)."""
    status = qe[0] if SEVERITY[qe[0]] > SEVERITY[platform[0]] else platform[0]
    if status == "Revoked":
        raise TcbMismatch("dcap.tcb.revoked", "TCB status is invalid: Revoked",
                          expected="not Revoked", actual={"platform": platform[0], "qe": qe[0]})
    advisories = list(platform[1])
    advisories += [a for a in dict.fromkeys(qe[1]) if a not in advisories]
    return status, tuple(advisories)


# --- signed collateral ------------------------------------------------------------------------


def _check_signed(body: bytes, sig: bytes, field: str, chain_pem: bytes,
                  root: x509.Certificate, crls: Sequence[x509.CertificateRevocationList],
                  at: dt.datetime) -> None:
    """Verify one signed PCS document's issuer chain and its signature over ``body``."""
    certs = pem_certs(chain_pem, f"dcap.{field}_issuer_chain.format")
    verify_chain(certs, root, crls, at, f"{field} issuer chain")
    check_tcb_signer(certs, root, field)
    try:
        signer_key = certs[0].public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise MalformedEvidence("dcap.chain.format", f"{field} signer key: {e}") from None
    p256_verify(signer_key, body, sig, f"dcap.{field}.signature", field)


# --- QE ----------------------------------------------------------------------------------------


def check_qe_identity(qe: SgxReport, ident: QeIdentity) -> QeTcbLevel:
    """The QE report must be the QE that QE Identity describes; returns its TCB level."""
    check = "dcap.qe_identity.mismatch"
    if not hmac.compare_digest(qe.mr_signer, ident.mrsigner):
        raise TcbMismatch(check, "QE MRSIGNER mismatch", expected=ident.mrsigner,
                          actual=qe.mr_signer)
    if qe.debug:
        raise TcbMismatch(check, "QE report validation failed: the QE is a debug enclave",
                          expected="DEBUG clear", actual=qe.attributes)
    if qe.isv_prod_id != ident.isv_prod_id:
        raise TcbMismatch(check, "QE ISVPRODID mismatch", expected=ident.isv_prod_id,
                          actual=qe.isv_prod_id)
    mask = ident.miscselect_mask
    if qe.misc_select & mask != ident.miscselect & mask:
        raise TcbMismatch(check, "QE MISCSELECT mismatch (masked)",
                          expected=f"{ident.miscselect & mask:08x}",
                          actual=f"{qe.misc_select & mask:08x}")
    want = bytes(a & m for a, m in zip(ident.attributes, ident.attributes_mask, strict=True))
    got = bytes(a & m for a, m in zip(qe.attributes, ident.attributes_mask, strict=True))
    if want != got:
        raise TcbMismatch(check, "QE ATTRIBUTES mismatch (masked)", expected=want, actual=got)
    return match_qe_level(ident.levels, qe.isv_svn)


# --- the whole path ------------------------------------------------------------------------


def verify_sgx_tcb_info_v2(
    parsed: ParsedQuote, collateral: Collateral, *, at: dt.datetime, root: x509.Certificate,
) -> VerifiedEvidence:
    """Verify an SGX quote v3 against TCB Info v2 collateral as of ``at`` (aware, UTC) with
    ``root`` as the only trust anchor. Called by ``verify.verify_quote``."""
    if parsed.header.version != 3 or parsed.is_tdx or parsed.sig.qe_report is None:
        raise MalformedEvidence("dcap.quote.format", "TCB Info v2 applies to SGX quotes v3 only",
                                expected=3, actual=parsed.header.version)
    if parsed.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise MalformedEvidence("dcap.quote.qe_vendor", "Unknown QE vendor ID",
                                expected=INTEL_QE_VENDOR_ID, actual=parsed.header.qe_vendor_id)
    crls = load_crls(collateral)

    # Collateral first, as dcap-qvl does: expired or forged collateral is named before the quote.
    tcb_body, tcb_sig = signed_json_value(collateral.tcb_info, "tcbInfo", "tcb_info")
    info = parse_tcb_info_v2(tcb_body)
    window(info.issue_date, info.next_update, at, "TCB Info")
    _check_signed(tcb_body, tcb_sig, "tcb_info", collateral.tcb_info_issuer_chain, root, crls, at)

    qe_body, qe_sig = signed_json_value(collateral.qe_identity, "enclaveIdentity", "qe_identity")
    ident = parse_qe_identity(qe_body)
    window(ident.issue_date, ident.next_update, at, "QE Identity")
    _check_signed(qe_body, qe_sig, "qe_identity", collateral.qe_identity_issuer_chain, root,
                  crls, at)
    if ident.id != "QE" or ident.version != 2:
        raise TcbMismatch("dcap.qe_identity.mismatch",
                          "Unsupported QE Identity id/version for an SGX quote",
                          expected="QE version 2", actual=f"{ident.id[:20]} version {ident.version}")

    certs, ext = pck_chain(parsed)
    if ext is None:
        raise MalformedEvidence("dcap.pck.format",
                                "PCK certificate has no readable Intel SGX extension")
    verify_chain(certs, root, crls, at, "PCK certificate chain")

    qe = parsed.sig.qe_report
    qe_raw = parsed.raw[_QE_REPORT_AT:_QE_REPORT_AT + SGX_REPORT_LEN]
    if parse_sgx_report(qe_raw) != qe:  # guards the offset arithmetic above
        raise MalformedEvidence("dcap.quote.format", "QE report is not where quote v3 puts it")
    try:
        pck_key = certs[0].public_key()
    except (ValueError, UnsupportedAlgorithm) as e:
        raise MalformedEvidence("dcap.pck.format", f"PCK public key: {e}") from None
    p256_verify(pck_key, qe_raw, parsed.sig.qe_report_signature, "dcap.qe_report.signature",
                 "QE report")
    binding = hashlib.sha256(parsed.sig.attestation_key + parsed.sig.qe_auth_data).digest()
    if not hmac.compare_digest(binding, qe.report_data[:32]):
        raise SignatureInvalid("dcap.qe_report.hash",
                               "QE report hash mismatch: the QE did not certify this "
                               "attestation key", expected=binding, actual=qe.report_data[:32])
    qe_level = check_qe_identity(qe, ident)

    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + parsed.sig.attestation_key)
    except ValueError:
        raise SignatureInvalid("dcap.quote.signature",
                               "attestation key is not a P-256 point") from None
    p256_verify(att_key, parsed.raw[:HEADER_LEN + SGX_REPORT_LEN], parsed.sig.signature,
                 "dcap.quote.signature", "ISV enclave report")

    fmspc, pce_id = bytes(ext.fmspc), bytes(ext.pce_id)
    if fmspc != info.fmspc:
        raise TcbMismatch("dcap.tcb_info.fmspc",
                          "Fmspc mismatch: the TCB Info's FMSPC is not the PCK certificate's",
                          expected=fmspc,
                          actual=info.fmspc, hint="the TCB Info is for a different platform "
                          "(FMSPC); fetch it for the quote's FMSPC")
    if pce_id != info.pce_id:
        raise TcbMismatch("dcap.tcb_info.pce_id",
                          "PCE ID mismatch: the TCB Info's PCE ID is not the PCK certificate's",
                          expected=pce_id,
                          actual=info.pce_id)
    level = match_tcb_level(info.levels, bytes(ext.cpu_svn), int(ext.pce_svn))
    status, advisories = merge_status((level.status, level.advisory_ids),
                                      (qe_level.status, qe_level.advisory_ids))
    if parsed.report.debug:
        raise AttestationError("dcap.report.debug", "Debug mode is enabled",
                               hint="debug enclaves/TDs are not confidential; rebuild without "
                               "the DEBUG attribute")
    path = verified_pck_path(certs, root)
    return build_evidence(parsed, status, list(advisories), ext, path, at)
