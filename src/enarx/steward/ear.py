"""EAR attestation results: build, sign (ES256/ES384 with ``kid``), publish (JWKS), verify.

Claim names are the dotted ones veraison/ear and Trustee parse (``ear.status``,
``ear.trustworthiness-vector``, ...) under ``eat_profile = "tag:github.com,2023:veraison/ear"``.
The trustworthiness vector comes from the policy's appraisal (steward/policy.py);
``ear.status`` is never better than its worst claim (:func:`status_of`).

Pure apart from key generation (:meth:`EarSigner.generate`); the private key is stored by the
caller (0600 / database) and never logged.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from enarx import __version__
from enarx.errors import AttestationError, ConfigError, MalformedEvidence, SignatureInvalid

__all__ = [
    "EAR_PROFILE",
    "STATUSES",
    "VECTOR_KEYS",
    "EarSigner",
    "build_ear",
    "status_of",
    "tier",
    "verify_ear",
]

EAR_PROFILE = "tag:github.com,2023:veraison/ear"
#: ear.status values and their numeric tiers (veraison/ear trusttier.go).
STATUSES: dict[str, int] = {"none": 0, "affirming": 2, "warning": 32, "contraindicated": 96}
VECTOR_KEYS = (
    "instance-identity", "configuration", "executables", "file-system", "hardware",
    "runtime-opaque", "storage-opaque", "sourced-data",
)
_ALGS = {"P-256": "ES256", "P-384": "ES384"}
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}
#: Tokens longer than this are refused unread.
MAX_TOKEN = 64 * 1024
#: Allowed clock skew when checking ``iat``/``exp``.
LEEWAY = 60

def _epoch(now: int | float | datetime.datetime) -> int:
    if isinstance(now, datetime.datetime):
        return int(now.timestamp())
    return int(now)


# --- the vector -----------------------------------------------------------------------------


def tier(value: int) -> str:
    """The status tier of one claim value (negatives mirror positives)."""
    v = abs(value)
    if v <= 1:
        return "none"
    if v < 32:
        return "affirming"
    if v < 96:
        return "warning"
    return "contraindicated"


def status_of(vector: Mapping[str, int]) -> str:
    """``ear.status``: the worst tier among the vector's claims ("none" when it has none)."""
    worst = "none"
    for value in vector.values():
        t = tier(value)
        if STATUSES[t] > STATUSES[worst]:
            worst = t
    return worst


def build_ear(
    *,
    now: int | float | datetime.datetime,
    ttl: int | datetime.timedelta,
    status: str,
    vector: Mapping[str, int],
    policy_id: str,
    platform: str,
    workload: str | None,
    nonce: str | None = None,
    tee_pubkey: Mapping[str, Any] | None = None,
    runtime_data_claims: Mapping[str, Any] | None = None,
    evidence: Any = None,
    measurement: str | None = None,
    tcb_status: str | None = None,
    verifier_id: str | Mapping[str, str] | None = None,
    issuer: str | None = None,
    extra_annotations: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The EAR claims of one attestation (one submodule ``cpu0``).

    ``evidence`` (an ``attestation.result.VerifiedEvidence`` or None) supplies
    ``measurement`` (hex) and ``tcb_status`` unless given. ``runtime_data_claims`` defaults
    to ``{"tee-pubkey", "nonce", "workload"}`` from the arguments (where Trustee's KBS looks
    for the key to encrypt resources to). ``status`` is lowered to what ``vector`` allows,
    never raised.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown ear.status {status!r}")
    floor = status_of(vector)
    if STATUSES[floor] > STATUSES[status]:
        status = floor
    if evidence is not None:
        if measurement is None and getattr(evidence, "measurement", None) is not None:
            measurement = bytes(evidence.measurement).hex()
        tcb = getattr(evidence, "tcb", None)
        if tcb_status is None and tcb is not None:
            tcb_status = str(getattr(tcb.status, "value", tcb.status))
    if runtime_data_claims is None:
        runtime_data_claims = {}
        if tee_pubkey is not None:
            runtime_data_claims["tee-pubkey"] = dict(tee_pubkey)
        if nonce is not None:
            runtime_data_claims["nonce"] = nonce
        if workload is not None:
            runtime_data_claims["workload"] = workload
    if isinstance(verifier_id, Mapping):
        vid = {str(k): str(v) for k, v in verifier_id.items()}
    else:
        vid = {"developer": "enarx",
               "build": f"{verifier_id or 'enarx-steward'} {__version__}"}
    iat = _epoch(now)
    seconds = int(ttl.total_seconds()) if isinstance(ttl, datetime.timedelta) else int(ttl)
    annotated: dict[str, Any] = {
        "runtime_data_claims": dict(runtime_data_claims),
        "platform": platform,
        "measurement": measurement,
        "tcb_status": tcb_status,
        "workload": workload,
        **(dict(extra_annotations) if extra_annotations else {}),
    }
    claims: dict[str, Any] = {
        "eat_profile": EAR_PROFILE,
        "iat": iat,
        "exp": iat + seconds,
        "ear.verifier-id": vid,
        "submods": {
            "cpu0": {
                "ear.status": status,
                "ear.trustworthiness-vector": dict(vector),
                "ear.appraisal-policy-id": policy_id,
                "ear.veraison.annotated-evidence": annotated,
            }
        },
    }
    if nonce is not None:
        claims["eat_nonce"] = nonce
    if issuer is not None:
        claims["iss"] = issuer
    return claims


# --- signing --------------------------------------------------------------------------------


class EarSigner:
    """Signs EARs with an EC key (P-256 -> ES256, P-384 -> ES384) under key id ``kid``."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> None:
        curve = private_key.curve.name
        jwk = ECKey.import_key(private_key)
        alg = _ALGS.get(str(jwk.as_dict(private=False).get("crv")))
        if alg is None:
            raise ConfigError(f"EAR signing keys must be P-256 or P-384, not {curve}")
        self._key = jwk
        self._private = private_key
        self.alg = alg
        self.kid = kid or jwk.thumbprint()
        # The JWS header never changes: encoded once, as joserfc would ({typ, alg, kid}).
        self._header = _b64u(_compact({"typ": "JWT", "alg": alg, "kid": self.kid}))
        self._hash = ec.ECDSA(hashes.SHA256() if alg == "ES256" else hashes.SHA384())
        self._size = (private_key.curve.key_size + 7) // 8

    @classmethod
    def generate(cls, alg: str = "ES256") -> EarSigner:
        return cls(ec.generate_private_key(_CURVES[alg]()))

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None) -> EarSigner:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"the EAR signing key is not an unencrypted PEM key ({e})"
                              ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("the EAR signing key must be an EC key")
        return cls(key, kid)

    def private_pem(self) -> bytes:
        """PKCS#8 PEM: store 0600, never log."""
        return self._private.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def public_jwk(self) -> dict[str, Any]:
        out = dict(self._key.as_dict(private=False))
        out.update(kid=self.kid, alg=self.alg, use="sig")
        return out

    def jwks(self) -> dict[str, Any]:
        """The JWK Set to publish at ``/.well-known/jwks.json``."""
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWT with header ``{alg, kid, typ: "JWT"}``."""
        # RFC 7515 compact serialisation (the bytes joserfc's jwt.encode makes, without its
        # per-call key and registry work): header.payload signed, signature r || s.
        signing_input = self._header + b"." + _b64u(_compact(dict(claims)))
        r, s = decode_dss_signature(self._private.sign(signing_input, self._hash))
        sig = r.to_bytes(self._size, "big") + s.to_bytes(self._size, "big")
        return (signing_input + b"." + _b64u(sig)).decode("ascii")


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _b64u(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


# --- verification ---------------------------------------------------------------------------


def _malformed(message: str) -> MalformedEvidence:
    return MalformedEvidence("ear.format", message,
                             hint="pass the token exactly as the steward returned it")


def _b64json(part: str, what: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise _malformed(f"the {what} is not base64url JSON") from None


def verify_ear(token: str, jwks: Mapping[str, Any],
               now: int | float | datetime.datetime) -> dict[str, Any]:
    """Check ``token``'s signature against ``jwks`` (by ``kid``) and its time window;
    returns its claims. Raises MalformedEvidence / SignatureInvalid / AttestationError."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise _malformed("the token is not a string of at most 64 KiB")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise _malformed("not a compact JWS (header.payload.signature)")
    header = _b64json(parts[0], "header")
    if not isinstance(header, dict):
        raise _malformed("the header is not a JSON object")
    alg, kid = header.get("alg"), header.get("kid")
    if alg not in _CURVES:
        raise SignatureInvalid("ear.alg", "unsupported signature algorithm",
                               expected=sorted(_CURVES), actual=str(alg)[:20])
    if not isinstance(kid, str):
        raise SignatureInvalid("ear.kid", "the token names no key id (kid)")
    key = _find_key(jwks, kid, alg)
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except JoseError as e:
        raise SignatureInvalid("ear.signature", f"the signature does not verify ({e.error})"
                               ) from None
    except (ValueError, TypeError, KeyError, UnicodeError, RecursionError):
        raise _malformed("the token does not parse") from None
    claims = decoded.claims
    if not isinstance(claims, dict):
        raise _malformed("the claims are not a JSON object")
    _check_claims(claims, _epoch(now))
    return claims


def _find_key(jwks: Mapping[str, Any], kid: str, alg: str) -> ECKey:
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise SignatureInvalid("ear.kid", "the JWK Set has no 'keys' list")
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kid") != kid:
            continue
        if entry.get("alg", alg) != alg or entry.get("use", "sig") != "sig":
            raise SignatureInvalid("ear.kid", f"key {kid[:40]!r} is not for {alg} signatures")
        try:
            key = ECKey.import_key(entry)
        except (JoseError, ValueError, TypeError, KeyError):
            raise SignatureInvalid("ear.kid", f"key {kid[:40]!r} in the JWK Set is invalid"
                                   ) from None
        if key.as_dict(private=False).get("crv") != {"ES256": "P-256", "ES384": "P-384"}[alg]:
            raise SignatureInvalid("ear.kid", f"key {kid[:40]!r} is on the wrong curve")
        return key
    raise SignatureInvalid("ear.kid", "no key in the JWK Set has the token's kid",
                           actual=kid[:80])


def _check_claims(claims: dict[str, Any], now: int) -> None:
    if claims.get("eat_profile") != EAR_PROFILE:
        raise _malformed(f"eat_profile is not {EAR_PROFILE!r}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if type(iat) is not int:
        raise _malformed("'iat' is missing or not an integer")
    if exp is not None and type(exp) is not int:
        raise _malformed("'exp' is not an integer")
    if iat > now + LEEWAY:
        raise AttestationError("ear.iat", "the token is issued in the future",
                               expected=f"<= {now}", actual=iat)
    if exp is not None and now >= exp + LEEWAY:
        raise AttestationError("ear.exp", "the token has expired", expected=f"> {now}",
                               actual=exp, hint="attest again for a fresh token")
    submods = claims.get("submods")
    if not isinstance(submods, dict) or not submods:
        raise _malformed("'submods' is missing or empty")
    for name, sub in submods.items():
        if not isinstance(sub, dict) or sub.get("ear.status") not in STATUSES:
            raise _malformed(f"submodule {str(name)[:40]!r} has no valid ear.status")
        vector = sub.get("ear.trustworthiness-vector", {})
        if not isinstance(vector, dict) or not all(
            k in VECTOR_KEYS and type(v) is int and -128 <= v <= 127 for k, v in vector.items()
        ):
            raise _malformed(f"submodule {str(name)[:40]!r} has an invalid trustworthiness "
                             "vector")
