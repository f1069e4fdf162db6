"""A key-broker client written only from Trustee's KBS attestation protocol document, against a
real ``enarx steward serve`` on 127.0.0.1: Request → Challenge (+ ``kbs-session-id`` cookie) →
Attestation (SNP evidence in the form CoCo's SNP attester sends: the sev crate's JSON report and
``{cert_type, data}`` certificate entries) → token → resource as a flattened JWE, and the error
answers the document specifies (RFC 7807 JSON ``type``/``detail``, 401 without a session or
for a refused version, 404 for an unknown resource)."""

from __future__ import annotations

import hashlib
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from enarx.platform.sim import SimBackend
from enarx.steward import trustee_snp
from tests.steward.kbsflow import policy_text, sim_state
from tests.steward.test_server import Steward

ERROR_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
TRUSTEE_EVIDENCE = Path(__file__).with_name("data") / "trustee-e2e-snp-evidence.json"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


@pytest.fixture(scope="module")
def steward(tmp_path_factory: pytest.TempPathFactory, sim: SimBackend) -> Any:
    d = tmp_path_factory.mktemp("trustee")
    (d / "sim-ark.pem").write_bytes(sim.ark_pem())
    (d / "steward.toml").write_text(policy_text(
        Path("sim-ark.pem"), extra='[resources]\n"default/key/*" = ["*"]\n'))
    s = Steward(["--policy", str(d / "steward.toml"), "--state-dir", str(d / "state")])
    s.ca = (d / "state" / "ca.crt").read_bytes()
    s.admin = (d / "state" / "admin-token").read_text()
    yield s
    s.stop()


def _client(steward: Any) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=steward.ca.decode())
    return httpx.Client(base_url=steward.url, verify=ctx, timeout=30)


def _problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """The document's error information: RFC 7807 JSON with a kbs/errors type."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["type"].startswith(ERROR_PREFIX) and isinstance(body["detail"], str)
    return body


def _request(client: httpx.Client) -> str:
    r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": {}})
    assert r.status_code == 200, r.text
    challenge = r.json()
    assert set(challenge) == {"nonce", "extra-params"}
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith("kbs-session-id=")
    assert "secure" in set_cookie.lower() and "httponly" in set_cookie.lower()
    nonce: str = challenge["nonce"]
    return nonce


def _pubkey() -> tuple[Any, dict[str, Any]]:
    key = jwcrypto_jwk.JWK.generate(kty="EC", crv="P-256")
    pub = json.loads(key.export_public())
    pub["alg"] = "ECDH-ES+A256KW"
    return key, pub


def _report_data(runtime_data: dict[str, Any]) -> bytes:
    doc = {"tee-pubkey": runtime_data["tee-pubkey"], "nonce": runtime_data["nonce"],
           "additional-evidence": ""}
    return hashlib.sha384(rfc8785.dumps(doc)).digest().ljust(64, b"\0")


def _trustee_snp_evidence(sim: SimBackend, report_data: bytes) -> dict[str, Any]:
    ev = sim.evidence(report_data)
    kinds = ["VCEK", "ASK", "ARK"][:len(ev.certs)]
    return {"attestation_report": trustee_snp.report_to_json(ev.blob),
            "cert_chain": trustee_snp.chain_to_json(list(zip(kinds, ev.certs, strict=True)))}


def test_a_trustee_client_attests_and_gets_a_resource(steward: Any, sim: SimBackend) -> None:
    with _client(steward) as admin:
        r = admin.post("/kbs/v0/resource/default/key/one", content=b"the secret",
                       headers={"authorization": f"Bearer {steward.admin}"})
        assert r.status_code == 200, r.text
    with _client(steward) as client:
        # Resource Request without a session: 401.
        _problem(client.get("/kbs/v0/resource/default/key/one"), 401)
        nonce = _request(client)
        key, pub = _pubkey()
        runtime_data = {"nonce": nonce, "tee-pubkey": pub}
        attestation = {"runtime-data": runtime_data, "tee-evidence": {
            "primary_evidence": _trustee_snp_evidence(sim, _report_data(runtime_data)),
            "additional_evidence": ""}}
        # The cookie jar sends kbs-session-id back, as the document's figures show.
        r = client.post("/kbs/v0/attest", json=attestation)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert token.count(".") == 2
        # Resource Request with the session cookie → flattened JWE to the tee-pubkey.
        r = client.get("/kbs/v0/resource/default/key/one")
        assert r.status_code == 200, r.text
        assert _decrypt(r.json(), key) == b"the secret"
        _problem(client.get("/kbs/v0/resource/default/key/none"), 404)
    with _client(steward) as fresh:  # the token instead of the cookie
        r = fresh.get("/kbs/v0/resource/default/key/one",
                      headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and _decrypt(r.json(), key) == b"the secret"


def _decrypt(resource: dict[str, Any], key: Any) -> bytes:
    assert {"protected", "encrypted_key", "iv", "ciphertext", "tag"} <= set(resource)
    header = json.loads(jwcrypto_jwe.base64url_decode(resource["protected"]))
    assert header["enc"] == "A256GCM" and header["alg"] == "ECDH-ES+A256KW"
    token = jwcrypto_jwe.JWE()
    token.deserialize(json.dumps(resource), key=key)
    out: bytes = token.payload
    return out


def test_the_documents_errors(steward: Any, sim: SimBackend) -> None:
    with _client(steward) as client:
        # A Request refused for its version: 401 with error information.
        _problem(client.post("/kbs/v0/auth", json={"version": "0.0.1", "tee": "snp",
                                                   "extra-params": {}}), 401)
        nonce = _request(client)
        _, pub = _pubkey()
        runtime_data = {"nonce": nonce, "tee-pubkey": pub}
        body = {"runtime-data": runtime_data, "tee-evidence": {
            "primary_evidence": _trustee_snp_evidence(sim, _report_data(runtime_data)),
            "additional_evidence": ""}}
        cookie = client.cookies["kbs-session-id"]
        client.cookies.clear()
        # Attestation without the cookie: the KBS cannot match it to a challenge.
        _problem(client.post("/kbs/v0/attest", json=body), 401)
        client.cookies.set("kbs-session-id", cookie)
        assert client.post("/kbs/v0/attest", json=body).status_code == 200
        # The nonce was spent: the same Attestation again is refused.
        _problem(client.post("/kbs/v0/attest", json=body), 401)


def test_real_trustee_evidence_is_verified_then_refused_for_binding(steward: Any) -> None:
    """A real Genoa report from CoCo's attester: its signature and VCEK verify, but its
    REPORT_DATA is not this session's runtime-data, so the steward refuses it (rule named)."""
    primary = json.loads(TRUSTEE_EVIDENCE.read_bytes())
    with _client(steward) as client:
        nonce = _request(client)
        _, pub = _pubkey()
        r = client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}})
        body = _problem(r, 401)
        [failed] = body["failed"]
        assert failed["rule"] == "report_data"
        assert failed["actual"] == bytes(primary["attestation_report"]["report_data"]).hex()
        # tampered: the signature no longer verifies (a different refusal, before binding)
        primary["attestation_report"]["guest_svn"] = 7
        nonce = _request(client)
        r = client.post("/kbs/v0/attest", json={
            "runtime-data": {"nonce": nonce, "tee-pubkey": pub},
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}})
        assert _problem(r, 401)["failed"][0]["rule"] != "report_data"
