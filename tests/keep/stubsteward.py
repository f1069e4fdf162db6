"""A minimal in-test steward (Starlette over uvicorn, TLS, 127.0.0.1) for the Keep side's
error paths: it speaks just enough of the key-broker exchange to refuse, to answer with a
chain from a foreign CA, or to issue a certificate after checking the evidence binding.

The real steward (``enarx steward serve``) is exercised by tests/steward/test_e2e.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from enarx.attestation.snp import parse_report, verify_report
from enarx.steward.ca import StewardCA
from enarx.steward.kbs import expected_report_data

DENY = "https://github.com/confidential-containers/kbs/errors/PolicyDeny"


class StubSteward:
    """``mode``: ``issue`` (checks the binding, then certifies the CSR key), ``refuse`` (every
    attestation refused with two failed rules), ``foreign`` (issues from another CA)."""

    def __init__(self, tmp: Path, sim_ark: bytes | None = None, mode: str = "issue") -> None:
        self.mode = mode
        self.sim_ark = sim_ark
        self.ca = StewardCA.create("stub steward CA")
        key_pem, chain_pem = self.ca.server_cert()
        tmp.mkdir(parents=True, exist_ok=True)
        self.key_file = tmp / "stub-tls-key.pem"
        self.key_file.write_bytes(key_pem)
        self.key_file.chmod(0o600)
        self.chain_file = tmp / "stub-tls-chain.pem"
        self.chain_file.write_bytes(chain_pem)
        self.ca_file = tmp / "stub-ca.pem"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.requests: list[tuple[str, Any]] = []  # (route, parsed body)
        self._sessions: dict[str, dict[str, Any]] = {}
        app = Starlette(routes=[
            Route("/kbs/v0/auth", self._auth, methods=["POST"]),
            Route("/kbs/v0/attest", self._attest, methods=["POST"]),
            Route("/enarx/v1/certificate", self._certificate, methods=["POST"]),
        ])
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(
            app, ssl_keyfile=str(self.key_file), ssl_certfile=str(self.chain_file),
            log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> StubSteward:
        self._thread.start()
        end = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError("the stub steward did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()

    def routes(self) -> list[str]:
        return [r for r, _ in self.requests]

    # --- routes ------------------------------------------------------------------------------

    async def _auth(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(("auth", body))
        sid = secrets.token_hex(16)
        nonce = base64.b64encode(secrets.token_bytes(32)).decode()
        self._sessions[sid] = {"nonce": nonce, "tee": body["tee"]}
        resp = JSONResponse({"nonce": nonce, "extra-params": ""})
        resp.set_cookie("kbs-session-id", sid)
        return resp

    async def _attest(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(("attest", body))
        session = self._sessions.get(request.cookies.get("kbs-session-id", ""))
        if session is None or body["runtime-data"]["nonce"] != session["nonce"]:
            return _deny("unknown session or nonce", [{"rule": "nonce", "message": "stale"}])
        if self.mode == "refuse":
            return _deny("attestation refused by the steward's policy", [
                {"rule": "allow", "expected": [], "actual": "sim",
                 "message": "sim evidence is not allowed by this policy"},
                {"rule": "workload.allow", "expected": ["sha384:" + "0" * 96],
                 "actual": body["runtime-data"].get("workload"),
                 "message": "workload not allowed"},
            ])
        if session["tee"] == "sample":
            return _deny("nil", [{"rule": "allow", "message": "nil evidence is not allowed"}])
        primary = body["tee-evidence"]["primary_evidence"]
        report = base64.b64decode(primary["attestation_report"])
        certs = [base64.b64decode(c) for c in primary["cert_chain"]]
        verify_report(report, cert=certs[0], chain=certs[1:],
                      trust_roots=[self.sim_ark] if self.sim_ark else [])
        want = expected_report_data(body["runtime-data"])
        if parse_report(report).report_data != want:
            return _deny("binding", [{"rule": "report_data", "message": "not bound"}])
        session["jwk"] = body["runtime-data"]["tee-pubkey"]
        return JSONResponse({"token": "stub.ear.token"})

    async def _certificate(self, request: Request) -> Response:
        data = await request.body()
        csr = x509.load_der_x509_csr(data)
        self.requests.append(("certificate", csr))
        session = self._sessions.get(request.cookies.get("kbs-session-id", ""))
        if session is None or "jwk" not in session:
            return _deny("not attested", [{"rule": "session", "message": "not attested"}])
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ca = StewardCA.create("foreign CA") if self.mode == "foreign" else self.ca
        leaf = ca.issue(csr.public_key(), list(san), dt.timedelta(hours=1))
        pem = leaf.public_bytes(serialization.Encoding.PEM) + ca.cert_pem
        return Response(pem, media_type="application/pem-certificate-chain")


def _deny(detail: str, failed: list[dict[str, Any]]) -> Response:
    return JSONResponse({"type": DENY, "detail": detail, "failed": failed}, status_code=401)
