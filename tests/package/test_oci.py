"""Packages in OCI registries (enarx.package.oci, oci_layout) against the real distribution
registry 2.8 on 127.0.0.1, driven through the `enarx package` CLI where a user would: the
Wasm artifact layout, cosign bundle signatures as referrers (tag-schema fallback), encrypted
packages, and every tampering the registry could do."""

from __future__ import annotations

import base64
import json
import os
import resource
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.errors import SignatureInvalid
from enarx.package import crypt
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.fetch import ClientOptions, read_files
from enarx.package.oci import OciSource, push_to
from enarx.package.oci_dist import OciClient, RegistryUnavailable
from enarx.package.oci_layout import (
    BUNDLE_MEDIA_TYPE,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    TITLE,
    WASM_CONFIG_MEDIA_TYPE,
)
from enarx.package.spec import parse_spec
from enarx.package.tree import Tree
from tests.cliutil import ENARX, RunEnarx
from tests.package.ociregistry import DockerRegistry
from tests.package.ocirelay import Relay

WASM = b"\0asm\x01\0\0\0"  # the empty module
MARKER = b"OCI-PLAINTEXT-MARKER-5d1e"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    reg = DockerRegistry(tmp_path_factory.mktemp("oci"))
    yield reg
    reg.stop()


def make_package(root: Path, salt: str = "") -> Path:
    root.mkdir(parents=True)
    (root / "main.wasm").write_bytes(WASM + b"\0" * 0)
    (root / "Enarx.toml").write_text(f'# package {salt}\n[[files]]\nkind = "stdio"\n')
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "x.txt").write_bytes(b"data file " + MARKER + salt.encode())
    (root / "data" / "sub" / "y.bin").write_bytes(os.urandom(3000))
    return root


def client(registry: DockerRegistry) -> OciClient:
    return OciClient(registry.host, plain_http=True, backoff=0.01)


def ok(r: subprocess.CompletedProcess[bytes]) -> None:
    assert r.returncode == 0, r.stderr.decode()


def refused(r: subprocess.CompletedProcess[bytes], code: int, *words: str) -> str:
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert "Traceback" not in err and "error:" in err
    for w in words:
        assert w in err, err
    return err


def test_publish_info_fetch_round_trip_as_a_wasm_artifact(
        registry: DockerRegistry, enarx: RunEnarx, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg")
    spec = f"oci://{registry.host}/demo/app:1.0.0"
    pub = enarx("package", "publish", spec, pkg, "--json")
    ok(pub)
    location = json.loads(pub.stdout)["location"]
    assert location.startswith(f"oci://{registry.host}/demo/app@sha256:")
    info = enarx("package", "info", spec, "--json")
    ok(info)
    doc = json.loads(info.stdout)
    assert doc["tree"] == doc["identity"] == Tree.build(pkg).identity
    ok(enarx("package", "fetch", location, "--out", tmp_path / "by-digest"))
    assert Tree.build(tmp_path / "by-digest").identity == Tree.build(pkg).identity
    r = enarx("package", "fetch", location[:-4] + "0000", "--out", tmp_path / "other")
    refused(r, 2, "MANIFEST_UNKNOWN")
    out = tmp_path / "out"
    ok(enarx("package", "fetch", spec, "--out", out))
    for rel in ("main.wasm", "Enarx.toml", "data/x.txt", "data/sub/y.bin"):
        assert (out / rel).read_bytes() == (pkg / rel).read_bytes()
    assert Tree.build(out).identity == Tree.build(pkg).identity
    # What another OCI tool sees: the Wasm artifact layout.
    with client(registry) as c:
        m = c.get_manifest("demo/app", "1.0.0").json()
        assert m["mediaType"] == MANIFEST_MEDIA_TYPE
        assert m["config"]["mediaType"] == WASM_CONFIG_MEDIA_TYPE
        titles = [la["annotations"][TITLE] for la in m["layers"]]
        assert titles == ["main.wasm", "Enarx.toml", "data/sub/y.bin", "data/x.txt"]
        assert m["layers"][0]["mediaType"] == "application/wasm"
        assert m["annotations"]["org.enarx.package.tree"] == Tree.build(pkg).identity
        config = json.loads(c.get_blob("demo/app", m["config"]["digest"],
                                       size=m["config"]["size"]))
        assert config == {"architecture": "wasm", "os": "wasip1",
                          "layerDigests": [la["digest"] for la in m["layers"]]}


def test_publishing_twice_is_reproducible_and_uploads_nothing_new(
        registry: DockerRegistry, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "repro")
    spec = parse_spec(f"oci://{registry.host}/demo/repro:1.0.0")
    with client(registry) as c:
        first = push_to(c, spec, pkg, Tree.build(pkg))
        before = sorted(p.name for p in registry.files())
        assert push_to(c, spec, pkg, Tree.build(pkg)) == first
    assert sorted(p.name for p in registry.files()) == before


def test_large_module_goes_up_in_chunks_with_progress(
        registry: DockerRegistry, tmp_path: Path) -> None:
    pkg = tmp_path / "big"
    pkg.mkdir()
    (pkg / "main.wasm").write_bytes(WASM + os.urandom((9 << 20) - len(WASM)))
    spec = parse_spec(f"oci://{registry.host}/demo/big:1.0.0")
    moved: list[int] = []
    with client(registry) as c:
        push_to(c, spec, pkg, Tree.build(pkg), progress=moved.append)
    assert sum(moved) == 9 << 20
    src = OciSource(spec, client(registry))
    try:
        resolved = src.resolve()
        got = read_files(src, resolved)
    finally:
        src.close()
    assert got["main.wasm"] == (pkg / "main.wasm").read_bytes()


def _pub(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_signed_package_verifies_and_other_or_no_signature_is_refused(
        registry: DockerRegistry, enarx: RunEnarx, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "signed")
    ok(enarx("key", "create", "--out", tmp_path / "k.pem"))
    ok(enarx("key", "create", "--out", tmp_path / "other.pem"))
    signed = f"oci://{registry.host}/demo/signed:1.0.0"
    ok(enarx("package", "publish", signed, pkg, "--sign", tmp_path / "k.pem"))
    ok(enarx("package", "fetch", signed, "--out", tmp_path / "good",
             "--signer", tmp_path / "k.pub.pem"))
    assert (tmp_path / "good" / "main.wasm").read_bytes() == WASM

    r = enarx("package", "fetch", signed, "--out", tmp_path / "wrong",
              "--signer", tmp_path / "other.pub.pem")
    refused(r, 4, "package.signature")
    unsigned = f"oci://{registry.host}/demo/signed:2.0.0"
    ok(enarx("package", "publish", unsigned, pkg))
    for spec, want in ((signed, True), (unsigned, False)):
        info = enarx("package", "info", spec, "--json")
        ok(info)
        assert json.loads(info.stdout)["signed"] is want
    r = enarx("package", "fetch", unsigned, "--out", tmp_path / "none",
              "--signer", tmp_path / "k.pub.pem")
    refused(r, 4, "not signed")
    assert not (tmp_path / "wrong").exists() and not (tmp_path / "none").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["pkg", "k.pem", "k.pub.pem", "other.pem", "other.pub.pem", "good"])

    # The bundle, checked here with an independent DSSE PAE computation.
    with client(registry) as c:
        manifest = c.get_manifest("demo/signed", "1.0.0")
        index = c.get_manifest("demo/signed", manifest.digest.replace(":", "-")).json()
        (desc,) = index["manifests"]
        assert desc["artifactType"] == BUNDLE_MEDIA_TYPE
        ref = c.get_manifest("demo/signed", desc["digest"]).json()
        assert ref["subject"]["digest"] == manifest.digest
        assert ref["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
        assert ref["annotations"]["dev.sigstore.bundle.content"] == "dsse-envelope"
        (layer,) = ref["layers"]
        bundle = json.loads(c.get_blob("demo/signed", layer["digest"], size=layer["size"]))
    env = bundle["dsseEnvelope"]
    payload = base64.b64decode(env["payload"])
    ptype = env["payloadType"].encode()
    pae = b"DSSEv1 " + str(len(ptype)).encode() + b" " + ptype + b" " + \
        str(len(payload)).encode() + b" " + payload
    sig = base64.b64decode(env["signatures"][0]["sig"])
    _pub(tmp_path / "k.pub.pem").verify(sig, pae, ec.ECDSA(hashes.SHA256()))
    statement = json.loads(payload)
    assert statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1"
    assert statement["subject"][0]["digest"]["sha256"] == manifest.digest[7:]
    assert "publicKey" in bundle["verificationMaterial"]


def test_a_tag_re_pointed_at_another_version_is_refused(
        registry: DockerRegistry, enarx: RunEnarx, tmp_path: Path) -> None:
    v1 = make_package(tmp_path / "v1", "one")
    v2 = make_package(tmp_path / "v2", "two")
    base = f"oci://{registry.host}/demo/repoint"
    ok(enarx("package", "publish", f"{base}:1.0.0", v1))
    ok(enarx("package", "publish", f"{base}:2.0.0", v2))
    with client(registry) as c:  # the registry (or its operator) moves tag 1.0.0
        c.put_manifest("demo/repoint", "1.0.0", c.get_manifest("demo/repoint", "2.0.0").body)
    r = enarx("package", "fetch", f"{base}:1.0.0", "--out", tmp_path / "out")
    refused(r, 4, "re-pointed")
    assert not (tmp_path / "out").exists()


def _republish(c: OciClient, name: str, tag: str, m: dict[str, object]) -> None:
    c.put_manifest(name, tag, json.dumps(m).encode())


def test_swapped_or_renamed_layers_are_refused(registry: DockerRegistry, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "swap")
    spec = parse_spec(f"oci://{registry.host}/demo/swap:1.0.0")
    with client(registry) as c:
        push_to(c, spec, pkg, Tree.build(pkg))
        m = c.get_manifest("demo/swap", "1.0.0").json()
        a, b = m["layers"][2], m["layers"][3]  # the two data files swap contents
        for k in ("digest", "size"):
            a[k], b[k] = b[k], a[k]
        _republish(c, "demo/swap", "1.0.1", m)
        m = c.get_manifest("demo/swap", "1.0.0").json()
        a, b = m["layers"][2], m["layers"][3]  # ... or names
        a["annotations"], b["annotations"] = b["annotations"], a["annotations"]
        _republish(c, "demo/swap", "1.0.2", m)
        m = c.get_manifest("demo/swap", "1.0.0").json()
        m["layers"][3]["annotations"][TITLE] = "../escape.txt"
        _republish(c, "demo/swap", "1.0.3", m)
        m = c.get_manifest("demo/swap", "1.0.0").json()
        m["layers"] = m["layers"][:3]  # a file dropped
        _republish(c, "demo/swap", "1.0.4", m)
    for tag, err, words in (("1.0.1", DigestMismatch, "do not form the tree"),
                            ("1.0.2", PackageError, "media type"),
                            ("1.0.3", PackageError, "escape.txt"),
                            ("1.0.4", DigestMismatch, "do not form the tree")):
        src = OciSource(parse_spec(f"oci://{registry.host}/demo/swap:{tag}"), client(registry))
        with pytest.raises(err, match=words):
            src.resolve()
        src.close()
    assert not (tmp_path.parent / "escape.txt").exists()


def test_content_tampered_in_registry_storage_leaves_no_output(
        registry: DockerRegistry, enarx: RunEnarx, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "tamper")
    spec = f"oci://{registry.host}/demo/tamper:1.0.0"
    ok(enarx("package", "publish", spec, pkg))
    data = (pkg / "data" / "x.txt").read_bytes()
    with client(registry) as c:
        m = c.get_manifest("demo/tamper", "1.0.0").json()
    (layer,) = [la for la in m["layers"] if la["annotations"][TITLE] == "data/x.txt"]
    registry.blob_path(layer["digest"]).write_bytes(data.replace(b"data", b"DATA"))
    out_parent = tmp_path / "fetch"
    out_parent.mkdir()
    r = enarx("package", "fetch", spec, "--out", out_parent / "out")
    refused(r, 4, "data/x.txt")
    assert list(out_parent.iterdir()) == []


def test_encrypted_package_holds_ciphertext_only(registry: DockerRegistry,
                                                 tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "enc")
    enc = crypt.encrypt_package(pkg, tmp_path / "enc")
    spec = parse_spec(f"oci://{registry.host}/demo/enc:1.0.0")
    with client(registry) as c:
        push_to(c, spec, tmp_path / "enc", crypt.encrypted_tree(tmp_path / "enc"))
        m = c.get_manifest("demo/enc", "1.0.0").json()
    assert [la["annotations"][TITLE] for la in m["layers"]][:2] == ["main.wasm",
                                                                     crypt.MANIFEST_NAME]
    assert {la["mediaType"] for la in m["layers"][2:]} == {crypt.ENCRYPTED_MEDIA_TYPE}
    secret = (pkg / "data" / "x.txt").read_bytes()  # the marker with this test's salt
    assert MARKER in secret
    for f in registry.files():
        assert secret not in f.read_bytes(), f
    src = OciSource(spec, client(registry))
    try:
        resolved = src.resolve()
        assert resolved.tree.identity == enc.tree.identity
        files = read_files(src, resolved)
    finally:
        src.close()
    plain = crypt.decrypt_package(files, enc.key, files[crypt.MANIFEST_NAME])
    assert plain["data/x.txt"] == (pkg / "data" / "x.txt").read_bytes()


def test_a_registry_that_is_down_names_itself(enarx: RunEnarx, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = enarx("package", "fetch", f"oci://127.0.0.1:{port}/demo/app:1.0.0",
              "--out", tmp_path / "out")
    refused(r, 1, f"127.0.0.1:{port}")
    assert not (tmp_path / "out").exists()


def test_plain_http_elsewhere_needs_allow_insecure() -> None:
    from enarx.package.oci import client_for
    from enarx.package.spec import InsecureTransport

    with pytest.raises(InsecureTransport):
        client_for(parse_spec("oci+http://registry.example/demo/app:1.0.0"))
    client_for(parse_spec("oci+http://registry.example/demo/app:1.0.0"),
               ClientOptions(allow_insecure=True)).close()


def test_a_full_disk_during_fetch_leaves_nothing(registry: DockerRegistry, enarx: RunEnarx,
                                                 tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "full")
    (pkg / "data" / "big.bin").write_bytes(os.urandom(200_000))
    spec = f"oci://{registry.host}/demo/full:1.0.0"
    ok(enarx("package", "publish", spec, pkg))
    parent = tmp_path / "fetch"
    parent.mkdir()

    def limit() -> None:  # files may not grow past 64 KiB: writes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    r = subprocess.run([str(ENARX), "package", "fetch", spec, "--out", str(parent / "out")],
                       capture_output=True, env=env, timeout=120, preexec_fn=limit,
                       check=False)
    refused(r, 2, "cannot write")
    assert list(parent.iterdir()) == []


def test_an_interrupted_publish_leaves_no_tag(registry: DockerRegistry, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", "interrupted")
    (pkg / "data" / "big.bin").write_bytes(os.urandom(50_000))
    spec = parse_spec(f"oci://{registry.host}/demo/cut:1.0.0")
    cuts = iter([("cut", None)])
    relay = Relay(registry.host, lambda m, p: next(cuts, None) if m == "PUT" else None)
    try:
        with OciClient(relay.host, plain_http=True, backoff=0.01, retries=1) as c:
            with pytest.raises(RegistryUnavailable):
                push_to(c, spec, pkg, Tree.build(pkg))
            assert not c.has_manifest("demo/cut", "1.0.0")
            push_to(c, spec, pkg, Tree.build(pkg))  # the publish can simply be redone
    finally:
        relay.stop()
    src = OciSource(spec, client(registry))
    try:
        files = read_files(src, src.resolve())
    finally:
        src.close()
    assert files["data/big.bin"] == (pkg / "data" / "big.bin").read_bytes()


def test_a_registry_with_the_referrers_api_needs_no_fallback_tag(
        registry: DockerRegistry, tmp_path: Path) -> None:
    """2.8 has no referrers API, so this plays one: a PROTOCOL FAKE in the relay adds
    ``OCI-Subject`` to manifest PUTs by digest and answers ``GET …/referrers/<digest>`` with
    the index in ``listed``; everything else is the real registry."""
    pkg = make_package(tmp_path / "pkg", "api")
    key = ec.generate_private_key(ec.SECP256R1())
    listed: list[dict[str, object]] = []

    def fake(m: str, p: str) -> tuple[str, object] | None:
        if m == "PUT" and "/manifests/sha256:" in p:
            return ("add_header", ("OCI-Subject", p.rsplit("/", 1)[1]))
        if m == "GET" and "/referrers/" in p:
            index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": listed}
            return ("json_status", (200, index, INDEX_MEDIA_TYPE))
        return None

    relay = Relay(registry.host, fake)
    try:
        spec = parse_spec(f"oci://{relay.host}/demo/api:1.0.0")
        with OciClient(relay.host, plain_http=True, backoff=0.01) as c:
            digest = push_to(c, spec, pkg, Tree.build(pkg), sign_key=key)
        fallback = digest.replace(":", "-")
        assert not any(p.endswith(fallback) for _, p in relay.seen)
        (put,) = [(p, b) for m, p, b in relay.bodies
                  if m == "PUT" and "/manifests/sha256:" in p]
        ref = json.loads(put[1])
        assert ref["subject"]["digest"] == digest
        src = OciSource(spec, OciClient(relay.host, plain_http=True, retries=1))
        with pytest.raises(SignatureInvalid, match="not signed"):
            src.resolve(signer=key.public_key())
        listed.append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": put[0].rsplit("/", 1)[1],
                       "size": len(put[1]), "artifactType": BUNDLE_MEDIA_TYPE})
        assert src.resolve(signer=key.public_key()).signed
        src.close()
        assert not any(p.endswith(fallback) for _, p in relay.seen)
    finally:
        relay.stop()
