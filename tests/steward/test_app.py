"""The steward's HTTP app, in process: routes, the key-broker exchange with real sim evidence,
certificates, typed refusals, body limits, content types, metrics, logs; hypothesis fuzzing
of the request parsers. (tests/steward/test_server.py runs the same over a real uvicorn.)"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.platform.sim import DEFAULT_MEASUREMENT, SimBackend
from enarx.steward import extensions, kbs
from enarx.steward.app import ERROR_TYPE_PREFIX, MAX_BODY, create_app
from enarx.steward.ca import StewardCA
from enarx.steward.ear import EarSigner, verify_ear
from enarx.steward.policy import StewardPolicy
from enarx.steward.service import Steward
from enarx.steward.store import open_store
from tests.steward.kbsflow import (
    OTHER_WORKLOAD,
    WORKLOAD,
    AsgiClient,
    Clock,
    attest_body,
    csr_der,
    new_key,
    policy_text,
    sim_state,
)

ADMIN = "admin-token-for-tests"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


@pytest.fixture(scope="module")
def ark(sim: SimBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ark") / "ark.pem"
    path.write_bytes(sim.ark_pem())
    return path


class Env:
    def __init__(self, client: AsgiClient, steward: Steward, clock: Clock) -> None:
        self.client = client
        self.steward = steward
        self.clock = clock

    def auth(self, tee: str = "snp") -> str:
        r = self.client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": tee,
                                                    "extra-params": {}})
        assert r.status_code == 200, r.text
        assert r.cookies.get("kbs-session-id") or self.client.cookies.get("kbs-session-id")
        nonce: str = r.json()["nonce"]
        return nonce

    def attest(self, body: dict[str, Any]) -> Any:
        return self.client.post("/kbs/v0/attest", json=body)

    def certificate(self, der: bytes, **headers: str) -> Any:
        return self.client.post("/enarx/v1/certificate", content=der,
                                headers={"content-type": "application/pkcs10", **headers})


@pytest.fixture
def make_env(tmp_path: Path, ark: Path) -> Iterator[Any]:
    stores: list[Any] = []
    clients: list[AsgiClient] = []

    def make(text: str | None = None) -> Env:
        policy = StewardPolicy.loads(text if text is not None else policy_text(ark))
        store = open_store(None, tmp_path / f"state{len(stores)}")
        stores.append(store)
        clock = Clock()
        roots = [Path(p).read_bytes() for p in policy.trust_roots]  # as the server does
        steward = Steward(policy, StewardCA.create("test CA"), EarSigner.generate(), store,
                          roots, clock)
        client = AsgiClient(create_app(steward, admin_token=ADMIN))
        clients.append(client)
        return Env(client, steward, clock)

    yield make
    for c in clients:
        c.close()
    for s in stores:
        s.close()


@pytest.fixture
def env(make_env: Any) -> Env:
    e: Env = make_env()
    return e


def _error(r: Any, status: int, name: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["type"].startswith(ERROR_TYPE_PREFIX) and body["detail"]
    if name is not None:
        assert body["type"] == ERROR_TYPE_PREFIX + name
    assert "Traceback" not in r.text
    return body


def _der_seq_items(der: bytes) -> list[bytes]:
    from asn1crypto.core import Any as Asn1Any
    from asn1crypto.core import SequenceOf

    class _Seq(SequenceOf):  # type: ignore[misc]
        _child_spec = Asn1Any

    return [c.dump() for c in _Seq.load(der)]


# --- health, metrics, jwks ---------------------------------------------------------------


def test_health_routes_and_metrics(env: Env) -> None:
    assert env.client.get("/").status_code == 200
    r = env.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    env.client.post("/kbs/v0/auth", content=b"{", headers={"content-type": "application/json"})
    m = env.client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    assert 'enarx_steward_requests_total{route="healthz",status="200"} 1.0' in m.text
    assert 'enarx_steward_requests_total{route="auth",status="400"} 1.0' in m.text


def test_unknown_route_and_method_are_typed(env: Env) -> None:
    _error(env.client.get("/nope"), 404, "InvalidRequestPath")
    _error(env.client.get("/kbs/v0/attest"), 405)


# --- the key-broker exchange -------------------------------------------------------------


def test_attest_then_certificate_carries_evidence_and_workload(env: Env,
                                                               sim: SimBackend) -> None:
    key = new_key()
    nonce = env.auth()
    r = env.attest(attest_body(sim, nonce, key, workload=WORKLOAD))
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    jwks = env.client.get("/.well-known/jwks.json").json()
    claims = verify_ear(token, jwks, env.clock())
    cpu0 = claims["submods"]["cpu0"]
    annotated = cpu0["ear.veraison.annotated-evidence"]
    assert annotated["workload"] == WORKLOAD and annotated["platform"] == "sim"
    assert annotated["measurement"] == DEFAULT_MEASUREMENT.hex()
    assert annotated["runtime_data_claims"]["nonce"] == nonce
    # sim is allowed by the policy, and the result says it is not a TEE
    assert cpu0["ear.status"] != "affirming"
    assert cpu0["ear.trustworthiness-vector"]["runtime-opaque"] == 96

    r = env.certificate(csr_der(key, ["keep.example.com"]))
    assert r.status_code == 200, r.text
    ca_der, leaf_der = _der_seq_items(r.content)
    ca = x509.load_der_x509_certificate(ca_der)
    leaf = x509.load_der_x509_certificate(leaf_der)
    leaf.verify_directly_issued_by(ca)
    assert leaf.public_key() == key.public_key()
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["keep.example.com"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() <= 24 * 3600 + 600
    assert extensions.find_workload(leaf) == (True, WORKLOAD)
    cmw = extensions.find_cmw(leaf)
    assert cmw is not None and cmw.platform == "snp"
    # the certificate lets anyone re-check the binding without the steward
    claims_rd = cmw.runtime_claims()
    assert claims_rd["nonce"] == nonce and claims_rd["workload"] == WORKLOAD
    assert kbs.expected_report_data(claims_rd, claims_rd["additional-evidence"]) == \
        cmw.report[0x50:0x90]

    records = env.steward.store.list_issuances()
    assert len(records) == 1
    rec = records[0]
    assert rec.serial == f"{leaf.serial_number:x}" and rec.workload == WORKLOAD
    assert rec.kind == "kbs" and rec.policy_id == env.steward.policy_id

    # one attestation = one certificate
    _error(env.certificate(csr_der(key)), 409, "AlreadyIssued")
    assert len(env.steward.store.list_issuances()) == 1


def test_certificate_as_pem_chain(env: Env, sim: SimBackend) -> None:
    key = new_key()
    assert env.attest(attest_body(sim, env.auth(), key)).status_code == 200
    r = env.certificate(csr_der(key), accept="application/pem-certificate-chain")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/pem-certificate-chain")
    certs = x509.load_pem_x509_certificates(r.content)
    assert len(certs) == 2 and certs[0].public_key() == key.public_key()
    assert extensions.find_workload(certs[0]) == (True, None)


def test_replayed_attestation_is_refused(env: Env, sim: SimBackend) -> None:
    body = attest_body(sim, env.auth(), new_key())
    assert env.attest(body).status_code == 200
    _error(env.attest(body), 401)


def test_a_refused_attestation_spends_the_nonce(env: Env, sim: SimBackend) -> None:
    key = new_key()
    nonce = env.auth()
    _error(env.attest(attest_body(sim, nonce, key, bind_key=new_key())), 401, "PolicyDeny")
    # the right evidence for the same nonce afterwards: the nonce is used up
    body = _error(env.attest(attest_body(sim, nonce, key)), 401, "Unauthorized")
    assert "already used" in body["detail"]


def test_expired_nonce_is_refused(env: Env, sim: SimBackend) -> None:
    nonce = env.auth()
    env.clock.offset = __import__("datetime").timedelta(minutes=6)
    _error(env.attest(attest_body(sim, nonce, new_key())), 401)


def test_evidence_for_another_key_or_nonce_is_refused(env: Env, sim: SimBackend) -> None:
    key = new_key()
    body = _error(env.attest(attest_body(sim, env.auth(), key, bind_key=new_key())), 401,
                  "PolicyDeny")
    assert body["failed"][0]["rule"] == "report_data"
    body = _error(env.attest(attest_body(sim, env.auth(), key, bind_nonce="AAAA")), 401)
    assert body["failed"][0]["rule"] == "report_data"
    # the nonce in runtime-data must be the session's
    env.auth()
    _error(env.attest(attest_body(sim, "b3RoZXIgbm9uY2U=", key)), 401)
    assert env.steward.store.list_issuances() == []


def test_unknown_session_is_401(env: Env, sim: SimBackend) -> None:
    body = attest_body(sim, "bm9uY2U=", new_key())
    _error(env.client.post("/kbs/v0/attest", json=body), 401)
    env.client.cookies.set("kbs-session-id", "forged", domain="testserver")
    _error(env.client.post("/kbs/v0/attest", json=body), 401)
    _error(env.certificate(csr_der(new_key())), 401)


def test_sim_refused_unless_allowed(make_env: Any, sim: SimBackend, ark: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    env = make_env(policy_text(ark, allow=[]))
    caplog.set_level(logging.INFO, logger="enarx.steward")
    body = _error(env.attest(attest_body(sim, env.auth(), new_key())), 401, "PolicyDeny")
    assert [f["rule"] for f in body["failed"]] == ["allow.sim"]
    assert body["failed"][0]["expected"] and "hint" in body
    lines = [json.loads(r.getMessage()) for r in caplog.records
             if r.getMessage().startswith('{"') and '"attestation"' in r.getMessage()]
    assert lines and lines[-1]["result"] == "refused"
    assert lines[-1]["failed"][0]["rule"] == "allow.sim" and lines[-1]["duration_ms"] >= 0


def test_sim_refused_without_its_root(make_env: Any, sim: SimBackend) -> None:
    env = make_env(policy_text(None))
    body = _error(env.attest(attest_body(sim, env.auth(), new_key())), 401)
    assert body["failed"][0]["rule"].startswith("snp.chain")


def test_wrong_measurement_and_workload_are_refused(make_env: Any, sim: SimBackend,
                                                    ark: Path) -> None:
    env = make_env(policy_text(ark, extra=f'[snp]\nhash = ["{"00" * 48}"]\n'))
    body = _error(env.attest(attest_body(sim, env.auth(), new_key())), 401)
    assert any(f["rule"].startswith("snp.hash") for f in body["failed"]), body
    env = make_env(policy_text(ark, extra=f'[workload]\nallow = ["{WORKLOAD}"]\n'))
    body = _error(env.attest(attest_body(sim, env.auth(), new_key(),
                                         workload=OTHER_WORKLOAD)), 401)
    assert any("workload" in f["rule"] for f in body["failed"]), body
    ok = env.attest(attest_body(sim, env.auth(), new_key(), workload=WORKLOAD))
    assert ok.status_code == 200, ok.text


def test_nil_needs_allow_nil(make_env: Any, ark: Path) -> None:
    env = make_env(policy_text(ark))
    body = _error(env.attest(attest_body(None, env.auth("sample"), new_key())), 401)
    assert [f["rule"] for f in body["failed"]] == ["allow.nil"]
    env = make_env(policy_text(ark, allow=["nil"]))
    r = env.attest(attest_body(None, env.auth("sample"), new_key()))
    assert r.status_code == 200, r.text


def test_csr_for_another_key_is_refused(env: Env, sim: SimBackend) -> None:
    key = new_key()
    assert env.attest(attest_body(sim, env.auth(), key)).status_code == 200
    _error(env.certificate(csr_der(new_key())), 401)
    _error(env.certificate(b"not a csr"), 400)
    assert env.steward.store.list_issuances() == []
    assert env.certificate(csr_der(key)).status_code == 200


def test_san_outside_policy_is_refused(make_env: Any, sim: SimBackend, ark: Path) -> None:
    env = make_env(policy_text(ark, extra='sans = ["*.keeps.example"]\n'))
    key = new_key()
    assert env.attest(attest_body(sim, env.auth(), key)).status_code == 200
    body = _error(env.certificate(csr_der(key, ["evil.example"])), 401)
    assert body["failed"][0]["rule"] == "sans"
    assert env.certificate(csr_der(key, ["a.keeps.example"])).status_code == 200


# --- resources ---------------------------------------------------------------------------


def test_resource_released_as_jwe_to_the_attested_key(make_env: Any, sim: SimBackend,
                                                      ark: Path) -> None:
    env = make_env(policy_text(ark, extra=f'[resources]\n"app/key/db" = ["{WORKLOAD}"]\n'))
    path = "/kbs/v0/resource/app/key/db"
    _error(env.client.post(path, content=b"s3cret"), 401)
    _error(env.client.post(path, content=b"s3cret",
                           headers={"authorization": "Bearer wrong"}), 401)
    auth = {"authorization": f"Bearer {ADMIN}"}
    assert env.client.post(path, content=b"s3cret", headers=auth).status_code == 200

    _error(env.client.get(path), 401)
    key = new_key()
    r = env.attest(attest_body(sim, env.auth(), key, workload=WORKLOAD))
    token = r.json()["token"]
    jwe = env.client.get(path).json()  # by session cookie
    assert kbs.decrypt_resource(jwe, key) == b"s3cret"
    env.client.cookies.clear()
    jwe = env.client.get(path, headers={"authorization": f"Bearer {token}"}).json()
    assert kbs.decrypt_resource(jwe, key) == b"s3cret"
    _error(env.client.get("/kbs/v0/resource/app/key/other",
                          headers={"authorization": f"Bearer {token}"}), 401)
    _error(env.client.get(path, headers={"authorization": f"Bearer {token[:-4]}AAAA"}), 401)

    other = new_key()
    env.attest(attest_body(sim, env.auth(), other, workload=OTHER_WORKLOAD))
    _error(env.client.get(path), 401)
    assert env.client.delete(path, headers=auth).status_code == 200
    _error(env.client.delete(path, headers=auth), 404)


# --- bad input ---------------------------------------------------------------------------


def test_content_types_and_body_limit(env: Env) -> None:
    _error(env.client.post("/kbs/v0/auth", content=b"{}",
                           headers={"content-type": "text/plain"}), 415, "UnsupportedMediaType")
    _error(env.client.post("/kbs/v0/auth", content=b"{}"), 415)
    _error(env.client.post("/", content=b"x", headers={"content-type": "application/json"}),
           415)
    _error(env.client.post("/enarx/v1/certificate", content=b"x",
                           headers={"content-type": "application/json"}), 415)
    big = b"{" + b" " * MAX_BODY + b"}"
    _error(env.client.post("/kbs/v0/attest", content=big,
                           headers={"content-type": "application/json"}), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: checked while streaming
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    _error(env.client.post("/", content=chunks(),
                           headers={"content-type": "application/pkcs10"}), 413)


def test_malformed_requests_are_400(env: Env) -> None:
    j = {"content-type": "application/json"}
    _error(env.client.post("/kbs/v0/auth", content=b"not json", headers=j), 400)
    # Trustee's protocol document: a Request refused for its version is answered 401.
    _error(env.client.post("/kbs/v0/auth", json={"version": "0.1.0", "tee": "snp"}), 401)
    _error(env.client.post("/kbs/v0/auth", json=[1, 2]), 400)
    env.auth()
    _error(env.client.post("/kbs/v0/attest", json={"runtime-data": {}}), 400)
    bad_jwk = {"runtime-data": {"nonce": "x", "tee-pubkey": {"kty": "EC", "crv": "P-256"}},
               "tee-evidence": {}}
    _error(env.client.post("/kbs/v0/attest", json=bad_jwk), 400)
    _error(env.client.post("/", content=b"\x30\x03\x02\x01\x00",
                           headers={"content-type": "application/pkcs10"}), 400)
    _error(env.client.post("/", content=b"",
                           headers={"content-type": "application/vnd.steward.pkcs10-bundle.v1"}),
           400)


def test_evidence_garbage_is_refused_not_500(env: Env, sim: SimBackend) -> None:
    key = new_key()
    body = attest_body(sim, env.auth(), key)
    body["tee-evidence"]["primary_evidence"]["attestation_report"] = "AAAA"
    _error(env.attest(body), 401)
    body = attest_body(sim, env.auth(), key)
    body["tee-evidence"]["primary_evidence"]["cert_chain"] = ["!!"]
    _error(env.attest(body), 400)
    body = attest_body(sim, env.auth(), key)
    body["tee-evidence"]["primary_evidence"]["cert_chain"] = []
    _error(env.attest(body), 400)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=12,
)
_KEYS = st.sampled_from(["version", "tee", "extra-params", "runtime-data", "tee-evidence",
                         "nonce", "tee-pubkey", "primary_evidence", "attestation_report",
                         "cert_chain", "kty", "crv", "x", "y", "workload"])
_KBSISH = st.recursive(
    st.none() | st.text(max_size=20) | st.sampled_from(["0.4.0", "snp", "sample", "EC",
                                                        "P-256"]),
    lambda inner: st.dictionaries(_KEYS, inner, max_size=5) | st.lists(inner, max_size=3),
    max_leaves=15,
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory, ark: Path) -> Iterator[AsgiClient]:
    store = open_store(None, tmp_path_factory.mktemp("fuzz"))
    steward = Steward(StewardPolicy.loads(policy_text(ark)), StewardCA.create("fuzz"),
                      EarSigner.generate(), store, [ark.read_bytes()])
    client = AsgiClient(create_app(steward, admin_token=ADMIN))
    yield client
    client.close()
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(["/kbs/v0/auth", "/kbs/v0/attest"]),
       body=st.one_of(_JSON, _KBSISH).map(lambda v: json.dumps(v).encode())
       | st.binary(max_size=200))
def test_fuzz_json_routes(fuzz_client: AsgiClient, route: str, body: bytes) -> None:
    # AsgiClient re-raises any exception of the app: a bug fails here instead of a 500.
    r = fuzz_client.post(route, content=body, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400, 401), r.text
    if r.status_code != 200:
        assert r.json()["type"].startswith(ERROR_TYPE_PREFIX)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(["/", "/enarx/v1/certificate"]),
       ctype=st.sampled_from(["application/pkcs10", "application/vnd.steward.pkcs10-bundle.v1"]),
       body=st.binary(max_size=300) | st.builds(
           lambda prefix, data: prefix + data,
           st.sampled_from([b"\x30\x82\x01\x00", b"\x30\x81\x80", b"\x30\x00", b"\x30\x03"]),
           st.binary(max_size=200)))
def test_fuzz_csr_routes(fuzz_client: AsgiClient, route: str, ctype: str, body: bytes) -> None:
    r = fuzz_client.post(route, content=body, headers={"content-type": ctype})
    assert r.status_code in (400, 401, 415), r.text
    assert r.json()["type"].startswith(ERROR_TYPE_PREFIX)


def test_fuzz_mutated_csr_from_a_real_key(fuzz_client: AsgiClient) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    der = bytearray(csr_der(key))
    for i in range(0, len(der), 7):
        mutated = bytes(der[:i]) + bytes([der[i] ^ 0x41]) + bytes(der[i + 1:])
        r = fuzz_client.post("/", content=mutated, headers={"content-type": "application/pkcs10"})
        assert r.status_code in (400, 401), (i, r.text)


def test_database_outage_is_503_not_500(env: Env) -> None:
    env.steward.store.close()  # what a lost database connection looks like to the app
    body = _error(env.client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"}),
                  503, "StoreUnavailable")
    assert "hint" in body


def test_a_challenge_that_did_not_reach_the_disk_is_not_handed_out(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # /auth runs on the event loop and its answer waits for the fsync of what it wrote:
    # when that fsync fails the Keep gets a 503, never a nonce the database may lose.
    import enarx.steward.store.sqlite as sqlite_store

    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sqlite_store, "_fsync", broken)
    r = env.client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"})
    body = _error(r, 503, "StoreUnavailable")
    assert "kbs-session-id" not in r.headers.get("set-cookie", "")
    assert "disk" in body["detail"]


def test_debug_guest_needs_allow_debug(make_env: Any, sim: SimBackend, ark: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    from enarx.platform.sim import DEFAULT_POLICY

    debug_sim = SimBackend(sim_state(tmp_path_factory), policy=DEFAULT_POLICY | 1 << 19)
    env = make_env(policy_text(ark))
    body = _error(env.attest(attest_body(debug_sim, env.auth(), new_key())), 401)
    assert "debug" in [f["rule"] for f in body["failed"]], body
    env = make_env(policy_text(ark, allow=["sim", "debug"]))
    assert env.attest(attest_body(debug_sim, env.auth(), new_key())).status_code == 200


def test_expired_ca_is_503_not_a_certificate(make_env: Any, sim: SimBackend) -> None:
    import datetime as dt

    env = make_env()
    key = new_key()
    assert env.attest(attest_body(sim, env.auth(), key)).status_code == 200
    env.steward.ca = StewardCA.create("old", now=dt.datetime.now(dt.UTC)
                                      - dt.timedelta(days=4000))
    _error(env.certificate(csr_der(key)), 503, "ServiceMisconfigured")
    assert env.steward.store.list_issuances() == []


def test_client_gone_mid_body_is_a_typed_400(env: Env) -> None:
    import anyio

    app = env.client.client._transport.app  # type: ignore[attr-defined]
    messages = iter([{"type": "http.request", "body": b'{"version"', "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "https", "path": "/kbs/v0/auth", "raw_path": b"",
             "root_path": "", "query_string": b"", "server": ("testserver", 443),
             "client": ("127.0.0.1", 1), "headers": [(b"content-type", b"application/json")]}
    anyio.run(app, scope, receive, send)  # a bug would raise here
    assert sent[0]["status"] == 400
    assert b"went away" in sent[1]["body"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                     max_size=300)
       | st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                          max_size=60), min_size=3, max_size=3).map(".".join),
       tag=st.sampled_from(["db", "..", "a b", "x" * 300]))
def test_fuzz_resource_bearer(fuzz_client: AsgiClient, token: str, tag: str) -> None:
    r = fuzz_client.get(f"/kbs/v0/resource/app/key/{tag}",
                        headers={"authorization": f"Bearer {token}"})
    assert r.status_code in (401, 404), r.text
    assert r.json()["type"].startswith(ERROR_TYPE_PREFIX)


def test_certificate_runtime_data_hashes_to_the_report_data_even_with_null_jwk_members(
        env: Env, sim: SimBackend) -> None:
    """The CMW runtime data in the certificate are the very bytes REPORT_DATA hashes (one JCS
    serialisation serves both), also for a JWK with a null member that JSON tools could drop."""
    import base64
    import hashlib

    from enarx.steward import kbs as kbs_mod
    from tests.steward.kbsflow import public_jwk

    key = new_key()
    nonce = env.auth()
    rd = {"nonce": nonce, "tee-pubkey": {**public_jwk(key), "x-note": None}}
    ev = sim.evidence(kbs_mod.expected_report_data(rd, ""))
    body = {"runtime-data": rd, "tee-evidence": {"primary_evidence": {
        "attestation_report": base64.b64encode(ev.blob).decode(),
        "cert_chain": [base64.b64encode(c).decode() for c in ev.certs]},
        "additional_evidence": ""}}
    r = env.attest(body)
    assert r.status_code == 200, r.text
    r = env.certificate(csr_der(key))
    assert r.status_code == 200, r.text
    leaf = x509.load_der_x509_certificate(_der_seq_items(r.content)[1])
    ext = leaf.extensions.get_extension_for_oid(extensions.OID_CMW).value
    cmw = extensions.decode_cmw(ext.value)  # type: ignore[attr-defined]
    report_data = cmw.report[0x50:0x90]
    assert hashlib.sha384(cmw.runtime_data).digest().ljust(64, b"\0") == report_data
    assert cmw.runtime_claims()["tee-pubkey"]["x-note"] is None
