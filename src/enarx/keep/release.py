"""Resources released to an attested Keep: ``[[secrets]]`` values, package content keys
and the keys of encrypted directories (``encryption_key``, docs/encrypted-dirs.md).

After :func:`enarx.keep.attest.attest_keep` succeeded, the Keep asks the steward for each
resource with ``GET /kbs/v0/resource/<repo>/<type>/<tag>`` and ``Authorization: Bearer <EAR
token>``; the answer is a flattened JWE encrypted to the Keep's one-time key, decrypted here
(``enarx.steward.binding.decrypt_resource``) and kept in memory only. A JWE recorded from an
earlier run, or forged by the host, was not encrypted to this run's one-time key and does not
decrypt: refused (exit 4). Nothing here logs a value.

I/O edge (network); no process-global state.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from enarx.errors import AttestationError, EnarxError, ProtocolError
from enarx.keep.attest import StewardUnavailable, _clean, _refusal, _trust
from enarx.secrets import check_resource

if TYPE_CHECKING:
    from enarx.keep.attest import Attested, StewardTarget

__all__ = ["DIR_KEY_SIZE", "Released", "ResourceRefused", "dir_key_resources", "fetch_resource",
           "open_resource", "release_dir_keys", "release_secrets"]

RESOURCE_ROUTE = "/kbs/v0/resource/"
_TIMEOUT = 30.0
_MAX_BODY = 4 << 20  # a JWE of at most the steward's 1 MiB resource limit, base64url-encoded
_RETRIES = 2  # after the first attempt
_BACKOFF = 0.25  # seconds, doubled per retry


class ResourceRefused(AttestationError):
    """The steward did not release a resource to this Keep (not granted, not stored), or
    what came back is not a JWE for this Keep's one-time key."""

    default_hint = ("the workload was not started; the steward's [resources] policy must grant "
                    "the path to this workload identity, and the resource must be stored "
                    "(`enarx steward secret put`)")


@dataclass(frozen=True)
class Released:
    """Secrets for the guest: environment variables and ``/run/secrets`` files (memory)."""

    env: list[tuple[str, str]] = field(default_factory=list, repr=False)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def fetch_resource(target: StewardTarget, attested: Attested, path: str, *,
                   timeout: float = _TIMEOUT) -> bytes:
    """The plaintext of steward resource ``path`` (``repo/type/tag``), released to
    ``attested``'s one-time key."""
    try:
        check_resource(path)
    except ValueError as e:
        raise ResourceRefused("resource.path", str(e)) from None
    where = f"{target.url.rstrip('/')}{RESOURCE_ROUTE}{path}"
    # A GET is idempotent: retried with backoff when the steward cannot be reached or is
    # briefly unavailable (502/503/504); any other answer is final.
    for attempt in range(_RETRIES + 1):
        try:
            status, data = _get(target, path, attested.token, timeout, where)
        except StewardUnavailable:
            if attempt == _RETRIES:
                raise
        else:
            if status not in (502, 503, 504) or attempt == _RETRIES:
                break
        time.sleep(_BACKOFF * (2 ** attempt))
    if status != 200:
        err = _refusal(where, status, data)
        if status in (401, 403, 404):
            kind = "not granted" if status != 404 else "not stored"
            raise ResourceRefused(f"resource.{kind.replace(' ', '_')}",
                                  f"the steward did not release {path} ({kind}): "
                                  f"{_clean(err.message)}") from None
        raise err
    return open_resource(data, attested, path)


def _get(target: StewardTarget, path: str, token: str, timeout: float,
         where: str) -> tuple[int, bytes]:
    parts = urlsplit(target.url)
    # In a VM Keep a steward on the host's loopback is dialled at the host's side of QEMU's
    # network, the certificate still checked against the URL's host (as keep/attest.py does).
    from enarx.vm.guestnet import https_connection

    conn = https_connection(parts.hostname or "", parts.port or 443, timeout=timeout,
                            context=_trust(target.ca_pem))
    try:
        conn.request("GET", parts.path.rstrip("/") + RESOURCE_ROUTE + quote(path, safe="/"),
                     headers={"Authorization": f"Bearer {token}",
                              "Accept": "application/json"})
        resp = conn.getresponse()
        data = resp.read(_MAX_BODY + 1)
    except (OSError, http.client.HTTPException) as e:
        raise StewardUnavailable(f"{where}: {e or type(e).__name__}") from None
    finally:
        conn.close()
    if len(data) > _MAX_BODY:
        raise StewardUnavailable(f"{where}: answer larger than {_MAX_BODY} bytes")
    return resp.status, data


def open_resource(body: bytes, attested: Attested, path: str) -> bytes:
    """The plaintext of the JWE ``body`` the steward sent for ``path``; a JWE that is not
    for this run's one-time key (recorded from another run, or forged) is refused."""
    from enarx.steward.binding import decrypt_resource

    try:
        jwe = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ResourceRefused("resource.jwe", f"{path}: the steward's answer is not JSON"
                              ) from None
    try:
        return decrypt_resource(jwe, attested.key)
    except ProtocolError as e:
        raise ResourceRefused(
            "resource.jwe",
            f"{path}: {e.message} (not encrypted to this Keep's one-time key: replayed or "
            "forged)",
        ) from None


def release_secrets(target: StewardTarget, attested: Attested, secrets: Sequence[Any], *,
                    timeout: float = _TIMEOUT) -> Released:
    """Fetch every ``[[secrets]]`` entry; each resource once even when named twice."""
    values: dict[str, bytes] = {}
    env: list[tuple[str, str]] = []
    files: dict[str, bytes] = {}
    for s in secrets:
        if s.resource not in values:
            values[s.resource] = fetch_resource(target, attested, s.resource, timeout=timeout)
        value = values[s.resource]
        if s.env is not None:
            if b"\0" in value:
                raise EnarxError(
                    f"secret {s.resource} holds a NUL byte and cannot be the environment "
                    f"variable {s.env}",
                    hint="deliver it as a file (`file = \"name\"`) instead of `env`",
                )
            env.append((s.env, os.fsdecode(value)))  # fsencode gives the bytes back
        if s.file is not None:
            files[s.file] = value
    return Released(env=env, files=files)


DIR_KEY_SIZE = 32


def dir_key_resources(files: Sequence[Any]) -> list[str]:
    """The steward resources (``encryption_key``) of the encrypted ``dir`` entries, in order,
    each once."""
    out: list[str] = []
    for f in files:
        res = getattr(f, "encryption_key", None)
        if getattr(f, "kind", None) == "dir" and res and res not in out:
            out.append(res)
    return out


def release_dir_keys(target: StewardTarget, attested: Attested, resources: Sequence[str], *,
                     timeout: float = _TIMEOUT) -> dict[str, bytes]:
    """The 32-byte keys of encrypted directories, by resource path (memory only: the key
    never touches the host disk or a log). A resource of another size is refused (exit 4)
    before the workload starts."""
    keys: dict[str, bytes] = {}
    for path in resources:
        value = fetch_resource(target, attested, path, timeout=timeout)
        if len(value) != DIR_KEY_SIZE:
            raise ResourceRefused(
                "resource.dir_key",
                f"{path} holds {len(value)} bytes, not a {DIR_KEY_SIZE}-byte directory key",
                hint=f"store the directory's key file as is: `enarx steward secret put "
                     f"{path} --file KEYFILE` with KEYFILE of exactly {DIR_KEY_SIZE} bytes")
        keys[path] = value
    return keys
