"""Packages in OCI registries: ``oci://HOST[:PORT]/NAME:TAG`` (or ``@sha256:…``).

A package becomes one Wasm OCI artifact (:mod:`enarx.package.oci_layout`): one layer per
file, the Wasm config, and annotations that give each file's SHA-384, so the manifest alone
determines the package tree and its identity. Publishing uploads every blob first and the
manifest last, so a tag never names a partial package. A signature is a cosign v3 keyed
bundle (:mod:`enarx.package.sign`) pushed as a referrer of the manifest; on registries
without the referrers API (the distribution registry 2.8) the referrers tag-schema index
``sha256-<hex>`` lists it, which is where ``cosign`` looks too. The legacy ``.sig`` tag is
not written: cosign v3 reads bundles by default and the ``.sig`` form is deprecated.

Reading (:class:`OciSource`, the :class:`enarx.package.fetch.PackageSource` for ``oci://``):
:meth:`~OciSource.resolve` fetches the manifest (by digest: the bytes must hash to it),
checks its shape, that its layers form the tree it names, that its tag annotation is the
tag asked for (a tag re-pointed at another version's manifest is refused), and — when a
signer is required — that a bundle by that key signs this manifest and that the signed
manifest names this repository. :meth:`~OciSource.stream` checks each file's length,
SHA-256 and SHA-384 against the tree while streaming. Nothing the registry says is
trusted otherwise.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from enarx.errors import SignatureInvalid
from enarx.package import sign
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.oci_dist import OciClient, RegistryRefused, RegistryUnavailable
from enarx.package.oci_layout import (
    BUNDLE_MEDIA_TYPE,
    EMPTY_CONFIG,
    PackageManifest,
    build_package_manifest,
    build_signature_manifest,
    check_config,
    parse_package_manifest,
    parse_signature_manifest,
    sha256_digest,
)
from enarx.package.spec import Spec, check_transport
from enarx.package.tree import Entry, Tree

if TYPE_CHECKING:
    from enarx.package.fetch import ClientOptions, Resolved

__all__ = [
    "MAX_SIGNATURES",
    "OciSource",
    "client_for",
    "open_source",
    "push_package",
    "push_signature",
    "push_to",
    "verify_signature",
]

#: bundle referrers examined when a signer is required (a registry cannot make us loop)
MAX_SIGNATURES = 16
USERNAME_ENV = "ENARX_OCI_USERNAME"

Progress = Callable[[int], None]


def client_for(spec: Spec, opts: ClientOptions | None = None, *,
               transport: httpx.BaseTransport | None = None) -> OciClient:
    """An :class:`OciClient` for ``spec``'s registry (transport rule checked: plain HTTP to
    loopback hosts only, unless ``allow_insecure``). A token from the usual places
    (``ENARX_REGISTRY_TOKEN``, credential helper, keyring) is the password answered to the
    registry's challenge, with ``ENARX_OCI_USERNAME`` (default ``enarx``) as user name."""
    from enarx.package.fetch import ClientOptions

    opts = opts or ClientOptions()
    check_transport(spec, allow_insecure=opts.allow_insecure)
    token = opts.token_for(spec.host)
    auth = (os.environ.get(USERNAME_ENV) or "enarx", token) if token else None
    return OciClient(spec.host, plain_http=spec.plain_http, verify=opts.verify(), auth=auth,
                     transport=transport or opts.http_transport(), timeout=opts.timeout)


def open_source(spec: Spec, opts: ClientOptions | None = None) -> OciSource:
    return OciSource(spec, client_for(spec, opts))


class OciSource:
    """An ``oci://`` package: manifest → tree; files streamed from layers, verified."""

    def __init__(self, spec: Spec, client: OciClient) -> None:
        self.spec = spec
        self.client = client
        self.manifest_digest: str | None = None
        self.manifest: PackageManifest | None = None
        self._layers: dict[str, str] = {}

    def resolve(self, signer: Any = None) -> Resolved:
        """The package tree, with every check above; ``signer`` a public key (or None)."""
        from enarx.package.fetch import Resolved

        s = self.spec
        got = self.client.get_manifest(s.name, s.reference)
        pm = parse_package_manifest(got.body)
        if s.tag and pm.tag is not None and pm.tag != s.tag:
            raise _repointed(s, pm)
        fingerprint = None
        signed = False
        if signer is not None:
            verify_signature(self.client, s.name, got.digest, signer)
            if s.tag and pm.tag != s.tag:
                raise _repointed(s, pm)
            if pm.name != s.name:
                raise SignatureInvalid(
                    sign.CHECK, f"the signed manifest is the package {pm.name!r}, not {s.name!r}",
                    expected=s.name, actual=pm.name,
                    hint="the registry served another (signed) package under this name")
            fingerprint = sign.fingerprint(signer)
            signed = True
        else:  # informational only (`package info`): a registry refusing to list is unsigned
            try:
                signed = bool(self.client.referrers(s.name, got.digest, BUNDLE_MEDIA_TYPE))
            except RegistryRefused:
                signed = False
        config = self.client.get_blob(s.name, pm.config_digest, size=pm.config_size)
        check_config(config, pm)
        self.manifest_digest, self.manifest = got.digest, pm
        self._layers = {la.path: la.digest for la in pm.layers}
        return Resolved(s, pm.tree, signed=signed, signer=fingerprint)

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]:
        """The file at ``path``, checked against ``entry`` (length, SHA-256, SHA-384) while
        streaming; a mismatch raises by the last chunk."""
        digest = self._layers.get(path)
        if digest is None:
            raise PackageError("no such file in the package (resolve first)", path=path)
        v = entry.verifier(path=path)
        for chunk in self.client.stream_blob(self.spec.name, digest, size=entry.length,
                                             verify=False):
            v.update(chunk)
            if progress is not None:
                progress(len(chunk))
            yield chunk
        v.finish()

    def close(self) -> None:
        self.client.close()


def _repointed(spec: Spec, pm: PackageManifest) -> DigestMismatch:
    return DigestMismatch(f"{spec.raw}: the manifest was published as tag {pm.tag!r}",
                          expected=spec.tag, actual=pm.tag,
                          hint="the tag was re-pointed at another version of the package")


# --- publishing --------------------------------------------------------------------------------


def push_package(spec: Spec, opts: ClientOptions | None, pkg_dir: Path, tree: Tree, *,
                 sign_key: Any = None, progress: Progress | None = None) -> str:
    """:func:`push_to` a new client for ``spec``; returns where the package now is,
    ``oci://HOST/NAME@sha256:<hex>`` (what ``enarx package publish`` prints)."""
    with client_for(spec, opts) as client:
        digest = push_to(client, spec, pkg_dir, tree, sign_key=sign_key, progress=progress)
    scheme = spec.raw.partition("://")[0]
    return f"{scheme}://{spec.host}/{spec.name}@{digest}"


def push_to(client: OciClient, spec: Spec, pkg_dir: Path, tree: Tree, *,
            sign_key: Any = None, progress: Progress | None = None) -> str:
    """Publish the package directory ``pkg_dir`` whose tree (as stored: the ciphertext tree
    of an encrypted package) is ``tree``; returns the manifest digest. Blobs the registry
    already has are skipped; the manifest goes last (under the tag, or by digest only when
    the SPEC names a digest), then the signature with ``sign_key``."""
    name = spec.name
    config, manifest, layers = build_package_manifest(tree, name=name, tag=spec.tag or None)
    digest = sha256_digest(manifest)
    if spec.digest and not hmac.compare_digest(spec.digest.encode(), digest.encode()):
        raise PackageError(f"{spec.raw}: this package's manifest is {digest}",
                           hint="publish to oci://HOST/NAME:TAG")
    done: set[str] = set()
    for layer in layers:
        if layer.digest in done:
            if progress is not None:
                progress(layer.size)
            continue
        with _open_file(pkg_dir, layer.path, layer.size) as f:
            client.push_blob(name, layer.digest, layer.size, f.read, advance=progress)
        done.add(layer.digest)
    client.push_blob(name, sha256_digest(config), len(config), _reader(config))
    client.put_manifest(name, spec.tag or digest, manifest)
    if sign_key is not None:
        push_signature(client, name, digest, len(manifest), sign_key,
                       registry=f"{spec.host}/{name}")
    return digest


def _open_file(pkg_dir: Path, path: str, size: int) -> Any:
    target = Path(pkg_dir).joinpath(*path.split("/"))
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise PackageError(f"cannot read: {e.strerror}", path=path) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        f.close()
        raise PackageError("changed since the package was hashed", path=path,
                           hint="publish again when nothing writes to the package")
    return f


def _reader(data: bytes) -> Callable[[int], bytes]:
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        part = data[pos:pos + n]
        pos += len(part)
        return part

    return read


def push_signature(client: OciClient, name: str, manifest_digest: str, manifest_size: int,
                   key: Any, *, registry: str | None = None) -> str:
    """Sign ``manifest_digest`` with ``key`` (cosign v3 keyed bundle) and push the bundle as
    its referrer; returns the referrer manifest's digest."""
    bundle = sign.cosign_bundle(manifest_digest, key, name=registry)
    client.push_blob(name, sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG),
                     _reader(EMPTY_CONFIG))
    client.push_blob(name, sha256_digest(bundle), len(bundle), _reader(bundle))
    body, descriptor = build_signature_manifest(bundle, manifest_digest, manifest_size)
    return client.push_referrer(name, body, manifest_digest, descriptor)


def verify_signature(client: OciClient, name: str, manifest_digest: str, pub: Any) -> str:
    """A bundle referrer of ``manifest_digest`` signed by ``pub``: its digest, or
    :class:`SignatureInvalid` (none at all, or none that verifies)."""
    referrers = client.referrers(name, manifest_digest, BUNDLE_MEDIA_TYPE)
    if not referrers:
        raise SignatureInvalid(sign.CHECK, f"{name}@{manifest_digest} is not signed, and a "
                               "signer is required",
                               hint="publish with `enarx package publish --sign KEY.pem`, "
                               "or drop --signer if you accept unsigned packages")
    last: Exception | None = None
    for d in referrers[:MAX_SIGNATURES]:
        digest = d.get("digest")
        if not isinstance(digest, str):
            continue
        try:
            got = client.get_manifest(name, digest)
            blob, size = parse_signature_manifest(got.body, manifest_digest)
            sign.verify_cosign_bundle(client.get_blob(name, blob, size=size), pub,
                                      manifest_digest)
        except (SignatureInvalid, PackageError, RegistryRefused, RegistryUnavailable) as e:
            last = e
            continue
        return got.digest
    detail = f": {getattr(last, 'message', last)}" if last else ""
    raise SignatureInvalid(sign.CHECK, f"no signature of {name}@{manifest_digest} verifies "
                           f"with the given key{detail}",
                           expected=sign.fingerprint(pub),
                           hint="check --signer: the package was not signed by this key")
