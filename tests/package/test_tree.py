"""enarx.package.tree: entries, directories, the Merkle tree and the package identity."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.tree import (
    DIRECTORY_TYPE,
    Directory,
    Entry,
    Tree,
    hash_bytes,
    identity_of_files,
    media_type,
    package_identity,
    walk_files,
)

WASM = b"\0asm\x01\0\0\0"
TOML = b'args = ["x"]\n'


def make_pkg(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return make_pkg(tmp_path / "pkg", {"main.wasm": WASM, "Enarx.toml": TOML,
                                        "data/a.txt": b"hello", "data/sub/b.bin": b"\xff" * 3})


# --- an independent computation of the documented bytes --------------------------------------


def _b64(d: bytes) -> str:
    return base64.b64encode(d).decode()


def _entry(data: bytes, media: str) -> dict[str, object]:
    return {"digest": {"sha-256": _b64(hashlib.sha256(data).digest()),
                       "sha-384": _b64(hashlib.sha384(data).digest())},
            "length": len(data), "type": media}


def _dir_bytes(entries: dict[str, dict[str, object]]) -> bytes:
    # For ASCII names and these values, JCS = sorted keys, no whitespace.
    return json.dumps(entries, sort_keys=True, separators=(",", ":")).encode()


def test_identity_is_sha384_of_the_documented_root_directory_bytes(pkg: Path) -> None:
    sub = _dir_bytes({"b.bin": _entry(b"\xff" * 3, "application/octet-stream")})
    data = _dir_bytes({"a.txt": _entry(b"hello", "text/plain"),
                       "sub": _entry(sub, DIRECTORY_TYPE)})
    root = _dir_bytes({"Enarx.toml": _entry(TOML, "application/toml"),
                       "data": _entry(data, DIRECTORY_TYPE),
                       "main.wasm": _entry(WASM, "application/wasm")})
    tree = Tree.build(pkg)
    assert tree.root.to_bytes() == root
    assert tree.directories["data"].to_bytes() == data
    assert tree.directories["data/sub"].to_bytes() == sub
    assert package_identity(tree) == "sha384:" + hashlib.sha384(root).hexdigest()
    assert tree.identity == package_identity(tree.root_entry)
    assert tree.check_package() is tree


def test_golden_identity_of_the_smallest_package(tmp_path: Path) -> None:
    # Pinned: changing the tree format changes every deployed workload identity.
    tree = Tree.build(make_pkg(tmp_path / "p", {"main.wasm": WASM}))
    assert tree.root.to_bytes() == (
        b'{"main.wasm":{"digest":{"sha-256":"k6RLu5bHUSGOTADUeeTBQ1gSKjiazKFiBbHk0NxflHY=",'
        b'"sha-384":"okyHV17AgVkZ4iL9gMeELR7Q1ISxRPcAHorFgvPJr/8CqM+btjXngbzNX3HOpqc/"},'
        b'"length":8,"type":"application/wasm"}}')
    # computed with openssl dgst / sha384sum (also in docs/packages.md)
    assert tree.identity == ("sha384:dfaca3c059bd9cd184410bf56e430fb580d9a2e633ed367b"
                             "24d54f66f97a135fdbe206ad1d34deaed1154d7aaef5c472")


def test_identity_depends_on_content_names_and_layout(tmp_path: Path, pkg: Path) -> None:
    base = Tree.build(pkg).identity
    same = make_pkg(tmp_path / "same", {"main.wasm": WASM, "Enarx.toml": TOML,
                                        "data/a.txt": b"hello", "data/sub/b.bin": b"\xff" * 3})
    os.utime(same / "main.wasm", (0, 0))  # metadata does not count
    assert Tree.build(same).identity == base
    (same / "data" / "sub" / "b.bin").write_bytes(b"\xff\xff\xfe")  # one deep byte
    assert Tree.build(same).identity != base
    (same / "data" / "sub" / "b.bin").write_bytes(b"\xff" * 3)
    (same / "data" / "a.txt").rename(same / "data" / "c.txt")
    assert Tree.build(same).identity != base
    (same / "data" / "c.txt").rename(same / "data" / "a.txt")
    assert Tree.build(same).identity == base
    (same / "extra").write_bytes(b"")
    assert Tree.build(same).identity != base


def test_identity_of_files_matches_build(pkg: Path) -> None:
    files = {p: (pkg / p).read_bytes() for p in
             ("main.wasm", "Enarx.toml", "data/a.txt", "data/sub/b.bin")}
    assert identity_of_files(files) == Tree.build(pkg).identity


def test_walk_lists_parents_before_children(pkg: Path) -> None:
    order = [p for p, _ in Tree.build(pkg).walk()]
    assert order == ["Enarx.toml", "data", "data/a.txt", "data/sub", "data/sub/b.bin",
                     "main.wasm"]


@pytest.mark.parametrize("name", [".hidden", "a b", "-x", "é", "a:b", "x\\y"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    root = make_pkg(tmp_path / "p", {"main.wasm": WASM})
    (root / name).write_bytes(b"x")
    with pytest.raises(PackageError, match="invalid name") as e:
        Tree.build(root)
    assert e.value.hint and e.value.exit_code == 2


def test_symlinks_special_files_and_empty_dirs_are_refused(tmp_path: Path) -> None:
    root = make_pkg(tmp_path / "p", {"main.wasm": WASM})
    (root / "link").symlink_to(root / "main.wasm")
    with pytest.raises(PackageError, match="symbolic link"):
        Tree.build(root)
    (root / "link").unlink()
    os.mkfifo(root / "fifo")
    with pytest.raises(PackageError, match="not a regular file"):
        Tree.build(root)  # and does not block on the FIFO
    (root / "fifo").unlink()
    (root / "empty").mkdir()
    with pytest.raises(PackageError, match="empty directory"):
        Tree.build(root)


def test_case_folding_collisions_are_refused() -> None:
    e = hash_bytes(b"", "text/plain")
    with pytest.raises(PackageError, match="differ only in case"):
        Tree.from_files({"main.wasm": e, "A.txt": e, "a.txt": e})


def test_case_folding_collisions_are_refused_while_listing(tmp_path: Path) -> None:
    """Before any file is read: a reader that does not hash (a local encrypted package)
    gets the same refusal."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "A.txt").write_bytes(b"")
    (tmp_path / "d" / "a.txt").write_bytes(b"")
    with pytest.raises(PackageError, match="differ only in case") as e:
        next(walk_files(tmp_path))
    assert e.value.path == "d"


def test_check_package_requires_main_wasm(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"no main\.wasm"):
        Tree.build(make_pkg(tmp_path / "p", {"app.wasm": WASM})).check_package()


def test_media_types_are_a_fixed_table() -> None:
    assert media_type("main.wasm") == "application/wasm"
    assert media_type("Enarx.toml") == "application/toml"
    assert media_type("X.JSON") == "application/json"
    assert media_type("blob") == "application/octet-stream"
    assert media_type("x.unknownext") == "application/octet-stream"


# --- strict parsing ------------------------------------------------------------------------


def test_directory_roundtrip_and_strictness(pkg: Path) -> None:
    tree = Tree.build(pkg)
    raw = tree.root.to_bytes()
    assert Directory.parse(raw) == tree.root
    obj = json.loads(raw)
    bad = {
        "canonical JSON": json.dumps(obj, sort_keys=True).encode(),  # spaces
        "repeats the key": raw[:-1] + b',"main.wasm":' + json.dumps(obj["main.wasm"],
                                                                    separators=(",", ":")
                                                                    ).encode() + b"}",
        "nothing else": _dir_bytes({"x": {**obj["main.wasm"], "extra": 1}}),
        "non-JSON number": raw.replace(b'"length":8', b'"length":8.0'),
        "not JSON": b"{",
        "unsupported digest": _dir_bytes({"x": {**obj["main.wasm"], "digest": {"md5": "AA=="}}}),
        "canonical base64": _dir_bytes({"x": {**obj["main.wasm"],
                                              "digest": {"sha-256": "AAAA"}}}),
        "non-negative integer": _dir_bytes({"x": {**obj["main.wasm"], "length": -1}}),
        "media type": _dir_bytes({"x": {**obj["main.wasm"], "type": "nonsense"}}),
        "invalid name": _dir_bytes({"../x": obj["main.wasm"]}),
        "JSON object": b"[]",
    }
    for why, body in bad.items():
        with pytest.raises(PackageError, match=why):
            Directory.parse(body)


def test_entry_parse_roundtrip() -> None:
    e = hash_bytes(b"abc", "text/plain")
    assert Entry.parse(e.to_bytes()) == e
    with pytest.raises(PackageError):
        Entry.parse(e.to_bytes() + b" ")


def test_from_directories_verifies_every_document(pkg: Path) -> None:
    tree = Tree.build(pkg)
    docs = {p: d.to_bytes() for p, d in tree.directories.items()}
    again = Tree.from_directories(docs[""], lambda p, _e: docs[p], expect=tree.root_entry)
    assert again == tree and again.identity == tree.identity
    forged = dict(docs)
    forged["data/sub"] = _dir_bytes({"b.bin": _entry(b"evil", "application/octet-stream")})
    with pytest.raises(DigestMismatch) as e:
        Tree.from_directories(forged[""], lambda p, _e: forged[p], expect=tree.root_entry)
    assert e.value.path == "data/sub" and e.value.exit_code == 4
    other = hash_bytes(b"{}", DIRECTORY_TYPE)  # a tag re-pointed at another tree
    with pytest.raises(DigestMismatch):
        Tree.from_directories(docs[""], lambda p, _e: docs[p], expect=other)


# --- fuzzing: bad input is a PackageError, never another exception ---------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                              lambda c: st.lists(c, max_size=3)
                              | st.dictionaries(st.text(max_size=8), c, max_size=3),
                              max_leaves=10).map(lambda v: json.dumps(v).encode())))
def test_fuzz_directory_and_entry_parse(raw: bytes) -> None:
    for parse in (Directory.parse, Entry.parse):
        with contextlib.suppress(PackageError):
            parse(raw)


def test_from_directories_bounds_depth_before_fetching(tmp_path: Path) -> None:
    # A hostile registry serves a valid but very deep chain: refused at MAX_DEPTH without
    # fetching the documents below it.
    docs: dict[str, bytes] = {}
    leaf = Directory({"f": hash_bytes(b"x", "text/plain")}).to_bytes()
    chain = [leaf]
    for _ in range(40):
        chain.append(Directory({"d": hash_bytes(chain[-1], DIRECTORY_TYPE)}).to_bytes())
    for depth, raw in enumerate(reversed(chain[:-1]), start=1):
        docs["/".join(["d"] * depth)] = raw
    loads: list[str] = []

    def load(path: str, _e: Entry) -> bytes:
        loads.append(path)
        return docs[path]

    with pytest.raises(PackageError, match="nested deeper"):
        Tree.from_directories(chain[-1], load)
    assert len(loads) < 33
    # the same layout through a real directory tree is refused as well
    deep = tmp_path.joinpath(*["d"] * 40)
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    with pytest.raises(PackageError, match="nested deeper"):
        Tree.build(tmp_path)


_NAMES = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,6}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.lists(_NAMES, min_size=1, max_size=3).map("/".join),
                       st.binary(max_size=40), min_size=1, max_size=8))
def test_property_trees_roundtrip_through_their_documents(files: dict[str, bytes]) -> None:
    entries = {p: hash_bytes(d, media_type(p)) for p, d in files.items()}
    try:
        tree = Tree.from_files(entries)
    except PackageError:
        return  # e.g. "a" both a file and a directory, or a case collision
    docs = {p: d.to_bytes() for p, d in tree.directories.items()}
    again = Tree.from_directories(docs[""], lambda p, _e: docs[p], expect=tree.root_entry)
    assert again == tree
    assert dict(again.files) == entries
    assert identity_of_files(files) == tree.identity
    assert [p for p, e in tree.walk() if not e.is_directory] == sorted(
        entries, key=lambda p: p.split("/"))


def test_entry_at_and_matches(pkg: Path) -> None:
    tree = Tree.build(pkg)
    assert tree.entry_at("") == tree.root_entry
    assert tree.entry_at("data/sub").is_directory
    assert tree.entry_at("data/a.txt") == hash_bytes(b"hello", "text/plain")
    for missing in ("nope", "data/nope", "main.wasm/x", "../x"):
        with pytest.raises(PackageError):
            tree.entry_at(missing)
    e = hash_bytes(b"hello", "text/plain")
    only256 = Entry({"sha-256": e.digest["sha-256"]}, 5, "text/plain")
    assert e.matches(only256) and only256.matches(e)
    assert not e.matches(hash_bytes(b"hellO", "text/plain"))
    assert not e.matches(hash_bytes(b"hello", "application/octet-stream"))
    assert not e.matches(Entry({"sha-224": hashlib.sha224(b"hello").digest()}, 5, "text/plain"))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_any_change_to_any_document_is_caught(data: st.DataObject) -> None:
    files = {"main.wasm": WASM, "Enarx.toml": TOML, "d/a.txt": b"a", "d/e/b.bin": b"bb"}
    tree = Tree.from_files({p: hash_bytes(b, media_type(p)) for p, b in files.items()})
    docs = {p: d.to_bytes() for p, d in tree.directories.items()}
    victim = data.draw(st.sampled_from(sorted(docs)))
    raw = bytearray(docs[victim])
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]))
    docs[victim] = bytes(raw)
    with pytest.raises(PackageError):
        Tree.from_directories(docs[""], lambda p, _e: docs[p], expect=tree.root_entry)
