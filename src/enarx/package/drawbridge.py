"""A drawbridge registry client: users, repositories, tags and trees over HTTP(S).

Routes live under ``/api/v0.1.0/`` (see docs/packages.md): ``/{user}``, ``/{user}/{repo}``,
``/{user}/{repo}/_tag``, ``/{user}/{repo}/_tag/{tag}`` and ``…/_tag/{tag}/tree/{path}``.
Every PUT carries ``Content-Type``, ``Content-Length`` and ``Content-Digest`` (sha-256 and
sha-384). Publishing uploads the tag, then the root directory, then the files (as upstream).

Nothing the registry sends is trusted: every body read through :meth:`read_node` /
:meth:`stream_node` is checked against the entry that commits to it (length first, then
every digest the entry lists, compared in constant time); the server's own
``Content-Digest`` and ``Content-Type`` headers are ignored. :meth:`stream_node` yields
bytes before the check ends, so callers must treat them as unverified until the generator
finishes (``enarx.package.fetch`` writes them to a temporary directory it renames only after
every check has passed).

Idempotent requests are retried with backoff when the registry cannot be reached or answers
502/503/504; a body that broke off half-way is never retried silently. The HTTP transport is
injectable (``transport=``), so tests can drive the client against a real in-process app or
a fault-injecting relay. I/O edge: no process-global state.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from enarx.errors import EnarxError
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.tree import DIRECTORY_TYPE, ENTRY_TYPE, Entry, hash_bytes

__all__ = [
    "API_VERSION",
    "DIRECTORY_TYPE",
    "ENTRY_TYPE",
    "JWS_TYPE",
    "DrawbridgeClient",
    "Progress",
    "RegistryError",
    "RegistryRefused",
    "TagDocument",
    "content_digest",
    "validate_name",
]

API_VERSION = "0.1.0"
JWS_TYPE = "application/jose+json"
JSON_TYPE = "application/json"

#: called with the number of bytes just sent or received
Progress = Callable[[int], None]

_USER_RE = re.compile(r"^[A-Za-z0-9]+$")
_REPO_RE = re.compile(r"^[A-Za-z0-9-]+$")
_SMALL_LIMIT = 1 << 20  # user/repo/tag documents, tag lists
_CHUNK = 1 << 20
_RETRY_STATUS = frozenset({502, 503, 504})


class RegistryError(EnarxError):
    """The registry could not be reached, broke off, or answered outside the protocol."""

    exit_code = 1
    default_hint = "check the registry host and that `enarx registry serve` runs there"


class RegistryRefused(RegistryError):
    """The registry answered with a refusal (401, 403, 404, 409, 400, ...)."""

    exit_code = 2

    def __init__(self, message: str, *, status: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["status"] = self.status
        return out


@dataclass(frozen=True)
class TagDocument:
    """A tag as stored: an entry JSON (unsigned) or a JWS (signed), with its media type."""

    media_type: str
    body: bytes

    @property
    def signed(self) -> bool:
        return self.media_type == JWS_TYPE


def validate_name(user: str, repo: str | None = None) -> None:
    """Drawbridge names: users ``[A-Za-z0-9]+``, repositories ``[A-Za-z0-9-]+``."""
    if not _USER_RE.match(user):
        raise PackageError(f"invalid user name {user!r}",
                           hint="user names are letters and digits only")
    if repo is not None and not _REPO_RE.match(repo):
        raise PackageError(f"invalid repository name {repo!r}",
                           hint="repository names are letters, digits and '-'")


def content_digest(data: bytes, media: str = "application/octet-stream") -> str:
    """``Content-Digest`` for ``data`` with sha-256 and sha-384 (RFC 9530 syntax)."""
    return hash_bytes(data, media).content_digest()


class DrawbridgeClient:
    """One registry (``base_url`` = ``https://host[:port]``) with an optional bearer token.

    ``verify`` is an ``ssl.SSLContext`` (a CA bundle, or a client certificate for private
    repositories read by a Keep), True for the system roots, or False for plain HTTP.
    """

    def __init__(self, base_url: str, *, token: str | None = None,
                 verify: ssl.SSLContext | bool = True,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 retries: int = 3, backoff: float = 0.25) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._retries = max(0, retries)
        self._backoff = backoff
        self._http = httpx.Client(
            base_url=self.base_url + f"/api/v{API_VERSION}", verify=verify,
            transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)))

    # --- plumbing ----------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DrawbridgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        return h

    def _unavailable(self, e: httpx.HTTPError) -> RegistryError:
        text = str(e) or type(e).__name__
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return RegistryError(f"the TLS certificate of the registry {self.base_url} is not "
                                 "trusted", hint="pass the registry's CA with --ca-bundle "
                                 "(or ENARX_CA_BUNDLE)")
        if isinstance(e, httpx.TimeoutException):
            return RegistryError(f"the registry {self.base_url} did not answer in time")
        return RegistryError(f"cannot reach the registry {self.base_url}: {text}")

    def _open(self, method: str, url: str, *, headers: dict[str, str] | None = None,
              body: Callable[[], bytes | Iterator[bytes]] | None = None,
              idempotent: bool = True) -> httpx.Response:
        """Send and return the response with its body unread (stream mode); retries."""
        attempt = 0
        while True:
            try:
                req = self._http.build_request(
                    method, url, headers=self._headers(headers),
                    content=body() if body is not None else None)
                r = self._http.send(req, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                err: RegistryError = self._unavailable(e)
                if attempt >= self._retries or "not trusted" in err.message:
                    raise err from None
            except httpx.HTTPError as e:
                if not idempotent or attempt >= self._retries:
                    raise self._unavailable(e) from None
            else:
                if r.status_code not in _RETRY_STATUS or attempt >= self._retries:
                    return r
                r.close()
            time.sleep(self._backoff * (2 ** attempt))
            attempt += 1

    def _refusal(self, r: httpx.Response, what: str) -> RegistryRefused:
        with contextlib.suppress(httpx.HTTPError):
            r.read()
        r.close()
        detail = _detail(r)
        s = r.status_code
        hint: str | None = None
        if s == 401:
            hint = ("set ENARX_REGISTRY_TOKEN or a credential helper; the registry's owner "
                    "creates tokens with `enarx registry token create --user USER`")
        elif s == 403:
            # the registry says which credential reads what (e.g. a private repo's files)
            hint = (_detail(r, ("hint",), 300)
                    or "the token's user does not own this, or the repository is private")
        elif s == 404:
            hint = ("check the name: `enarx repo info HOST/USER/REPO` lists the tags; "
                    "`enarx user register` / `enarx repo register` create users and repos")
        elif s == 501:
            hint = f"the registry does not speak drawbridge API v{API_VERSION}"
        msg = f"{what}: the registry answered {s}" + (f" ({detail})" if detail else "")
        if s >= 500:
            return RegistryRefused(msg, status=s, hint="the registry failed; retry later")
        return RegistryRefused(msg, status=s, hint=hint)

    def _read_small(self, r: httpx.Response, what: str, limit: int = _SMALL_LIMIT) -> bytes:
        out = bytearray()
        try:
            for chunk in r.iter_bytes():
                out += chunk
                if len(out) > limit:
                    raise RegistryError(f"{what}: the registry sent over {limit} bytes")
        except httpx.HTTPError as e:
            raise self._unavailable(e) from None
        finally:
            r.close()
        return bytes(out)

    def _get_small(self, url: str, what: str) -> tuple[str, bytes]:
        r = self._open("GET", url)
        if r.status_code != 200:
            raise self._refusal(r, what)
        media = r.headers.get("content-type", "").split(";")[0].strip()
        return media, self._read_small(r, what)

    def _get_json(self, url: str, what: str) -> Any:
        _, body = self._get_small(url, what)
        try:
            return json.loads(body)
        except ValueError:
            raise RegistryError(f"{what}: the registry's answer is not JSON") from None

    def _put(self, url: str, what: str, media_type: str, digest: str, length: int,
             body: Callable[[], bytes | Iterator[bytes]]) -> int:
        """PUT; the status: 201 created, 200 accepted again (a resumed upload), 409 exists."""
        r = self._open("PUT", url, headers={
            "Content-Type": media_type, "Content-Length": str(length),
            "Content-Digest": digest}, body=body)
        try:
            if r.status_code in (200, 201, 409):
                return r.status_code
            raise self._refusal(r, what)
        finally:
            r.close()

    def _put_json(self, url: str, what: str, doc: Any) -> bool:
        """True when created, False when it already existed."""
        data = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return self._put(url, what, JSON_TYPE, content_digest(data, JSON_TYPE), len(data),
                         lambda: data) == 201

    # --- users and repositories --------------------------------------------------------------

    def user_register(self, user: str, subject: str | None = None) -> bool:
        validate_name(user)
        return self._put_json(f"/{user}", f"register user {user}",
                              {"subject": subject or user})

    def user_info(self, user: str) -> dict[str, Any]:
        validate_name(user)
        doc = self._get_json(f"/{user}", f"user {user}")
        if not isinstance(doc, dict):
            raise RegistryError(f"user {user}: the registry's answer is not an object")
        return doc

    def repo_register(self, user: str, repo: str, *, public: bool = True,
                      workloads: list[str] | None = None) -> bool:
        """``workloads``: identities (``sha384:…``) whose Keeps may read a private repository
        with a steward-issued client certificate."""
        validate_name(user, repo)
        doc: dict[str, Any] = {"public": public}
        if workloads:
            doc["workloads"] = sorted(set(workloads))
        return self._put_json(f"/{user}/{repo}", f"register repository {user}/{repo}", doc)

    def repo_info(self, user: str, repo: str) -> dict[str, Any]:
        """The repository record (``{"public": bool}``) plus ``"tags"`` (sorted)."""
        validate_name(user, repo)
        doc = self._get_json(f"/{user}/{repo}", f"repository {user}/{repo}")
        if not isinstance(doc, dict):
            raise RegistryError(f"repository {user}/{repo}: the answer is not an object")
        return {**doc, "tags": self.tags(user, repo)}

    def tags(self, user: str, repo: str) -> list[str]:
        validate_name(user, repo)
        doc = self._get_json(f"/{user}/{repo}/_tag", f"tags of {user}/{repo}")
        if not isinstance(doc, list) or not all(isinstance(t, str) for t in doc):
            raise RegistryError(f"tags of {user}/{repo}: the answer is not a list of names")
        return sorted(doc)

    # --- tags and trees ----------------------------------------------------------------------

    @staticmethod
    def _tag_url(user: str, repo: str, tag: str) -> str:
        validate_name(user, repo)
        return f"/{user}/{repo}/_tag/{quote(tag, safe='')}"

    def put_tag(self, user: str, repo: str, tag: str, doc: TagDocument) -> bool:
        """Create the tag; False if an identical tag exists (resuming or repeating a
        publish: the registry answers 200 for an unfinished upload of the same tag).

        Tags are immutable: a different document under the same tag is refused (409)."""
        url = self._tag_url(user, repo, tag)
        what = f"tag {user}/{repo}:{tag}"
        status = self._put(url, what, doc.media_type, content_digest(doc.body),
                           len(doc.body), lambda: doc.body)
        if status != 409:
            return status == 201
        try:
            existing = self.get_tag(user, repo, tag)
        except RegistryRefused as e:
            if e.status != 404:
                raise
            raise RegistryRefused(f"{what} is being uploaded with other content",
                                  status=409, hint="tags are immutable: publish a new "
                                  "version") from None
        if existing.body != doc.body:
            raise RegistryRefused(f"{what} already exists with other content",
                                  status=409, hint="tags are immutable: publish a new version")
        return False

    def get_tag(self, user: str, repo: str, tag: str) -> TagDocument:
        what = f"tag {user}/{repo}:{tag}"
        media, body = self._get_small(self._tag_url(user, repo, tag), what)
        if media not in (ENTRY_TYPE, JWS_TYPE, JSON_TYPE):
            raise RegistryError(f"{what}: unexpected media type {media!r}")
        return TagDocument(JWS_TYPE if media == JWS_TYPE else ENTRY_TYPE, body)

    def _node_url(self, user: str, repo: str, tag: str, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        return (self._tag_url(user, repo, tag) + "/tree/"
                + "/".join(quote(p, safe="") for p in parts))

    def put_node(self, user: str, repo: str, tag: str, path: str, entry: Entry,
                 content: Callable[[], bytes | Iterator[bytes]]) -> bool:
        """Upload one tree node (``path`` "" is the root directory) described by ``entry``.

        ``content`` makes the body afresh for each attempt (bytes or an iterator of chunks
        whose total is ``entry.length``); the registry checks Content-Digest while
        streaming. True when created, False when the node already existed."""
        return self._put(self._node_url(user, repo, tag, path),
                         f"upload {path or '/'} of {user}/{repo}:{tag}", entry.type,
                         entry.content_digest(), entry.length, content) == 201

    def stream_node(self, user: str, repo: str, tag: str, path: str, entry: Entry,
                    progress: Progress | None = None) -> Iterator[bytes]:
        """Yield the node's bytes; raises ``DigestMismatch`` (at the latest on the last
        chunk) unless they are exactly what ``entry`` commits to."""
        where = path or "/"
        check = entry.verifier(path=where)
        r = self._open("GET", self._node_url(user, repo, tag, path))
        try:
            if r.status_code != 200:
                raise self._refusal(r, f"{where} of {user}/{repo}:{tag}")
            declared = r.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) != entry.length:
                raise DigestMismatch("the registry announces another length than the entry",
                                     path=where, expected=f"{entry.length} bytes",
                                     actual=f"{declared} bytes")
            try:
                for chunk in r.iter_bytes(_CHUNK):
                    check.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk
            except httpx.HTTPError as e:
                raise RegistryError(f"{where}: the registry {self.base_url} broke off the "
                                    f"transfer ({type(e).__name__})",
                                    hint="fetch again; nothing was written") from None
            check.finish()
        finally:
            r.close()

    def read_node(self, user: str, repo: str, tag: str, path: str, entry: Entry,
                  limit: int = 64 << 20) -> bytes:
        """The whole node, verified (for directories and small files)."""
        if entry.length > limit:
            raise PackageError(f"entry is over the {limit}-byte limit for this read",
                               path=path or "/")
        return b"".join(self.stream_node(user, repo, tag, path, entry))


def _detail(r: httpx.Response, keys: tuple[str, ...] = ("detail", "message", "error"),
            limit: int = 200) -> str:
    try:
        body = r.json()
    except (ValueError, httpx.ResponseNotRead):
        if keys != ("detail", "message", "error"):
            return ""
        try:
            text = r.text
        except httpx.ResponseNotRead:
            return ""
        return "".join(c for c in text[:limit] if c.isprintable())
    if isinstance(body, dict):
        for key in keys:
            if isinstance(body.get(key), str):
                return "".join(c for c in body[key][:limit] if c.isprintable())
    return ""
