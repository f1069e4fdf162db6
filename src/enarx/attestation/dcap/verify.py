"""Verify Intel SGX (quote v3) and TDX (quote v4/v5) DCAP quotes.

We parse the quote ourselves (``quote.py``) and hand exactly those bytes plus the collateral to
dcap-qvl, which checks: the quote and QE report signatures, the attestation-key binding, the PCK
chain to the Intel root with both CRLs, the TCB Info and QE Identity signatures, chains and
validity windows, and matches the TCB level. Its failures become our typed errors
(``errors.py``).

What dcap-qvl (0.7) cannot do, and what we do about it:

* It checks every certificate's validity at ``now``, with no leeway. Intel re-issued the TCB
  Signing certificate in 2025 (same key and serial, new validity); collateral served later
  may still carry the old (expired 2025-05-21) certificate in its issuer-chain header. Such a
  chain is rejected here as ``dcap.chain.expired``; supply the re-issued certificate (as
  PCS serves it today). We do not silently swap certificates: the chain is the caller's input.
* It refuses debug enclaves/TDs outright (``dcap.report.debug``); a debug quote never reaches
  policy, so ``VerifiedEvidence.debug`` from this path is always False in practice.
* It cannot decode TCB Info v2 (flat ``sgxtcbcompNNsvn`` keys, pre-2021 PCS API v3). SGX
  quotes v3 with such collateral go through ``legacy.py`` instead (same checks, same result
  type); TDX quotes with TCB Info v2 are rejected as ``dcap.tcb_info.version``.
* It reports only the final (platform ⊕ QE) TCB status and advisory IDs, not the matched
  level, so ``Tcb.reported`` holds the SVNs from the quote and PCK certificate instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enarx.attestation.dcap.collateral import Collateral
from enarx.attestation.dcap.errors import map_error
from enarx.attestation.dcap.quote import ParsedQuote, SgxReport, TdReport, parse_quote
from enarx.attestation.result import CertInfo, Platform, Tcb, TcbStatus, VerifiedEvidence
from enarx.errors import AttestationError, ChainInvalid, MalformedEvidence, TcbMismatch

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_BEGIN = re.compile(rb"-----BEGIN ([^\r\n]*?)-----")


@cache
def shipped_root_der() -> bytes:
    """DER of the Intel SGX Root CA shipped in ``enarx.attestation.roots``."""
    from enarx.attestation.roots import intel_sgx_root

    return _root_der(intel_sgx_root())


def _root_der(data: bytes) -> bytes:
    try:
        cert = (
            x509.load_pem_x509_certificate(data)
            if _PEM_CERT in data
            else x509.load_der_x509_certificate(data)
        )
    except ValueError as e:
        raise ChainInvalid("dcap.trust_root", f"trust root is not a certificate: {e}") from None
    return cert.public_bytes(Encoding.DER)


def _pem_certs(data: bytes, check: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion) as e:  # InvalidVersion is not a ValueError
        raise MalformedEvidence(check, f"certificate chain does not parse: {e}") from None


def _cert_info(cert: x509.Certificate, when: dt.datetime) -> CertInfo:
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        verify_at=when,
    )


def _check_chain_root(pem: bytes, root_der: bytes, what: str) -> None:
    """A self-signed certificate at the end of a collateral chain must be the trust root.

    dcap-qvl anchors on the root we pass and would reject a foreign root too; checking it
    here gives the user an error that names the chain.
    """
    certs = _pem_certs(pem, f"dcap.{what}.format")
    if not certs:
        raise MalformedEvidence(f"dcap.{what}.format", f"{what} has no certificate")
    last = certs[-1]
    if last.issuer != last.subject:
        return
    der = last.public_bytes(Encoding.DER)
    if not hmac.compare_digest(hashlib.sha256(der).digest(), hashlib.sha256(root_der).digest()):
        raise ChainInvalid(
            "dcap.chain.root",
            f"{what} ends in a root that is not the trusted Intel SGX root CA",
            expected=hashlib.sha256(root_der).hexdigest(),
            actual=hashlib.sha256(der).hexdigest(),
            hint="use collateral issued by Intel (PCS or a PCCS mirroring it)",
        )


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    try:
        return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 shifted across UTC
        raise MalformedEvidence("dcap.time", "verification time is out of range",
                                expected="a time between years 1 and 9999 in UTC",
                                actual=str(at)) from None


def _precheck_collateral(collateral: Collateral, quote: ParsedQuote) -> dict[str, Any]:
    info = collateral.tcb_info_json()
    version = info.get("version")
    if not isinstance(version, int) or version < 3:
        raise MalformedEvidence(
            "dcap.tcb_info.version",
            "TCB Info version is not supported by the verifier (dcap-qvl needs v3)",
            expected=3,
            actual=version,
            hint="fetch TCB Info v3 (Intel PCS API v3/v4 endpoints `.../tcb?fmspc=...`)",
        )
    want = "TDX" if quote.is_tdx else "SGX"
    if info.get("id") != want:
        raise TcbMismatch("dcap.tcb_info.type", "TCB Info is for the other TEE type",
                          expected=want, actual=info.get("id"))
    return info


def _pck(quote: ParsedQuote) -> tuple[list[x509.Certificate], Any]:
    pem = quote.sig.pck_chain_pem()
    if not pem:
        raise MalformedEvidence(
            "dcap.quote.format", "quote carries no PCK certificate chain",
            expected="certification data type 5", actual=quote.sig.cert_type,
        )
    certs = _pem_certs(pem, "dcap.chain.format")
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


def _tcb(status: str, advisories: list[str], quote: ParsedQuote, ext: Any) -> Tcb:
    try:
        tcb_status = TcbStatus(status)
    except ValueError:
        raise AttestationError("dcap.tcb.status", "dcap-qvl returned an unknown TCB status",
                               actual=status) from None
    reported: dict[str, int] = {}
    if ext is not None:
        reported.update({f"sgx_comp{i + 1:02d}": b for i, b in enumerate(ext.cpu_svn)})
        reported["pce_svn"] = int(ext.pce_svn)
    if isinstance(quote.report, TdReport):
        reported.update({f"tdx_comp{i + 1:02d}": b for i, b in enumerate(quote.report.tee_tcb_svn)})
    if quote.sig.qe_report is not None:
        reported["qe_isv_svn"] = quote.sig.qe_report.isv_svn
    return Tcb(status=tcb_status, advisory_ids=tuple(advisories), reported=reported)


def _attributes(quote: ParsedQuote, ext: Any) -> dict[str, Any]:
    rep = quote.report
    out: dict[str, Any] = {
        "tee_type": quote.header.tee_type,
        "qe_svn": quote.header.qe_svn,
        "pce_svn": quote.header.pce_svn,
        "body": quote.body_type,
        "trailing_bytes": quote.trailing,
    }
    if ext is not None:
        out.update(fmspc=bytes(ext.fmspc), pce_id=bytes(ext.pce_id), sgx_type=int(ext.sgx_type))
    if isinstance(rep, SgxReport):
        out.update(
            isv_prod_id=rep.isv_prod_id,
            isv_svn=rep.isv_svn,
            config_svn=rep.config_svn,
            misc_select=rep.misc_select,
            sgx_attributes=rep.attributes,
            flags=rep.flags,
            xfrm=rep.xfrm,
            cpu_svn=rep.cpu_svn,
            config_id=rep.config_id,
            isv_ext_prod_id=rep.isv_ext_prod_id,
            isv_family_id=rep.isv_family_id,
        )
    else:
        out.update(
            td_attributes=rep.td_attributes,
            xfam=rep.xfam,
            mr_config_id=rep.mr_config_id,
            mr_owner=rep.mr_owner,
            mr_owner_config=rep.mr_owner_config,
            mr_seam=rep.mr_seam,
            mr_signer_seam=rep.mr_signer_seam,
            seam_attributes=rep.seam_attributes,
            tee_tcb_svn=rep.tee_tcb_svn,
        )
        if quote.body_type == "td15":
            out.update(tee_tcb_svn2=rep.tee_tcb_svn2, mr_service_td=rep.mr_service_td)
    return out


def build_evidence(
    parsed: ParsedQuote,
    status: str,
    advisories: list[str],
    ext: Any,
    certs: list[x509.Certificate],
    when: dt.datetime,
) -> VerifiedEvidence:
    """The typed result for a verified quote (shared by the dcap-qvl and TCB Info v2 paths)."""
    rep = parsed.report
    is_sgx = isinstance(rep, SgxReport)
    return VerifiedEvidence(
        platform=Platform.SGX if is_sgx else Platform.TDX,
        product="SGX" if is_sgx else ("TDX 1.5" if parsed.body_type == "td15" else "TDX 1.0"),
        version=parsed.header.version,
        measurement=rep.mr_enclave if isinstance(rep, SgxReport) else rep.mr_td,
        report_data=rep.report_data,
        debug=rep.debug,
        tcb=_tcb(status, advisories, parsed, ext),
        signer=rep.mr_signer if isinstance(rep, SgxReport) else b"",
        rtmrs=() if isinstance(rep, SgxReport) else rep.rtmrs,
        attributes=_attributes(parsed, ext),
        chain=tuple(_cert_info(c, when) for c in certs),
        verified_at=when,
    )


def _is_tcb_info_v2_sgx(collateral: Collateral, quote: ParsedQuote) -> bool:
    """SGX quote v3 with TCB Info v2: the one case dcap-qvl cannot decode (see legacy.py)."""
    return (
        quote.header.version == 3
        and not quote.is_tdx
        and collateral.tcb_info_json().get("version") == 2
    )


def verify_quote(
    quote: bytes,
    collateral: Collateral,
    *,
    at: dt.datetime | None = None,
    trust_root: bytes | None = None,
) -> VerifiedEvidence:
    """Verify an SGX/TDX DCAP quote against collateral as of ``at`` (default: now, UTC).

    ``trust_root`` (PEM or DER) replaces the shipped Intel SGX Root CA, e.g. for a test PKI.
    Raises MalformedEvidence, SignatureInvalid, ChainInvalid or TcbMismatch (each naming the
    failed ``check``); returns the typed result only when a TCB level matched.
    """
    import dcap_qvl

    parsed = parse_quote(quote)
    when = _utc(at)
    root_der = _root_der(trust_root) if trust_root is not None else shipped_root_der()
    if _is_tcb_info_v2_sgx(collateral, parsed):
        # Imported here: legacy.py reuses this module's helpers.
        from enarx.attestation.dcap.legacy import verify_sgx_tcb_info_v2

        return verify_sgx_tcb_info_v2(parsed, collateral, at=when, root_der=root_der)
    _precheck_collateral(collateral, parsed)
    _check_chain_root(collateral.tcb_info_issuer_chain, root_der, "tcb_info_issuer_chain")
    _check_chain_root(collateral.qe_identity_issuer_chain, root_der, "qe_identity_issuer_chain")
    certs, ext = _pck(parsed)
    qvl_collateral = collateral.to_dcap_qvl()
    now_secs = int(when.timestamp())
    if now_secs < 0:
        raise MalformedEvidence("dcap.time", "verification time is before 1970", actual=str(when))
    try:
        report = dcap_qvl.verify_with_root_ca(parsed.raw, qvl_collateral, root_der, now_secs)
    except ValueError as e:
        raise map_error(str(e)) from None

    return build_evidence(parsed, report.status, list(report.advisory_ids), ext, certs, when)
