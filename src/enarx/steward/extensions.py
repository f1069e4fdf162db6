"""OIDs and codecs of the X.509/CSR extensions the steward writes and reads.

- ``id-pe-cmw`` (1.3.6.1.5.5.7.1.35, draft-ietf-rats-msg-wrap): the Keep's evidence as a CBOR
  CMW record ``[media-type, bstr evidence, 4]`` inside ``CMW ::= CHOICE {json UTF8String,
  cbor OCTET STRING}`` (we write the ``cbor`` choice). The bstr is a CBOR map
  ``{"report": bstr, "certs": [bstr DER ...], "runtime-data": bstr}``; ``runtime-data`` is
  the exact JSON bytes whose SHA-384 is in the report's report_data.
- Interoperable RA-TLS ``2.23.133.5.4.9`` (SGX/TDX only): the extension value is the bytes of
  ``60000([quote, claims-buffer])``; claims-buffer is a bstr holding
  ``{"pubkey-hash": bstr(CBOR [alg-id, digest]), ? "nonce": bstr}``.
- Workload identity (1.3.6.1.4.1.58270.2.1): DER UTF8String ``"sha384:<hex>"`` or
  ``"unbound"``.
- Upstream Enarx CSR evidence OIDs 1.3.6.1.4.1.58270.1.{1,2,3} (KVM, SGX, SNP): constants
  only; steward/upstream.py parses them.

Pure. Every decoder raises :class:`enarx.errors.MalformedEvidence` (check
``cert.<extension>``) on malformed input, never another exception.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography import x509

from enarx.errors import MalformedEvidence, UsageError
from enarx.workload import UNBOUND, parse_identity

__all__ = [
    "CMW_IND_EVIDENCE",
    "MEDIA_TYPES",
    "OID_CMW",
    "OID_RATLS_EVIDENCE",
    "OID_UPSTREAM_KVM",
    "OID_UPSTREAM_SGX",
    "OID_UPSTREAM_SNP",
    "OID_WORKLOAD",
    "RATLS_TAG",
    "CmwEvidence",
    "RaTlsEvidence",
    "cmw_extension",
    "decode_cmw",
    "decode_ratls",
    "decode_workload",
    "encode_cmw",
    "encode_ratls",
    "encode_workload",
    "find_cmw",
    "find_workload",
    "ratls_extension",
    "workload_extension",
]

OID_CMW = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.35")
OID_RATLS_EVIDENCE = x509.ObjectIdentifier("2.23.133.5.4.9")
OID_WORKLOAD = x509.ObjectIdentifier("1.3.6.1.4.1.58270.2.1")
OID_UPSTREAM_KVM = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.1")
OID_UPSTREAM_SGX = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.2")
OID_UPSTREAM_SNP = x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.3")

#: CMW indicator bit "evidence".
CMW_IND_EVIDENCE = 4
#: IANA CBOR tag of an Intel SGX/TDX ECDSA quote (interoperable RA-TLS).
RATLS_TAG = 60000

#: platform -> CMW media type (no SNP/TDX/SGX type is registered: vendor tree).
MEDIA_TYPES: dict[str, str] = {
    "snp": "application/vnd.enarx.snp-evidence+cbor",
    "tdx": "application/vnd.enarx.tdx-evidence+cbor",
    "sgx": "application/vnd.enarx.sgx-evidence+cbor",
}
_PLATFORMS = {v: k for k, v in MEDIA_TYPES.items()}

#: named-information hash algorithm ids (RFC 6920 registry) used by RA-TLS pubkey-hash.
_HASH_IDS = {1: "sha256", 7: "sha384", 8: "sha512"}
_HASH_ID_OF = {v: k for k, v in _HASH_IDS.items()}

#: What reading a hostile certificate's extensions can raise (a duplicate OID would let two
#: readers see two different values: refused).
_EXT_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)

#: Upper bound on one extension value: keeps a hostile certificate from costing much.
MAX_EXTENSION = 1 << 20


def _bad(ext: str, message: str) -> MalformedEvidence:
    return MalformedEvidence(
        f"cert.{ext}", message,
        hint="the certificate was not issued by an enarx steward, or it was altered",
    )


# --- DER primitives (only the two universal types the extensions need) --------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _der_parse(data: bytes, ext: str) -> tuple[int, bytes]:
    """(tag, contents) of one definite-length DER TLV spanning all of ``data``."""
    if len(data) < 2:
        raise _bad(ext, "truncated DER value")
    tag, first = data[0], data[1]
    if first < 0x80:
        n, start = first, 2
    else:
        size = first & 0x7F
        if size == 0 or size > 4 or len(data) < 2 + size:
            raise _bad(ext, "invalid DER length")
        n, start = int.from_bytes(data[2 : 2 + size], "big"), 2 + size
        if n < 0x80 or data[2] == 0:
            raise _bad(ext, "non-minimal DER length")
    if start + n != len(data):
        raise _bad(ext, "DER length does not match the value")
    return tag, data[start:]


def _cbor_loads(data: bytes, ext: str) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError,
            RecursionError, MemoryError) as e:
        raise _bad(ext, f"invalid CBOR: {e}") from None


def _value(ext: x509.Extension[x509.ExtensionType], name: str) -> bytes:
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _bad(name, "unexpected extension type")
    return value.value


# --- CMW evidence ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CmwEvidence:
    """Evidence carried in a certificate: platform, signed report, its chain, runtime data."""

    platform: str  # "snp" | "tdx" | "sgx"
    report: bytes
    certs: tuple[bytes, ...] = ()
    runtime_data: bytes = b""

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.platform]

    def runtime_claims(self) -> dict[str, Any]:
        """``runtime_data`` parsed as the JSON object it is (MalformedEvidence otherwise)."""
        try:
            claims = json.loads(self.runtime_data)
        except (ValueError, RecursionError) as e:
            raise _bad("cmw", f"runtime-data is not JSON: {e}") from None
        if not isinstance(claims, dict):
            raise _bad("cmw", "runtime-data is not a JSON object")
        return claims


def encode_cmw(evidence: CmwEvidence) -> bytes:
    """The extension value: DER OCTET STRING of the CBOR record (the ``cbor`` CHOICE)."""
    if evidence.platform not in MEDIA_TYPES:
        raise ValueError(f"no CMW media type for platform {evidence.platform!r}")
    inner = cbor2.dumps({
        "report": bytes(evidence.report),
        "certs": [bytes(c) for c in evidence.certs],
        "runtime-data": bytes(evidence.runtime_data),
    })
    record = cbor2.dumps([evidence.media_type, inner, CMW_IND_EVIDENCE])
    return _der(0x04, record)


def cmw_extension(evidence: CmwEvidence) -> x509.Extension[x509.UnrecognizedExtension]:
    """A non-critical ``id-pe-cmw`` extension holding ``evidence``."""
    return x509.Extension(OID_CMW, False, x509.UnrecognizedExtension(OID_CMW,
                                                                     encode_cmw(evidence)))


def decode_cmw(value: bytes) -> CmwEvidence:
    """Parse an ``id-pe-cmw`` extension value (either CHOICE: CBOR OCTET STRING or JSON
    UTF8String)."""
    if len(value) > MAX_EXTENSION:
        raise _bad("cmw", f"extension of {len(value)} bytes is too large")
    tag, body = _der_parse(bytes(value), "cmw")
    if tag == 0x04:
        record = _cbor_loads(body, "cmw")
        if not isinstance(record, list | tuple) or len(record) not in (2, 3):
            raise _bad("cmw", "not a CMW record [type, value, ind]")
        mtype, payload = record[0], record[1]
        ind = record[2] if len(record) == 3 else None
    elif tag == 0x0C:
        try:
            record = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise _bad("cmw", f"invalid JSON CMW: {e}") from None
        if not isinstance(record, list) or len(record) not in (2, 3) or not isinstance(
            record[1], str
        ):
            raise _bad("cmw", "not a JSON CMW record [type, value, ind]")
        mtype, ind = record[0], record[2] if len(record) == 3 else None
        try:
            payload = base64.urlsafe_b64decode(record[1] + "=" * (-len(record[1]) % 4))
        except (ValueError, TypeError):
            raise _bad("cmw", "the JSON CMW value is not base64url") from None
    else:
        raise _bad("cmw", f"unexpected DER tag 0x{tag:02x} (want OCTET STRING or UTF8String)")
    if not isinstance(mtype, str) or mtype not in _PLATFORMS:
        raise _bad("cmw", f"unsupported CMW media type {str(mtype)[:80]!r}")
    if ind is not None and (type(ind) is not int or not ind & CMW_IND_EVIDENCE):
        raise _bad("cmw", "the CMW indicator does not say evidence")
    if not isinstance(payload, bytes):
        raise _bad("cmw", "the CMW value is not a byte string")
    fields = _cbor_loads(payload, "cmw")
    if not isinstance(fields, Mapping):
        raise _bad("cmw", "the evidence is not a CBOR map")
    report = fields.get("report")
    certs = fields.get("certs", [])
    runtime = fields.get("runtime-data", b"")
    if not isinstance(report, bytes) or not report:
        raise _bad("cmw", "evidence has no 'report' byte string")
    if not isinstance(certs, list | tuple) or not all(isinstance(c, bytes) for c in certs):
        raise _bad("cmw", "'certs' is not a list of DER byte strings")
    if not isinstance(runtime, bytes):
        raise _bad("cmw", "'runtime-data' is not a byte string")
    return CmwEvidence(_PLATFORMS[mtype], report, tuple(certs), runtime)


def find_cmw(cert: x509.Certificate) -> CmwEvidence | None:
    """The CMW evidence of ``cert``, or None when it has none."""
    try:
        ext = cert.extensions.get_extension_for_oid(OID_CMW)
    except x509.ExtensionNotFound:
        return None
    except _EXT_ERRORS as e:  # duplicate or undecodable extensions
        raise _bad("cmw", f"cannot read the certificate's extensions: {e}") from None
    return decode_cmw(_value(ext, "cmw"))


# --- interoperable RA-TLS -------------------------------------------------------------------


@dataclass(frozen=True)
class RaTlsEvidence:
    quote: bytes
    claims_buffer: bytes
    hash_alg: str  # "sha256" | "sha384" | "sha512"
    pubkey_hash: bytes
    nonce: bytes | None = None

    def binds(self, spki_der: bytes) -> bool:
        """Whether pubkey-hash is the hash of ``spki_der`` (constant time)."""
        return hmac.compare_digest(hashlib.new(self.hash_alg, spki_der).digest(),
                                   self.pubkey_hash)


def encode_ratls(quote: bytes, spki_der: bytes, *, nonce: bytes | None = None,
                 hash_alg: str = "sha384") -> bytes:
    """Bytes of ``60000([quote, claims-buffer])`` binding the certificate's key."""
    if hash_alg not in _HASH_ID_OF:
        raise ValueError(f"unsupported hash {hash_alg!r}")
    digest = hashlib.new(hash_alg, spki_der).digest()
    claims: dict[str, bytes] = {"pubkey-hash": cbor2.dumps([_HASH_ID_OF[hash_alg], digest])}
    if nonce is not None:
        claims["nonce"] = bytes(nonce)
    return cbor2.dumps(cbor2.CBORTag(RATLS_TAG, [bytes(quote), cbor2.dumps(claims)]))


def ratls_extension(quote: bytes, spki_der: bytes, *, nonce: bytes | None = None
                    ) -> x509.Extension[x509.UnrecognizedExtension]:
    """A non-critical RA-TLS evidence extension (OpenSSL refuses unknown critical ones)."""
    value = encode_ratls(quote, spki_der, nonce=nonce)
    return x509.Extension(OID_RATLS_EVIDENCE, False,
                          x509.UnrecognizedExtension(OID_RATLS_EVIDENCE, value))


def decode_ratls(value: bytes) -> RaTlsEvidence:
    if len(value) > MAX_EXTENSION:
        raise _bad("ratls", f"extension of {len(value)} bytes is too large")
    item = _cbor_loads(bytes(value), "ratls")
    if not isinstance(item, cbor2.CBORTag) or item.tag != RATLS_TAG:
        raise _bad("ratls", f"not a CBOR tag {RATLS_TAG} item")
    body = item.value
    if (not isinstance(body, list | tuple) or len(body) != 2
            or not all(isinstance(b, bytes) for b in body)):
        raise _bad("ratls", "tag 60000 does not hold [quote, claims-buffer]")
    quote, buf = body
    claims = _cbor_loads(buf, "ratls")
    if not isinstance(claims, Mapping):
        raise _bad("ratls", "claims-buffer is not a CBOR map")
    hashed = claims.get("pubkey-hash")
    if not isinstance(hashed, bytes):
        raise _bad("ratls", "claims-buffer has no 'pubkey-hash' byte string")
    pair = _cbor_loads(hashed, "ratls")
    if (not isinstance(pair, list | tuple) or len(pair) != 2 or type(pair[0]) is not int
            or pair[0] not in _HASH_IDS or not isinstance(pair[1], bytes)):
        raise _bad("ratls", "pubkey-hash is not [sha-256|sha-384|sha-512 id, digest]")
    alg = _HASH_IDS[pair[0]]
    if len(pair[1]) != hashlib.new(alg).digest_size:
        raise _bad("ratls", f"pubkey-hash digest has the wrong length for {alg}")
    nonce = claims.get("nonce")
    if nonce is not None and not isinstance(nonce, bytes):
        raise _bad("ratls", "'nonce' is not a byte string")
    return RaTlsEvidence(quote, buf, alg, pair[1], nonce)


# --- workload identity ----------------------------------------------------------------------


def encode_workload(identity: str | None) -> bytes:
    """DER UTF8String of ``identity`` (``"sha384:<hex>"``), or of "unbound" for None."""
    text = UNBOUND if identity is None else identity
    if text != UNBOUND:
        parse_identity(text)
    return _der(0x0C, text.encode("ascii"))


def workload_extension(identity: str | None) -> x509.Extension[x509.UnrecognizedExtension]:
    return x509.Extension(OID_WORKLOAD, False,
                          x509.UnrecognizedExtension(OID_WORKLOAD, encode_workload(identity)))


def decode_workload(value: bytes) -> str | None:
    """The workload identity in an extension value; None when it says "unbound"."""
    tag, body = _der_parse(bytes(value), "workload")
    if tag != 0x0C:
        raise _bad("workload", f"unexpected DER tag 0x{tag:02x} (want UTF8String)")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise _bad("workload", "the identity is not ASCII text") from None
    if text == UNBOUND:
        return None
    try:
        parse_identity(text)
    except UsageError:
        raise _bad("workload", f"not a workload identity: {text[:40]!r}") from None
    return text


def find_workload(cert: x509.Certificate) -> tuple[bool, str | None]:
    """(present, identity): (False, None) without the extension; (True, None) = unbound."""
    try:
        ext = cert.extensions.get_extension_for_oid(OID_WORKLOAD)
    except x509.ExtensionNotFound:
        return False, None
    except _EXT_ERRORS as e:  # duplicate or undecodable extensions
        raise _bad("workload", f"cannot read the certificate's extensions: {e}") from None
    return True, decode_workload(_value(ext, "workload"))
