"""Read and write permissions (pure): owners, public and private repositories, Keeps."""

from __future__ import annotations

import pytest

from enarx.package.crypt import MANIFEST_MEDIA_TYPE, Manifest
from enarx.registry.access import check_owner, check_read, manifest_identity
from enarx.registry.db import RepoRow
from enarx.registry.errors import RegistryHTTPError

A, B = "sha384:" + "a1" * 48, "sha384:" + "b2" * 48
PRIVATE = RepoRow("alice", "app", False, (A,), b"{}")


def _status(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except RegistryHTTPError as exc:
        return exc.status
    return 200


def test_reads() -> None:
    assert _status(check_read, RepoRow("alice", "pub", True, (), b"{}"), None, None) == 200
    assert _status(check_read, PRIVATE, "alice", None) == 200
    assert _status(check_read, PRIVATE, None, A) == 200
    assert _status(check_read, PRIVATE, None, B) == 403
    assert _status(check_read, PRIVATE, None, B, [B]) == 200  # the tag's own identity
    assert _status(check_read, PRIVATE, "bob", None) == 403
    assert _status(check_read, PRIVATE, None, None) == 401


def test_writes() -> None:
    assert _status(check_owner, "alice", "alice") == 200
    assert _status(check_owner, "alice", "bob") == 403
    assert _status(check_owner, "alice", None) == 401


@pytest.mark.parametrize(("ctype", "data", "want"), [
    (MANIFEST_MEDIA_TYPE, Manifest(B, "r/t/g").to_bytes(), B),
    ("application/json", Manifest(B, "r/t/g").to_bytes(), None),
    (MANIFEST_MEDIA_TYPE, b'{"identity": "sha384:short"}', None),
    (MANIFEST_MEDIA_TYPE, b"not json", None),
    (MANIFEST_MEDIA_TYPE, b"[]", None),
])
def test_manifest_identity(ctype: str, data: bytes, want: str | None) -> None:
    assert manifest_identity(ctype, data) == want
