"""Where an attested Keep reads its package's contents: with its steward-issued certificate.

A private drawbridge repository is read in two levels (:mod:`enarx.registry.access`): its
metadata (tag, directories, an encrypted package's manifest) by the host's read token, so the
Keep learns the package identity it must attest; its file contents only by a Keep whose
attested workload the repository allows. So after attesting, the Keep opens a second
connection to the registry that presents the certificate the steward issued for its one-time
key as the TLS client certificate. The key stays in memory (:mod:`enarx.keep.tls` loads it
into the ``ssl`` context through an anonymous in-memory file).

Plain-http registries (loopback tests), OCI, URLs and ``file://`` keep the source that
resolved the package: there is no TLS client certificate to present. I/O edge; no global state.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from enarx.package.source import ClientOptions, PackageSource, Progress, Resolved
from enarx.package.spec import Spec
from enarx.package.tree import Entry

if TYPE_CHECKING:  # ssl, httpx (drawbridge): loaded only for a drawbridge registry
    import ssl

    from enarx.keep.attest import Attested

__all__ = ["contents_source", "keep_client_context"]


def keep_client_context(attested: Attested, opts: ClientOptions) -> ssl.SSLContext:
    """A TLS client context presenting the Keep's attested chain, trusting what ``opts``
    trusts for the registry (``--ca-bundle`` or the system roots)."""
    from enarx.keep.tls import client_context

    trust = str(opts.ca_bundle) if opts.ca_bundle is not None else "system"
    return client_context("registry", attested.identity(), trust=trust)


def contents_source(spec: Spec, opts: ClientOptions, attested: Attested | None,
                    resolved_by: PackageSource) -> PackageSource:
    """The source the Keep streams file contents from: for an https drawbridge registry and
    an attested Keep, a new connection with its certificate (and the same token, so an
    owner's token keeps working); otherwise ``resolved_by``."""
    if attested is None or spec.kind != "drawbridge" or spec.scheme != "https":
        return resolved_by
    from enarx.package.fetch import DrawbridgeSource

    return _Certified(DrawbridgeSource(
        spec, replace(opts, ssl_context=keep_client_context(attested, opts))))


class _Certified:
    """The certificate-bearing source. The registry answered the metadata a moment ago, so a
    connection it drops before the first byte most likely means it rejected the Keep's
    certificate (a steward CA it was not started with): say so instead of "cannot reach"."""

    def __init__(self, inner: PackageSource) -> None:
        self.inner = inner
        self.spec = inner.spec

    def resolve(self, signer: Any = None) -> Resolved:
        return self.inner.resolve(signer)

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]:
        from enarx.package.drawbridge import RegistryError, RegistryRefused

        started = False
        try:
            for chunk in self.inner.stream(path, entry, progress):
                started = True
                yield chunk
        except RegistryRefused:
            raise
        except RegistryError as e:
            if started:
                raise
            raise RegistryError(
                f"{e.message} (on the connection presenting the Keep's certificate, after "
                "the same registry served the package's metadata)",
                hint="the registry likely rejected the Keep's certificate: start it with "
                "`enarx registry serve --steward-ca` naming the CA of the steward this Keep "
                "attested to") from None

    def close(self) -> None:
        self.inner.close()
