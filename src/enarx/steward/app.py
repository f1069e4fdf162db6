"""The steward's HTTP face: a Starlette app over one ``Steward``.

Routes (docs/steward.md has the protocol):

- ``GET /`` (upstream health), ``GET /healthz``, ``GET /metrics``, ``GET /.well-known/jwks.json``
- ``POST /`` upstream Enarx CSR: ``application/pkcs10`` → DER ``SEQ OF Certificate`` [CA, leaf];
  ``application/vnd.steward.pkcs10-bundle.v1`` (``SEQ OF CertReq``) → ``SEQ {chain, issued}``
- ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest``, ``GET /kbs/v0/resource/<repo>/<type>/<tag>``
  (CoCo Trustee key-broker protocol), admin ``POST|PUT|DELETE`` on the same resource path with
  ``Authorization: Bearer <admin token>``
- ``POST /enarx/v1/certificate``: DER CSR for the attested key (cookie ``kbs-session-id``)
  → [CA, leaf] as DER ``SEQ OF Certificate``, or PEM with
  ``Accept: application/pem-certificate-chain``

Every refusal is JSON ``{"type": ".../kbs/errors/<Name>", "detail", "hint"?, "failed"?}``
with 400/401/404/409/413/415 (503 when the database is unreachable). Only ``EnarxError`` is
mapped: any other exception is a bug and surfaces as one (500 from the server, raised in tests).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from enarx.errors import (
    AttestationError,
    ConfigError,
    EnarxError,
    MalformedEvidence,
    ProtocolError,
    StoreError,
)
from enarx.steward.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    StewardError,
    Unauthorized,
    UnsupportedMediaType,
)
from enarx.steward.service import Steward

__all__ = [
    "BUNDLE_TYPE",
    "CSR_TYPE",
    "ERROR_TYPE_PREFIX",
    "MAX_BODY",
    "PEM_CHAIN_TYPE",
    "SESSION_COOKIE",
    "create_app",
    "der_sequence",
    "error_body",
]

log = logging.getLogger("enarx.steward")

MAX_BODY = 1 << 20  # 1 MiB: an SNP report + chain is ~5 KiB, an SGX quote + collateral ~20 KiB
SESSION_COOKIE = "kbs-session-id"
CSR_TYPE = "application/pkcs10"
BUNDLE_TYPE = "application/vnd.steward.pkcs10-bundle.v1"
PEM_CHAIN_TYPE = "application/pem-certificate-chain"
DER_CHAIN_TYPE = "application/octet-stream"
JSON_TYPE = "application/json"
#: Trustee's error type prefix, so Trustee clients recognise the errors.
ERROR_TYPE_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
_SEGMENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")

Handler = Callable[[Request], Awaitable[Response]]


# --- errors ------------------------------------------------------------------------------


def _status_and_name(exc: EnarxError) -> tuple[int, str]:
    if isinstance(exc, StewardError):
        return exc.status, exc.name
    if isinstance(exc, ProtocolError):
        status = {"Unauthorized": 401, "InvalidRequestPath": 404,
                  "PluginNotFound": 404}.get(exc.kind, 400)
        return status, exc.kind
    if isinstance(exc, StoreError):
        return 503, "StoreUnavailable"
    if isinstance(exc, ConfigError):  # the steward's own set-up, e.g. its CA has expired
        return 503, "ServiceMisconfigured"
    if isinstance(exc, MalformedEvidence):
        return 400, "InvalidEvidence"
    if isinstance(exc, AttestationError):
        return 401, "AttestationFailed"
    return 400, "InvalidRequest"


def error_body(exc: EnarxError) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body for a typed error (the only errors answered with a 4xx)."""
    status, name = _status_and_name(exc)
    body: dict[str, Any] = {"type": ERROR_TYPE_PREFIX + name, "detail": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    failed = getattr(exc, "failed", None)
    if failed:
        body["failed"] = failed
    elif isinstance(exc, AttestationError) and not isinstance(exc, MalformedEvidence):
        body["failed"] = [{"rule": exc.check, "message": exc.detail,
                           "expected": _plain(exc.expected), "actual": _plain(exc.actual)}]
    return status, body


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if v is None or isinstance(v, str | int | float | bool | list | dict):
        return v
    return str(v)


def _error_response(exc: EnarxError, route: str) -> Response:
    status, body = error_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    log.info(json.dumps({"event": "refused", "route": route, "status": status,
                         "type": body["type"].rsplit("/", 1)[-1], "detail": exc.message},
                        sort_keys=True))
    return JSONResponse(body, status_code=status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    name = {404: "InvalidRequestPath", 405: "MethodNotAllowed"}.get(exc.status_code,
                                                                   "InvalidRequest")
    return JSONResponse({"type": ERROR_TYPE_PREFIX + name, "detail": str(exc.detail)},
                        status_code=exc.status_code, headers=exc.headers)


# --- request helpers ---------------------------------------------------------------------


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _require_type(request: Request, *allowed: str) -> str:
    mt = _media_type(request)
    if mt not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type {mt or '(none)'!r} is not accepted here",
            hint=f"send Content-Type: {' or '.join(allowed)}")
    return mt


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"body of {size} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(f"body is over the {limit}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise BadRequest("the client went away before sending the whole body") from None
    return b"".join(chunks)


def _resource_path(request: Request) -> str:
    parts = [request.path_params[k] for k in ("repo", "type", "tag")]
    for p in parts:
        if not _SEGMENT.match(p):
            raise NotFound(f"invalid resource path segment {p!r}",
                           hint="segments are [A-Za-z0-9_-][A-Za-z0-9_.-]*")
    return "/".join(parts)


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is None:
        return None
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be `Bearer <token>`")
    return token.strip()


def der_sequence(items: list[bytes]) -> bytes:
    """DER ``SEQUENCE`` whose content is the concatenation of already-encoded ``items``."""
    content = b"".join(items)
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x30" + length + content


def _split_bundle(body: bytes) -> list[bytes]:
    from asn1crypto.core import Any as Asn1Any  # type: ignore[import-untyped]
    from asn1crypto.core import SequenceOf

    class _Any(SequenceOf):  # type: ignore[misc]
        _child_spec = Asn1Any

    try:
        seq = _Any.load(body, strict=True)
        items = [child.dump() for child in seq]
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(f"body is not a DER SEQUENCE OF CertificationRequest "
                         f"({BUNDLE_TYPE})") from None
    if not items:
        raise BadRequest("empty CSR bundle")
    return [bytes(i) for i in items]


# --- metrics -----------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("enarx_steward_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=registry)
        self.attestations = Counter("enarx_steward_attestations",
                                    "Attestations by route and result",
                                    ["route", "result"], registry=registry)
        self.latency = Histogram("enarx_steward_attestation_seconds",
                                 "Time to verify evidence and answer", ["route"],
                                 registry=registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.certificates = Counter("enarx_steward_certificates", "Certificates issued",
                                    ["route"], registry=registry)


# --- the app -----------------------------------------------------------------------------


def create_app(
    steward: Steward,
    *,
    admin_token: str,
    max_body: int = MAX_BODY,
    secure_cookies: bool = True,
    registry: CollectorRegistry | None = None,
) -> Starlette:
    """The ASGI app. ``admin_token`` guards resource writes; ``secure_cookies`` is False only
    behind ``--insecure-http``; ``registry`` (default: a fresh one) holds the metrics."""
    metrics = _Metrics(registry if registry is not None else CollectorRegistry())
    deferred = getattr(steward.store, "deferred", None)
    durable = getattr(steward.store, "durable", None)

    async def call(fn: Callable[..., Any], *args: Any) -> Any:
        """Run a protocol step. With a store that can defer its fsync (SQLite) the step runs
        right here on the event loop (its statements are short; no hand-off to a worker
        thread and back) and the answer waits, without blocking the loop, until what it
        wrote is on disk. Otherwise (PostgreSQL: every statement is a network round trip)
        the step runs in a worker thread."""
        if deferred is None or durable is None:
            return await run_in_threadpool(fn, *args)
        batches: list[int] = []
        try:
            with deferred() as batches:  # nothing may await inside: the list is per thread
                return fn(*args)
        finally:
            if batches:
                await durable(max(batches))

    def route(name: str, attest: bool = False, issues: bool = False) -> Callable[[Handler],
                                                                                 Handler]:
        def wrap(fn: Handler) -> Handler:
            # The usual label sets resolved once (``labels()`` is a locked dict lookup).
            ok_requests = metrics.requests.labels(name, "200")
            ok_attestations = metrics.attestations.labels(name, "ok")
            latency = metrics.latency.labels(name)
            issued = metrics.certificates.labels(name)

            async def handler(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    response = await fn(request)
                    result = "ok"
                except EnarxError as exc:
                    response = _error_response(exc, name)
                    code = response.status_code
                    result = ("refused" if code in (401, 409) else
                              "unavailable" if code >= 500 else "bad-request")
                status = response.status_code
                if status == 200:
                    ok_requests.inc()
                else:
                    metrics.requests.labels(name, str(status)).inc()
                if attest:
                    (ok_attestations if result == "ok" else
                     metrics.attestations.labels(name, result)).inc()
                    latency.observe(time.perf_counter() - started)
                if issues and status == 200:
                    issued.inc()
                return response
            return handler
        return wrap

    @route("health")
    async def health(request: Request) -> Response:
        return PlainTextResponse("OK")

    @route("healthz")
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @route("jwks")
    async def jwks(request: Request) -> Response:
        return JSONResponse(steward.jwks())

    @route("upstream", attest=True, issues=True)
    async def upstream(request: Request) -> Response:
        mt = _require_type(request, CSR_TYPE, BUNDLE_TYPE)
        body = await _body(request, max_body)
        if mt == CSR_TYPE:
            chain = await run_in_threadpool(steward.upstream_issue, body)
            return Response(der_sequence(chain), media_type=DER_CHAIN_TYPE)
        ca, issued = await run_in_threadpool(steward.upstream_bundle, _split_bundle(body))
        return Response(der_sequence([der_sequence([ca]), der_sequence(issued)]),
                        media_type=DER_CHAIN_TYPE)

    @route("auth")
    async def auth(request: Request) -> Response:
        _require_type(request, JSON_TYPE)
        body = await _body(request, max_body)
        session_id, challenge = await call(steward.auth, body)
        response = JSONResponse(challenge)
        response.set_cookie(SESSION_COOKIE, session_id, httponly=True, secure=secure_cookies,
                            samesite="strict", max_age=300)
        return response

    @route("attest", attest=True)
    async def attest(request: Request) -> Response:
        _require_type(request, JSON_TYPE)
        body = await _body(request, max_body)
        sid = request.cookies.get(SESSION_COOKIE)
        outcome = await call(steward.attest, sid, body)
        return JSONResponse({"token": outcome.token})

    @route("certificate", issues=True)
    async def certificate(request: Request) -> Response:
        _require_type(request, CSR_TYPE)
        body = await _body(request, max_body)
        sid = request.cookies.get(SESSION_COOKIE)
        chain = await call(steward.issue_for_session, sid, body)
        if PEM_CHAIN_TYPE in request.headers.get("accept", ""):
            pem = b"".join(x509.load_der_x509_certificate(c).public_bytes(
                serialization.Encoding.PEM) for c in reversed(chain))
            return Response(pem, media_type=PEM_CHAIN_TYPE)
        return Response(der_sequence(chain), media_type=DER_CHAIN_TYPE)

    @route("resource")
    async def resource(request: Request) -> Response:
        path = _resource_path(request)
        if request.method == "GET":
            bearer = _bearer(request)
            sid = request.cookies.get(SESSION_COOKIE)
            jwe = await run_in_threadpool(steward.resource, sid, bearer, path)
            return JSONResponse(jwe)
        token = _bearer(request)
        if token is None or not hmac.compare_digest(token.encode(), admin_token.encode()):
            raise Unauthorized("resource writes need the admin token",
                               hint="send `Authorization: Bearer <state-dir/admin-token>`")
        if request.method == "DELETE":
            if not await run_in_threadpool(steward.delete_resource, path):
                raise NotFound(f"no resource {path}")
            return Response(status_code=200)
        data = await _body(request, max_body)
        await run_in_threadpool(steward.put_resource, path, data)
        return Response(status_code=200)

    routes = [
        Route("/", health, methods=["GET"]),
        Route("/", upstream, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/kbs/v0/auth", auth, methods=["POST"]),
        Route("/kbs/v0/attest", attest, methods=["POST"]),
        Route("/kbs/v0/resource/{repo}/{type}/{tag}", resource,
              methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/enarx/v1/certificate", certificate, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
