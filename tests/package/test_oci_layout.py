"""The Wasm OCI artifact layout (enarx.package.oci_layout): documented bytes, strict parsing,
and fuzzed manifests that must fail with typed errors only."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.package import crypt
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.oci_layout import (
    ANNOTATION_NAME,
    ANNOTATION_TAG,
    ANNOTATION_TREE,
    BUNDLE_MEDIA_TYPE,
    SHA384,
    TITLE,
    build_package_manifest,
    build_signature_manifest,
    check_config,
    parse_package_manifest,
    parse_signature_manifest,
)
from enarx.package.tree import Tree

WASM = b"\0asm\x01\0\0\0"


def make_pkg(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "main.wasm").write_bytes(WASM)
    (root / "Enarx.toml").write_text('[[files]]\nkind = "stdio"\n')
    (root / "data" / "b.txt").write_bytes(b"bee")
    (root / "a.bin").write_bytes(b"\x01\x02")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    return Tree.build(make_pkg(tmp_path / "pkg"))


def test_manifest_bytes_are_the_documented_jcs_layout(tree: Tree) -> None:
    config, manifest, layers = build_package_manifest(tree, name="org/app", tag="1.0.0")

    def sha(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    files = {"main.wasm": WASM, "Enarx.toml": b'[[files]]\nkind = "stdio"\n',
             "a.bin": b"\x01\x02", "data/b.txt": b"bee"}
    types = {"main.wasm": "application/wasm", "Enarx.toml": "application/toml",
             "a.bin": "application/octet-stream", "data/b.txt": "text/plain"}
    order = ["main.wasm", "Enarx.toml", "a.bin", "data/b.txt"]
    want_config = {"architecture": "wasm", "layerDigests": [sha(files[p]) for p in order],
                   "os": "wasip1"}
    assert config == json.dumps(want_config, separators=(",", ":"), sort_keys=True).encode()
    want = {
        "annotations": {ANNOTATION_NAME: "org/app", ANNOTATION_TAG: "1.0.0",
                        ANNOTATION_TREE: tree.identity},
        "config": {"digest": sha(config), "mediaType": "application/vnd.wasm.config.v0+json",
                   "size": len(config)},
        "layers": [{"annotations": {SHA384: hashlib.sha384(files[p]).hexdigest(), TITLE: p},
                    "digest": sha(files[p]), "mediaType": types[p], "size": len(files[p])}
                   for p in order],
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "schemaVersion": 2,
    }
    assert manifest == json.dumps(want, separators=(",", ":"), sort_keys=True).encode()
    assert [la.path for la in layers] == order
    pm = parse_package_manifest(manifest)
    assert pm.tree.identity == tree.identity and (pm.name, pm.tag) == ("org/app", "1.0.0")
    check_config(config, pm)


def test_no_tag_when_pushed_by_digest(tree: Tree) -> None:
    _, manifest, _ = build_package_manifest(tree, name="org/app", tag=None)
    assert parse_package_manifest(manifest).tag is None


def test_a_package_without_main_wasm_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "x.txt").write_text("x")
    with pytest.raises(PackageError, match=r"main\.wasm"):
        build_package_manifest(Tree.build(root), name="a", tag="1")


def test_encrypted_packages_keep_their_ciphertext_types(tmp_path: Path) -> None:
    src = make_pkg(tmp_path / "pkg")
    crypt.encrypt_package(src, tmp_path / "enc")
    tree = crypt.encrypted_tree(tmp_path / "enc")
    _, manifest, layers = build_package_manifest(tree, name="org/app", tag="1")
    assert [la.path for la in layers][:2] == ["main.wasm", crypt.MANIFEST_NAME]
    pm = parse_package_manifest(manifest)
    assert pm.encrypted and pm.tree.identity == tree.identity
    # A plain type on an encrypted package's file is refused.
    doc = json.loads(manifest)
    doc["layers"][0]["mediaType"] = "application/wasm"
    with pytest.raises(PackageError, match="media type"):
        parse_package_manifest(json.dumps(doc).encode())


def _doc(tree: Tree) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(build_package_manifest(tree, name="o/a", tag="1")[1])
    return doc


def _mut(doc: dict[str, Any], fn: Any) -> bytes:
    d = copy.deepcopy(doc)
    fn(d)
    return json.dumps(d).encode()


BAD: list[tuple[str, Any, type[Exception], str]] = [
    ("not json", None, PackageError, "not a JSON object"),
    ("index", lambda d: d.update(mediaType="application/vnd.oci.image.index.v1+json"),
     PackageError, "not an OCI image manifest"),
    ("schema 1", lambda d: d.update(schemaVersion=1), PackageError, "schemaVersion"),
    ("docker config", lambda d: d["config"].update(
        mediaType="application/vnd.oci.image.config.v1+json"), PackageError, "config media"),
    ("huge config", lambda d: d["config"].update(size=1 << 30), PackageError, "config is larger"),
    ("no layers", lambda d: d.update(layers=[]), PackageError, "no layers"),
    ("no title", lambda d: d["layers"][1]["annotations"].pop(TITLE), PackageError, "title"),
    ("absolute", lambda d: d["layers"][2]["annotations"].update({TITLE: "/etc/passwd"}),
     PackageError, "layers\\[2\\]"),
    ("dotdot", lambda d: d["layers"][2]["annotations"].update({TITLE: "data/../../x"}),
     PackageError, "layers\\[2\\]"),
    ("duplicate", lambda d: d["layers"][3]["annotations"].update({TITLE: "a.bin"}),
     PackageError, "media type|same title"),
    ("case clash", lambda d: d["layers"].append(dict(d["layers"][2], annotations={
        TITLE: "A.bin", SHA384: d["layers"][2]["annotations"][SHA384]})), PackageError, "case"),
    ("main not first", lambda d: d["layers"].reverse(), PackageError, "layer 0"),
    ("bad digest", lambda d: d["layers"][0].update(digest="sha256:XYZ"), PackageError,
     "digest"),
    ("sha512 digest", lambda d: d["layers"][0].update(digest="sha512:" + "a" * 128),
     PackageError, "digest"),
    ("negative size", lambda d: d["layers"][0].update(size=-1), PackageError, "size"),
    ("bool size", lambda d: d["layers"][0].update(size=True), PackageError, "size"),
    ("bad sha384", lambda d: d["layers"][0]["annotations"].update({SHA384: "00"}),
     PackageError, "sha384"),
    ("no tree", lambda d: d["annotations"].pop(ANNOTATION_TREE), PackageError, "tree"),
    ("other tree", lambda d: d["annotations"].update({ANNOTATION_TREE: "sha384:" + "0" * 96}),
     DigestMismatch, "do not form the tree"),
    ("other size", lambda d: d["layers"][2].update(size=d["layers"][2]["size"] + 1),
     DigestMismatch, "do not form the tree"),
    ("non-string annotation", lambda d: d["layers"][0]["annotations"].update({TITLE: 3}),
     PackageError, "annotations"),
]


@pytest.mark.parametrize(("what", "fn", "err", "words"), BAD, ids=[b[0] for b in BAD])
def test_malformed_manifests_are_refused(tree: Tree, what: str, fn: Any,
                                         err: type[Exception], words: str) -> None:
    body = b"{not json" if fn is None else _mut(_doc(tree), fn)
    with pytest.raises(err, match=words):
        parse_package_manifest(body)


def test_config_must_list_the_layers(tree: Tree) -> None:
    config, manifest, _ = build_package_manifest(tree, name="o/a", tag="1")
    pm = parse_package_manifest(manifest)
    doc = json.loads(config)
    for bad in ({**doc, "layerDigests": doc["layerDigests"][::-1]}, {**doc, "os": "linux"},
                {**doc, "architecture": "amd64"}):
        with pytest.raises(PackageError):
            check_config(json.dumps(bad).encode(), pm)
    with pytest.raises(PackageError):
        check_config(b"[]", pm)


def test_signature_manifest_round_trip_and_subject_check() -> None:
    subject = "sha256:" + "ab" * 32
    body, desc = build_signature_manifest(b'{"bundle": 1}', subject, 123)
    doc = json.loads(body)
    assert doc["artifactType"] == desc["artifactType"] == BUNDLE_MEDIA_TYPE
    assert doc["subject"] == {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                              "digest": subject, "size": 123}
    assert desc["digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    _, size = parse_signature_manifest(body, subject)
    assert size == len(b'{"bundle": 1}')
    with pytest.raises(PackageError, match="another manifest"):
        parse_signature_manifest(body, "sha256:" + "cd" * 32)
    doc["layers"] = doc["layers"] * 2
    with pytest.raises(PackageError, match="one layer"):
        parse_signature_manifest(json.dumps(doc).encode(), subject)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 1 << 60) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                               max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["layers", "config", "annotations", 0, 1, 2,
                                      "digest", "size", "mediaType", TITLE, SHA384]),
                     min_size=1, max_size=4),
       value=_json)
def test_fuzzed_manifests_fail_with_typed_errors_only(tree: Tree, path: list[Any],
                                                      value: Any) -> None:
    doc: Any = _doc(tree)
    node = doc
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        return
    with contextlib.suppress(PackageError):
        parse_package_manifest(json.dumps(doc).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_fail_with_typed_errors_only(data: bytes) -> None:
    for parse in (parse_package_manifest,
                  lambda b: parse_signature_manifest(b, "sha256:" + "0" * 64)):
        with contextlib.suppress(PackageError):
            parse(data)
