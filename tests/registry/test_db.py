"""The registry's metadata store on SQLite and on a real PostgreSQL: the same operations, the
pending → complete tag life cycle, concurrent uploads of one node, bad URLs."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from enarx.errors import StoreError, UsageError
from enarx.registry.db import NodeRow, RegistryDB


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryDB:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    d = RegistryDB(url, tmp_path)
    request.addfinalizer(d.close)
    return d


def _node(n: int) -> NodeRow:
    return NodeRow(f"{n:064x}", n, "text/plain", "{}")


def test_life_cycle(db: RegistryDB) -> None:
    token = db.create_token("alice")
    assert db.token_owner(token) == "alice" and db.token_owner(token + "x") is None
    assert db.put_user("alice", b'{"subject":"a"}') and not db.put_user("alice", b"{}")
    assert db.get_user("alice") == b'{"subject":"a"}'
    assert db.put_repo("alice", "app", False, ["sha384:" + "0" * 96], b'{"public":false}')
    assert not db.put_repo("alice", "app", True, [], b"{}")
    repo = db.get_repo("alice", "app")
    assert repo is not None and not repo.public and repo.workloads == ("sha384:" + "0" * 96,)
    assert db.put_tag("alice", "app", "1.0.0", b"T", "t", "{}") == "created"
    tag = db.get_tag("alice", "app", "1.0.0")
    assert tag is not None and not tag.complete
    # root directory with two entries, then the two files
    assert db.put_node("alice", "app", "1.0.0", "", tag.generation, _node(1), 2) == "created"
    assert db.put_node("alice", "app", "1.0.0", "", tag.generation, _node(1), 2) == "exists"
    assert db.put_node("alice", "app", "1.0.0", "a", "other-gen", _node(2), 0) == "stale"
    assert db.put_node("alice", "app", "1.0.0", "a", tag.generation, _node(2), 0) == "created"
    assert db.list_tags("alice", "app") == []
    assert db.put_tag("alice", "app", "1.0.0", b"T", "t", "{}") == "resumed"
    assert db.put_node("alice", "app", "1.0.0", "b", tag.generation, _node(3), 0) == "created"
    assert db.list_tags("alice", "app") == ["1.0.0"]
    assert db.put_tag("alice", "app", "1.0.0", b"U", "t", "{}") == "exists"
    assert db.get_node("alice", "app", "1.0.0", "b") == _node(3)
    assert db.blob_in_use(f"{3:064x}") and not db.blob_in_use(f"{9:064x}")


def test_read_tokens_are_apart_from_owner_tokens(db: RegistryDB) -> None:
    full, read = db.create_token("alice"), db.create_token("alice", read_only=True)
    assert db.token_owner(full) == "alice" and db.read_token_owner(full) is None
    assert db.token_owner(read) is None and db.read_token_owner(read) == "alice"
    assert db.revoke_tokens("alice") == 2
    assert db.read_token_owner(read) is None


def test_replacing_a_pending_tag_drops_its_nodes(db: RegistryDB) -> None:
    db.put_tag("u", "r", "1.0.0", b"A", "t", "{}")
    gen = db.get_tag("u", "r", "1.0.0").generation  # type: ignore[union-attr]
    db.put_node("u", "r", "1.0.0", "", gen, _node(1), 1)
    assert db.put_tag("u", "r", "1.0.0", b"B", "t", "{}") == "replaced"
    assert db.get_node("u", "r", "1.0.0", "") is None
    # an upload that started against the old tree cannot land in the new one
    assert db.put_node("u", "r", "1.0.0", "", gen, _node(1), 1) == "stale"


def test_concurrent_uploads_of_one_node_count_once(db: RegistryDB) -> None:
    db.put_tag("u", "r", "1.0.0", b"A", "t", "{}")
    gen = db.get_tag("u", "r", "1.0.0").generation  # type: ignore[union-attr]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: db.put_node("u", "r", "1.0.0", "", gen, _node(1), 0), range(16)))
    assert results.count("created") == 1 and results.count("exists") == 15
    assert db.list_tags("u", "r") == ["1.0.0"]  # missing went 1 -> 0 exactly once


def test_bad_database_urls(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        RegistryDB("mysql://x/y", tmp_path)
    with pytest.raises(UsageError):
        RegistryDB("postgresql://u@h:notaport/db", tmp_path)
    with pytest.raises(StoreError) as e:
        RegistryDB(None, tmp_path / "missing")
    assert e.value.hint
    with pytest.raises(StoreError) as e:
        RegistryDB("postgresql://nobody:secretpw@127.0.0.1:1/none", tmp_path)
    assert "secretpw" not in e.value.message


def test_concurrent_first_puts_of_one_tag(db: RegistryDB) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(
            lambda _: db.put_tag("u", "r", "1.0.0", b"A", "t", "{}"), range(16)))
    assert results.count("created") == 1 and results.count("resumed") == 15
