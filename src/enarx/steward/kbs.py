"""The key-broker protocol (CoCo Trustee "RCAR": request, challenge, attestation, response).

Pure: models, parsers and the two cryptographic rules of the protocol; the HTTP routes live in
``steward/app.py``. What a Trustee client sends and gets, byte for byte:

``POST /kbs/v0/auth``  ``{"version": "0.4.0", "tee": "snp", "extra-params": {...}}``
    → ``{"nonce": <standard base64 of 32 random bytes>, "extra-params": ""}`` and the cookie
    ``kbs-session-id`` (set by the app). ``version`` must be exactly ``0.4.0``; another
    version is answered 401 as the protocol document says.

``POST /kbs/v0/attest``  ``{"init-data"?: {"format", "body"}, "runtime-data": {"nonce",
    "tee-pubkey": JWK, "workload"?}, "tee-evidence": {"primary_evidence": ...,
    "additional_evidence": "<JSON string>"}}``.

Runtime-data binding (``expected_report_data``, in ``steward/binding.py``): the JSON object
``{"tee-pubkey": JWK, "nonce": nonce, "additional-evidence": <string, "" if none>}`` (plus
``"workload": "sha384:<hex>"`` when the Keep binds its workload, and ``"package-signature"``
when it presents a signed package's signature, ``steward/signers.py``) serialised with RFC 8785
(JCS), hashed with SHA-384 and zero-padded to the 64 bytes of SNP/TDX/SGX REPORT_DATA.

Resources travel as an RFC 7516 flattened JWE with exactly ``protected``, ``encrypted_key``,
``iv``, ``ciphertext`` and ``tag`` (base64url, no padding; ``epk`` in the protected header; no
``aad`` member, so the GCM AAD is ASCII(protected)), ``enc`` A256GCM, ``alg`` ECDH-ES+A256KW
for EC P-256/P-521 keys and RSA-OAEP-256 for RSA keys. P-384 is refused as Trustee does.

Evidence of our Keeps (``tee: "snp"``; the sim backend is SNP-format): ``primary_evidence =
{"attestation_report": base64(report), "cert_chain": [base64(DER), ...]}``. Trustee's SNP
attester sends ``{"attestation_report": {<sev crate JSON>}, "cert_chain": [{"cert_type",
"data"}] | null}`` instead; both are accepted (``steward/trustee_snp.py`` has the mapping).
``tee: "sample"`` carries no evidence (the nil backend).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enarx.errors import ProtocolError
from enarx.steward.binding import (
    JWE_MEMBERS,
    decrypt_resource,
    expected_report_data,
    report_data_for,
    runtime_data_jcs,
)

__all__ = [
    "JWE_MEMBERS",
    "PROTOCOL_VERSION",
    "TEES",
    "Attestation",
    "Challenge",
    "InitData",
    "KbsRequest",
    "RuntimeData",
    "SnpEvidence",
    "TeeEvidence",
    "decrypt_resource",
    "encrypt_resource",
    "expected_report_data",
    "jwk_spki",
    "parse_attestation",
    "parse_request",
    "parse_snp_evidence",
    "report_data_for",
    "runtime_data_jcs",
    "validate_tee_pubkey",
]

PROTOCOL_VERSION = "0.4.0"
#: ``tee`` values Trustee defines (kbs-types); we verify ``snp`` and ``sample`` (nil) ourselves.
TEES = frozenset({
    "snp", "tdx", "sgx", "az-snp-vtpm", "az-tdx-vtpm", "cca", "csv", "se", "tpm", "nvidia",
    "hygondcu", "sample", "sampledevice",
})
NONCE_BYTES = 32
_WORKLOAD_RE = re.compile(r"^sha384:[0-9a-f]{96}$")
_EC_ALGS = {"P-256": "ECDH-ES+A256KW", "P-521": "ECDH-ES+A256KW"}
_RSA_ALG = "RSA-OAEP-256"
_HINT = "follow the key-broker protocol in docs/steward.md"


def _bad(message: str, kind: str = "InvalidRequest", hint: str | None = _HINT) -> ProtocolError:
    return ProtocolError(kind, message, hint=hint)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def to_json(self) -> dict[str, Any]:
        """Wire form: kebab-case keys, optional members left out when unset."""
        return self.model_dump(by_alias=True, exclude_none=True)


class KbsRequest(_Model):
    """Body of ``POST /kbs/v0/auth``."""

    version: str
    tee: str
    extra_params: Any = Field(default_factory=dict, alias="extra-params")

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != PROTOCOL_VERSION:
            raise ValueError(f"protocol version must be exactly {PROTOCOL_VERSION}, got {v!r}")
        return v

    @field_validator("tee")
    @classmethod
    def _tee(cls, v: str) -> str:
        if v not in TEES:
            raise ValueError(f"unknown tee {v!r}; one of {sorted(TEES)}")
        return v


class Challenge(_Model):
    """Reply to ``/auth``: a fresh nonce (standard base64 of 32 bytes) and empty extra-params."""

    nonce: str
    extra_params: str = Field("", alias="extra-params")

    @classmethod
    def new(cls) -> Challenge:
        return cls(nonce=base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii"))


class InitData(_Model):
    format: Literal["json", "toml"]
    body: str


class RuntimeData(_Model):
    nonce: str
    tee_pubkey: dict[str, Any] = Field(alias="tee-pubkey")
    workload: str | None = None
    #: a signed package's signature (``steward/signers.py``); absent = unsigned
    package_signature: dict[str, Any] | None = Field(None, alias="package-signature")

    @field_validator("tee_pubkey")
    @classmethod
    def _jwk(cls, v: dict[str, Any]) -> dict[str, Any]:
        validate_tee_pubkey(v)
        return v

    @field_validator("workload")
    @classmethod
    def _workload(cls, v: str | None) -> str | None:
        if v is not None and not _WORKLOAD_RE.match(v):
            raise ValueError('workload must be "sha384:" and 96 lowercase hex digits')
        return v


class TeeEvidence(_Model):
    primary_evidence: Any = None
    additional_evidence: str = ""


class Attestation(_Model):
    """Body of ``POST /kbs/v0/attest``."""

    init_data: InitData | None = Field(None, alias="init-data")
    runtime_data: RuntimeData = Field(alias="runtime-data")
    tee_evidence: TeeEvidence = Field(alias="tee-evidence")


def _load_json(body: bytes | str, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise _bad(f"{what} JSON is nested too deeply") from None


def _first_error(e: ValidationError, what: str) -> ProtocolError:
    first = e.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or what
    msg = str(first["msg"]).removeprefix("Value error, ")
    return _bad(f"{what}: {key}: {msg}")


def parse_request(body: bytes | str) -> KbsRequest:
    """Parse and check a ``/auth`` body; ``ProtocolError`` (InvalidRequest) otherwise."""
    data = _load_json(body, "auth request")
    if isinstance(data, dict) and isinstance(data.get("version"), str) \
            and data["version"] != PROTOCOL_VERSION:
        # Trustee's protocol: a KBS that rejects the Request's version answers 401.
        raise _bad(f"protocol version must be exactly {PROTOCOL_VERSION}, got "
                   f"{data['version']!r}", kind="Unauthorized",
                   hint=f"speak KBS protocol {PROTOCOL_VERSION}")
    try:
        return KbsRequest.model_validate(data)
    except ValidationError as e:
        raise _first_error(e, "auth request") from None


def parse_attestation(body: bytes | str) -> Attestation:
    """Parse and check an ``/attest`` body (including the tee-pubkey JWK)."""
    data = _load_json(body, "attestation")
    try:
        return Attestation.model_validate(data)
    except ValidationError as e:
        raise _first_error(e, "attestation") from None


def validate_tee_pubkey(jwk: Any) -> str:
    """Check a tee-pubkey JWK is a public EC P-256/P-521 or RSA (>= 2048 bit) key usable for
    the resource JWE; return its JWE ``alg``. ``ProtocolError`` (InvalidRequest) otherwise."""
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    if not isinstance(jwk, dict):
        raise _bad("tee-pubkey must be a JWK object")
    if any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise _bad("tee-pubkey carries private key material",
                   hint="send only the public part of the one-time key")
    kty = jwk.get("kty")
    alg = jwk.get("alg")
    try:
        if kty == "EC":
            crv = jwk.get("crv")
            if crv not in _EC_ALGS:
                raise _bad(f"tee-pubkey curve {crv!r} is not supported (P-256 or P-521)")
            want = _EC_ALGS[crv]
            ECKey.import_key(dict(jwk))
        elif kty == "RSA":
            want = _RSA_ALG
            n = jwk.get("n")
            size = len(_b64url(n)) * 8 if isinstance(n, str) else 0
            if size < 2048:  # checked first: joserfc warns on import of short keys
                raise _bad("tee-pubkey RSA key is shorter than 2048 bits")
            RSAKey.import_key(dict(jwk))
        else:
            raise _bad(f"tee-pubkey kty {kty!r} is not supported (EC or RSA)")
    except ProtocolError:
        raise
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as e:
        raise _bad(f"tee-pubkey is not a valid {kty} JWK: {e or type(e).__name__}") from None
    if alg is not None and alg != want:
        raise _bad(f"tee-pubkey alg {alg!r} is not supported for {kty} keys (use {want})")
    return want


def _b64url(value: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise _bad("tee-pubkey members must be base64url") from None


class SnpEvidence(_Model):
    report: bytes
    cert_chain: tuple[bytes, ...] = ()


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{what} is not standard base64") from None


def parse_snp_evidence(tee_evidence: TeeEvidence | dict[str, Any]) -> SnpEvidence:
    """Decode SNP ``primary_evidence``: ours (base64 report, base64 DER ``cert_chain``) or
    Trustee's attester's (the sev crate's JSON report and ``{cert_type, data}`` entries,
    converted by ``steward.trustee_snp``)."""
    from enarx.steward import trustee_snp

    primary = (tee_evidence.primary_evidence if isinstance(tee_evidence, TeeEvidence)
               else tee_evidence.get("primary_evidence"))
    if isinstance(primary, str):  # a client that serialised the evidence object to a string
        primary = _load_json(primary, "primary_evidence")
    if not isinstance(primary, dict):
        raise _bad("tee-evidence.primary_evidence must be an object with attestation_report",
                   kind="InvalidEvidence")
    raw = primary.get("attestation_report")
    report = (trustee_snp.report_from_json(raw) if isinstance(raw, dict)
              else _b64(raw, "attestation_report"))
    chain = primary.get("cert_chain", [])
    if chain is None:
        chain = []
    if not isinstance(chain, list):
        raise _bad("cert_chain must be a list of base64 DER certificates", kind="InvalidEvidence")
    if chain and all(isinstance(c, dict) for c in chain):
        certs = tuple(trustee_snp.chain_from_json(chain))
    else:
        certs = tuple(_b64(c, f"cert_chain[{i}]") for i, c in enumerate(chain))
    return SnpEvidence(report=report, cert_chain=certs)


# --- resource JWE ------------------------------------------------------------------------------


def encrypt_resource(data: bytes, tee_pubkey_jwk: dict[str, Any]) -> dict[str, str]:
    """Encrypt ``data`` to the attested tee-pubkey as Trustee's flattened JWE."""
    from joserfc import jwe
    from joserfc.jwk import import_key

    alg = validate_tee_pubkey(tee_pubkey_jwk)
    public = {k: v for k, v in tee_pubkey_jwk.items() if k != "alg"}
    key = import_key(public)
    compact = jwe.encrypt_compact({"alg": alg, "enc": "A256GCM"}, data, key,
                                  algorithms=[alg, "A256GCM"])
    return dict(zip(JWE_MEMBERS, compact.split("."), strict=True))


# --- JWK → SubjectPublicKeyInfo (the CSR must be for the attested key) ---------------------


def _b64int(value: Any) -> int:
    if not isinstance(value, str):
        raise _bad("tee-pubkey is not a valid JWK")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (ValueError, binascii.Error):
        raise _bad("tee-pubkey is not a valid JWK") from None
    return int.from_bytes(raw, "big")


_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1,
                                              "P-521": ec.SECP521R1}


def jwk_spki(jwk: dict[str, Any]) -> bytes:
    """DER SubjectPublicKeyInfo of an EC or RSA public JWK (already validated by ``validate_tee_pubkey``); ``ProtocolError`` otherwise."""
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
            key: Any = ec.EllipticCurvePublicNumbers(
                _b64int(jwk.get("x")), _b64int(jwk.get("y")), _CURVES[jwk["crv"]]()
            ).public_key()
        elif jwk.get("kty") == "RSA":
            key = rsa.RSAPublicNumbers(_b64int(jwk.get("e")), _b64int(jwk.get("n"))).public_key()
        else:
            raise _bad("tee-pubkey must be an EC or RSA JWK")
    except ValueError:  # not a point on the curve, bad RSA numbers
        raise _bad("tee-pubkey is not a valid JWK") from None
    der: bytes = key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return der
