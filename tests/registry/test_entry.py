"""Entries, directories, tag bodies and Content-Digest (pure), plus URL names."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.registry.entry import (
    DIRECTORY_TYPE,
    ENTRY_TYPE,
    JWS_TYPE,
    Entry,
    EntryError,
    format_content_digest,
    parse_content_digest,
    parse_directory,
    tag_entry,
)
from enarx.registry.names import InvalidName, check_path, check_tag, check_user, semver_key
from tests.registry.server import entry_of


def test_content_digest_round_trip_and_refusals() -> None:
    d = {"sha-256": hashlib.sha256(b"x").digest(), "sha-512": hashlib.sha512(b"x").digest()}
    assert parse_content_digest(format_content_digest(d)) == d
    # unknown algorithms are ignored (RFC 9530)
    h = "md5=:AAAA:, sha-256=:" + base64.b64encode(d["sha-256"]).decode() + ":"
    assert parse_content_digest(h) == {"sha-256": d["sha-256"]}
    for bad in ("", "md5=:AAAA:", "sha-256=abc", "sha-256=:!!:", "sha-256=:AAAA:",
                "sha-256"):
        with pytest.raises(EntryError):
            parse_content_digest(bad)


def test_entry_checks() -> None:
    e = Entry.from_json(entry_of(b"hello", "text/plain"))
    both = {"sha-256": hashlib.sha256(b"hello").digest(),
            "sha-384": hashlib.sha384(b"hello").digest()}
    assert e.matches(both, 5, "text/plain; charset=utf-8") is None
    # every digest the entry lists must be checked, not just one of them
    assert e.matches({"sha-256": both["sha-256"]}, 5, "text/plain")
    assert e.matches(both, 5, "text/html")
    assert e.matches({"sha-256": hashlib.sha256(b"hellx").digest(),
                      "sha-384": hashlib.sha384(b"hello").digest()}, 5, "text/plain")
    assert e.matches({"sha-256": hashlib.sha256(b"hello").digest(),
                      "sha-384": hashlib.sha384(b"hello").digest()}, 6, "text/plain")
    assert e.identity == "sha384:" + hashlib.sha384(b"hello").hexdigest()
    for bad in ({"digest": {}, "length": 1, "type": "t"},
                {"digest": {"md5": "AAAA"}, "length": 1, "type": "t"},
                {"digest": {"sha-256": "AAAA"}, "length": 1, "type": "t"},
                {"digest": {"sha-256": base64.b64encode(b"0" * 32).decode()}, "length": -1,
                 "type": "t"},
                {"digest": {"sha-256": base64.b64encode(b"0" * 32).decode()}, "length": True,
                 "type": "t"},
                {"digest": {"sha-256": base64.b64encode(b"0" * 32).decode()}, "length": 1},
                [], "x"):
        with pytest.raises(EntryError):
            Entry.from_json(bad)


def test_tag_bodies() -> None:
    entry = entry_of(b"{}", DIRECTORY_TYPE)
    assert tag_entry(json.dumps(entry).encode(), ENTRY_TYPE).length == 2
    payload = base64.urlsafe_b64encode(json.dumps({"entry": entry, "name": "a/b"}).encode())
    jws = {"payload": payload.decode().rstrip("="), "protected": "e30", "signature": "AA"}
    assert tag_entry(json.dumps(jws).encode(), JWS_TYPE + "; charset=utf-8").length == 2
    for body, ctype in ((b"{}", ENTRY_TYPE), (b"nope", ENTRY_TYPE), (b"{}", "text/plain"),
                        (json.dumps({"payload": "%%"}).encode(), JWS_TYPE),
                        (json.dumps({**jws, "payload": "bm9wZQ"}).encode(), JWS_TYPE)):
        with pytest.raises(EntryError):
            tag_entry(body, ctype)


def test_names() -> None:
    assert check_user("Alice1") == "Alice1"
    for bad in ("", "a-b", "a" * 65, "ä"):
        with pytest.raises(InvalidName):
            check_user(bad)
    for good in ("1.0.0", "0.1.0-rc.1+build.5", "10.20.30"):
        assert check_tag(good) == good
    for bad in ("1.0", "v1.0.0", "01.0.0", "1.0.0-", "latest"):
        with pytest.raises(InvalidName):
            check_tag(bad)
    assert check_path("") == "" and check_path("/") == "" and check_path("a/b/") == "a/b"
    for bad in ("a//b", "../x", "a/./b", "a\x00b", "x" * 256):
        with pytest.raises(InvalidName):
            check_path(bad)
    tags = ["1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "0.9.0", "1.0.0-2"]
    assert sorted(tags, key=semver_key) == ["0.9.0", "1.0.0-2", "1.0.0-alpha",
                                            "1.0.0-alpha.1", "1.0.0-beta", "1.0.0"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_never_fail_untyped(data: bytes) -> None:
    for fn in (lambda: parse_directory(data, check_path),
               lambda: tag_entry(data, ENTRY_TYPE), lambda: tag_entry(data, JWS_TYPE),
               lambda: parse_content_digest(data.decode("latin-1"))):
        with contextlib.suppress(EntryError):
            fn()
