"""Signed packages required by the steward's policy: ``[workload] signers`` (pure).

A Keep that deploys a signed package presents the signature with its attestation, as the
runtime-data member ``package-signature`` (bound into REPORT_DATA like every other member;
docs/steward.md, "Package signatures")::

    {"format": "drawbridge-jws",
     "jws": "<the signed tag body exactly as the registry served it (JSON text)>",
     "root": "<base64 of the stored tree's root directory (JCS bytes)>",   # encrypted only
     "manifest": "<base64 of enarx-package.json>"}                         # encrypted only
    {"format": "cosign-bundle",
     "bundles": ["<cosign bundle JSON text>", ...],            # 1..4 bundle referrers
     "oci-manifest": "<base64 of the OCI image manifest>",
     "manifest": "<base64 of enarx-package.json>"}                         # encrypted only

The steward accepts the attestation only when a signature verifies with one of its
configured signer keys AND the signed tree is the attested workload. Drawbridge: the JWS
payload's ``tree``; OCI: the tree the signed manifest (SHA-256 of ``oci-manifest`` = the
bundle's subject) describes. That tree's identity must equal the workload identity (a
plaintext package), or, for an encrypted package, the signed tree (drawbridge: ``root``,
which must hash to it) lists ``enarx-package.json`` with digests matching ``manifest``,
and that manifest names the attested identity. Nothing the host supplies is
believed without one of these checks; an absent member means "unsigned" (a Trustee client
sends none), which a policy with signers refuses. Every refusal is rule ``workload.signer``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.errors import ConfigError, EnarxError
from enarx.package.tree import Entry

__all__ = ["FORMAT_COSIGN", "FORMAT_JWS", "MAX_BUNDLES", "MEMBER", "RULE", "check_signature",
           "load_signer", "presented"]

MEMBER = "package-signature"
RULE = "workload.signer"
FORMAT_JWS = "drawbridge-jws"
FORMAT_COSIGN = "cosign-bundle"
MAX_BUNDLES = 4  # bundles a Keep presents for one OCI manifest (it cannot tell whose they are)
_MAX_MEMBER = 512 * 1024  # base64 root directory + JWS; the whole /attest body is <= 1 MiB


def load_signer(pem: bytes, *, source: str) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key (``KEY.pub.pem`` of ``enarx key create``) from a policy's
    ``signers`` file; ``ConfigError`` (exit 2) otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"not a PEM public key ({e})", path=source, key="workload.signers",
                          hint="list the KEY.pub.pem files `enarx key create` wrote") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ConfigError("not an ECDSA P-256 public key", path=source, key="workload.signers",
                          hint="list the KEY.pub.pem files `enarx key create` wrote")
    return key


def _failure(message: str, expected: Any, actual: Any) -> dict[str, Any]:
    return {"rule": RULE, "expected": expected, "actual": actual, "message": message}


def check_signature(doc: Any, signers: Sequence[ec.EllipticCurvePublicKey],
                    workload: str | None) -> dict[str, Any] | None:
    """None when ``doc`` (the ``package-signature`` member, or None) is a signature by one of
    ``signers`` over the package whose workload identity is ``workload``; else the failure
    (rule ``workload.signer``) to refuse the attestation with. ``signers`` may be empty (a
    policy whose keys were not loaded: everything is refused)."""
    from enarx.package import sign

    want = [sign.fingerprint(k) for k in signers]
    if doc is None:
        return _failure("the policy requires a signed package and the Keep presented no "
                        "signature", want, None)
    if workload is None:
        return _failure("the evidence binds no workload for a signature to cover", want, None)
    members = _MEMBERS.get(doc.get("format")) if isinstance(doc, dict) else None
    if members is None or not isinstance(doc, dict):
        return _failure(f'{MEMBER} must be {{"format": "{FORMAT_JWS}" | "{FORMAT_COSIGN}", '
                        "…}", want, doc.get("format") if isinstance(doc, dict) else None)
    if not set(members[0]) <= set(doc) <= set(members[0]) | set(members[1]) or _size(doc) \
            > _MAX_MEMBER:
        return _failure(f"{MEMBER} has missing or unknown members, or is too large", want,
                        sorted(doc))
    try:
        found = (_jws if doc["format"] == FORMAT_JWS else _cosign)(doc, signers)
        if found is None:
            return _failure("no signature verifies with a signer key the policy names", want,
                            "another key")
        identity = _identity(doc, *found)
    except (EnarxError, ValueError, TypeError, KeyError, binascii.Error) as e:
        msg = e.message if isinstance(e, EnarxError) else str(e) or type(e).__name__
        return _failure(f"the signed package does not check: {msg}", workload, None)
    if not hmac.compare_digest(identity.encode(), workload.encode()):
        return _failure("the signed package is not the attested workload", identity, workload)
    return None


_MEMBERS: dict[Any, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # format -> (required members, optional members)
    FORMAT_JWS: (("format", "jws"), ("root", "manifest")),
    FORMAT_COSIGN: (("format", "bundles", "oci-manifest"), ("manifest",)),
}


def _size(doc: dict[str, Any]) -> int:
    values = [v for v in doc.values() if isinstance(v, str)]
    values += [b for b in doc.get("bundles", ()) if isinstance(b, str)] \
        if isinstance(doc.get("bundles"), list) else []
    return sum(len(v) for v in values)


def _jws(doc: dict[str, Any], signers: Sequence[ec.EllipticCurvePublicKey]
         ) -> tuple[str, Mapping[str, Entry]] | None:
    """(signed tree identity, the stored root's files) of a drawbridge JWS, None when no
    signer key verifies it."""
    from enarx.package import sign
    from enarx.package.tree import Directory, package_identity

    if not isinstance(doc["jws"], str):
        raise ValueError("jws must be the tag's JSON text")
    body = doc["jws"].encode("utf-8", "surrogatepass")
    sign.unverified_tag_entry(body)  # the shape, before any key is tried
    name, tag = _name_tag(body)
    for key in signers:
        try:
            entry = sign.verify_tag(body, key, name=name, tag=tag)
        except EnarxError:
            continue
        tree = package_identity(Entry.from_json(entry, where=MEMBER))
        if "root" not in doc:
            return tree, {}
        root = Directory.parse(_unb64(doc["root"]), where=f"{MEMBER}.root")
        if not hmac.compare_digest(package_identity(root.entry()).encode(), tree.encode()):
            raise ValueError("root is not the signed tree")
        return tree, root.entries
    return None


def _cosign(doc: dict[str, Any], signers: Sequence[ec.EllipticCurvePublicKey]
            ) -> tuple[str, Mapping[str, Entry]] | None:
    """(tree identity, files) of the OCI manifest a cosign bundle by a signer key signs."""
    from enarx.package import sign
    from enarx.package.oci_layout import parse_package_manifest, sha256_digest

    bundles = doc["bundles"]
    if not isinstance(bundles, list) or not 1 <= len(bundles) <= MAX_BUNDLES \
            or not all(isinstance(b, str) for b in bundles):
        raise ValueError(f"bundles must be 1 to {MAX_BUNDLES} bundle JSON texts")
    raw = _unb64(doc["oci-manifest"])
    digest = sha256_digest(raw)
    for bundle in bundles:
        for key in signers:
            try:
                sign.verify_cosign_bundle(bundle.encode("utf-8", "surrogatepass"), key, digest)
            except EnarxError:
                continue
            tree = parse_package_manifest(raw).tree
            return tree.identity, tree.files
    return None


def _identity(doc: dict[str, Any], tree: str, files: Mapping[str, Entry]) -> str:
    """The workload identity the signed tree stands for: the tree itself, or for an encrypted
    package the plaintext identity named by its ``enarx-package.json`` (which must be the
    signed tree's file of that name, byte for byte)."""
    if "manifest" not in doc:
        return tree
    from enarx.package import crypt
    from enarx.package.tree import hash_bytes

    raw = _unb64(doc["manifest"])
    entry = files.get(crypt.MANIFEST_NAME)
    if entry is None or entry.type != crypt.MANIFEST_MEDIA_TYPE \
            or not entry.matches(hash_bytes(raw, entry.type)):
        raise ValueError(f"manifest is not the signed tree's {crypt.MANIFEST_NAME}")
    return crypt.read_manifest(raw).identity


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected standard base64")
    return base64.b64decode(value, validate=True)


def _name_tag(body: bytes) -> tuple[str, str]:
    """The ``name`` and ``tag`` the JWS payload claims (checked by the signature after)."""
    doc = json.loads(body)
    raw = doc["payload"]
    payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    return str(payload["name"]), str(payload["tag"])


def presented(*, jws: bytes | None = None, bundles: Sequence[bytes] = (),
              oci_manifest: bytes | None = None, root: bytes | None = None,
              manifest: bytes | None = None) -> dict[str, Any]:
    """The ``package-signature`` member a Keep sends: a signed drawbridge tag ``jws`` (with
    ``root``, the stored root directory's bytes, for an encrypted package), or the cosign
    ``bundles`` referring to ``oci_manifest``; ``manifest`` is an encrypted package's
    ``enarx-package.json``, whose plaintext identity the Keep attests."""
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    doc: dict[str, Any]
    if jws is not None:
        doc = {"format": FORMAT_JWS, "jws": jws.decode("utf-8")}
        if manifest is not None and root is not None:
            doc["root"] = b64(root)
    else:
        if oci_manifest is None or not bundles:
            raise ValueError("a cosign signature needs its bundles and the OCI manifest")
        doc = {"format": FORMAT_COSIGN, "bundles": [b.decode("utf-8") for b in bundles],
               "oci-manifest": b64(oci_manifest)}
    if manifest is not None:
        doc["manifest"] = b64(manifest)
    return doc
