"""Enarx.toml ``[[secrets]]``: which steward resources a workload receives, and where.

Each entry names a steward resource (``repo/type/tag``, the steward's
``/kbs/v0/resource/<repo>/<type>/<tag>`` path) and where the guest finds it once the Keep has
attested: an environment variable (``env``), a read-only file in the in-memory directory
``/run/secrets`` (``file``), or both::

    [[secrets]]
    resource = "app/key/db"
    env = "DB_PASSWORD"
    file = "db"

Secrets are released by the steward only after a successful attestation, arrive as JWE
encrypted to the Keep's one-time key, and are never written to the host disk or logged. The
``/run/secrets`` pre-open is one more ``dir`` entry after ``[[files]]`` (named ``secrets`` in
``FD_NAMES``), so it counts in the workload identity like any other file entry.

Pure: checks and data types only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RESOURCE_RE",
    "SECRETS_GUEST_PATH",
    "SECRETS_NAME",
    "SecretsDir",
    "check_file_name",
    "check_resource",
    "check_secrets",
    "secrets_identity",
]

#: The guest path of the in-memory directory holding ``file`` secrets.
SECRETS_GUEST_PATH = "/run/secrets"
#: Its name in ``FD_NAMES``.
SECRETS_NAME = "secrets"
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}"
#: A steward resource path: three segments, as the steward's resource route accepts them.
RESOURCE_RE = re.compile(rf"{_SEGMENT}/{_SEGMENT}/{_SEGMENT}")


@dataclass(frozen=True)
class SecretsDir:
    """The ``dir`` file entry of the in-memory secrets pre-open (no host path: ``memory``)."""

    kind: str = "dir"
    name: str = SECRETS_NAME
    guest: str = SECRETS_GUEST_PATH
    readonly: bool = True
    host: str = ""
    memory: bool = True

    @property
    def guest_path(self) -> str:
        return self.guest


def check_resource(path: str) -> str:
    """``repo/type/tag`` with the steward's segment rules, else ``ValueError``."""
    if not isinstance(path, str) or not RESOURCE_RE.fullmatch(path):
        raise ValueError(
            f"{str(path)[:80]!r} is not a steward resource path: use repo/type/tag, each part "
            "letters, digits, '_', '-' or '.' (not starting with '.')"
        )
    return path


def check_file_name(name: str) -> str:
    """A file name inside ``/run/secrets``: one path component, else ``ValueError``."""
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name) > 255:
        raise ValueError(f"{name[:80]!r} is not a file name (one path component, no '/')")
    return name


def check_secrets(entries: list[Any], env: dict[str, str]) -> None:
    """Cross-entry rules: every ``env`` and ``file`` name used once, and no ``env`` secret
    shadowing an ``[env]`` value (``ValueError`` naming the entry)."""
    envs: set[str] = set()
    files: set[str] = set()
    for i, e in enumerate(entries):
        if e.env is None and e.file is None:
            raise ValueError(f"secrets[{i}] ({e.resource}) needs env, file or both")
        if e.env is not None:
            if e.env in envs:
                raise ValueError(f"secrets[{i}]: env {e.env!r} is used by two secrets")
            if e.env in env:
                raise ValueError(f"secrets[{i}]: env {e.env!r} is also set in [env]")
            envs.add(e.env)
        if e.file is not None:
            if e.file in files:
                raise ValueError(f"secrets[{i}]: file {e.file!r} is used by two secrets")
            files.add(e.file)


def secrets_identity(entries: list[Any]) -> list[dict[str, str]]:
    """The JSON form of the declarations (not the values) for the effective config."""
    out = []
    for e in entries:
        item = {"resource": str(e.resource)}
        if e.env is not None:
            item["env"] = str(e.env)
        if e.file is not None:
            item["file"] = str(e.file)
        out.append(item)
    return out
