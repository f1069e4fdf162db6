"""Drawbridge entries, directories and ``Content-Digest`` as the registry checks them (pure).

An entry is ``{"digest": {"sha-256": "<b64>", ...}, "length": n, "type": "<media type>"}``
(further keys allowed and kept); a directory is a JSON object name → entry with the media type
:data:`DIRECTORY_TYPE`. ``Content-Digest`` (RFC 9530) is ``sha-256=:<b64>:, sha-384=:<b64>:`` (parsed and formatted by
:mod:`enarx.package.digest`);
algorithms other than sha-224/256/384/512 are ignored in headers and refused in entries (a
digest the registry cannot check protects nothing). Base64 is standard with padding.

This is the server's reading, deliberately more tolerant than :mod:`enarx.package.tree`
(which enforces the canonical JCS form and the name rules of packages enarx makes): the
registry stores what any drawbridge client uploads, as long as every byte is pinned by a
digest it checks; JSON objects with duplicate member names are refused, since parsers
disagree on which one wins.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from enarx.package import digest as _digest
from enarx.package.errors import PackageError
from enarx.registry.names import InvalidName

__all__ = [
    "ALGORITHMS",
    "DIRECTORY_TYPE",
    "ENTRY_TYPE",
    "JWS_TYPE",
    "Entry",
    "EntryError",
    "MultiHasher",
    "decode_digests",
    "digests_match",
    "encode_digests",
    "format_content_digest",
    "parse_content_digest",
    "parse_directory",
    "tag_entry",
]

DIRECTORY_TYPE = "application/vnd.drawbridge.directory.v1+json"
ENTRY_TYPE = "application/vnd.drawbridge.entry.v1+json"
JWS_TYPE = "application/jose+json"
#: Algorithm name (RFC 9530) -> hashlib name.
ALGORITHMS: dict[str, str] = {alg: name for alg, (name, _) in _digest.ALGORITHMS.items()}


class EntryError(ValueError):
    """An entry, directory, tag body or ``Content-Digest`` is malformed or does not match."""


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EntryError(f"{what}: a digest is a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EntryError(f"{what}: not standard base64") from None


def _check_digests(digests: Mapping[str, bytes], what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for alg, value in digests.items():
        name = ALGORITHMS.get(alg.lower())
        if name is None:
            raise EntryError(f"{what}: unsupported digest algorithm {alg[:30]!r}")
        if len(value) != hashlib.new(name).digest_size:
            raise EntryError(f"{what}: {alg} digest has the wrong length")
        out[alg.lower()] = value
    if not out:
        raise EntryError(f"{what}: no digest")
    return out


def parse_content_digest(header: str) -> dict[str, bytes]:
    """The known digests in a ``Content-Digest`` header; EntryError if none or malformed."""
    try:
        return _digest.parse_content_digest(header)
    except PackageError as exc:
        raise EntryError(exc.message) from None


format_content_digest = _digest.format_content_digest


class MultiHasher:
    """Digests (all supported ones unless told) and the length of a stream, chunk by chunk."""

    def __init__(self, algorithms: Iterable[str] = ALGORITHMS) -> None:
        self._hashes = _digest.new_hashers(algorithms)
        self.length = 0

    def update(self, chunk: bytes) -> None:
        self.length += len(chunk)
        for h in self._hashes.values():
            h.update(chunk)

    def digests(self) -> dict[str, bytes]:
        return {alg: h.digest() for alg, h in self._hashes.items()}


def digests_match(expected: Mapping[str, bytes], actual: Mapping[str, bytes]) -> bool:
    """Every expected digest equals the actual one (constant time per digest)."""
    ok = bool(expected)
    for alg, value in expected.items():
        ok &= hmac.compare_digest(value, actual.get(alg, b""))
    return ok


@dataclass(frozen=True)
class Entry:
    """What a node must be: its digests, length and media type."""

    digests: dict[str, bytes]
    length: int
    type: str

    @classmethod
    def from_json(cls, obj: Any, what: str = "entry") -> Entry:
        if not isinstance(obj, dict):
            raise EntryError(f"{what}: an entry is a JSON object")
        digest = obj.get("digest")
        if not isinstance(digest, dict):
            raise EntryError(f"{what}: 'digest' must be an object of algorithm -> base64")
        digests = _check_digests(
            {str(k): _b64(v, f"{what} digest {k!s:.20}") for k, v in digest.items()}, what
        )
        length = obj.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise EntryError(f"{what}: 'length' must be a non-negative integer")
        mtype = obj.get("type")
        if not isinstance(mtype, str) or not mtype or len(mtype) > 255:
            raise EntryError(f"{what}: 'type' must be a media type string")
        return cls(digests, length, mtype)

    def matches(self, digests: Mapping[str, bytes], length: int, mtype: str) -> str | None:
        """None if a body with these properties is this entry, else why not."""
        if length != self.length:
            return f"length {length} differs from the entry's {self.length}"
        if _base_type(mtype) != _base_type(self.type):
            return f"type {mtype!r} differs from the entry's {self.type!r}"
        if not digests_match(self.digests, digests):
            return "digest differs from the entry's"
        return None

    @property
    def identity(self) -> str | None:
        """``sha384:<hex>`` when the entry has a SHA-384 digest (the package identity)."""
        d = self.digests.get("sha-384")
        return None if d is None else "sha384:" + d.hex()


def _base_type(mtype: str) -> str:
    return mtype.split(";", 1)[0].strip().lower()


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        # parsers disagree on which duplicate wins: the registry and a client must not
        raise EntryError("duplicate member name in a JSON object")
    return out


def _loads(data: bytes, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_unique)
    except EntryError as exc:
        raise EntryError(f"{what}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EntryError(f"{what} is not valid JSON") from None


def parse_directory(data: bytes, check_name: Any = None) -> dict[str, Entry]:
    """A directory's entries; names are single path segments (``check_name(name)``)."""
    obj = _loads(data, "directory")
    if not isinstance(obj, dict):
        raise EntryError("a directory is a JSON object of name -> entry")
    out: dict[str, Entry] = {}
    for name, value in obj.items():
        if "/" in name:
            raise EntryError(f"directory entry name {name[:60]!r} contains '/'")
        if check_name is not None:
            try:
                check_name(name)
            except InvalidName as exc:
                raise EntryError(str(exc)) from None
        out[name] = Entry.from_json(value, f"directory entry {name[:60]!r}")
    return out


def tag_entry(body: bytes, content_type: str) -> Entry:
    """The entry a tag points at: the body itself (entry JSON) or a flattened JWS's payload.

    A JWS payload is the entry's JSON object (further claims such as ``name``/``tag`` are
    allowed) or ``{"entry": {...}, ...}``. The registry stores a JWS unverified (signatures are
    the client's to check against the key it trusts); it only needs the entry to check the
    tree uploaded under the tag.
    """
    ctype = _base_type(content_type)
    if ctype == ENTRY_TYPE:
        return Entry.from_json(_loads(body, "tag entry"), "tag entry")
    if ctype == JWS_TYPE:
        jws = _loads(body, "tag JWS")
        if not isinstance(jws, dict) or not isinstance(jws.get("payload"), str):
            raise EntryError("a tag JWS is a flattened JWS JSON object with a 'payload'")
        if not isinstance(jws.get("signature"), str) and not isinstance(
            jws.get("signatures"), list
        ):
            raise EntryError("the tag JWS carries no signature")
        payload = jws["payload"]
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            raise EntryError("the tag JWS payload is not base64url") from None
        claims = _loads(raw, "tag JWS payload")
        if isinstance(claims, dict) and "digest" not in claims and "entry" in claims:
            claims = claims["entry"]
        return Entry.from_json(claims, "tag JWS payload")
    raise EntryError(
        f"a tag's Content-Type is {ENTRY_TYPE} or {JWS_TYPE}, not {content_type[:60]!r}"
    )


def encode_digests(digests: Mapping[str, bytes]) -> str:
    return json.dumps({k: base64.b64encode(v).decode("ascii") for k, v in digests.items()},
                      sort_keys=True)


def decode_digests(text: str) -> dict[str, bytes]:
    obj = json.loads(text)
    return {str(k): base64.b64decode(v) for k, v in obj.items()}


