"""Intel DCAP collateral: TCB Info, QE Identity, their issuer chains and the CRLs.

``Collateral`` keeps every item as the exact bytes Intel (or a PCCS) served. The TCB Info and
QE Identity signatures cover the exact bytes of the ``tcbInfo`` / ``enclaveIdentity`` JSON
value, so we cut that value out of the document by position and never re-serialise it.

dcap-qvl's ``QuoteCollateralV3`` wants (found by reading its stubs and by experiment with the
vectors): issuer chains as PEM *str*, CRLs as DER *bytes*, ``tcb_info``/``qe_identity`` as the
exact signed JSON value as *str*, and the signatures as raw 64-byte r‖s (the PCS JSON carries
them hex-encoded).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enarx.errors import MalformedEvidence

__all__ = ["FILES", "OPTIONAL", "Collateral", "signed_json_value"]

#: File names used by ``--collateral DIR`` (and by the test vectors).
FILES = {
    "tcb_info": "tcb_info.json",
    "tcb_info_issuer_chain": "tcb_info_issuer_chain.pem",
    "qe_identity": "qe_identity.json",
    "qe_identity_issuer_chain": "qe_identity_issuer_chain.pem",
    "pck_crl": "pck_crl.der",
    "root_ca_crl": "root_ca_crl.der",
    "pck_crl_issuer_chain": "pck_crl_issuer_chain.pem",
}
OPTIONAL = frozenset({"pck_crl_issuer_chain"})

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def _bad(field: str, message: str, **kw: Any) -> MalformedEvidence:
    return MalformedEvidence(
        f"dcap.collateral.{field}", message, hint=f"check {FILES[field]} (as served by Intel PCS)",
        **kw,
    )


def signed_json_value(doc: bytes, key: str, field: str) -> tuple[bytes, bytes]:
    """Return (exact bytes of ``doc[key]``, signature bytes) from a PCS JSON document.

    The value is located by scanning the top-level object so its bytes come out untouched.
    """
    try:
        text = doc.decode("utf-8")
        parsed = json.loads(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(field, f"not valid JSON: {e}") from None
    except RecursionError:  # json recurses per nesting level: a hostile document is deep
        raise _bad(field, "JSON is nested too deeply") from None
    if not isinstance(parsed, dict) or key not in parsed or "signature" not in parsed:
        raise _bad(field, f'expected an object with "{key}" and "signature"',
                   actual=sorted(parsed) if isinstance(parsed, dict) else type(parsed).__name__)
    sig_hex = parsed["signature"]
    try:
        signature = bytes.fromhex(sig_hex) if isinstance(sig_hex, str) else b""
    except ValueError:
        signature = b""
    if len(signature) != 64:
        raise _bad(field, "signature must be 64 bytes (r‖s) in hex",
                   expected=128, actual=len(sig_hex) if isinstance(sig_hex, str) else None)

    decoder = json.JSONDecoder()
    # Walk the top-level members; json.loads above guarantees this well-formed scan succeeds.
    i = text.index("{") + 1
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        name, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        while text[i] in " \t\r\n:":
            i += 1
        _, end = decoder.raw_decode(text, i)
        if name == key:
            value = text[i:end]
            if not isinstance(parsed[key], dict):
                raise _bad(field, f'"{key}" must be a JSON object')
            return value.encode("utf-8"), signature
        i = end


def _pem_chain(data: bytes, field: str) -> str:
    if _PEM_CERT not in data:
        raise _bad(field, "expected a PEM certificate chain")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise _bad(field, "PEM chain is not ASCII") from None


def _der(data: bytes, field: str) -> bytes:
    # CRLs are served as DER; accept PEM too (PCCS variants) and hex (dcap-qvl's JSON bundle).
    if data.lstrip().startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(data).public_bytes(Encoding.DER)
        except (ValueError, x509.InvalidVersion) as e:
            raise _bad(field, f"bad PEM CRL: {e}") from None
    if data[:1] == b"\x30":
        return data
    try:
        raw = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raw = b""
    if raw[:1] != b"\x30":
        raise _bad(field, "expected a DER-encoded CRL")
    return raw


@dataclass(frozen=True)
class Collateral:
    """Everything besides the quote that DCAP verification needs, as served (bytes)."""

    tcb_info: bytes  # full PCS document {"tcbInfo": {...}, "signature": "..."}
    tcb_info_issuer_chain: bytes  # PEM: TCB Signing cert, Root CA
    qe_identity: bytes  # full PCS document {"enclaveIdentity": {...}, "signature": "..."}
    qe_identity_issuer_chain: bytes  # PEM
    pck_crl: bytes  # DER
    root_ca_crl: bytes  # DER
    pck_crl_issuer_chain: bytes = b""  # PEM, optional: dcap-qvl takes the PCK CA from the quote

    @classmethod
    def from_files(cls, files: Mapping[str, bytes]) -> Collateral:
        """Build from a mapping of file name (see ``FILES``) -> bytes; bare role names work too."""
        got: dict[str, bytes] = {}
        for role, name in FILES.items():
            value = files.get(name, files.get(role))
            if value is None:
                if role in OPTIONAL:
                    continue
                raise MalformedEvidence(
                    "dcap.collateral.missing", f"collateral file {name} is missing",
                    expected=name, hint="fetch the collateral for this FMSPC from Intel PCS "
                    "or your PCCS and save it under these names",
                )
            got[role] = bytes(value)
        return cls(**got)

    def to_dcap_qvl(self) -> Any:
        """Convert to ``dcap_qvl.QuoteCollateralV3``; raises MalformedEvidence on bad fields."""
        import dcap_qvl

        tcb_info, tcb_sig = signed_json_value(self.tcb_info, "tcbInfo", "tcb_info")
        qe_id, qe_sig = signed_json_value(self.qe_identity, "enclaveIdentity", "qe_identity")
        pck_issuer = (
            _pem_chain(self.pck_crl_issuer_chain, "pck_crl_issuer_chain")
            if self.pck_crl_issuer_chain.strip()
            else ""
        )
        return dcap_qvl.QuoteCollateralV3(
            pck_crl_issuer_chain=pck_issuer,
            root_ca_crl=_der(self.root_ca_crl, "root_ca_crl"),
            pck_crl=_der(self.pck_crl, "pck_crl"),
            tcb_info_issuer_chain=_pem_chain(self.tcb_info_issuer_chain, "tcb_info_issuer_chain"),
            tcb_info=tcb_info.decode("utf-8"),
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=_pem_chain(
                self.qe_identity_issuer_chain, "qe_identity_issuer_chain"
            ),
            qe_identity=qe_id.decode("utf-8"),
            qe_identity_signature=qe_sig,
        )

    def tcb_info_json(self) -> dict[str, Any]:
        """The parsed ``tcbInfo`` object (for typed result fields and good errors)."""
        raw, _ = signed_json_value(self.tcb_info, "tcbInfo", "tcb_info")
        value: dict[str, Any] = json.loads(raw)
        return value
