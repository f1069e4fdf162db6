"""The typed result of a verified DCAP quote, shared by the dcap-qvl path (``verify.py``) and
the TCB Info v2 path (``legacy.py``) so both report the same fields. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509

from enarx.attestation.dcap.pki import cert_info
from enarx.attestation.dcap.quote import ParsedQuote, SgxReport, TdReport
from enarx.attestation.result import Platform, Tcb, TcbStatus, VerifiedEvidence
from enarx.errors import AttestationError

__all__ = ["build_evidence"]


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
    path: list[x509.Certificate],
    when: dt.datetime,
) -> VerifiedEvidence:
    """The typed result for a verified quote; ``path`` is the verified PCK chain, leaf to
    trust root (``pki.verified_pck_path``)."""
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
        chain=tuple(cert_info(c, when) for c in path),
        verified_at=when,
    )
