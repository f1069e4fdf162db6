"""Resolve a package SPEC and read its files, verified, from wherever it lives.

One interface for every SPEC form (docs/packages.md): :func:`open_source` gives a
:class:`PackageSource` for a drawbridge tag, an ``oci://`` reference, an ``https://`` URL of
a module, or a ``file://`` directory. :meth:`PackageSource.resolve` returns the package's
:class:`~enarx.package.tree.Tree` — every directory document checked against the entry that
commits to it, starting from the tag — and :meth:`PackageSource.stream` yields a file's
bytes checked against its entry. Signatures are checked in :meth:`resolve` when a signer is
required (a required signer and no signature, or a wrong one, is refused).

On top of that: :func:`read_files` (in memory, for ``enarx deploy``), :func:`fetch_to_dir`
(``enarx package fetch --out``: the directory appears whole or not at all; nothing half-
written survives a digest mismatch, a broken transfer or a full disk) and
:func:`package_info`.

The host, the network and the registry are untrusted storage: only digests chained from the
tag (and the signature, when required) decide what is accepted. I/O edge; no global state.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enarx.errors import SignatureInvalid
from enarx.package.errors import PackageError
from enarx.package.local import LocalPackage, read_package, write_package
from enarx.package.source import ClientOptions, PackageSource, Progress, Resolved
from enarx.package.spec import Spec, check_transport
from enarx.package.tree import Entry, Tree, hash_bytes

if TYPE_CHECKING:  # httpx and the registry clients load only when a SPEC needs them
    from enarx.package.drawbridge import TagDocument

__all__ = [
    "ClientOptions",  # re-exported from enarx.package.source
    "PackageSource",
    "Resolved",
    "fetch_to_dir",
    "open_source",
    "package_info",
    "read_files",
]

_CHUNK = 1 << 20
MAX_URL_MODULE = 100 << 20  # a bare module fetched from an https:// URL (as upstream)
#: ``file://``: files are kept in memory as they are hashed, up to this many bytes in all,
#: so a deploy reads and hashes each byte once (larger packages are read again, verified).
FILE_KEEP_MAX = 512 << 20


# --- signatures --------------------------------------------------------------------------------


def _unsigned_refused(spec: Spec) -> SignatureInvalid:
    return SignatureInvalid("package.signature",
                            f"{spec.raw} is not signed, and a signer is required",
                            hint="publish with `enarx package publish --sign KEY.pem`, or drop "
                                 "--signer if you accept unsigned packages")


def _drawbridge_root(spec: Spec, tag: TagDocument, signer: Any) -> tuple[Entry, str | None]:
    """The root entry a drawbridge tag commits to; checks the JWS when ``signer`` is set.

    Whether the tag is signed is decided from its bytes (not from the media type the
    registry claims), so a registry cannot pass a JWS off as unsigned or the reverse."""
    from enarx.package import sign

    where = f"tag {spec.user}/{spec.repo}:{spec.tag}"
    if not sign.is_signed_tag(tag.body):
        if signer is not None:
            raise _unsigned_refused(spec)
        return Entry.parse(tag.body, where=where), None
    name = f"{spec.user}/{spec.repo}"
    if signer is None:
        return Entry.from_json(sign.unverified_tag_entry(tag.body), where=where), None
    entry = sign.verify_tag(tag.body, signer, name=name, tag=spec.tag)
    return Entry.from_json(entry, where=where), sign.fingerprint(signer)


# --- sources -----------------------------------------------------------------------------------


class DrawbridgeSource:
    """A drawbridge tag: tag → root directory → sub-directories, each verified."""

    def __init__(self, spec: Spec, opts: ClientOptions) -> None:
        from enarx.package.drawbridge import DrawbridgeClient

        self.spec = spec
        self.client = DrawbridgeClient(
            spec.base_url, token=opts.token_for(spec.host), verify=opts.verify(),
            transport=opts.http_transport(), timeout=opts.timeout)

    def resolve(self, signer: Any = None) -> Resolved:
        s = self.spec
        tag = self.client.get_tag(s.user, s.repo, s.tag)
        root_entry, fingerprint = _drawbridge_root(s, tag, signer)
        if not root_entry.is_directory:
            raise PackageError("the tag does not point at a directory", path=s.raw)
        root = self.client.read_node(s.user, s.repo, s.tag, "", root_entry, limit=1 << 20)
        tree = Tree.from_directories(
            root, lambda p, e: self.client.read_node(s.user, s.repo, s.tag, p, e, limit=1 << 20),
            expect=root_entry)
        return Resolved(s, tree, signed=tag.signed, signer=fingerprint, tag=tag)

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]:
        s = self.spec
        return self.client.stream_node(s.user, s.repo, s.tag, path, entry, progress)

    def close(self) -> None:
        self.client.close()


class FileSource:
    """``file://DIR`` (a package directory) or ``file://X.wasm`` (a one-file package).

    A local directory carries no signature: a required signer refuses it."""

    def __init__(self, spec: Spec) -> None:
        assert spec.path is not None
        self.spec = spec
        self.path = spec.path
        self._local: LocalPackage | None = None

    def resolve(self, signer: Any = None) -> Resolved:
        if signer is not None:
            raise _unsigned_refused(self.spec)
        self._local = read_package(self.path, check=False, keep_max=FILE_KEEP_MAX)
        return Resolved(self.spec, self._local.tree)

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]:
        if self._local is None:
            raise PackageError("resolve the package before reading it", path=path)
        for chunk in self._local.chunks(path, entry):
            if progress is not None:
                progress(len(chunk))
            yield chunk

    def close(self) -> None:
        self._local = None


class UrlSource:
    """An ``https://`` URL of a bare module (upstream's ``deploy https://…/x.wasm``): only TLS
    vouches for it, so a required signer refuses it."""

    def __init__(self, spec: Spec, opts: ClientOptions) -> None:
        self.spec = spec
        self.opts = opts
        self._body: bytes | None = None

    def resolve(self, signer: Any = None) -> Resolved:
        if signer is not None:
            raise _unsigned_refused(self.spec)
        import httpx

        from enarx.package.drawbridge import RegistryError, RegistryRefused

        try:
            with httpx.Client(verify=self.opts.verify(), transport=self.opts.http_transport(),
                              timeout=self.opts.timeout, follow_redirects=False) as c, \
                    c.stream("GET", self.spec.url) as r:
                if r.status_code != 200:
                    r.read()
                    if r.status_code >= 500:
                        raise RegistryError(f"{self.spec.url} answered {r.status_code}")
                    raise RegistryRefused(f"{self.spec.url} answered {r.status_code}",
                                          status=r.status_code,
                                          hint="check the URL (redirects are not followed)")
                buf = bytearray()
                for chunk in r.iter_bytes(_CHUNK):
                    buf += chunk
                    if len(buf) > MAX_URL_MODULE:
                        raise PackageError(f"{self.spec.url} is larger than "
                                           f"{MAX_URL_MODULE} bytes")
        except httpx.HTTPError as e:
            raise RegistryError(f"cannot fetch {self.spec.url}: {e}") from None
        if not buf.startswith(b"\0asm"):
            raise PackageError(f"{self.spec.url} is not a WebAssembly module",
                               hint="URLs name a .wasm module; use USER/REPO:TAG for "
                                    "drawbridge packages")
        self._body = bytes(buf)
        return Resolved(self.spec, Tree.from_files(
            {"main.wasm": hash_bytes(self._body, "application/wasm")}))

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]:
        if self._body is None or path != "main.wasm":
            raise PackageError("no such file in the package", path=path)
        v = entry.verifier(path=path)
        v.update(self._body)
        v.finish()
        if progress is not None:
            progress(len(self._body))
        yield self._body

    def close(self) -> None:
        self._body = None


def open_source(spec: Spec, opts: ClientOptions | None = None) -> PackageSource:
    """The source for ``spec`` (transport rules checked first: plain http only to loopback
    hosts unless ``allow_insecure``)."""
    opts = opts or ClientOptions()
    check_transport(spec, allow_insecure=opts.allow_insecure)
    if spec.kind == "drawbridge":
        return DrawbridgeSource(spec, opts)
    if spec.kind == "file":
        return FileSource(spec)
    if spec.kind == "url":
        return UrlSource(spec, opts)
    from enarx.package import oci

    return oci.open_source(spec, opts)


# --- reading whole packages --------------------------------------------------------------------


def read_files(source: PackageSource, resolved: Resolved,
               progress: Progress | None = None) -> dict[str, bytes]:
    """Every file of the package, in memory, each verified against its entry."""
    return {path: b"".join(source.stream(path, entry, progress))
            for path, entry in sorted(resolved.tree.files.items())}


def _total(tree: Tree) -> int:
    return sum(e.length for e in tree.files.values())


def fetch_to_dir(spec: Spec, out: Path, opts: ClientOptions | None = None, *,
                 signer: Any = None,
                 progress: Callable[[int], Progress] | None = None) -> Resolved:
    """Fetch the package into the new directory ``out`` (as stored: ciphertext stays
    ciphertext). ``progress(total_bytes)`` makes the per-byte callback.

    The signature (with ``signer``) and every directory are checked before a byte is written;
    files go to a temporary sibling directory renamed to ``out`` only when every file has
    passed its digest check (:func:`enarx.package.local.write_package`): on any failure
    ``out`` does not exist and no partial file is left."""
    out = Path(out)
    if os.path.lexists(out):
        raise PackageError(f"{out} already exists", hint="choose a new --out directory")
    source = open_source(spec, opts)
    try:
        resolved = source.resolve(signer)
        advance = progress(_total(resolved.tree)) if progress is not None else None
        write_package(out, resolved.tree, lambda p, e: source.stream(p, e), progress=advance)
        return resolved
    finally:
        source.close()


def package_info(spec: Spec, opts: ClientOptions | None = None) -> dict[str, Any]:
    """What ``enarx package info`` shows: kind, tree digest, workload identity (the
    plaintext identity of an encrypted package, from its manifest), files, signature."""
    from enarx.package import crypt

    source = open_source(spec, opts)
    try:
        resolved = source.resolve()
        tree = resolved.tree
        info: dict[str, Any] = {
            "spec": spec.raw, "kind": spec.kind, "tree": tree.identity,
            "identity": tree.identity, "signed": resolved.signed, "encrypted": False,
            "size": _total(tree),
            "files": {p: {"length": e.length, "type": e.type}
                      for p, e in sorted(tree.files.items())},
        }
        if crypt.is_encrypted(tree):
            entry = tree.files[crypt.MANIFEST_NAME]
            manifest = crypt.read_manifest(b"".join(source.stream(crypt.MANIFEST_NAME, entry)))
            info.update(encrypted=True, identity=manifest.identity, key=manifest.resource)
        if isinstance(source, DrawbridgeSource):
            info["tags"] = source.client.tags(spec.user, spec.repo)
        return info
    finally:
        source.close()
