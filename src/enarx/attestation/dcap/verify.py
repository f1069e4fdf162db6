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
* It ignores the root CA copy a quote embeds in its PCK chain and accepts TCB Info / QE
  Identity signed by any key chaining to the root. ``pki.py`` checks both (the embedded root
  against the trust root; the signer's identity as Intel's QVL does), and the result's
  ``chain`` lists only the verified path, ending in the trust root.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from cryptography import x509

from enarx.attestation.dcap.collateral import Collateral
from enarx.attestation.dcap.errors import map_error
from enarx.attestation.dcap.evidence import build_evidence
from enarx.attestation.dcap.legacy import verify_sgx_tcb_info_v2
from enarx.attestation.dcap.pki import (
    check_chain_root,
    check_tcb_signer,
    load_root,
    pck_chain,
    verified_pck_path,
)
from enarx.attestation.dcap.quote import ParsedQuote, parse_quote
from enarx.attestation.result import VerifiedEvidence
from enarx.errors import MalformedEvidence, TcbMismatch

__all__ = ["shipped_root", "shipped_root_der", "verify_quote"]


@cache
def shipped_root() -> x509.Certificate:
    """The Intel SGX Root CA shipped in ``enarx.attestation.roots``."""
    from enarx.attestation.roots import intel_sgx_root

    return load_root(intel_sgx_root())


def shipped_root_der() -> bytes:
    """DER of the shipped Intel SGX Root CA."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return shipped_root().public_bytes(Encoding.DER)


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    try:
        return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
    except OverflowError:  # year 1 or 9999 shifted across UTC
        raise MalformedEvidence("dcap.time", "verification time is out of range",
                                expected="a time between years 1 and 9999 in UTC",
                                actual=str(at)) from None


def _precheck_collateral(collateral: Collateral, quote: ParsedQuote) -> None:
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
    from cryptography.hazmat.primitives.serialization import Encoding

    parsed = parse_quote(quote)
    when = _utc(at)
    root = load_root(trust_root) if trust_root is not None else shipped_root()
    if _is_tcb_info_v2_sgx(collateral, parsed):
        return verify_sgx_tcb_info_v2(parsed, collateral, at=when, root=root)
    _precheck_collateral(collateral, parsed)
    for field in ("tcb_info", "qe_identity"):
        chain = getattr(collateral, f"{field}_issuer_chain")
        certs = check_chain_root(chain, root, f"{field}_issuer_chain")
        check_tcb_signer(certs, root, field)
    certs, ext = pck_chain(parsed)
    qvl_collateral = collateral.to_dcap_qvl()
    now_secs = int(when.timestamp())
    if now_secs < 0:
        raise MalformedEvidence("dcap.time", "verification time is before 1970", actual=str(when))
    try:
        report = dcap_qvl.verify_with_root_ca(parsed.raw, qvl_collateral,
                                              root.public_bytes(Encoding.DER), now_secs)
    except ValueError as e:
        raise map_error(str(e)) from None
    path = verified_pck_path(certs, root)
    return build_evidence(parsed, report.status, list(report.advisory_ids), ext, path, when)
