"""Read and write permissions (pure): owners, public and private repositories, Keeps."""

from __future__ import annotations

import pytest

from enarx.package.crypt import MANIFEST_MEDIA_TYPE, Manifest
from enarx.registry.access import check_owner, check_read, is_metadata, manifest_identity
from enarx.registry.db import RepoRow
from enarx.registry.entry import DIRECTORY_TYPE as DIR_TYPE
from enarx.registry.errors import RegistryHTTPError

A, B = "sha384:" + "a1" * 48, "sha384:" + "b2" * 48
PRIVATE = RepoRow("alice", "app", False, (A,), b"{}")


def _status(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except RegistryHTTPError as exc:
        return exc.status
    return 200


def _contents(repo: RepoRow, owner: str | None, workload: str | None,
              ids: tuple[str, ...] = (), reader: str | None = None) -> int:
    return _status(lambda: check_read(repo, owner, workload, ids, reader=reader,
                                      contents=True))


def _meta(repo: RepoRow, owner: str | None, workload: str | None,
          reader: str | None = None) -> int:
    return _status(lambda: check_read(repo, owner, workload, reader=reader))


def test_reads() -> None:
    public = RepoRow("alice", "pub", True, (), b"{}")
    assert _contents(public, None, None) == 200
    assert _contents(PRIVATE, "alice", None) == 200
    assert _contents(PRIVATE, None, A) == 200
    assert _contents(PRIVATE, None, B) == 403
    assert _contents(PRIVATE, None, B, (B,)) == 200  # the tag's own identity
    assert _contents(PRIVATE, "bob", None) == 403
    assert _contents(PRIVATE, None, None) == 401


def test_private_metadata_is_readable_by_a_read_token_or_any_keep_but_contents_are_not() -> None:
    # the host's read token and a Keep not (yet) allowed learn the tree, not the files
    assert _meta(PRIVATE, None, None, reader="alice") == 200
    assert _meta(PRIVATE, None, B) == 200
    assert _contents(PRIVATE, None, None, reader="alice") == 403
    assert _contents(PRIVATE, None, B) == 403
    # another user's read token reads nothing; no credential at all is 401
    assert _meta(PRIVATE, None, None, reader="bob") == 403
    assert _meta(PRIVATE, None, None) == 401


def test_a_read_token_cannot_write() -> None:
    assert _status(check_owner, "alice", None, "alice") == 403


def test_metadata_nodes() -> None:
    assert is_metadata("", DIR_TYPE) and is_metadata("a/b", DIR_TYPE)
    assert is_metadata("enarx-package.json", MANIFEST_MEDIA_TYPE)
    assert not is_metadata("a/enarx-package.json", MANIFEST_MEDIA_TYPE)
    assert not is_metadata("main.wasm", "application/wasm")


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
