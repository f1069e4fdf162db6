"""The Wasm OCI artifact an enarx package becomes, and the cosign bundle referrer (pure).

A package tree maps onto one OCI image manifest (docs/packages.md, "OCI registries")::

    config  application/vnd.wasm.config.v0+json
            {"architecture": "wasm", "layerDigests": [...], "os": "wasip1"}
    layer 0 main.wasm (application/wasm)
    layer 1 Enarx.toml (application/toml), if present
    layer n every other file, sorted by path; media type as the tree gives it
    each layer: annotations org.opencontainers.image.title = the file's path in the package,
                org.enarx.package.sha384 = hex SHA-384 of the file (the tree needs both
                digests, so the manifest alone gives the tree and its identity)
    manifest annotations: org.enarx.package.tree = sha384:<hex> (the stored tree's root
                          directory digest, as package_identity), org.enarx.package.name,
                          org.enarx.package.tag

An encrypted package (``crypt``) is stored as its ciphertext tree: every file typed
``application/vnd.enarx.package.encrypted.v1`` plus ``enarx-package.json`` (layer 1), so
``org.enarx.package.tree`` is the ciphertext tree's digest and the workload identity is the
plaintext identity inside ``enarx-package.json``.

A layer's digest is the file's SHA-256 (the tree entry's ``sha-256``), so the registry's
digests and the tree's agree. Documents are JCS-serialised, so the same package, name and
tag always give the same manifest digest. Parsing is strict: anything not in this shape is
refused before a byte of content is fetched.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

import rfc8785

from enarx.errors import UsageError
from enarx.package import crypt
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.sign import BUNDLE_ANNOTATIONS, BUNDLE_MEDIA_TYPE
from enarx.package.tree import MAX_FILES, Entry, Tree, media_type, split_path

__all__ = [
    "ANNOTATION_NAME",
    "ANNOTATION_TAG",
    "ANNOTATION_TREE",
    "BUNDLE_MEDIA_TYPE",
    "DIGEST_RE",
    "EMPTY_CONFIG",
    "EMPTY_MEDIA_TYPE",
    "INDEX_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "TITLE",
    "WASM_CONFIG_MEDIA_TYPE",
    "Layer",
    "PackageManifest",
    "build_package_manifest",
    "build_signature_manifest",
    "check_config",
    "check_digest",
    "check_name",
    "check_reference",
    "parse_package_manifest",
    "parse_signature_manifest",
    "sha256_digest",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
NAME_RE = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
TITLE = "org.opencontainers.image.title"
ANNOTATION_TREE = "org.enarx.package.tree"
ANNOTATION_NAME = "org.enarx.package.name"
ANNOTATION_TAG = "org.enarx.package.tag"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
SHA384 = "org.enarx.package.sha384"
MAX_CONFIG = 1 << 20
MAX_BUNDLE = 1 << 20
_IDENTITY_RE = re.compile(r"sha384:[0-9a-f]{96}")
_HEX96 = re.compile(r"[0-9a-f]{96}")


@dataclass(frozen=True)
class Layer:
    """One file of the package as a layer: its path, descriptor digest, size, media type,
    and the file's SHA-384 (hex) so the tree (and its identity) follow from the manifest."""

    path: str
    digest: str
    size: int
    media_type: str
    sha384: str

    def entry(self) -> Entry:
        """The tree entry of the file this layer holds (what ``Tree.build`` would give)."""
        return Entry({"sha-256": bytes.fromhex(self.digest[7:]),
                      "sha-384": bytes.fromhex(self.sha384)}, self.size, self.media_type)


@dataclass(frozen=True)
class PackageManifest:
    """A parsed package manifest: the layers in order, the config descriptor, and what the
    manifest claims: name and tag (claims only) and the tree its layers form (checked
    against the manifest's tree annotation; each file is checked against it when read)."""

    layers: tuple[Layer, ...]
    config_digest: str
    config_size: int
    tree: Tree
    name: str | None
    tag: str | None
    encrypted: bool


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_name(name: str) -> str:
    if len(name) > 255 or not NAME_RE.fullmatch(name):
        raise UsageError(f"{name!r} is not a valid OCI repository name",
                         hint="lowercase letters, digits and . _ - separators, `/` between parts")
    return name


def check_digest(digest: str) -> str:
    if not DIGEST_RE.fullmatch(digest):
        raise UsageError(f"{digest!r} is not a sha256 digest",
                         hint="write `sha256:` and 64 lowercase hex digits")
    return digest


def check_reference(ref: str) -> str:
    """A tag or a digest."""
    if ref.startswith("sha256:"):
        return check_digest(ref)
    if not TAG_RE.fullmatch(ref):
        raise UsageError(f"{ref!r} is not a valid OCI tag",
                         hint="up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -")
    return ref


def _dumps(doc: Any) -> bytes:
    return rfc8785.dumps(doc)


def _order(path: str) -> tuple[int, str]:
    return ({"main.wasm": 0, crypt.MANIFEST_NAME: 1, "Enarx.toml": 2}.get(path, 3), path)


def _expected_type(path: str, encrypted: bool) -> str:
    """The media type the tree gives ``path``: by name for a plain package; for an
    encrypted one (docs/packages.md) the manifest type or the ciphertext type."""
    if not encrypted:
        return media_type(path.rpartition("/")[2])
    return crypt.MANIFEST_MEDIA_TYPE if path == crypt.MANIFEST_NAME else crypt.ENCRYPTED_MEDIA_TYPE


def build_package_manifest(tree: Tree, *, name: str, tag: str | None
                           ) -> tuple[bytes, bytes, list[Layer]]:
    """``(config bytes, manifest bytes, layers)`` for a package tree, plain (``Tree.build``)
    or encrypted (``crypt.encrypted_tree``). ``tag`` None when pushed by digest only."""
    encrypted = crypt.is_encrypted(tree)
    if not encrypted:
        tree.check_package()
    for path, e in tree.files.items():
        if e.type != _expected_type(path, encrypted):
            raise PackageError(f"media type {e.type} is not what the tree gives this file",
                               path=path)
    if "main.wasm" not in tree.root.entries:
        raise PackageError("the package has no main.wasm at its root")
    layers = [Layer(path, "sha256:" + e.digest["sha-256"].hex(), e.length, e.type,
                    e.digest["sha-384"].hex())
              for path, e in sorted(tree.files.items(), key=lambda kv: _order(kv[0]))]
    config = _dumps({"architecture": "wasm", "os": "wasip1",
                     "layerDigests": [la.digest for la in layers]})
    annotations = {ANNOTATION_TREE: tree.identity, ANNOTATION_NAME: name}
    if tag is not None:
        annotations[ANNOTATION_TAG] = tag
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": sha256_digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": la.media_type, "digest": la.digest, "size": la.size,
                    "annotations": {SHA384: la.sha384, TITLE: la.path}} for la in layers],
        "annotations": annotations,
    }
    return config, _dumps(manifest), layers


def _bad(message: str, hint: str | None = None) -> PackageError:
    return PackageError(f"OCI manifest: {message}",
                        hint=hint or "this is not an enarx package (or it was tampered with)")


def _descriptor(d: Any, where: str) -> tuple[str, int, str, dict[str, Any]]:
    if not isinstance(d, dict):
        raise _bad(f"{where} is not a descriptor")
    digest, size, mt = d.get("digest"), d.get("size"), d.get("mediaType")
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise _bad(f"{where}: digest {str(digest)[:80]!r} is not sha256:<64 hex>")
    if type(size) is not int or not 0 <= size < 1 << 53:
        raise _bad(f"{where}: bad size {str(size)[:40]!r}")
    if not isinstance(mt, str) or not mt:
        raise _bad(f"{where}: no mediaType")
    ann = d.get("annotations", {})
    if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
        raise _bad(f"{where}: annotations must map strings to strings")
    return digest, size, mt, ann


def _load(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        raise _bad("not a JSON object")
    if doc.get("schemaVersion") != 2 or doc.get("mediaType", MANIFEST_MEDIA_TYPE) \
            != MANIFEST_MEDIA_TYPE:
        raise _bad("not an OCI image manifest (schemaVersion 2)")
    return doc


def parse_package_manifest(body: bytes) -> PackageManifest:
    """Check a manifest is an enarx package: Wasm config, titled layers whose paths form a
    valid tree (names, nesting, no duplicates or case-folding clashes) with main.wasm first,
    and a tree annotation. Types must be what the tree gives each file name, so the
    fetched directory hashes to the same identity."""
    doc = _load(body)
    config_digest, config_size, config_type, _ = _descriptor(doc.get("config"), "config")
    if config_type != WASM_CONFIG_MEDIA_TYPE:
        raise _bad(f"config media type is {config_type[:80]!r}, not {WASM_CONFIG_MEDIA_TYPE}")
    if config_size > MAX_CONFIG:
        raise _bad(f"config is larger than {MAX_CONFIG} bytes")
    raw = doc.get("layers")
    if not isinstance(raw, list) or not raw:
        raise _bad("no layers")
    if len(raw) > MAX_FILES:
        raise _bad(f"more than {MAX_FILES} layers")
    encrypted = any(isinstance(d, dict) and d.get("mediaType") == crypt.MANIFEST_MEDIA_TYPE
                    and (d.get("annotations") or {}).get(TITLE) == crypt.MANIFEST_NAME
                    for d in raw)
    layers: list[Layer] = []
    for i, d in enumerate(raw):
        digest, size, mt, ann = _descriptor(d, f"layers[{i}]")
        path = ann.get(TITLE)
        if not isinstance(path, str):
            raise _bad(f"layers[{i}] has no {TITLE} annotation")
        try:
            split_path(path)
        except PackageError as e:
            raise _bad(f"layers[{i}]: {e.message}") from None
        want = _expected_type(path, encrypted)
        if mt != want:
            raise _bad(f"layers[{i}] ({path}): media type {mt[:80]!r} is not {want!r}")
        sha384 = ann.get(SHA384)
        if not isinstance(sha384, str) or not _HEX96.fullmatch(sha384):
            raise _bad(f"layers[{i}] ({path}): {SHA384} must be 96 lowercase hex digits")
        layers.append(Layer(path, digest, size, mt, sha384))
    if layers[0].path != "main.wasm":
        raise _bad("layer 0 must be main.wasm")
    if len({la.path for la in layers}) != len(layers):
        raise _bad("two layers have the same title")
    # The tree the layers describe: nesting, names, case folding; its digest must be the
    # one the manifest names.
    tree = Tree.from_files({la.path: la.entry() for la in layers})
    top = doc.get("annotations")
    if not isinstance(top, dict):
        raise _bad(f"no annotations (an enarx package has {ANNOTATION_TREE})")
    claimed = top.get(ANNOTATION_TREE)
    if not isinstance(claimed, str) or not _IDENTITY_RE.fullmatch(claimed):
        raise _bad(f"{ANNOTATION_TREE} must be sha384:<96 hex>")
    if not hmac.compare_digest(claimed.encode(), tree.identity.encode()):
        raise DigestMismatch("OCI manifest: the layers do not form the tree the manifest names",
                             expected=claimed, actual=tree.identity)
    name, tag = top.get(ANNOTATION_NAME), top.get(ANNOTATION_TAG)
    return PackageManifest(tuple(layers), config_digest, config_size, tree,
                           name if isinstance(name, str) else None,
                           tag if isinstance(tag, str) else None, encrypted)


def check_config(body: bytes, manifest: PackageManifest) -> None:
    """The config must be the Wasm config whose ``layerDigests`` are the layers, in order."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or doc.get("architecture") != "wasm" \
            or doc.get("os") not in ("wasip1", "wasi"):
        raise _bad("config is not a Wasm config (architecture wasm, os wasip1)")
    if doc.get("layerDigests") != [la.digest for la in manifest.layers]:
        raise _bad("config layerDigests do not list the manifest's layers in order")


def build_signature_manifest(bundle: bytes, subject_digest: str, subject_size: int
                             ) -> tuple[bytes, dict[str, Any]]:
    """The referrer manifest carrying a cosign v3 bundle for ``subject_digest`` (cosign's
    layout: ``artifactType`` the bundle type, empty config, one layer, ``subject``), and the
    descriptor a referrers index lists for it."""
    annotations = dict(BUNDLE_ANNOTATIONS)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": sha256_digest(EMPTY_CONFIG),
                   "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "digest": sha256_digest(bundle),
                    "size": len(bundle)}],
        "subject": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": subject_digest,
                    "size": subject_size},
        "annotations": annotations,
    }
    body = _dumps(manifest)
    descriptor = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": sha256_digest(body),
                  "size": len(body), "artifactType": BUNDLE_MEDIA_TYPE,
                  "annotations": annotations}
    return body, descriptor


def parse_signature_manifest(body: bytes, subject_digest: str) -> tuple[str, int]:
    """``(bundle digest, size)`` of a bundle referrer whose subject is ``subject_digest``."""
    doc = _load(body)
    if doc.get("artifactType") != BUNDLE_MEDIA_TYPE:
        raise _bad("the referrer is not a sigstore bundle")
    subject, _, _, _ = _descriptor(doc.get("subject"), "subject")
    if subject != subject_digest:
        raise _bad("the signature's subject is another manifest")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise _bad("a bundle referrer has exactly one layer")
    digest, size, mt, _ = _descriptor(layers[0], "layers[0]")
    if mt != BUNDLE_MEDIA_TYPE or size > MAX_BUNDLE:
        raise _bad("the referrer's layer is not a bundle of at most 1 MiB")
    return digest, size
