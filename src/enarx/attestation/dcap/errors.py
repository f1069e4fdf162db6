"""Map dcap-qvl's failure strings to our typed errors.

dcap-qvl raises ``ValueError("Verification failed: <anyhow chain>")`` for every failure; there
is no error type to match on. We match known phrases conservatively (most specific first),
fall back to a generic ``dcap.verify`` check, and always keep dcap-qvl's original message in
the error text so nothing is lost when a phrase changes in a future release.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from enarx.errors import (
    AttestationError,
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
    TcbMismatch,
)

__all__ = ["map_error"]

_Err = Callable[..., AttestationError]

_UPDATE_HINT = ("fetch fresh collateral (`enarx platform sgx cache QUOTE --out DIR`), or check "
                "old evidence as of a past time with --at")

# (phrase, error type, check, hint). First match wins, so order matters: phrases in a
# "Caused by" chain are matched before the generic context line above them.
_RULES: tuple[tuple[str, _Err, str, str | None], ...] = (
    # time windows
    ("CrlExpired", ChainInvalid, "dcap.collateral.expired", _UPDATE_HINT),
    ("TCBInfo expired", ChainInvalid, "dcap.collateral.expired", _UPDATE_HINT),
    ("QE Identity expired", ChainInvalid, "dcap.collateral.expired", _UPDATE_HINT),
    ("TCBInfo issue date is in the future", ChainInvalid, "dcap.collateral.not_yet_valid", None),
    ("QE Identity issue date is in the future", ChainInvalid, "dcap.collateral.not_yet_valid",
     None),
    ("CertExpired", ChainInvalid, "dcap.chain.expired",
     "a certificate in the chain has expired; use the re-issued Intel signing certificate "
     "(fetch the issuer chain again)"),
    ("CertNotValidYet", ChainInvalid, "dcap.chain.not_yet_valid", None),
    # revocation and chains
    ("CertRevoked", ChainInvalid, "dcap.pck.revoked", None),
    ("UnknownIssuer", ChainInvalid, "dcap.chain.root",
     "the chain does not end in the trusted Intel SGX root CA"),
    ("InvalidCrlSignatureForPublicKey", ChainInvalid, "dcap.crl.signature", None),
    ("IssuerNotCrlSigner", ChainInvalid, "dcap.crl.signature", None),
    ("UnknownRevocationStatus", ChainInvalid, "dcap.crl.missing", _UPDATE_HINT),
    ("Failed to parse CRL", MalformedEvidence, "dcap.crl.format", None),
    ("Failed to verify certificate chain", ChainInvalid, "dcap.chain.signature", None),
    ("Failed to load root ca", ChainInvalid, "dcap.trust_root", None),
    ("Failed to parse root CA", ChainInvalid, "dcap.trust_root", None),
    # collateral signatures and formats
    ("Signature is invalid for tcb_info", SignatureInvalid, "dcap.tcb_info.signature", None),
    ("Signature is invalid for qe_identity", SignatureInvalid, "dcap.qe_identity.signature",
     None),
    ("Failed to decode TcbInfo", MalformedEvidence, "dcap.tcb_info.format", None),
    ("TCB Info", MalformedEvidence, "dcap.tcb_info.format", None),
    ("Failed to decode QeIdentity", MalformedEvidence, "dcap.qe_identity.format", None),
    ("Unsupported QE Identity", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE Identity", MalformedEvidence, "dcap.qe_identity.format", None),
    # quote signatures
    ("Signature is invalid for qe_report", SignatureInvalid, "dcap.qe_report.signature", None),
    ("QE report hash mismatch", SignatureInvalid, "dcap.qe_report.hash", None),
    ("ISV enclave report signature is invalid", SignatureInvalid, "dcap.quote.signature", None),
    ("Failed to parse PCK certificate", MalformedEvidence, "dcap.pck.format", None),
    ("Intel extension", MalformedEvidence, "dcap.pck.format", None),
    # QE identity policy
    ("QE MRSIGNER mismatch", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE ISVPRODID mismatch", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE MISCSELECT mismatch", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE ATTRIBUTES mismatch", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE report validation failed", TcbMismatch, "dcap.qe_identity.mismatch", None),
    ("QE ISVSVN", TcbMismatch, "dcap.qe.tcb", None),
    ("No TCB levels found in QE Identity", TcbMismatch, "dcap.qe.tcb", None),
    # platform TCB
    ("Fmspc mismatch", TcbMismatch, "dcap.tcb_info.fmspc",
     "the TCB Info is for a different platform (FMSPC); fetch it for the quote's FMSPC"),
    ("non-TDX TCB info", TcbMismatch, "dcap.tcb_info.type", None),
    ("non-SGX TCB info", TcbMismatch, "dcap.tcb_info.type", None),
    ("TDX module", TcbMismatch, "dcap.tcb.tdx_module", None),
    ("component count mismatch", TcbMismatch, "dcap.tcb.no_match", None),
    ("No matching TCB level found", TcbMismatch, "dcap.tcb.no_match",
     "the platform's TCB is not listed in the TCB Info (unsupported or pre-production TCB)"),
    ("TCB status is invalid: Revoked", TcbMismatch, "dcap.tcb.revoked", None),
    ("TCB status is invalid", TcbMismatch, "dcap.tcb.status", None),
    # report attributes dcap-qvl enforces itself
    ("Debug mode is enabled", AttestationError, "dcap.report.debug",
     "debug enclaves/TDs are not confidential; rebuild without the DEBUG attribute"),
    ("SEPT_VE_DISABLE", AttestationError, "dcap.report.attributes", None),
    ("Reserved bits in TD attributes", AttestationError, "dcap.report.attributes", None),
    ("TD profiling", AttestationError, "dcap.report.attributes", None),
    ("TD migration", AttestationError, "dcap.report.attributes", None),
    ("SERVTD_EXT", AttestationError, "dcap.report.attributes", None),
    ("MR service TD", AttestationError, "dcap.report.attributes", None),
    # quote format (we parse first, so these mostly back up our own parser)
    ("Failed to decode quote", MalformedEvidence, "dcap.quote.format", None),
    ("quote version", MalformedEvidence, "dcap.quote.format", None),
    ("Unsupported TEE type", MalformedEvidence, "dcap.quote.format", None),
    ("TEE quote must have version", MalformedEvidence, "dcap.quote.format", None),
    ("Unknown QE vendor ID", MalformedEvidence, "dcap.quote.qe_vendor", None),
    ("attestation key type", MalformedEvidence, "dcap.quote.format", None),
    ("PCK cert", MalformedEvidence, "dcap.quote.format", None),
    ("Certificate chain is too short", MalformedEvidence, "dcap.chain.format", None),
    ("Failed to parse certs", MalformedEvidence, "dcap.chain.format", None),
    ("Failed to extract", MalformedEvidence, "dcap.chain.format", None),
)

_TIMES = re.compile(r"(\w+): UnixTime\((\d+)\)")


def _iso(secs: str) -> str:
    return dt.datetime.fromtimestamp(int(secs), dt.UTC).isoformat().replace("+00:00", "Z")


def map_error(message: str) -> AttestationError:
    """Turn one dcap-qvl error message into the matching typed error."""
    text = message.removeprefix("Verification failed: ").strip()
    flat = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    expected = actual = None
    times = dict(_TIMES.findall(text))
    if "time" in times:
        actual = _iso(times["time"])
        bound = times.get("not_after") or times.get("next_update")
        if bound:
            expected = f"before {_iso(bound)}"
        elif "not_before" in times:
            expected = f"after {_iso(times['not_before'])}"
    for phrase, cls, check, hint in _RULES:
        if phrase in text:
            return cls(check, f"dcap-qvl: {flat}", expected=expected, actual=actual, hint=hint)
    return AttestationError("dcap.verify", f"dcap-qvl: {flat}", expected=expected, actual=actual)
