"""``enarx steward serve`` as a real uvicorn process on 127.0.0.1: state directory, TLS, the
protocol over the wire, logs, failures at start-up, and replicas on one real PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import ssl
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from enarx.platform.sim import SimBackend
from enarx.steward.ca import StewardCA
from enarx.steward.store import open_store
from tests.cliutil import RunEnarx
from tests.servers import ServerProcess, clean_env
from tests.steward.kbsflow import WORKLOAD, attest_body, csr_der, new_key, policy_text, sim_state


class Steward(ServerProcess):
    """One ``enarx steward serve`` process; ``url`` once it listens."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        super().__init__("steward", args, clean_env(env, drop=("ENARX_", "STEWARD_")))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


@pytest.fixture
def policy(tmp_path: Path, sim: SimBackend) -> Path:
    ark = tmp_path / "sim-ark.pem"
    ark.write_bytes(sim.ark_pem())
    path = tmp_path / "steward.toml"
    # trust_roots are relative to the policy file
    path.write_text(policy_text(Path("sim-ark.pem")))
    return path


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[Steward] = []

    def run(*args: str, env: dict[str, str] | None = None) -> Steward:
        s = Steward(list(args), env)
        started.append(s)
        return s

    yield run
    for s in started:
        s.stop()


def _client(ca_pem: bytes, base: str) -> httpx.Client:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return httpx.Client(base_url=base, verify=ctx, timeout=30)


def _kbs_certificate(client: httpx.Client, sim: SimBackend, *, workload: str | None = None,
                     auth_client: httpx.Client | None = None) -> tuple[int, Any]:
    """auth (optionally at another replica) → attest → CSR; (status, chain or error)."""
    key = new_key()
    a = auth_client or client
    r = a.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": {}})
    assert r.status_code == 200, r.text
    cookie = {"cookie": "kbs-session-id=" + r.cookies["kbs-session-id"]}
    r = client.post("/kbs/v0/attest", json=attest_body(sim, r.json()["nonce"], key,
                                                       workload=workload), headers=cookie)
    if r.status_code != 200:
        return r.status_code, r.json()
    r = client.post("/enarx/v1/certificate", content=csr_der(key),
                    headers={**cookie, "content-type": "application/pkcs10",
                             "accept": "application/pem-certificate-chain"})
    if r.status_code != 200:
        return r.status_code, r.json()
    return 200, x509.load_pem_x509_certificates(r.content)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_serve_makes_its_state_and_answers_over_tls(start: Any, policy: Path, tmp_path: Path,
                                                     sim: SimBackend, enarx: RunEnarx) -> None:
    state = tmp_path / "state"
    s = start("--policy", str(policy), "--state-dir", str(state), "--san", "steward.test")
    assert s.url.startswith("https://127.0.0.1:")
    assert _mode(state) == 0o700
    for name in ("ca.key", "ear.key", "admin-token", "server.key", "steward.db"):
        assert _mode(state / name) == 0o600, name
    ca = enarx("steward", "ca", "--state-dir", state)
    assert ca.returncode == 0 and ca.stdout == (state / "ca.crt").read_bytes()
    assert ca.stdout.startswith(b"-----BEGIN CERTIFICATE-----")

    with _client(ca.stdout, s.url) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/").status_code == 200
        status, chain = _kbs_certificate(c, sim, workload=WORKLOAD)
        assert status == 200, chain
        assert chain[1].public_bytes(serialization.Encoding.PEM) == ca.stdout
        token_jwks = c.get("/.well-known/jwks.json").json()
        assert token_jwks["keys"] and "d" not in token_jwks["keys"][0]
        assert 'route="attest"' in c.get("/metrics").text

    # the TLS certificate is issued by the CA for localhost, 127.0.0.1 and --san
    host, port = s.url.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    served = x509.load_pem_x509_certificate(pem.encode())
    sans = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "steward.test"} <= set(sans.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(i) for i in sans.get_values_for_type(x509.IPAddress)}
    served.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.stdout))

    # one JSON line per attestation, no secrets in the log
    s.kill(signal.SIGTERM)
    [line] = s.events("attestation")
    assert line["result"] == "ok" and line["workload"] == WORKLOAD and line["platform"] == "sim"
    assert line["duration_ms"] > 0
    admin = (state / "admin-token").read_text()
    assert admin not in s.stderr and "PRIVATE KEY" not in s.stderr
    assert "Traceback" not in s.stderr


def test_restart_keeps_the_ca_and_refusals_are_logged(start: Any, policy: Path,
                                                      tmp_path: Path, sim: SimBackend) -> None:
    state = tmp_path / "state"
    first = start("--policy", str(policy), "--state-dir", str(state))
    ca = (state / "ca.crt").read_bytes()
    first.kill(signal.SIGTERM)
    assert first.proc.returncode == 0
    strict = tmp_path / "strict.toml"
    strict.write_text(policy_text(Path("sim-ark.pem"), allow=[]))
    second = start("--policy", str(strict), "--state-dir", str(state))
    assert (state / "ca.crt").read_bytes() == ca
    with _client(ca, second.url) as c:
        status, body = _kbs_certificate(c, sim)
    assert status == 401 and body["failed"][0]["rule"] == "allow.sim"
    second.kill(signal.SIGTERM)
    [line] = second.events("attestation")
    assert line["result"] == "refused" and line["failed"][0]["rule"] == "allow.sim"


def test_key_and_crt_from_the_environment(start: Any, policy: Path, tmp_path: Path) -> None:
    ca = StewardCA.create("operator CA")
    (tmp_path / "op.key").write_bytes(ca.key_pem())
    (tmp_path / "op.crt").write_bytes(ca.cert_pem)
    state = tmp_path / "state"
    s = start("--policy", str(policy), "--state-dir", str(state),
              env={"STEWARD_KEY": str(tmp_path / "op.key"),
                   "STEWARD_CRT": str(tmp_path / "op.crt")})
    assert (state / "ca.crt").read_bytes() == ca.cert_pem
    assert not (state / "ca.key").exists()
    with _client(ca.cert_pem, s.url) as c:
        assert c.get("/healthz").status_code == 200


def test_insecure_http_warns(start: Any, policy: Path, tmp_path: Path) -> None:
    s = start("--policy", str(policy), "--state-dir", str(tmp_path / "st"), "--insecure-http")
    assert s.url.startswith("http://")
    assert any(line.startswith("warning:") and "plain HTTP" in line for line in s.lines)
    assert httpx.get(s.url + "/healthz").status_code == 200
    # behind a TLS-terminating proxy the session cookie cannot be Secure (plain hop)
    r = httpx.post(s.url + "/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"})
    assert r.status_code == 200 and "secure" not in r.headers["set-cookie"].lower()


def test_startup_errors_are_typed(enarx: RunEnarx, policy: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('allow = ["everything"]\n')
    r = enarx("steward", "serve", "--policy", bad, "--state-dir", tmp_path / "s", timeout=60)
    assert r.returncode == 2 and b"error:" in r.stderr and b"Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # nothing written for a refused policy
    missing = tmp_path / "missing-root.toml"
    missing.write_text('allow = ["sim"]\ntrust_roots = ["nope.pem"]\n')
    r = enarx("steward", "serve", "--policy", missing, "--state-dir", tmp_path / "s")
    assert r.returncode == 2 and b"nope.pem" in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = enarx("steward", "serve", "--policy", policy, "--state-dir", tmp_path / "s",
                  "--port", str(port), timeout=60)
    assert r.returncode == 2 and b"cannot listen" in r.stderr, r.stderr
    assert b"Traceback" not in r.stderr
    r = enarx("steward", "ca", "--state-dir", tmp_path / "empty")
    assert r.returncode == 2 and b"hint:" in r.stderr


def test_one_nonce_redeemed_once_under_concurrency(start: Any, policy: Path, tmp_path: Path,
                                                   sim: SimBackend) -> None:
    state = tmp_path / "state"
    s = start("--policy", str(policy), "--state-dir", str(state))
    ca = (state / "ca.crt").read_bytes()
    with _client(ca, s.url) as c:
        r = c.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp"})
        cookie = {"cookie": "kbs-session-id=" + r.cookies["kbs-session-id"]}
        body = attest_body(sim, r.json()["nonce"], new_key())

        def once() -> int:
            with _client(ca, s.url) as cc:
                return cc.post("/kbs/v0/attest", json=body, headers=cookie).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(lambda _: once(), range(8)))
    assert codes == [200] + [401] * 7


def test_replicas_share_one_postgresql(start: Any, policy: Path, tmp_path: Path,
                                       sim: SimBackend, pg_url: str) -> None:
    a = start("--policy", str(policy), "--state-dir", str(tmp_path / "a"), "--db", pg_url)
    b = start("--policy", str(policy), "--state-dir", str(tmp_path / "b"), "--db", pg_url)
    ca = (tmp_path / "a" / "ca.crt").read_bytes()
    assert (tmp_path / "b" / "ca.crt").read_bytes() == ca  # one CA for both
    with _client(ca, a.url) as ca_client, _client(ca, b.url) as cb_client:
        assert ca_client.get("/.well-known/jwks.json").json() == \
            cb_client.get("/.well-known/jwks.json").json()
        # a nonce issued by one replica is redeemed at the other
        status, chain = _kbs_certificate(cb_client, sim, auth_client=ca_client)
        assert status == 200, chain

        # load on both, then kill A: every certificate A or B acknowledged is recorded
        acked: list[int] = []
        stop = threading.Event()

        def load(client: httpx.Client) -> None:
            while not stop.is_set():
                try:
                    st, res = _kbs_certificate(client, sim)
                except httpx.HTTPError:
                    continue
                if st == 200:
                    acked.append(res[0].serial_number)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(load, ca_client), pool.submit(load, cb_client)]
            time.sleep(1.5)
            a.kill()
            time.sleep(1.0)
            stop.set()
            for f in futures:
                f.result(60)
        # B still serves after A is gone
        status, chain = _kbs_certificate(cb_client, sim)
        assert status == 200, chain
        acked.append(chain[0].serial_number)

    store = open_store(pg_url, tmp_path / "reader")
    try:
        recorded = {int(i.serial, 16) for i in store.list_issuances()}
    finally:
        store.close()
    assert len(acked) >= 3 and set(acked) <= recorded


def test_sigterm_stops_cleanly(start: Any, policy: Path, tmp_path: Path) -> None:
    s = start("--policy", str(policy), "--state-dir", str(tmp_path / "st"))
    assert s.kill(signal.SIGTERM) == 0
    assert "Traceback" not in s.stderr


def test_bad_key_or_crt_creates_nothing(enarx: RunEnarx, policy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    r = enarx("steward", "serve", "--policy", policy, "--state-dir", state, "--key", policy)
    assert r.returncode == 2 and b"--key and --crt go together" in r.stderr
    r = enarx("steward", "serve", "--policy", policy, "--state-dir", state,
              "--key", policy, "--crt", policy)
    assert r.returncode == 2 and b"CA key" in r.stderr and b"hint:" in r.stderr
    assert not state.exists()


def test_workers_share_the_port_and_stop_together(start: Any, policy: Path, tmp_path: Path,
                                                  sim: SimBackend) -> None:
    """``--workers 2``: two processes serve one port and one SQLite file (a session started
    at one worker is attested at whichever answers next); SIGTERM stops both, exit 0."""
    state = tmp_path / "state"
    s = start("--policy", str(policy), "--state-dir", str(state), "--workers", "2")
    ca = (state / "ca.crt").read_bytes()
    children = [int(p) for p in
                Path(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read_text().split()]
    assert len(children) == 2
    for _ in range(6):  # new connections: the kernel spreads them over both workers
        with _client(ca, s.url) as c:
            status, chain = _kbs_certificate(c, sim, workload=WORKLOAD)
            assert status == 200, chain
    assert s.kill(signal.SIGTERM) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(
            f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    assert len(s.events("attestation")) == 6 and "Traceback" not in s.stderr
