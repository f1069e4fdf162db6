"""A client for the OCI distribution specification v1.1 on httpx.

Why not oras-py: it has no referrers API (nor the tag-schema fallback), no chunked uploads
that resume at the registry's ``Range``, no injectable transport for tests, and it writes
blobs to disk before checking their digests. What is needed here is small: ping, blob
HEAD/GET (digest checked while streaming), monolithic (``POST ?digest=``) and chunked
(``POST`` → ``PATCH`` with ``Content-Range`` → ``PUT ?digest=``) uploads, manifest PUT/GET,
the tags list, and referrers with the ``<alg>-<hex>`` tag fallback for registries without
the referrers API (the CNCF distribution registry 2.8 is one).

Registries are untrusted storage: every blob and manifest is hashed as it arrives and
compared with the digest asked for, sizes are capped, and an answer that is not the
protocol is a typed error naming the registry. Idempotent requests (GET, HEAD, manifest
PUT) are retried with backoff on connection errors, 429 and 5xx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from enarx.errors import EnarxError, UsageError
from enarx.package.errors import DigestMismatch
from enarx.package.oci_layout import (
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    check_digest,
    check_name,
    check_reference,
    sha256_digest,
)

__all__ = [
    "Advance",
    "Answer",
    "Manifest",
    "OciClient",
    "RegistryRefused",
    "RegistryUnavailable",
    "check_digest",
    "check_name",
    "check_reference",
]

_ACCEPT = f"{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}"


MAX_MANIFEST = 4 << 20  # what the distribution registry accepts; refuse to buffer more
MAX_ERROR_BODY = 64 << 10
MONOLITHIC_MAX = 8 << 20  # blobs up to this size go in one request
CHUNK_SIZE = 8 << 20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

#: called with the number of bytes just moved
Advance = Callable[[int], None]


class RegistryUnavailable(EnarxError):
    """The OCI registry could not be reached, timed out, or answered outside the protocol."""

    exit_code = 1
    default_hint = "check the registry's address and that it runs (`curl <registry>/v2/`)"


class RegistryRefused(EnarxError):
    """The registry refused a request; ``code`` is its OCI error code (``MANIFEST_UNKNOWN``…)."""

    exit_code = 2

    def __init__(self, message: str, *, status: int, code: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({"status": self.status, "code": self.code})
        return out


@dataclass(frozen=True)
class Answer:
    """A registry's answer, its body read (and capped)."""

    status_code: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as stored: exact bytes, media type and sha256 digest."""

    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if not isinstance(doc, dict):
            raise RegistryRefused(f"manifest {self.digest} is not a JSON object", status=200,
                                  code="MANIFEST_INVALID")
        return doc


def _printable(text: str) -> str:
    """Registry-supplied text made safe for a terminal (no control or escape characters)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class OciClient:
    """One registry: ``registry`` is ``host[:port]``; ``plain_http`` talks HTTP instead of
    HTTPS (the caller applies the loopback / ``--allow-insecure`` rule)."""

    def __init__(
        self,
        registry: str,
        *,
        plain_http: bool = False,
        verify: Any = True,
        auth: tuple[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
    ) -> None:
        self.registry = registry
        self.base = f"{'http' if plain_http else 'https'}://{registry}"
        self.auth = auth
        self.retries = retries
        self.backoff = backoff
        self._token: str | None = None
        self._basic = False
        self._single_post = True  # cleared when the registry answers 202 to `POST ?digest=`
        self.http = httpx.Client(base_url=self.base, verify=verify, transport=transport,
                                 timeout=httpx.Timeout(timeout), follow_redirects=False,
                                 headers={"User-Agent": "enarx"})

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OciClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _request(self, method: str, url: str | httpx.URL, *, what: str, ok: tuple[int, ...],
                 retry: bool = False, limit: int = MAX_ERROR_BODY, **kw: Any) -> Answer:
        """:meth:`_open`, then read the answer's body (at most ``limit`` bytes)."""
        resp = self._open(method, url, what=what, ok=ok, retry=retry, **kw)
        try:
            body = bytearray()
            if method != "HEAD":
                for part in resp.iter_bytes():
                    body += part
                    if len(body) > limit:
                        raise RegistryUnavailable(f"{self.registry}: {what}: answer larger "
                                                  f"than {limit} bytes")
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"{self.registry}: {what}: "
                                      f"{e or type(e).__name__}") from None
        finally:
            resp.close()
        return Answer(resp.status_code, resp.headers, bytes(body))

    def _open(self, method: str, url: str | httpx.URL, *, what: str, ok: tuple[int, ...],
              retry: bool = False, headers: Mapping[str, str] | None = None,
              follow_redirects: bool = False, **kw: Any) -> httpx.Response:
        """Send one request (retrying idempotent ones with backoff) and return the streamed
        response, which the caller must close; statuses not in ``ok`` become typed errors.
        ``content`` must be bytes so a retry can resend it."""
        attempts = self.retries if retry else 1
        attempt = 0
        authed = False
        while True:
            h = dict(headers or {})
            if self._same_origin(url):  # credentials never go to another host
                h.update(self._auth_headers())
            try:
                req = self.http.build_request(method, url, headers=h, **kw)
                resp = self.http.send(req, stream=True, follow_redirects=follow_redirects)
            except httpx.TimeoutException:
                err: EnarxError = RegistryUnavailable(f"{self.registry}: {what}: timed out")
            except httpx.HTTPError as e:
                if "CERTIFICATE_VERIFY_FAILED" in str(e):  # not retried: it will not change
                    raise RegistryUnavailable(
                        f"{self.registry}: the registry's TLS certificate is not trusted",
                        hint="pass the registry's CA with --ca-bundle (or ENARX_CA_BUNDLE)",
                    ) from None
                err = RegistryUnavailable(f"{self.registry}: {what}: {e or type(e).__name__}")
            else:
                if resp.status_code == 401 and not authed and self._authenticate(resp):
                    resp.close()
                    authed = True
                    continue
                if resp.status_code in ok:
                    return resp
                err = self._refusal(resp, what)
                resp.close()
                if resp.status_code not in _RETRY_STATUS:
                    raise err
            attempt += 1
            if attempt >= attempts:
                raise err
            time.sleep(self.backoff * (2 ** (attempt - 1)))

    def _same_origin(self, url: str | httpx.URL) -> bool:
        u = httpx.URL(url)
        if not u.is_absolute_url:
            return True
        b = self.http.base_url
        return (u.scheme, u.host, u.port) == (b.scheme, b.host, b.port)

    def _auth_headers(self) -> dict[str, str]:
        if self._token:
            return {"Authorization": f"Bearer {self._token}"}
        if self._basic and self.auth:
            raw = f"{self.auth[0]}:{self.auth[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}

    def _refusal(self, resp: httpx.Response, what: str) -> EnarxError:
        body = b""
        try:
            for part in resp.iter_bytes():
                body += part
                if len(body) > MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        code, message = "", ""
        try:
            errors = json.loads(body).get("errors")
            if isinstance(errors, list) and errors and isinstance(errors[0], dict):
                code = _printable(str(errors[0].get("code", "")))[:64]
                message = _printable(str(errors[0].get("message", "")))[:200]
        except (ValueError, UnicodeDecodeError, AttributeError):
            pass
        status = resp.status_code
        detail = f"{self.registry}: {what}: HTTP {status}" + (f" {code}" if code else "")
        detail += f": {message}" if message else ""
        if status in _RETRY_STATUS:
            return RegistryUnavailable(detail)
        hint = None
        if status in (401, 403):
            hint = "the registry wants credentials this client was not given, or denies them"
        elif status == 404:
            hint = "check the repository name and the tag or digest"
        return RegistryRefused(detail, status=status, code=code, hint=hint)

    def _authenticate(self, resp: httpx.Response) -> bool:
        """Answer a 401 challenge once: ``Basic`` with the credentials given, ``Bearer
        realm=…`` with a token from the realm (anonymous, or with the credentials given;
        those go to an HTTPS realm or to this registry only)."""
        scheme, _, params = resp.headers.get("WWW-Authenticate", "").partition(" ")
        if scheme.lower() == "basic":
            if self.auth is None or self._basic:
                return False
            self._basic = True
            return True
        if scheme.lower() != "bearer":
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        realm = fields.pop("realm", "")
        if not realm.startswith(("https://", "http://")):
            return False
        same_host = httpx.URL(realm).host == httpx.URL(self.base).host
        creds = self.auth if realm.startswith("https://") or same_host else None
        try:
            r = self.http.get(realm, params=fields, auth=creds or httpx.USE_CLIENT_DEFAULT)
            doc = r.json()
            token = doc.get("token") or doc.get("access_token")
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        if r.status_code != 200 or not isinstance(token, str) or not token:
            return False
        self._token = token
        return True

    def _url(self, location: str, **params: str) -> httpx.URL:
        """An upload ``Location`` (maybe relative, with the registry's state in its query)
        made absolute, with ``params`` added to its query."""
        return httpx.URL(urljoin(self.base + "/", location)).copy_merge_params(params)

    # --- endpoints ------------------------------------------------------------------------

    def ping(self) -> None:
        """``GET /v2/``: the registry speaks the distribution API."""
        self._request("GET", "/v2/", what="ping", ok=(200,), retry=True)

    def blob_size(self, name: str, digest: str) -> int | None:
        """``HEAD`` a blob: its size, or None when the registry does not have it."""
        try:
            r = self._request("HEAD", f"/v2/{check_name(name)}/blobs/{check_digest(digest)}",
                              what=f"HEAD blob {digest}", ok=(200,), retry=True,
                              follow_redirects=True)
        except RegistryRefused as e:
            if e.status == 404:
                return None
            raise
        try:
            return int(r.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    def stream_blob(self, name: str, digest: str, *, size: int,
                    verify: bool = True) -> Iterator[bytes]:
        """Yield a blob's bytes. More than ``size`` bytes raise at once; at the end, fewer
        bytes or (with ``verify``) another SHA-256 raise :class:`DigestMismatch`, so the
        bytes are unverified until the generator finishes. ``verify=False`` is for callers
        that check the digest themselves (a tree entry's verifier)."""
        r = self._open("GET", f"/v2/{check_name(name)}/blobs/{check_digest(digest)}",
                       what=f"GET blob {digest}", ok=(200,), retry=True, follow_redirects=True)
        h = hashlib.sha256() if verify else None
        got = 0
        try:
            for part in r.iter_bytes(1 << 20):
                got += len(part)
                if got > size:
                    raise DigestMismatch(f"blob {digest} is larger than its descriptor says",
                                         expected=f"{size} bytes",
                                         actual=f"more than {size} bytes")
                if h is not None:
                    h.update(part)
                yield part
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"{self.registry}: GET blob {digest}: "
                                      f"{e or type(e).__name__}") from None
        finally:
            r.close()
        if got != size:
            raise DigestMismatch(f"blob {digest} is truncated", expected=f"{size} bytes",
                                 actual=f"{got} bytes")
        if h is not None:
            actual = "sha256:" + h.hexdigest()
            if not _same(actual, digest):
                raise DigestMismatch(f"blob {digest} does not match its digest",
                                     expected=digest, actual=actual)

    def get_blob(self, name: str, digest: str, *, size: int) -> bytes:
        """A small blob (config, signature bundle) in memory, verified."""
        return b"".join(self.stream_blob(name, digest, size=size))

    def push_blob(self, name: str, digest: str, size: int, read: Callable[[int], bytes], *,
                  advance: Advance | None = None, chunk_size: int | None = None,
                  monolithic_max: int = MONOLITHIC_MAX) -> bool:
        """Upload a blob unless the registry has it; False when it was already there.
        ``read(n)`` returns the next at most ``n`` bytes (a file's ``read``)."""
        check_name(name)
        check_digest(digest)
        if self.blob_size(name, digest) == size:
            if advance:
                advance(size)
            return False
        if size <= monolithic_max:
            data = _read_exact(read, size)
            self._push_monolithic(name, digest, data)
            if advance:
                advance(size)
        else:
            self._push_chunked(name, digest, size, read, chunk_size or CHUNK_SIZE, advance)
        return True

    def _push_monolithic(self, name: str, digest: str, data: bytes) -> None:
        headers = {"Content-Type": "application/octet-stream"}
        what = f"upload blob {digest}"
        if self._single_post:
            r = self._request("POST", f"/v2/{name}/blobs/uploads/", params={"digest": digest},
                              content=data, headers=headers, what=what, ok=(201, 202))
            if r.status_code == 201:
                return
            self._single_post = False  # this registry opened a session instead: PUT the bytes
        else:
            r = self._request("POST", f"/v2/{name}/blobs/uploads/", what=what, ok=(202,))
        location = _location(r, what)
        self._request("PUT", self._url(location, digest=digest), content=data,
                      headers=headers, what=what, ok=(201,))

    def _push_chunked(self, name: str, digest: str, size: int, read: Callable[[int], bytes],
                      chunk_size: int, advance: Advance | None) -> None:
        what = f"upload blob {digest}"
        r = self._request("POST", f"/v2/{name}/blobs/uploads/", what=what, ok=(202,))
        location = _location(r, what)
        offset = 0
        while offset < size:
            chunk = _read_exact(read, min(chunk_size, size - offset))
            end = offset + len(chunk) - 1
            r = self._request("PATCH", self._url(location), content=chunk,
                              headers={"Content-Type": "application/octet-stream",
                                       "Content-Range": f"{offset}-{end}"},
                              what=f"{what} (bytes {offset}-{end})", ok=(202,))
            rng = r.headers.get("Range", "")
            if rng and rng != f"0-{end}":
                raise RegistryUnavailable(f"{self.registry}: {what}: the registry holds "
                                          f"bytes {rng}, expected 0-{end}")
            location = _location(r, what)
            offset = end + 1
            if advance:
                advance(len(chunk))
        self._request("PUT", self._url(location, digest=digest),
                      headers={"Content-Type": "application/octet-stream"}, content=b"",
                      what=what, ok=(201,))

    def put_manifest(self, name: str, ref: str, body: bytes,
                     media_type: str = MANIFEST_MEDIA_TYPE) -> tuple[str, bool]:
        """Store a manifest under a tag or its digest: ``(digest, subject_processed)``;
        the second is True when the registry answered ``OCI-Subject`` (referrers API)."""
        check_name(name)
        check_reference(ref)
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and not _same(ref, digest):
            raise UsageError(f"manifest bytes hash to {digest}, not {ref}")
        r = self._request("PUT", f"/v2/{name}/manifests/{ref}", content=body,
                          headers={"Content-Type": media_type}, what=f"PUT manifest {ref}",
                          ok=(201,), retry=True)
        said = r.headers.get("Docker-Content-Digest")
        if said and not _same(said, digest):
            raise DigestMismatch(f"the registry stored manifest {ref} "
                                 "under another digest", expected=digest, actual=said)
        subject = r.headers.get("OCI-Subject")
        return digest, bool(subject)

    def get_manifest(self, name: str, ref: str) -> Manifest:
        """Fetch a manifest or index (capped at 4 MiB). By digest, the bytes must hash to it;
        by tag, the digest is computed here (the registry's header is not trusted)."""
        check_name(name)
        check_reference(ref)
        r = self._open("GET", f"/v2/{name}/manifests/{ref}", headers={"Accept": _ACCEPT},
                       what=f"GET manifest {ref}", ok=(200,), retry=True)
        try:
            body = b""
            for part in r.iter_bytes():
                body += part
                if len(body) > MAX_MANIFEST:
                    raise RegistryRefused(f"{self.registry}: manifest {ref} is larger than "
                                          f"{MAX_MANIFEST} bytes", status=200,
                                          code="SIZE_INVALID")
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"{self.registry}: GET manifest {ref}: {e}") from None
        finally:
            r.close()
        digest = sha256_digest(body)
        if ref.startswith("sha256:") and not _same(ref, digest):
            raise DigestMismatch(f"manifest {ref} does not match its "
                                 "digest", expected=ref, actual=digest)
        media_type = r.headers.get("Content-Type", "").partition(";")[0].strip()
        return Manifest(body, media_type, digest)

    def has_manifest(self, name: str, ref: str) -> bool:
        try:
            self._request("HEAD", f"/v2/{check_name(name)}/manifests/{check_reference(ref)}",
                          headers={"Accept": _ACCEPT}, what=f"HEAD manifest {ref}",
                          ok=(200,), retry=True)
        except RegistryRefused as e:
            if e.status == 404:
                return False
            raise
        return True

    def tags(self, name: str, *, page: int = 100) -> list[str]:
        """Every tag of a repository, following ``Link: <…>; rel="next"`` pages."""
        check_name(name)
        out: list[str] = []
        url: str | None = f"/v2/{name}/tags/list?n={page}"
        seen: set[str] = set()
        while url and url not in seen and len(out) < 100_000:
            seen.add(url)
            r = self._request("GET", url, what="tags list", ok=(200,), retry=True,
                              limit=MAX_MANIFEST)
            try:
                tags = r.json().get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryUnavailable(f"{self.registry}: tags list of {name} is not "
                                          "JSON") from None
            out.extend(t for t in tags if isinstance(t, str))
            m = re.match(r'\s*<([^>]+)>\s*;\s*rel="?next"?', r.headers.get("Link", ""))
            url = str(self._url(m.group(1))) if m else None
        return out

    def referrers(self, name: str, digest: str,
                  artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``digest``: the referrers API,
        or the ``sha256-<hex>`` tag index where the registry answers 404 to it."""
        check_name(name)
        check_digest(digest)
        try:
            r = self._request("GET", f"/v2/{name}/referrers/{digest}",
                              params={"artifactType": artifact_type} if artifact_type else None,
                              headers={"Accept": INDEX_MEDIA_TYPE}, what="referrers",
                              ok=(200,), retry=True, limit=MAX_MANIFEST)
            ctype = r.headers.get("Content-Type", "").partition(";")[0].strip()
            if ctype != INDEX_MEDIA_TYPE:
                raise RegistryRefused("not an index", status=404)
            doc = r.json()
        except RegistryRefused as e:
            if e.status != 404:
                raise
            doc = self.fallback_index(name, digest)
        except ValueError:
            raise RegistryUnavailable(f"{self.registry}: referrers of {digest} is not "
                                      "JSON") from None
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        found = [d for d in manifests or [] if isinstance(d, dict)]
        if artifact_type:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return found

    def fallback_index(self, name: str, digest: str) -> dict[str, Any]:
        """The referrers tag-schema index (``sha256-<hex>``), or an empty index."""
        tag = digest.replace(":", "-")
        try:
            return self.get_manifest(name, tag).json()
        except RegistryRefused as e:
            if e.status != 404:
                raise
        return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}

    def push_referrer(self, name: str, body: bytes, subject: str,
                      descriptor: Mapping[str, Any]) -> str:
        """Store a manifest whose ``subject`` is ``subject``; without the referrers API,
        add ``descriptor`` to the ``sha256-<hex>`` tag index (read, append, put)."""
        digest, processed = self.put_manifest(name, sha256_digest(body), body)
        if processed:
            return digest
        index = self.fallback_index(name, subject)
        manifests = [d for d in index.get("manifests") or [] if isinstance(d, dict)]
        if not any(d.get("digest") == digest for d in manifests):
            manifests.append(dict(descriptor))
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests}
        body = json.dumps(index, separators=(",", ":")).encode()
        self.put_manifest(name, subject.replace(":", "-"), body, INDEX_MEDIA_TYPE)
        return digest

    def delete_manifest(self, name: str, digest: str) -> None:
        self._request("DELETE", f"/v2/{check_name(name)}/manifests/{check_digest(digest)}",
                      what=f"DELETE manifest {digest}", ok=(202,))


def _location(r: Answer, what: str) -> str:
    loc = r.headers.get("Location")
    if not loc:
        raise RegistryUnavailable(f"{what}: the registry gave no upload Location")
    return str(loc)


def _read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    parts: list[bytes] = []
    left = n
    while left:
        part = read(left)
        if not part:
            raise UsageError(f"the file ended {left} bytes early while uploading",
                             hint="the package changed while it was being published")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
