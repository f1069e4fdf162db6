"""Package signatures: ECDSA P-256 keys, drawbridge JWS tags and cosign keyed bundles.

Keys (``enarx key create``): a PKCS#8 PEM private key (mode 0600) and its SubjectPublicKeyInfo
PEM next to it (``KEY.pub.pem``). A key's *fingerprint* is ``"sha256:" + hex(SHA-256(SPKI
DER))``.

What is signed, per registry kind (docs/packages.md, "Signatures"):

drawbridge
    The tag body is an RFC 7515 flattened JWS JSON (``application/jose+json``) in place of the
    unsigned entry: protected header ``{"alg": "ES256", "cty": SIGNED_TAG_TYPE, "kid":
    fingerprint}``, payload the JCS (RFC 8785) bytes of ``{"entry": <the tag's entry JSON>,
    "name": "user/repo", "tag": "<semver>", "tree": "sha384:<hex>"}`` where ``tree`` is the
    package identity (the SHA-384 of the entry's directory). The name and tag are signed so a
    signature cannot be replayed onto another repository or version.
OCI
    A cosign v3 keyed bundle: an in-toto Statement v1 (subject = the package manifest's
    digest, ``predicateType`` ``https://sigstore.dev/cosign/sign/v1``, empty predicate),
    DSSE-signed (ECDSA P-256 / SHA-256 over the DSSE PAE, DER signature), in a Sigstore
    bundle v0.3 with ``verificationMaterial.publicKey.hint`` = base64(SHA-256(SPKI DER)) and no
    transparency-log entry. The OCI client pushes it as a referrer of the manifest
    (``artifactType`` :data:`BUNDLE_MEDIA_TYPE`, empty config, one layer, the annotations
    :data:`BUNDLE_ANNOTATIONS`); ``cosign verify --key KEY.pub.pem --insecure-ignore-tlog``
    accepts it. The manifest carries the tree digest, so the signature covers the package.

Every verification failure is :class:`enarx.errors.SignatureInvalid` (exit 4) with check
``package.signature``; unreadable key files are :class:`enarx.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from enarx.errors import SignatureInvalid, UsageError
from enarx.fsutil import atomic_write

__all__ = [
    "BUNDLE_ANNOTATIONS",
    "BUNDLE_MEDIA_TYPE",
    "CHECK",
    "DSSE_PAYLOAD_TYPE",
    "JWS_MEDIA_TYPE",
    "PREDICATE_TYPE",
    "SIGNED_TAG_TYPE",
    "STATEMENT_TYPE",
    "KeyFiles",
    "cosign_bundle",
    "create_key",
    "fingerprint",
    "is_signed_tag",
    "key_hint",
    "load_private_key",
    "load_public_key",
    "pae",
    "public_key_path",
    "sign_tag",
    "signed_statement",
    "unverified_tag_entry",
    "verify_cosign_bundle",
    "verify_tag",
]

CHECK = "package.signature"
JWS_MEDIA_TYPE = "application/jose+json"
SIGNED_TAG_TYPE = "application/vnd.enarx.signed-tag.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
DSSE_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"
BUNDLE_ANNOTATIONS = {
    "dev.sigstore.bundle.content": "dsse-envelope",
    "dev.sigstore.bundle.predicateType": PREDICATE_TYPE,
}
#: Largest signature document we parse (a tag JWS or a bundle is well under 16 KiB).
MAX_DOCUMENT = 256 * 1024
MAX_KEY_FILE = 64 * 1024

_SHA256_RE = re.compile(r"sha256:[0-9a-f]{64}")  # always fullmatch: "$" accepts a "\n"
_KEY_HINT = "make a signing key with `enarx key create --out KEY.pem`"


def _invalid(message: str, *, expected: Any = None, actual: Any = None,
             hint: str | None = None) -> SignatureInvalid:
    return SignatureInvalid(CHECK, message, expected=expected, actual=actual, hint=hint)


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path
    fingerprint: str


def public_key_path(private: Path) -> Path:
    """``KEY.pem`` -> ``KEY.pub.pem`` (any other name gets ``.pub.pem`` appended)."""
    private = Path(private)
    stem = private.name[:-4] if private.name.endswith(".pem") else private.name
    return private.with_name(stem + ".pub.pem")


def fingerprint(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """``"sha256:<hex>"`` of the public key's SubjectPublicKeyInfo DER."""
    return "sha256:" + hashlib.sha256(_spki(key)).hexdigest()


def key_hint(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """cosign's ``publicKey.hint``: standard base64 of SHA-256(SPKI DER)."""
    return base64.b64encode(hashlib.sha256(_spki(key)).digest()).decode()


def _spki(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def create_key(out: Path, *, force: bool = False) -> KeyFiles:
    """Write a new ECDSA P-256 signing key to ``out`` (PKCS#8 PEM, 0600) and its public key
    to :func:`public_key_path` (0644). Refuses to overwrite either unless ``force``."""
    out = Path(out)
    pub_path = public_key_path(out)
    if not force:
        for p in (out, pub_path):
            if os.path.lexists(p):
                raise UsageError(f"{p} already exists",
                                 hint="choose another --out (a key is never overwritten)")
    if not out.parent.is_dir():
        raise UsageError(f"no such directory: {out.parent}", hint="create it first")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        if force:
            atomic_write(out, pem, mode=0o600)
            atomic_write(pub_path, pub, mode=0o644)
        else:
            _write_new(out, pem, 0o600)
            try:
                _write_new(pub_path, pub, 0o644)
            except BaseException:
                out.unlink()  # ours: written just above
                raise
    except FileExistsError as e:
        raise UsageError(f"{e.filename} already exists",
                         hint="choose another --out (a key is never overwritten)") from None
    except OSError as e:
        raise UsageError(f"cannot write {e.filename or out}: {e.strerror}") from None
    return KeyFiles(private=out, public=pub_path, fingerprint=fingerprint(key))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Write a complete file at ``path`` with ``mode``, failing if ``path`` exists (even if it
    appears between our check and the write): a temp file is hard-linked into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "exists", str(path)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read_key_file(path: Path, what: str) -> bytes:
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang us; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsageError(f"{path}: not a regular file", hint=_KEY_HINT)
            data = f.read(MAX_KEY_FILE + 1)
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}", hint=_KEY_HINT) from None
    if len(data) > MAX_KEY_FILE:
        raise UsageError(f"{path}: too large for a key file", hint=_KEY_HINT)
    if what == "signing key" and st.st_mode & 0o077:
        raise UsageError(f"{path}: the signing key is readable by other users "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})", hint=f"chmod 600 {path}")
    return data


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 private key in PEM file ``path`` (must not be group/world readable)."""
    data = _read_key_file(path, "signing key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path}: not an unencrypted PEM private key ({e})",
                         hint=_KEY_HINT) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UsageError(f"{path}: not an ECDSA P-256 key", hint=_KEY_HINT)
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 public key in PEM file ``path`` (``KEY.pub.pem``)."""
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{path}: not a PEM public key ({e})",
                         hint="pass the KEY.pub.pem that `enarx key create` wrote") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise UsageError(f"{path}: not an ECDSA P-256 public key",
                         hint="pass the KEY.pub.pem that `enarx key create` wrote")
    return key


def _sign(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """DER ECDSA signature over SHA-256(message)."""
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def _verify(pub: ec.EllipticCurvePublicKey, der_sig: bytes, message: bytes) -> bool:
    try:
        pub.verify(der_sig, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- small codecs -----------------------------------------------------------------------------


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64u(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise _invalid(f"JWS {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise _invalid(f"JWS {what} is not base64url") from None


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise _invalid(f"{what} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(f"{what} is not base64") from None


def _json(raw: bytes | str, what: str) -> Any:
    if len(raw) > MAX_DOCUMENT:
        raise _invalid(f"{what} is larger than {MAX_DOCUMENT} bytes")
    try:
        return json.loads(raw, object_pairs_hook=_unique)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise _invalid(f"{what} is not JSON (or repeats a member)") from None


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a repeated member are refused: parsers disagree on which one wins."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("repeated member")
    return out


def _same(got: Any, want: str) -> bool:
    """Constant-time equality of a parsed JSON value with an expected string."""
    if not isinstance(got, str):
        return False
    return hmac.compare_digest(got.encode("utf-8", "surrogatepass"),
                               want.encode("utf-8", "surrogatepass"))


def _entry_tree(entry: Any) -> str:
    """``sha384:<hex>`` of a tag entry's sha-384 digest (the package identity)."""
    try:
        digest = entry["digest"]["sha-384"]
        raw = base64.b64decode(digest, validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise _invalid("the signed entry has no sha-384 digest") from None
    if len(raw) != 48:
        raise _invalid("the signed entry's sha-384 digest is not 48 bytes")
    return "sha384:" + raw.hex()


# --- drawbridge: the signed tag (flattened JWS) -----------------------------------------------


def sign_tag(entry: dict[str, Any], *, name: str, tag: str,
             key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed tag body (flattened JWS JSON, :data:`JWS_MEDIA_TYPE`) for ``entry``.

    ``entry`` is the root directory's entry JSON (what an unsigned tag would hold), ``name``
    the ``user/repo`` and ``tag`` the version it is published as."""
    tree = _entry_tree(entry)
    payload = rfc8785.dumps({"entry": entry, "name": name, "tag": tag, "tree": tree})
    header = rfc8785.dumps({"alg": "ES256", "cty": SIGNED_TAG_TYPE, "kid": fingerprint(key)})
    protected = _b64u(header)
    body = _b64u(payload)
    r, s = decode_dss_signature(_sign(key, f"{protected}.{body}".encode("ascii")))
    raw_sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return rfc8785.dumps({"payload": body, "protected": protected, "signature": _b64u(raw_sig)})


def is_signed_tag(body: bytes) -> bool:
    """Whether a tag body is a JWS (else it is an unsigned entry), as drawbridge's untagged
    ``Signed(Jws) | Unsigned(TreeEntry)``: a JSON object with ``payload`` and ``signature``
    or ``signatures``."""
    try:
        doc = json.loads(body) if len(body) <= MAX_DOCUMENT else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(doc, dict) and "payload" in doc and (
        "signature" in doc or "signatures" in doc)


def _payload(doc: Any) -> dict[str, Any]:
    payload = _json(_unb64u(doc.get("payload"), "payload"), "JWS payload")
    if not isinstance(payload, dict) or set(payload) != {"entry", "name", "tag", "tree"}:
        raise _invalid('the JWS payload is not {"entry", "name", "tag", "tree"}')
    if not isinstance(payload["entry"], dict) or payload["tree"] != _entry_tree(
            payload["entry"]):
        raise _invalid("the JWS payload's tree is not its entry's sha-384 digest")
    return payload


def unverified_tag_entry(body: bytes) -> dict[str, Any]:
    """The entry JSON inside a signed tag, WITHOUT checking the signature (for a registry
    that stores tags and for ``package info``; never for deciding what to run)."""
    doc = _json(body, "signed tag")
    if not isinstance(doc, dict):
        raise _invalid("the signed tag is not a JSON object")
    entry: dict[str, Any] = _payload(doc)["entry"]
    return entry


def verify_tag(body: bytes, pub: ec.EllipticCurvePublicKey, *, name: str,
               tag: str) -> dict[str, Any]:
    """Check a signed tag body against ``pub`` and the expected ``name``/``tag``; return the
    signed entry JSON. Accepts the flattened and the general JWS JSON serialisations (the
    general one passes if any of its signatures verifies)."""
    doc = _json(body, "signed tag")
    if not isinstance(doc, dict) or "payload" not in doc:
        raise _invalid("the tag is not signed (no JWS)",
                       hint="publish it with `enarx package publish --sign KEY.pem`")
    if "signatures" in doc:
        sigs = doc["signatures"]
        if "signature" in doc or not isinstance(sigs, list) or not 1 <= len(sigs) <= 16:
            raise _invalid("malformed JWS signatures")
    else:
        sigs = [{k: doc[k] for k in ("protected", "header", "signature") if k in doc}]
    payload = _payload(doc)
    want = fingerprint(pub)
    for sig in sigs:
        if not isinstance(sig, dict):
            raise _invalid("malformed JWS signature")
        header = _json(_unb64u(sig.get("protected"), "protected header"), "JWS header")
        if not isinstance(header, dict) or header.get("alg") != "ES256" or "crit" in header:
            continue  # not ours: another algorithm, or extensions we do not understand
        raw = _unb64u(sig.get("signature"), "signature")
        if len(raw) != 64:
            continue
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                   int.from_bytes(raw[32:], "big"))
        message = f"{sig['protected']}.{doc['payload']}".encode("ascii")
        if _verify(pub, der, message):
            break
    else:
        raise _invalid("no signature on the tag verifies with the given public key",
                       expected=want, hint="check --signer: the package was not signed by it")
    if not (_same(payload["name"], name) and _same(payload["tag"], tag)):
        raise _invalid("the signature is for another package or version",
                       expected=f"{name}:{tag}", actual=f"{payload['name']}:{payload['tag']}",
                       hint="the registry served a signed tag of another repository or tag")
    entry: dict[str, Any] = payload["entry"]
    return entry


# --- OCI: cosign keyed bundle ----------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``"DSSEv1" SP len(type) SP type SP len(body) SP
    body`` (lengths in ASCII decimal)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def signed_statement(manifest_digest: str, *, name: str | None = None) -> bytes:
    """The in-toto Statement v1 cosign signs for an OCI manifest (JCS bytes)."""
    if not isinstance(manifest_digest, str) or not _SHA256_RE.fullmatch(manifest_digest):
        raise UsageError(f"not an OCI manifest digest: {manifest_digest!r}",
                         hint='expected "sha256:" and 64 lowercase hex digits')
    subject: dict[str, Any] = {"digest": {"sha256": manifest_digest.removeprefix("sha256:")}}
    if name:
        subject["name"] = name
    return rfc8785.dumps({"_type": STATEMENT_TYPE, "predicate": {},
                          "predicateType": PREDICATE_TYPE, "subject": [subject]})


def cosign_bundle(manifest_digest: str, key: ec.EllipticCurvePrivateKey, *,
                  name: str | None = None) -> bytes:
    """A Sigstore bundle v0.3 (JSON) signing the OCI manifest ``sha256:<hex>`` with ``key``.

    ``name`` is the repository (``host:port/name``) recorded as the statement's subject name.
    """
    statement = signed_statement(manifest_digest, name=name)
    sig = _sign(key, pae(DSSE_PAYLOAD_TYPE, statement))
    return rfc8785.dumps({
        "dsseEnvelope": {
            "payload": base64.b64encode(statement).decode(),
            "payloadType": DSSE_PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode()}],
        },
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(key)}},
    })


def verify_cosign_bundle(bundle: bytes, pub: ec.EllipticCurvePublicKey,
                         manifest_digest: str) -> None:
    """Check a cosign keyed bundle: a DSSE signature by ``pub`` over an in-toto statement
    whose subject is ``manifest_digest`` and whose predicate type is cosign's signature.
    Returns None, or raises :class:`SignatureInvalid`."""
    if not isinstance(manifest_digest, str) or not _SHA256_RE.fullmatch(manifest_digest):
        raise _invalid(f"not an OCI manifest digest: {manifest_digest!r}")
    doc = _json(bundle, "cosign bundle")
    if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise _invalid("not a Sigstore bundle v0.3", expected=BUNDLE_MEDIA_TYPE,
                       actual=doc.get("mediaType") if isinstance(doc, dict) else None)
    env = doc.get("dsseEnvelope")
    if not isinstance(env, dict) or env.get("payloadType") != DSSE_PAYLOAD_TYPE:
        raise _invalid("the bundle holds no in-toto DSSE envelope")
    payload = _unb64(env.get("payload"), "DSSE payload")
    sigs = env.get("signatures")
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= 16:
        raise _invalid("malformed DSSE signatures")
    message = pae(DSSE_PAYLOAD_TYPE, payload)
    if not any(isinstance(s, dict) and _verify(pub, _unb64(s.get("sig"), "DSSE signature"),
                                                message) for s in sigs):
        raise _invalid("no signature in the bundle verifies with the given public key",
                       expected=fingerprint(pub),
                       hint="check --signer: the package was not signed by it")
    statement = _json(payload, "in-toto statement")
    if (not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE
            or statement.get("predicateType") != PREDICATE_TYPE):
        raise _invalid("the signed statement is not a cosign signature statement")
    want = manifest_digest.removeprefix("sha256:")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or not any(
            isinstance(s, dict) and isinstance(s.get("digest"), dict)
            and _same(s["digest"].get("sha256"), want)
            for s in subjects):
        raise _invalid("the signature is for another manifest", expected=manifest_digest,
                       hint="the registry served a signature of another package")
