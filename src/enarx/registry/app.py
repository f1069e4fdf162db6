"""The registry's HTTP face: drawbridge's routes as a Starlette app (docs/packages.md).

Under ``/api/v<semver>/`` (501 when the version is newer than :data:`~.names.API_VERSION`):

- ``/{user}`` HEAD/GET/PUT ``{"subject": …}``
- ``/{user}/{repo}`` HEAD/GET/PUT ``{"public": bool, "workloads"?: ["sha384:…"]}``
- ``/{user}/{repo}/_tag`` GET: the complete tags, SemVer order
- ``/{user}/{repo}/_tag/{tag}`` HEAD/GET/PUT: entry JSON or flattened JWS
- ``/{user}/{repo}/_tag/{tag}/tree/{path}`` HEAD/GET/PUT: directories and files
- ``/health`` any method

PUT answers 201 (created), 409 (exists), 400 (a body that does not match its
``Content-Digest``, its entry or its media type). Refusals are JSON
``{"type": "<Name>", "detail": "…", "hint"?: "…"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from enarx.errors import StoreError, UsageError
from enarx.registry.access import (
    MANIFEST_NAME,
    check_owner,
    check_read,
    is_metadata,
    manifest_identity,
)
from enarx.registry.auth import bearer_token, client_workload
from enarx.registry.blobs import BlobStore, BodyTooLarge, Upload
from enarx.registry.db import NodeRow, RegistryDB, RepoRow, TagRow
from enarx.registry.entry import (
    DIRECTORY_TYPE,
    Entry,
    EntryError,
    decode_digests,
    digests_match,
    encode_digests,
    format_content_digest,
    parse_content_digest,
    parse_directory,
    tag_entry,
)
from enarx.registry.errors import RegistryHTTPError, bad_request, conflict, not_found
from enarx.registry.names import (
    API_VERSION,
    InvalidName,
    check_path,
    check_repo,
    check_tag,
    check_user,
    parse_version,
    semver_key,
)
from enarx.workload import parse_identity

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_BLOB", "PEER_CERT_KEY", "RegistryHTTPError", "create_app"]

log = logging.getLogger("enarx.registry")

DEFAULT_MAX_BLOB = 1 << 30  # 1 GiB per file
DEFAULT_IDLE_TIMEOUT = 60.0  # seconds an upload may send nothing
MAX_META = 1 << 16  # user/repo/tag bodies
MAX_DIRECTORY = 1 << 20
#: Key in the ASGI scope's ``state`` under which the server puts the TLS peer certificate (DER).
PEER_CERT_KEY = "enarx.peer_cert"


class _Ctx:
    """One request: who asks (token owner, attested workload) and the parsed names."""

    def __init__(self, app: RegistryApp, request: Request, parts: list[str]) -> None:
        self.app, self.request, self.parts = app, request, parts
        self.owner: str | None = None
        self.reader: str | None = None  # a read token's user (metadata of private repos)
        self.workload: str | None = None


class RegistryApp:
    def __init__(self, db: RegistryDB, blobs: BlobStore, *,
                 steward_cas: Sequence[x509.Certificate] = (),
                 max_blob: int = DEFAULT_MAX_BLOB,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        self.db, self.blobs = db, blobs
        self.idle_timeout = idle_timeout
        self.cas = list(steward_cas)
        self.max_blob = max_blob
        self._manifest_ids: dict[str, str] = {}  # tag generation -> manifest identity or ""

    # --- plumbing ------------------------------------------------------------------------

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    async def handle(self, request: Request) -> Response:
        started = time.monotonic()
        try:
            response = await self._dispatch(request)
        except RegistryHTTPError as exc:
            response = exc.response()
        except StoreError as exc:
            response = RegistryHTTPError(503, "StoreUnavailable", exc.message,
                                         exc.hint).response()
        if request.method == "PUT" or response.status_code >= 400:
            # one line per write or refusal: never a token, a body or a header value
            log.info(json.dumps({
                "event": "request", "method": request.method, "path": request.url.path[:300],
                "status": response.status_code,
                "ms": round((time.monotonic() - started) * 1000, 1)}))
        return response

    async def _dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segments = [unquote(s.decode("latin-1")) for s in raw.split(b"?", 1)[0].split(b"/")]
        segments = segments[1:]  # leading "/"
        if len(segments) < 2 or segments[0] != "api":
            raise not_found("no such route")
        try:
            version = parse_version(segments[1])
        except InvalidName as exc:
            raise not_found(str(exc)) from None
        if version > API_VERSION:
            raise RegistryHTTPError(
                501, "NotImplemented",
                f"API version {segments[1][1:]} is newer than this registry's "
                f"{'.'.join(map(str, API_VERSION))}", "use a client of this registry's version")
        ctx = _Ctx(self, request, segments[2:])
        if ctx.parts and ctx.parts[-1] == "" and len(ctx.parts) < 6:
            ctx.parts = ctx.parts[:-1]
        await self._authenticate(ctx)
        n = len(ctx.parts)
        try:
            if n >= 1:
                check_user(ctx.parts[0])
            if n >= 2:
                check_repo(ctx.parts[1])
            if n >= 4:
                check_tag(ctx.parts[3])
        except InvalidName as exc:
            raise not_found(str(exc)) from None
        method = request.method
        if n == 0:
            raise not_found("no such route", "routes start with /api/v0.1.0/{user}")
        if n == 1:
            return await self._user(ctx, method)
        if n == 2:
            return await self._repo(ctx, method)
        if n >= 3 and ctx.parts[2] != "_tag":
            raise not_found("no such route", "tags live under /{user}/{repo}/_tag/{tag}")
        if n == 3:
            return await self._tags(ctx, method)
        if n == 4:
            return await self._tag(ctx, method)
        if ctx.parts[4] != "tree":
            raise not_found("no such route", "trees live under .../_tag/{tag}/tree/{path}")
        try:
            if any("/" in seg for seg in ctx.parts[5:]):  # an encoded %2F
                raise InvalidName("a tree path segment may not contain '/' (%2F)")
            path = check_path("/".join(ctx.parts[5:]))
        except InvalidName as exc:
            raise not_found(str(exc)) from None
        return await self._tree(ctx, method, path)

    async def _authenticate(self, ctx: _Ctx) -> None:
        token = bearer_token(ctx.request.headers.get("authorization"))
        if ctx.request.headers.get("authorization") and token is None:
            raise RegistryHTTPError(401, "Unauthorized", "malformed Authorization header",
                                    "send Authorization: Bearer <token>")
        if token is not None:
            ctx.owner = await self.call(self.db.token_owner, token)
            if ctx.owner is None:
                ctx.reader = await self.call(self.db.read_token_owner, token)
            if ctx.owner is None and ctx.reader is None:
                raise RegistryHTTPError(
                    401, "Unauthorized", "unknown bearer token",
                    "create one on the registry host: enarx registry token create --user U")
        state = ctx.request.scope.get("state") or {}
        ctx.workload = client_workload(state.get(PEER_CERT_KEY), self.cas)

    @staticmethod
    def _method(method: str, allowed: str) -> None:
        if method not in allowed.split():
            raise RegistryHTTPError(405, "MethodNotAllowed", f"{method} is not allowed here",
                                    f"allowed: {allowed.replace(' ', ', ')}")

    @staticmethod
    def _must_own(ctx: _Ctx) -> None:
        check_owner(ctx.parts[0], ctx.owner, ctx.reader)

    async def _body(self, request: Request) -> AsyncIterator[bytes]:
        """The request body, chunk by chunk; TimeoutError when a chunk takes longer than
        ``idle_timeout`` (a stalled or trickling client cannot hold an upload open forever)."""
        chunks = request.stream().__aiter__()
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            yield chunk

    async def _read_small(self, request: Request, limit: int) -> bytes:
        try:
            declared = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise bad_request("malformed Content-Length") from None
        if declared > limit:
            raise RegistryHTTPError(413, "PayloadTooLarge", f"body over {limit} bytes")
        body = bytearray()
        try:
            async for chunk in self._body(request):
                body += chunk
                if len(body) > limit:
                    raise RegistryHTTPError(413, "PayloadTooLarge", f"body over {limit} bytes")
        except ClientDisconnect:
            raise bad_request("the client went away during the upload") from None
        except TimeoutError:
            raise RegistryHTTPError(408, "RequestTimeout",
                                    f"no data for {self.idle_timeout:g} s") from None
        return bytes(body)

    @staticmethod
    def _check_body_digest(request: Request, body: bytes, required: bool) -> None:
        header = request.headers.get("content-digest")
        if header is None:
            if required:
                raise bad_request("Content-Digest header missing",
                           "send Content-Digest: sha-256=:<base64>:")
            return
        from enarx.registry.entry import MultiHasher

        h = MultiHasher()
        h.update(body)
        try:
            claimed = parse_content_digest(header)
        except EntryError as exc:
            raise bad_request(str(exc)) from None
        if not digests_match(claimed, h.digests()):
            raise bad_request("the body does not match its Content-Digest")

    @staticmethod
    def _json_object(body: bytes, what: str) -> dict[str, Any]:
        try:
            obj = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise bad_request(f"the {what} is not valid JSON") from None
        if not isinstance(obj, dict):
            raise bad_request(f"the {what} must be a JSON object")
        return obj

    # --- users and repositories ----------------------------------------------------------

    async def _user(self, ctx: _Ctx, method: str) -> Response:
        self._method(method, "GET HEAD PUT")
        user = ctx.parts[0]
        self._must_own(ctx)
        if method == "PUT":
            body = await self._read_small(ctx.request, MAX_META)
            self._check_body_digest(ctx.request, body, required=False)
            obj = self._json_object(body, "user record")
            if not isinstance(obj.get("subject"), str) or not obj["subject"]:
                raise bad_request('a user record is {"subject": "<string>"}')
            if not await self.call(self.db.put_user, user, body):
                raise conflict(f"user {user} already exists")
            return Response(status_code=201)
        record = await self.call(self.db.get_user, user)
        if record is None:
            raise not_found(f"user {user} does not exist", "enarx user register")
        return _blob_response(method, record, "application/json")

    async def _repo_row(self, ctx: _Ctx) -> RepoRow:
        user, name = ctx.parts[0], ctx.parts[1]
        repo: RepoRow | None = await self.call(self.db.get_repo, user, name)
        if repo is None:
            raise not_found(f"repository {user}/{name} does not exist",
                             "enarx repo register")
        return repo

    def _may_read(self, ctx: _Ctx, repo: RepoRow, tag_identities: Sequence[str] = (),
                  contents: bool = False) -> None:
        check_read(repo, ctx.owner, ctx.workload, tag_identities, reader=ctx.reader,
                   contents=contents)

    async def _may_read_tag(self, ctx: _Ctx, repo: RepoRow, tag: TagRow,
                            contents: bool = False) -> None:
        """A tag and its tree are also readable by a Keep attested as that package
        (``contents``: a file's bytes, not only metadata; enarx.registry.access)."""
        if repo.public or ctx.owner == repo.owner or ctx.workload is None:
            return self._may_read(ctx, repo, contents=contents)
        return self._may_read(ctx, repo, await self._tag_identities(repo, ctx.parts[3], tag),
                              contents=contents)

    async def _tag_identities(self, repo: RepoRow, tag_name: str, tag: TagRow) -> list[str]:
        """The tag's tree identity, plus its manifest's plaintext identity (enarx.registry.access;
        cached per tag generation, which a complete tag never changes)."""
        found = [i for i in (Entry.from_json(json.loads(tag.entry)).identity,) if i]
        if not tag.complete:
            return found
        cached = self._manifest_ids.get(tag.generation)
        if cached is None:
            node: NodeRow | None = await self.call(self.db.get_node, repo.owner, repo.name,
                                                   tag_name, MANIFEST_NAME)
            cached = ""
            if node is not None and node.length <= MAX_META:
                try:
                    data = await self.call(self.blobs.read, node.blob, MAX_META)
                except OSError:
                    data = b""
                cached = manifest_identity(node.content_type, data) or ""
            if len(self._manifest_ids) > 4096:
                self._manifest_ids.clear()
            self._manifest_ids[tag.generation] = cached
        return [*found, cached] if cached else found

    async def _repo(self, ctx: _Ctx, method: str) -> Response:
        self._method(method, "GET HEAD PUT")
        user, name = ctx.parts[0], ctx.parts[1]
        if method == "PUT":
            self._must_own(ctx)
            body = await self._read_small(ctx.request, MAX_META)
            self._check_body_digest(ctx.request, body, required=False)
            obj = self._json_object(body, "repository record")
            if not isinstance(obj.get("public"), bool):
                raise bad_request('a repository record is {"public": true|false, "workloads"?: [...]}')
            workloads = obj.get("workloads", [])
            if not isinstance(workloads, list) or len(workloads) > 1024:
                raise bad_request('"workloads" is a list of workload identities (sha384:<hex>)')
            for w in workloads:
                try:
                    parse_identity(w)
                except UsageError as exc:
                    raise bad_request(exc.message, exc.hint) from None
            if await self.call(self.db.get_user, user) is None:
                raise not_found(f"user {user} does not exist", "enarx user register first")
            if not await self.call(self.db.put_repo, user, name, obj["public"], workloads, body):
                raise conflict(f"repository {user}/{name} already exists")
            return Response(status_code=201)
        repo = await self._repo_row(ctx)
        self._may_read(ctx, repo)
        return _blob_response(method, repo.record, "application/json")

    # --- tags ----------------------------------------------------------------------------

    async def _tags(self, ctx: _Ctx, method: str) -> Response:
        self._method(method, "GET HEAD")
        repo = await self._repo_row(ctx)
        self._may_read(ctx, repo)
        tags = await self.call(self.db.list_tags, repo.owner, repo.name)
        body = json.dumps(sorted(tags, key=semver_key)).encode()
        return _blob_response(method, body, "application/json")

    async def _tag_row(self, ctx: _Ctx, repo: RepoRow) -> TagRow:
        tag: TagRow | None = await self.call(self.db.get_tag, repo.owner, repo.name,
                                             ctx.parts[3])
        if tag is None:
            raise not_found(f"tag {repo.owner}/{repo.name}:{ctx.parts[3]} does not exist")
        return tag

    async def _tag(self, ctx: _Ctx, method: str) -> Response:
        self._method(method, "GET HEAD PUT")
        repo = await self._repo_row(ctx)
        if method == "PUT":
            return await self._put_tag(ctx, repo)
        tag = await self._tag_row(ctx, repo)
        await self._may_read_tag(ctx, repo, tag)
        if not tag.complete:
            raise not_found(f"tag {repo.owner}/{repo.name}:{ctx.parts[3]} is still being "
                             "uploaded", "publish it again to finish the upload")
        return _blob_response(method, tag.body, tag.content_type)

    async def _put_tag(self, ctx: _Ctx, repo: RepoRow) -> Response:
        self._must_own(ctx)
        body = await self._read_small(ctx.request, MAX_META)
        self._check_body_digest(ctx.request, body, required=True)
        ctype = ctx.request.headers.get("content-type", "")
        try:
            entry = tag_entry(body, ctype)
        except EntryError as exc:
            raise bad_request(str(exc)) from None
        stored = json.dumps(_entry_obj(entry), sort_keys=True)
        result = await self.call(self.db.put_tag, repo.owner, repo.name, ctx.parts[3], body,
                                 ctype, stored)
        if result == "exists":
            raise conflict(f"tag {repo.owner}/{repo.name}:{ctx.parts[3]} already exists",
                            "tags are immutable: publish a new version")
        # "resumed" (the same tag body while its tree is still incomplete) is also 201: the
        # publisher goes on uploading, and nodes already stored answer 409 ("already there").
        return Response(status_code=201)

    # --- trees ---------------------------------------------------------------------------

    async def _tree(self, ctx: _Ctx, method: str, path: str) -> Response:
        self._method(method, "GET HEAD PUT")
        repo = await self._repo_row(ctx)
        tag = await self._tag_row(ctx, repo)
        if method == "PUT":
            self._must_own(ctx)
            return await self._put_node(ctx, repo, tag, path)
        await self._may_read_tag(ctx, repo, tag)
        node: NodeRow | None = None
        if tag.complete:
            node = await self.call(self.db.get_node, repo.owner, repo.name, ctx.parts[3], path)
        if node is None:
            raise not_found(f"no {path or 'root directory'} in "
                             f"{repo.owner}/{repo.name}:{ctx.parts[3]}")
        if not is_metadata(path, node.content_type):
            await self._may_read_tag(ctx, repo, tag, contents=True)
        headers = {"content-type": node.content_type, "content-length": str(node.length),
                   "content-digest": format_content_digest(decode_digests(node.digests))}
        if method == "HEAD":
            return Response(status_code=200, headers=headers)
        try:
            chunks = self.blobs.iter_file(node.blob)
            first = next(chunks, b"")
        except OSError as exc:
            raise RegistryHTTPError(
                503, "StoreUnavailable", f"blob of {path or 'root'} unreadable: "
                f"{exc.strerror or exc}", "the registry's blob directory is damaged") from None

        def body() -> Any:
            yield first
            yield from chunks

        resp = StreamingResponse(body(), status_code=200, media_type=None)
        resp.headers.update(headers)
        return resp

    async def _expected(self, repo: RepoRow, tag: TagRow, tag_name: str, path: str) -> Entry:
        if path == "":
            return Entry.from_json(json.loads(tag.entry))
        parent_path, _, name = path.rpartition("/")
        parent: NodeRow | None = await self.call(self.db.get_node, repo.owner, repo.name,
                                                 tag_name, parent_path)
        if parent is None:
            raise not_found(f"the parent directory of {path!r} is not uploaded",
                             "upload the tag, then the root directory, then its entries")
        if parent.content_type != DIRECTORY_TYPE:
            raise not_found(f"{parent_path or 'the root'} is not a directory")
        children = parse_directory(await self.call(self.blobs.read, parent.blob, MAX_DIRECTORY))
        if name not in children:
            raise not_found(f"{path!r} is not in its directory's listing",
                             "the directory entries fix every path of the tree")
        return children[name]

    async def _put_node(self, ctx: _Ctx, repo: RepoRow, tag: TagRow, path: str) -> Response:
        request, tag_name = ctx.request, ctx.parts[3]
        where = f"{repo.owner}/{repo.name}:{tag_name} {path or '(root)'}"
        if tag.complete or await self.call(self.db.get_node, repo.owner, repo.name, tag_name,
                                           path) is not None:
            raise conflict(f"{where} already exists")
        expected = await self._expected(repo, tag, tag_name, path)
        header = request.headers.get("content-digest")
        if header is None:
            raise bad_request("Content-Digest header missing", "send Content-Digest: sha-256=:<b64>:")
        try:
            claimed = parse_content_digest(header)
        except EntryError as exc:
            raise bad_request(str(exc)) from None
        ctype = request.headers.get("content-type", "")
        limit = MAX_DIRECTORY if expected.type == DIRECTORY_TYPE else self.max_blob
        if expected.length > limit:
            raise RegistryHTTPError(413, "PayloadTooLarge",
                                    f"{where}: {expected.length} bytes, over {limit}")
        if ctype.split(";")[0].strip().lower() != expected.type.lower():
            raise bad_request(f"{where}: Content-Type {ctype[:60]!r} is not the entry's "
                       f"{expected.type!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.strip() != str(expected.length):
            raise bad_request(f"{where}: Content-Length {declared[:20]} is not the entry's "
                       f"{expected.length}")
        upload = await self._receive(request, expected.length, where,
                                     {*expected.digests, *claimed})
        try:
            if upload.length != expected.length:
                raise bad_request(f"{where}: truncated body ({upload.length} of {expected.length} "
                           "bytes)")
            if not digests_match(claimed, upload.digests):
                raise bad_request(f"{where}: the body does not match its Content-Digest")
            why = expected.matches(upload.digests, upload.length, ctype)
            if why is not None:
                raise bad_request(f"{where}: {why}")
            children = 0
            if expected.type == DIRECTORY_TYPE:
                try:
                    children = len(parse_directory(upload.read(MAX_DIRECTORY + 1),
                                                   check_path))
                except EntryError as exc:
                    raise bad_request(f"{where}: {exc}") from None
            try:
                blob = await self.call(self.blobs.commit, upload)
            except OSError as exc:
                raise RegistryHTTPError(507, "InsufficientStorage",
                                        f"{where}: cannot store the upload: "
                                        f"{exc.strerror or exc}",
                                        "check the registry's blob directory") from None
        except BaseException:
            upload.discard()
            raise
        row = NodeRow(blob, upload.length, expected.type, encode_digests(upload.digests))
        result = await self.call(self.db.put_node, repo.owner, repo.name, tag_name, path,
                                 tag.generation, row, children)
        if result == "exists":
            raise conflict(f"{where} already exists")
        if result == "stale":
            raise conflict(f"{where}: the tag was re-published during the upload",
                            "publish again")
        return Response(status_code=201)

    async def _receive(self, request: Request, length: int, where: str,
                       algorithms: set[str]) -> Upload:
        try:
            return await self.blobs.receive(self._body(request), length, algorithms)
        except TimeoutError:
            raise RegistryHTTPError(
                408, "RequestTimeout", f"{where}: no data for {self.idle_timeout:g} s",
                "the upload stalled; publish again") from None
        except BodyTooLarge:
            raise bad_request(f"{where}: the body is longer than the entry's {length} bytes") from None
        except ClientDisconnect:
            raise bad_request(f"{where}: the client went away during the upload") from None
        except OSError as exc:
            raise RegistryHTTPError(507, "InsufficientStorage",
                                    f"{where}: cannot store the upload: {exc.strerror or exc}",
                                    "free space in the registry's state directory") from None


def _entry_obj(entry: Entry) -> dict[str, Any]:
    import base64

    return {"digest": {k: base64.b64encode(v).decode() for k, v in entry.digests.items()},
            "length": entry.length, "type": entry.type}


def _blob_response(method: str, body: bytes, ctype: str) -> Response:
    from enarx.registry.entry import MultiHasher

    h = MultiHasher()
    h.update(body)
    headers = {"content-digest": format_content_digest(h.digests()),
               "content-length": str(len(body))}
    if method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=ctype)
    return Response(body, status_code=200, headers=headers, media_type=ctype)


def create_app(db: RegistryDB, blobs: BlobStore, *,
               steward_cas: Sequence[x509.Certificate] = (),
               max_blob: int = DEFAULT_MAX_BLOB,
               idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> Callable[..., Awaitable[None]]:
    """The ASGI app over an open database and blob store.

    A plain ASGI callable rather than a routing table: every path (also ones with encoded
    newlines or slashes, which route patterns do not match) gets the registry's typed answer.
    """
    registry = RegistryApp(db, blobs, steward_cas=steward_cas, max_blob=max_blob,
                           idle_timeout=idle_timeout)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket support
        request = Request(scope, receive)
        if scope["path"] == "/health":
            response: Response = Response("OK", media_type="text/plain")
        else:
            response = await registry.handle(request)
        await response(scope, receive, send)

    app.registry = registry  # type: ignore[attr-defined]
    return app
