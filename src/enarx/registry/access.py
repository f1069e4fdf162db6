"""Who may do what (pure): writes need the owner's token; a private repository is read by its
owner's token or by a Keep whose attested workload the repository allows — listed in its
``workloads``, or (for a tag and its tree) the package identity of that very tag.

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
from enarx.registry.errors import RegistryHTTPError
from enarx.workload import parse_identity

__all__ = ["MANIFEST_NAME", "check_owner", "check_read", "manifest_identity"]



def check_owner(user: str, owner: str | None) -> None:
    """A write under ``user`` needs a token of ``user`` (401 without one, 403 for another)."""
    if owner is None:
        raise RegistryHTTPError(
            401, "Unauthorized", f"writing to {user} needs a bearer token for {user}",
            f"set ENARX_REGISTRY_TOKEN (made by `enarx registry token create --user {user}` "
            "on the registry host)")
    if owner != user:
        raise RegistryHTTPError(403, "Forbidden", f"the token is for {owner}, not for {user}")


def check_read(repo: RepoRow, owner: str | None, workload: str | None,
               tag_identities: Sequence[str] = ()) -> None:
    if repo.public or owner == repo.owner:
        return
    if workload is not None and (workload in repo.workloads or workload in tag_identities):
        return
    if owner is None and workload is None:
        raise RegistryHTTPError(
            401, "Unauthorized", f"{repo.owner}/{repo.name} is private",
            "use the owner's token, or a Keep certificate from the steward (--steward-ca) "
            "for a workload the repository allows")
    raise RegistryHTTPError(403, "Forbidden", f"{repo.owner}/{repo.name} is private and not "
                            f"readable by {owner or workload}")


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
