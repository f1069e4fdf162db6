"""What every package source shares: :class:`ClientOptions` (how to reach registries),
:class:`Resolved` (a package's verified tree) and the :class:`PackageSource` protocol that
the drawbridge, OCI, URL and ``file://`` sources implement (:mod:`enarx.package.fetch`,
:mod:`enarx.package.oci`). Kept apart so those modules import it without importing each
other. No I/O here except loading a CA bundle and asking for a token on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from enarx.errors import UsageError
from enarx.package.credentials import registry_token
from enarx.package.spec import Spec
from enarx.package.tree import Entry, Tree

if TYPE_CHECKING:  # httpx, ssl load only when a registry is contacted (file:// skips them)
    import ssl

    import httpx

__all__ = ["ClientOptions", "PackageSource", "Progress", "Resolved"]

#: called with the number of bytes just sent or received
Progress = Callable[[int], None]


@dataclass(frozen=True)
class ClientOptions:
    """How to reach registries. ``ssl_context`` replaces ``ca_bundle`` (e.g. a Keep's
    steward-issued client certificate for private drawbridge repositories)."""

    allow_insecure: bool = False
    token: str | None = field(default=None, repr=False)
    credential_helper: str | None = None
    ca_bundle: Path | None = None
    ssl_context: ssl.SSLContext | None = None
    transport: httpx.BaseTransport | None = None
    default_host: str | None = None
    timeout: float = 30.0

    def verify(self) -> ssl.SSLContext | bool:
        if self.ssl_context is not None:
            return self.ssl_context
        if self.ca_bundle is not None:
            import ssl

            try:
                return ssl.create_default_context(cafile=str(self.ca_bundle))
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"cannot load the CA bundle {self.ca_bundle}: {e}") from None
        return True

    def http_transport(self) -> httpx.BaseTransport | None:
        """``transport``; else, inside a VM Keep, one that reaches loopback registries at the
        host's loopback (vm/guestnet.py); else None (httpx's default)."""
        if self.transport is not None:
            return self.transport
        from enarx.vm.guestnet import httpx_transport

        return httpx_transport(self.verify())

    def token_for(self, host: str) -> str | None:
        return self.token or registry_token(host, helper=self.credential_helper)


@dataclass(frozen=True)
class Resolved:
    """A resolved package: its tree as stored (the ciphertext tree when encrypted), whether
    its metadata is signed, and the verified signer's fingerprint when one was required."""

    spec: Spec
    tree: Tree
    signed: bool = False
    signer: str | None = None
    tag: Any = None  # drawbridge: the TagDocument as served


class PackageSource(Protocol):
    spec: Spec

    def resolve(self, signer: Any = None) -> Resolved: ...

    def stream(self, path: str, entry: Entry,
               progress: Progress | None = None) -> Iterator[bytes]: ...

    def close(self) -> None: ...
