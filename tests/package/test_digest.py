"""enarx.package.digest: Content-Digest headers and the streaming verifier."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.package.digest import DigestVerifier, format_content_digest, parse_content_digest
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.tree import hash_bytes


def _b64(d: bytes) -> str:
    return base64.b64encode(d).decode()


def test_digest_verifier() -> None:
    data = b"x" * 1000
    entry = hash_bytes(data, "application/octet-stream")
    v = entry.verifier(path="f")
    v.update(data[:500])
    v.update(data[500:])
    assert v.finish()["sha-384"] == hashlib.sha384(data).digest()
    short = entry.verifier(path="f")
    short.update(data[:-1])
    with pytest.raises(DigestMismatch, match="truncated"):
        short.finish()
    long = entry.verifier(path="f")
    with pytest.raises(DigestMismatch, match="more bytes"):
        long.update(data + b"y")  # refused before the whole body is read
    flipped = entry.verifier(path="f")
    flipped.update(b"y" + data[1:])
    with pytest.raises(DigestMismatch, match="digest differs"):
        flipped.finish()
    # Header-only (server side): every algorithm sent is checked, length unknown.
    hv = DigestVerifier(parse_content_digest(entry.content_digest()))
    hv.update(data)
    assert hv.finish()["sha-256"] == hashlib.sha256(data).digest()


def test_content_digest_header() -> None:
    d = {"sha-256": hashlib.sha256(b"a").digest(), "sha-512": hashlib.sha512(b"a").digest()}
    header = format_content_digest(d)
    assert header == (f"sha-256=:{_b64(d['sha-256'])}:, sha-512=:{_b64(d['sha-512'])}:")
    assert parse_content_digest(header) == d
    # unknown algorithms ignored (RFC 9530), parameters ignored, spacing free
    assert parse_content_digest(f"md5=:AAAA:,sha-256=:{_b64(d['sha-256'])}:;x=1") == \
        {"sha-256": d["sha-256"]}
    for bad in ["", "sha-256", "sha-256=abc", "sha-256=:AAAA:", "md5=:AAAA:",
                f"sha-256=:{_b64(d['sha-256'])}:, sha-256=:{_b64(d['sha-256'])}:"]:
        with pytest.raises(PackageError):
            parse_content_digest(bad)



@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_content_digest(header: str) -> None:
    with contextlib.suppress(PackageError):
        parse_content_digest(header)
