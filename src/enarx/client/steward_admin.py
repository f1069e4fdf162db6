"""The steward's admin API, client side: store and delete resources (secrets, content keys).

``PUT /kbs/v0/resource/<repo>/<type>/<tag>`` with ``Authorization: Bearer <admin token>``
stores the raw body; ``DELETE`` removes it. Keeps later receive a resource only as a JWE
wrapped to their attested one-time key, and only when the steward policy's ``[resources]``
section grants the path to their workload identity (docs/steward.md).

Trust in the steward's TLS certificate comes only from the CA PEM the caller names; plain
``http://`` is accepted on loopback addresses only (a steward behind a TLS proxy on the same
host). The admin token is read from a file (never a flag value, so it stays out of ``ps`` and
shell history) and is never logged or echoed back.

I/O edge (network, reading the token file); no process-global state.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from enarx.errors import EnarxError, ResourceError, UsageError

__all__ = [
    "StewardAdmin",
    "StewardAdminError",
    "StewardAdminRefused",
    "read_admin_token",
    "validate_resource_path",
]

_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_TIMEOUT = 30.0
_MAX_TOKEN_FILE = 4096


class StewardAdminError(EnarxError):
    """The steward could not be reached, did not answer in time, or failed (exit 1)."""

    exit_code = 1
    default_hint = "check --steward, --steward-ca and that the steward runs"


class StewardAdminRefused(StewardAdminError):
    """The steward refused the request: wrong admin token, bad path (exit 2)."""

    exit_code = 2


def validate_resource_path(path: str) -> str:
    """``repo/type/tag`` with segments ``[A-Za-z0-9_-][A-Za-z0-9_.-]*`` (the steward's rule)."""
    parts = path.split("/")
    if len(parts) != 3 or not all(_SEGMENT.match(p) for p in parts):
        raise UsageError(f"invalid resource path {path!r}",
                         hint='resource paths are "repo/type/tag", each segment '
                              "[A-Za-z0-9_-][A-Za-z0-9_.-]*, e.g. myapp/key/db")
    return path


def read_admin_token(path: Path) -> str:
    """The admin token from ``path`` (the steward writes ``STATE_DIR/admin-token``, 0600)."""
    try:
        raw = path.read_bytes()[: _MAX_TOKEN_FILE + 1]
    except OSError as e:
        raise ResourceError(f"cannot read the admin token file {path}: {e.strerror}",
                            hint="pass the steward's STATE_DIR/admin-token") from None
    if len(raw) > _MAX_TOKEN_FILE:
        raise UsageError(f"{path} is too large to be an admin token")
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{path} does not hold an admin token (not ASCII)") from None
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"{path} does not hold an admin token",
                         hint="pass the steward's STATE_DIR/admin-token")
    return token


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StewardAdmin:
    """An authenticated admin session with one steward."""

    url: str
    token: str
    ca_pem: Path | None = None
    transport: httpx.BaseTransport | None = None

    def _client(self) -> httpx.Client:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise UsageError(f"--steward {self.url!r} is not an https:// URL")
        verify: ssl.SSLContext | bool = False
        if parts.scheme == "http":
            if not _is_loopback(parts.hostname):
                raise UsageError("refusing to send the admin token over plain http to "
                                 f"{parts.hostname}",
                                 hint="use https:// (plain http only on loopback addresses)")
        else:
            if self.ca_pem is None:
                raise UsageError("--steward-ca is required with an https:// steward",
                                 hint="`enarx steward ca --state-dir DIR > steward-ca.pem`")
            try:
                verify = ssl.create_default_context(cafile=str(self.ca_pem))
            except (OSError, ssl.SSLError) as e:
                raise UsageError(f"cannot load the steward CA {self.ca_pem}: {e}") from None
        return httpx.Client(base_url=self.url.rstrip("/"), verify=verify, timeout=_TIMEOUT,
                            transport=self.transport, follow_redirects=False)

    def _send(self, method: str, path: str, body: bytes | None) -> httpx.Response:
        validate_resource_path(path)
        headers = {"Authorization": f"Bearer {self.token}"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            with self._client() as c:
                r = c.request(method, f"/kbs/v0/resource/{path}", content=body,
                              headers=headers)
        except httpx.TimeoutException:
            raise StewardAdminError(f"the steward at {self.url} did not answer in time") from None
        except httpx.HTTPError as e:
            raise StewardAdminError(f"cannot reach the steward at {self.url}: "
                                    f"{_reason(e)}") from None
        if r.status_code == 401:
            raise StewardAdminRefused("the steward refused the admin token",
                                      hint="pass the steward's STATE_DIR/admin-token")
        if r.status_code == 404 and method == "DELETE":
            raise StewardAdminRefused(f"the steward holds no resource {path}")
        if 400 <= r.status_code < 500:
            raise StewardAdminRefused(f"the steward answered {r.status_code} to {method} "
                                      f"resource {path}: {_detail(r)}")
        if r.status_code >= 300:
            raise StewardAdminError(f"the steward answered {r.status_code} to {method} "
                                    f"resource {path}: {_detail(r)}")
        return r

    def put_resource(self, path: str, data: bytes) -> None:
        """Store ``data`` as resource ``path`` (replacing any previous value)."""
        self._send("PUT", path, data)

    def delete_resource(self, path: str) -> None:
        self._send("DELETE", path, None)


def _reason(e: httpx.HTTPError) -> str:
    text = str(e) or type(e).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "its TLS certificate does not chain to --steward-ca"
    return text


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("type") or body)[:200]
    return str(body)[:200]
