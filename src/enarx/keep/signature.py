"""The package signature a deploying Keep presents with its attestation.

A steward whose policy names ``[workload] signers`` admits only Keeps whose package is
signed by one of those keys (:mod:`enarx.steward.signers` checks it, and defines the
``package-signature`` runtime-data member built here). The Keep cannot know the steward's
policy, so whenever the package it resolved is signed it presents what the storage holds:
a drawbridge tag's JWS exactly as served, or up to
:data:`~enarx.steward.signers.MAX_BUNDLES` cosign bundles referring to the OCI manifest,
with the manifest itself. None of it is trusted here; the steward verifies it against its
keys and the identity the evidence binds. I/O edge (reads the registry through the source).
"""

from __future__ import annotations

import contextlib
from typing import Any

from enarx.errors import EnarxError

__all__ = ["presented_signature"]


def presented_signature(src: Any, resolved: Any,
                        manifest_raw: bytes | None) -> dict[str, Any] | None:
    """The ``package-signature`` member for the package ``src.resolve()`` gave as
    ``resolved`` (``manifest_raw``: an encrypted package's ``enarx-package.json``), or None
    when it is unsigned or its source carries no signatures (``file://``, plain URLs)."""
    from enarx.package import sign
    from enarx.steward.signers import presented

    body = getattr(getattr(resolved, "tag", None), "body", None)
    if isinstance(body, bytes):
        if not sign.is_signed_tag(body) or not _utf8(body):
            return None  # (a JWS in UTF-16/32 cannot travel as JSON text: unsigned)
        root = resolved.tree.root.to_bytes() if manifest_raw is not None else None
        return presented(jws=body, root=root, manifest=manifest_raw)
    digest = getattr(src, "manifest_digest", None)
    if not isinstance(digest, str) or getattr(src, "client", None) is None:
        return None
    bundles = _bundles(src.client, src.spec.name, digest)
    if not bundles:
        return None
    oci_manifest = src.client.get_manifest(src.spec.name, digest).body  # checked: by digest
    return presented(bundles=bundles, oci_manifest=oci_manifest, manifest=manifest_raw)


def _bundles(client: Any, name: str, digest: str) -> list[bytes]:
    """The cosign bundles referring to ``digest`` (unverified; unreadable ones skipped)."""
    from enarx.package.oci_layout import BUNDLE_MEDIA_TYPE, parse_signature_manifest
    from enarx.steward.signers import MAX_BUNDLES

    out: list[bytes] = []
    with contextlib.suppress(EnarxError):
        referrers = client.referrers(name, digest, BUNDLE_MEDIA_TYPE)
        for d in referrers[:MAX_BUNDLES]:
            with contextlib.suppress(EnarxError):
                ref = client.get_manifest(name, str(d.get("digest")))
                blob, size = parse_signature_manifest(ref.body, digest)
                bundle = client.get_blob(name, blob, size=size)
                if _utf8(bundle):  # presented as JSON text
                    out.append(bundle)
    return out


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
