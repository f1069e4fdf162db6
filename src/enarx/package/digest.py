"""Digests: RFC 9530 algorithm names, ``Content-Digest`` headers and the streaming verifier.

Every byte enarx receives for a package is checked with :class:`DigestVerifier` against the
entry (enarx.package.tree) that commits to it. Pure: no I/O, no global state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from enarx.package.errors import DigestMismatch, PackageError

if TYPE_CHECKING:
    from enarx.package.tree import Entry

__all__ = [
    "ALGORITHMS",
    "STRONG_ALGORITHMS",
    "TREE_ALGORITHMS",
    "DigestVerifier",
    "b64",
    "decode_digest",
    "digest_of",
    "format_content_digest",
    "new_hashers",
    "parse_content_digest",
]

#: Algorithm name (RFC 9530) -> (hashlib name, digest size).
ALGORITHMS: dict[str, tuple[str, int]] = {
    "sha-224": ("sha224", 28),
    "sha-256": ("sha256", 32),
    "sha-384": ("sha384", 48),
    "sha-512": ("sha512", 64),
}
#: What our entries carry (sha-256 for OCI/drawbridge interop, sha-384 for the identity).
TREE_ALGORITHMS = ("sha-256", "sha-384")
#: At least one of these must be present in an entry we accept.
STRONG_ALGORITHMS = ("sha-256", "sha-384", "sha-512")


def b64(raw: bytes) -> str:
    """Standard base64 with padding, as entries and ``Content-Digest`` carry digests."""
    return base64.b64encode(raw).decode("ascii")


def decode_digest(text: str, alg: str, size: int, where: str | None) -> bytes:
    """The ``size`` raw bytes of the canonical base64 ``text`` (PackageError otherwise)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise PackageError(f"{alg} digest is not base64", path=where) from None
    if len(raw) != size or b64(raw) != text:
        raise PackageError(f"{alg} digest is not {size} bytes in canonical base64", path=where)
    return raw


#: Algorithm name -> hashlib constructor (the named constructors skip ``hashlib.new``'s
#: lookup, which cost more than hashing a small file).
_CONSTRUCTORS: dict[str, Any] = {
    "sha-224": hashlib.sha224,
    "sha-256": hashlib.sha256,
    "sha-384": hashlib.sha384,
    "sha-512": hashlib.sha512,
}


def new_hashers(algorithms: Iterable[str]) -> dict[str, Any]:
    """A fresh hashlib object per algorithm name."""
    return {a: _CONSTRUCTORS[a]() for a in algorithms}


def digest_of(data: bytes | bytearray | memoryview, algorithm: str) -> bytes:
    """The ``algorithm`` digest (an RFC 9530 name) of ``data``."""
    return bytes(_CONSTRUCTORS[algorithm](data).digest())


def parse_content_digest(header: str) -> dict[str, bytes]:
    """The known digests of a ``Content-Digest`` header (RFC 9530): ``sha-256=:B64:, ...``.

    Unknown algorithms are ignored (as RFC 9530 allows); a malformed member, a repeated
    algorithm, a wrong digest size or no known algorithm at all is a :class:`PackageError`.
    """
    out: dict[str, bytes] = {}
    if not isinstance(header, str) or len(header) > 4096:
        raise PackageError("Content-Digest header is missing or too long")
    for member in header.split(","):
        key, eq, value = member.strip().partition("=")
        value = value.split(";", 1)[0].strip()  # structured-field parameters are ignored
        key = key.strip()
        if not eq or not re.fullmatch(r"[a-z*][a-z0-9_.*-]*", key) or len(value) < 2 \
                or value[0] != ":" or value[-1] != ":":
            raise PackageError(f"malformed Content-Digest member {member.strip()[:80]!r}",
                               hint="Content-Digest is e.g. 'sha-256=:BASE64:, sha-384=:BASE64:'")
        if key not in ALGORITHMS:
            continue
        if key in out:
            raise PackageError(f"Content-Digest repeats {key}")
        out[key] = decode_digest(value[1:-1], key, ALGORITHMS[key][1], "Content-Digest")
    if not out:
        raise PackageError("Content-Digest names no supported algorithm",
                           hint="send sha-256 or sha-384 (sha-224/sha-512 are also accepted)")
    return out


def format_content_digest(digests: Mapping[str, bytes]) -> str:
    """``Content-Digest`` value for ``digests`` (algorithm order as :data:`ALGORITHMS`)."""
    return ", ".join(f"{a}=:{b64(digests[a])}:" for a in ALGORITHMS if a in digests)


class DigestVerifier:
    """Check streamed bytes against expected digests (and length, when known).

    ``update`` fails as soon as more bytes arrive than ``length`` allows (so an oversized
    body is cut off early); ``finish`` checks the length and every expected digest in
    constant time and returns every computed digest (expected ones plus
    :data:`TREE_ALGORITHMS`). Callers must not use the bytes unless ``finish`` returns.
    """

    def __init__(self, digests: Mapping[str, bytes], length: int | None = None, *,
                 path: str | None = None) -> None:
        unknown = set(digests) - set(ALGORITHMS)
        if unknown or not digests:
            raise PackageError(f"cannot verify digests {sorted(unknown) or 'none'}", path=path)
        self.expected = dict(digests)
        self.length = length
        self.path = path
        self.received = 0
        self._hashers = new_hashers(sorted(set(digests) | set(TREE_ALGORITHMS)))
        self._done = False

    @classmethod
    def for_entry(cls, entry: Entry, *, path: str | None = None) -> DigestVerifier:
        """A verifier for the content ``entry`` commits to (its digests and length)."""
        return cls(entry.digest, entry.length, path=path)

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self.received += len(chunk)
        if self.length is not None and self.received > self.length:
            raise DigestMismatch("more bytes than the entry's length", path=self.path,
                                 expected=f"{self.length} bytes",
                                 actual=f"at least {self.received} bytes")
        for h in self._hashers.values():
            h.update(chunk)

    def finish(self) -> dict[str, bytes]:
        if self._done:
            raise RuntimeError("DigestVerifier.finish called twice")
        self._done = True
        if self.length is not None and self.received != self.length:
            raise DigestMismatch("truncated content", path=self.path,
                                 expected=f"{self.length} bytes",
                                 actual=f"{self.received} bytes")
        got = {a: h.digest() for a, h in self._hashers.items()}
        for alg, want in sorted(self.expected.items()):
            if not hmac.compare_digest(want, got[alg]):
                raise DigestMismatch(f"{alg} digest differs", path=self.path,
                                     expected=b64(want), actual=b64(got[alg]))
        return got
