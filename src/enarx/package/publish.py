"""Publish a package directory to a SPEC: a drawbridge tag, an ``oci://`` reference or a
``file://`` directory, optionally signed (``--sign``) and encrypted (``--encrypt``).

Order of operations (docs/packages.md):

1. hash the directory (:meth:`Tree.build`) and check it is a package (``main.wasm``);
2. with ``encrypt``: encrypt every file into a temporary directory (ciphertext only; a fresh
   32-byte content key, :mod:`enarx.package.crypt`) and store the key in the steward
   through its admin API at the resource path named in the package manifest — BEFORE
   anything is uploaded, so a failed key upload publishes nothing;
3. drawbridge: PUT the tag (the root entry, or a JWS over it with ``sign_key``), the root
   directory, then every sub-directory and file in tree order (the registry verifies each
   against its parent); OCI: :func:`enarx.package.oci.push_package`; file: an atomic copy.

The content key never touches the disk and is never printed; what the owner must add to the
steward policy (``[resources]``) is returned so the CLI can show it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enarx.errors import UsageError
from enarx.package.drawbridge import DrawbridgeClient, Progress, TagDocument
from enarx.package.errors import PackageError
from enarx.package.fetch import ClientOptions
from enarx.package.local import LocalPackage, read_package, write_package
from enarx.package.spec import Spec, check_transport
from enarx.package.tree import CHUNK, ENTRY_TYPE, Tree

__all__ = ["EncryptTo", "PublishResult", "publish"]


@dataclass(frozen=True)
class EncryptTo:
    """Where the content key of an encrypted package goes: a steward admin session."""

    steward: Any  # enarx.client.steward_admin.StewardAdmin


@dataclass(frozen=True)
class PublishResult:
    spec: str
    tree: str  # identity of the tree as stored (the ciphertext tree when encrypted)
    identity: str  # the workload identity a Keep attests (plaintext tree)
    size: int
    signed: bool = False
    encrypted: bool = False
    key_resource: str | None = None
    location: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _file_chunks(path: Path, progress: Progress | None) -> Callable[[], Iterator[bytes]]:
    def gen() -> Iterator[bytes]:
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk
        except OSError as e:
            raise PackageError(f"cannot read {path}: {e.strerror}") from None
    return gen


def _const(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _drawbridge(spec: Spec, opts: ClientOptions, root: Path, tree: Tree, sign_key: Any,
                progress: Progress | None) -> bool:
    entry_json = tree.root_entry.to_json()
    if sign_key is not None:
        from enarx.package import sign

        doc = TagDocument(sign.JWS_MEDIA_TYPE, sign.sign_tag(
            entry_json, name=f"{spec.user}/{spec.repo}", tag=spec.tag, key=sign_key))
    else:
        doc = TagDocument(ENTRY_TYPE, tree.root_entry.to_bytes())
    with DrawbridgeClient(spec.base_url, token=opts.token_for(spec.host),
                          verify=opts.verify(), transport=opts.transport,
                          timeout=opts.timeout) as c:
        c.put_tag(spec.user, spec.repo, spec.tag, doc)
        root_bytes = tree.root.to_bytes()
        c.put_node(spec.user, spec.repo, spec.tag, "", tree.root_entry, lambda: root_bytes)
        for path, entry in tree.walk():
            if entry.is_directory:
                data = tree.directories[path].to_bytes()
                c.put_node(spec.user, spec.repo, spec.tag, path, entry, _const(data))
            else:
                c.put_node(spec.user, spec.repo, spec.tag, path, entry,
                           _file_chunks(root.joinpath(*path.split("/")), progress))
    return sign_key is not None


def publish(spec: Spec, pkg_dir: Path, opts: ClientOptions | None = None, *,
            sign_key: Any = None, encrypt: EncryptTo | None = None,
            progress: Callable[[int], Progress] | None = None) -> PublishResult:
    """Publish ``pkg_dir`` at ``spec``. ``progress(total_bytes)`` makes the byte callback."""
    opts = opts or ClientOptions()
    check_transport(spec, allow_insecure=opts.allow_insecure)
    if spec.kind == "url":
        raise UsageError(f"cannot publish to the URL {spec.raw}",
                         hint="publish to HOST/USER/REPO:TAG, oci://HOST/NAME:TAG or file://DIR")
    if spec.kind == "file" and sign_key is not None:
        raise UsageError("file:// packages cannot carry a signature",
                         hint="publish to a drawbridge or OCI registry to sign")
    pkg_dir = Path(pkg_dir)
    if not pkg_dir.is_dir():
        raise PackageError(f"{pkg_dir} is not a package directory",
                           hint="a package is a directory with main.wasm, an optional "
                                "Enarx.toml and data files")
    plain = read_package(pkg_dir, check=True)
    identity = plain.tree.identity
    with tempfile.TemporaryDirectory(prefix="enarx-publish-") as tmp:
        root, tree, resource = pkg_dir, plain.tree, None
        if encrypt is not None:
            from enarx.package import crypt

            enc = crypt.encrypt_package(pkg_dir, Path(tmp) / "pkg")
            # The key goes to the steward first: if that fails, nothing is published.
            encrypt.steward.put_resource(enc.resource, enc.key)
            root, tree, resource = Path(tmp) / "pkg", enc.tree, enc.resource
        total = sum(e.length for e in tree.files.values())
        advance = progress(total) if progress is not None else None
        signed = False
        if spec.kind == "drawbridge":
            signed = _drawbridge(spec, opts, root, tree, sign_key, advance)
            location = spec.url
        elif spec.kind == "file":
            assert spec.path is not None
            local = LocalPackage(tree, {p: root.joinpath(*p.split("/")) for p in tree.files})
            write_package(spec.path, local.tree, lambda p, e: local.chunks(p, e),
                          progress=advance)
            location = str(spec.path)
        else:
            from enarx.package import oci

            location = oci.push_package(spec, opts, root, tree, sign_key=sign_key,
                                        progress=advance)
            signed = sign_key is not None
    return PublishResult(spec=spec.raw, tree=tree.identity, identity=identity, size=total,
                         signed=signed, encrypted=encrypt is not None,
                         key_resource=resource, location=location)
