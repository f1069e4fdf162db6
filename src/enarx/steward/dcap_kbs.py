"""Intel TDX and SGX evidence through the key broker (``tee: "tdx"`` / ``"sgx"``).

``tee-evidence.primary_evidence`` is one of:

- ours: ``{"quote": base64(DCAP quote), "collateral": {"<file name>": base64(bytes), ...}}``
  with the file names ``enarx attest verify --collateral DIR`` reads (``tcb_info.json``,
  ``tcb_info_issuer_chain.pem``, ``qe_identity.json``, ``qe_identity_issuer_chain.pem``,
  ``pck_crl.der``, ``root_ca_crl.der``, optional ``pck_crl_issuer_chain.pem``);
- Trustee's attesters': ``{"quote": base64(DCAP quote), "cc_eventlog"?: ..., ...}`` (TDX) or
  ``{"quote": base64}`` (SGX), without collateral: the steward then takes the collateral from
  its own cache directory (``enarx steward serve --collateral DIR``, same file names; a
  sub-directory named after the quote's FMSPC in lowercase hex, e.g. ``DIR/b0c06f000000/``,
  is preferred when it exists, so one cache can serve several platforms).

The quote is verified with ``attestation.dcap.verify.verify_quote`` (Intel root shipped with
Enarx, every signature, CRLs, TCB level) as of the steward's evidence time; the caller then
checks REPORT_DATA against the key-broker binding. Errors are ``ProtocolError``
(InvalidEvidence) for malformed input and ``AttestationError`` for evidence that fails.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enarx.attestation.result import VerifiedEvidence
from enarx.errors import AttestationError, ProtocolError

__all__ = ["DcapEvidence", "parse_dcap_evidence", "read_collateral_dir", "verify_dcap"]

_HINT = ('send primary_evidence {"quote": base64, "collateral": {file: base64}} '
         "(docs/steward.md), or start the steward with --collateral DIR")
_MAX_FILES = 16


def _bad(message: str) -> ProtocolError:
    return ProtocolError("InvalidEvidence", message, hint=_HINT)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        try:  # Trustee's attesters use base64url for some fields
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            raise _bad(f"{what} is not base64") from None


@dataclass(frozen=True)
class DcapEvidence:
    quote: bytes
    collateral: dict[str, bytes] | None  # file name -> bytes; None: use the steward's cache


def parse_dcap_evidence(primary: Any) -> DcapEvidence:
    """Decode TDX/SGX ``primary_evidence`` (ours or Trustee's, see the module docstring)."""
    if isinstance(primary, str):
        import json

        try:
            primary = json.loads(primary)
        except (ValueError, RecursionError):
            raise _bad("primary_evidence is not a JSON object") from None
    if not isinstance(primary, dict) or "quote" not in primary:
        raise _bad("tee-evidence.primary_evidence must be an object with a quote")
    quote = _b64(primary["quote"], "quote")
    if not quote:
        raise _bad("quote is empty")
    raw = primary.get("collateral")
    if raw is None:
        return DcapEvidence(quote, None)
    if not isinstance(raw, dict) or len(raw) > _MAX_FILES:
        raise _bad("collateral must be an object of file name -> base64 bytes")
    files = {str(k): _b64(v, f"collateral[{k!r}]") for k, v in raw.items()}
    return DcapEvidence(quote, files)


def read_collateral_dir(directory: Path, quote: bytes | None = None) -> dict[str, bytes]:
    """The collateral files in ``directory`` (or its ``<fmspc>/`` sub-directory for
    ``quote``); a missing file is left out (``Collateral.from_files`` names it)."""
    from enarx.attestation.dcap.collateral import FILES

    base = Path(directory)
    if quote is not None:
        fmspc = _fmspc(quote)
        if fmspc and (base / fmspc).is_dir():
            base = base / fmspc
    out: dict[str, bytes] = {}
    for name in FILES.values():
        try:
            out[name] = (base / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AttestationError("dcap.collateral", f"cannot read {base / name}: "
                                   f"{exc.strerror or exc}",
                                   hint="check the steward's --collateral directory") from None
    return out


def _fmspc(quote: bytes) -> str | None:
    from enarx.attestation.dcap.pki import pck_chain
    from enarx.attestation.dcap.quote import parse_quote
    from enarx.errors import EnarxError

    try:
        _, ext = pck_chain(parse_quote(quote))
    except EnarxError:
        return None
    fmspc = getattr(ext, "fmspc", None)
    try:
        return bytes(fmspc).hex() if fmspc is not None else None
    except (TypeError, ValueError):
        return None


def verify_dcap(tee: str, ev: DcapEvidence, *, at: dt.datetime,
                collateral_dir: Path | None) -> VerifiedEvidence:
    """Verify the quote (``tee`` "tdx" or "sgx") with its or the cached collateral."""
    from enarx.attestation.dcap.collateral import Collateral
    from enarx.attestation.dcap.verify import verify_quote

    files = ev.collateral
    if files is None:
        if collateral_dir is None:
            raise AttestationError(
                "dcap.collateral", "the evidence carries no collateral and this steward has "
                "no collateral cache", expected="collateral in primary_evidence or --collateral",
                actual="absent", hint=_HINT)
        files = read_collateral_dir(collateral_dir, ev.quote)
    result = verify_quote(ev.quote, Collateral.from_files(files), at=at)
    if result.platform != tee:
        raise AttestationError(
            "dcap.tee", f"the quote is {result.platform} evidence, the session said {tee}",
            expected=tee, actual=result.platform, hint="POST /kbs/v0/auth with the right tee")
    return result
