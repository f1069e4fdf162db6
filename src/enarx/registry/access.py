"""Who may do what (pure): writes need the owner's token. A private repository is read in two
levels, so that a Keep can learn its package's identity before it attests and fetch the
contents only after:

- **metadata** (the repository record, the tag list, tags, directory documents and an
  encrypted package's root manifest: digests, names, sizes, no contents) — by the owner's
  token, by a *read token* of the owner (``enarx registry token create --read``: what the host
  that deploys holds), or by any steward-issued Keep certificate;
- **contents** (every other tree node) — by the owner's token, or by a Keep whose attested
  workload the repository allows: listed in its ``workloads``, or (for a tag and its tree)
  the package identity of that very tag.

The identities of a tag: its tree's (``sha384:`` + hex of the tag entry's SHA-384) and, for
an encrypted package, the plaintext identity its root ``enarx-package.json`` names when that
node has the manifest media type (the owner uploaded it, as they set the allow list).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from enarx.errors import UsageError
from enarx.package.crypt import MANIFEST_MEDIA_TYPE, MANIFEST_NAME
from enarx.registry.db import RepoRow
from enarx.registry.entry import DIRECTORY_TYPE
from enarx.registry.errors import RegistryHTTPError
from enarx.workload import parse_identity

__all__ = ["MANIFEST_NAME", "check_owner", "check_read", "is_metadata", "manifest_identity"]

def check_owner(user: str, owner: str | None, reader: str | None = None) -> None:
    """A write under ``user`` needs a token of ``user`` (401 without one, 403 for another or
    for a read token)."""
    if owner is None and reader is not None:
        raise RegistryHTTPError(403, "Forbidden", "a read token cannot write",
                                f"use a token made by `enarx registry token create --user "
                                f"{user}` without --read")
    if owner is None:
        raise RegistryHTTPError(
            401, "Unauthorized", f"writing to {user} needs a bearer token for {user}",
            f"set ENARX_REGISTRY_TOKEN (made by `enarx registry token create --user {user}` "
            "on the registry host)")
    if owner != user:
        raise RegistryHTTPError(403, "Forbidden", f"the token is for {owner}, not for {user}")


def is_metadata(path: str, content_type: str) -> bool:
    """A tree node that is metadata: a directory, or an encrypted package's root manifest."""
    return content_type == DIRECTORY_TYPE or (path == MANIFEST_NAME
                                              and content_type == MANIFEST_MEDIA_TYPE)


def check_read(repo: RepoRow, owner: str | None, workload: str | None,
               tag_identities: Sequence[str] = (), *, reader: str | None = None,
               contents: bool = False) -> None:
    """Raise 401/403 unless the caller may read ``repo``'s metadata (or, with ``contents``,
    a file's bytes). ``owner``: a full token's user; ``reader``: a read token's user;
    ``workload``: the identity a steward-issued client certificate attests."""
    if repo.public or owner == repo.owner:
        return
    if workload is not None and (workload in repo.workloads or workload in tag_identities):
        return
    if not contents and (reader == repo.owner or workload is not None):
        return
    if owner is None and workload is None and reader is None:
        raise RegistryHTTPError(
            401, "Unauthorized", f"{repo.owner}/{repo.name} is private",
            "use the owner's token, or a Keep certificate from the steward (--steward-ca) "
            "for a workload the repository allows")
    who = owner or (f"the workload {workload}" if workload else f"a read token of {reader}")
    if contents and (reader == repo.owner or workload is not None):
        raise RegistryHTTPError(
            403, "Forbidden", f"the contents of {repo.owner}/{repo.name} (private) are not "
            f"readable by {who}",
            "a read token reads tags and directories only; the files go to a Keep whose "
            "attested workload the repository allows (repo register --allow-workload) or is "
            "the tag's own package")
    raise RegistryHTTPError(403, "Forbidden", f"{repo.owner}/{repo.name} is private and not "
                            f"readable by {who}")


def manifest_identity(content_type: str, data: bytes) -> str | None:
    """The plaintext identity an encrypted package's manifest names, if it is one."""
    if content_type != MANIFEST_MEDIA_TYPE:
        return None
    try:
        identity = json.loads(data)["identity"]
        parse_identity(identity)
    except (ValueError, KeyError, TypeError, UsageError):
        return None
    return str(identity)
