"""The Keep's side of the key-broker protocol, without pydantic: the REPORT_DATA binding
rule and the decryption of released resources.

``steward/kbs.py`` (the steward's side: request models and parsers) re-exports these; a Keep
imports this module so that attesting does not pay for building the steward's models.

Runtime-data binding (:func:`expected_report_data`): the JSON object ``{"tee-pubkey": JWK,
"nonce": nonce, "additional-evidence": <string, "" if none>}`` (plus ``"workload"`` and
``"package-signature"`` when sent) serialised with RFC 8785 (JCS), hashed with SHA-384 and
zero-padded to the 64 bytes of SNP/TDX/SGX REPORT_DATA. Resources arrive as an RFC 7516
flattened JWE (``protected``, ``encrypted_key``, ``iv``, ``ciphertext``, ``tag``; ``enc``
A256GCM; ``alg`` ECDH-ES+A256KW or RSA-OAEP-256).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import rfc8785

from enarx.errors import ProtocolError

__all__ = [
    "JWE_MEMBERS",
    "REPORT_DATA_SIZE",
    "decrypt_resource",
    "expected_report_data",
    "report_data_for",
    "runtime_data_jcs",
]

JWE_MEMBERS = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
REPORT_DATA_SIZE = 64
RSA_ALG = "RSA-OAEP-256"


def _bad(message: str, kind: str = "JWEFailed", hint: str | None = None) -> ProtocolError:
    return ProtocolError(kind, message, hint=hint)


def runtime_data_jcs(runtime_data: Any, additional_evidence: str = "") -> bytes:
    """The exact RFC 8785 bytes whose SHA-384 is REPORT_DATA (see the module docstring);
    certificates carry them (CMW runtime data) so anyone can recompute the binding.
    ``runtime_data``: the wire object (a mapping) or a parsed ``kbs.RuntimeData``."""
    if isinstance(runtime_data, Mapping):
        rd: dict[str, Any] = dict(runtime_data)
    else:
        # The JWK exactly as received (a model dump would drop null members inside it).
        rd = {"tee-pubkey": runtime_data.tee_pubkey, "nonce": runtime_data.nonce,
              "workload": runtime_data.workload,
              "package-signature": runtime_data.package_signature}
    obj: dict[str, Any] = {
        "tee-pubkey": rd["tee-pubkey"],
        "nonce": rd["nonce"],
        "additional-evidence": additional_evidence,
    }
    if rd.get("workload") is not None:
        obj["workload"] = rd["workload"]
    if rd.get("package-signature") is not None:
        obj["package-signature"] = rd["package-signature"]
    out: bytes = rfc8785.dumps(obj)
    return out


def report_data_for(jcs: bytes) -> bytes:
    """SHA-384 of the JCS bytes, zero-padded to the 64 bytes of REPORT_DATA."""
    return hashlib.sha384(jcs).digest().ljust(REPORT_DATA_SIZE, b"\0")


def expected_report_data(runtime_data: Any, additional_evidence: str = "") -> bytes:
    """The 64 REPORT_DATA bytes that bind ``runtime_data`` (see the module docstring)."""
    return report_data_for(runtime_data_jcs(runtime_data, additional_evidence))


def decrypt_resource(jwe_obj: Any, private_key: Any) -> bytes:
    """Decrypt a resource JWE with the Keep's private key (a ``cryptography`` private key or
    a joserfc key). ``ProtocolError`` (JWEFailed) for anything malformed or not for us."""
    from joserfc import jwe
    from joserfc.errors import JoseError
    from joserfc.jwk import ECKey, RSAKey

    if not isinstance(jwe_obj, dict) or set(jwe_obj) != set(JWE_MEMBERS):
        raise _bad(f"JWE must be a flattened JSON object with exactly {list(JWE_MEMBERS)}",
                   kind="JWEFailed", hint=None)
    parts = [jwe_obj[m] for m in JWE_MEMBERS]
    if not all(isinstance(p, str) and p.isascii() and "." not in p for p in parts):
        raise _bad("JWE members must be base64url strings", kind="JWEFailed", hint=None)
    if isinstance(private_key, ECKey | RSAKey):
        key = private_key
    else:
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            key = ECKey.import_key(private_key)
        elif isinstance(private_key, rsa.RSAPrivateKey):
            key = RSAKey.import_key(private_key)
        else:
            raise TypeError("private_key must be an EC or RSA private key")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        raise _bad("JWE protected header is not base64url JSON", kind="JWEFailed",
                   hint=None) from None
    if not isinstance(header, dict) or header.get("enc") != "A256GCM" or header.get("alg") not in (
        "ECDH-ES+A256KW", RSA_ALG
    ):
        raise _bad("JWE header must use enc A256GCM with ECDH-ES+A256KW or RSA-OAEP-256",
                   kind="JWEFailed", hint=None)
    try:
        out = jwe.decrypt_compact(".".join(parts), key,
                                  algorithms=[header["alg"], "A256GCM"])
    except (JoseError, ValueError, TypeError, KeyError) as e:
        raise _bad(f"JWE does not decrypt: {type(e).__name__}", kind="JWEFailed",
                   hint=None) from None
    if out.plaintext is None:
        raise _bad("JWE has no plaintext", kind="JWEFailed", hint=None)
    return out.plaintext
