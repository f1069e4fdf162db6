"""The Keep attests before it starts (keep/attest.py, wired into `enarx run --steward`).

Against a stub steward on 127.0.0.1 (tests/keep/stubsteward.py) for the Keep-side error
paths; the real `enarx steward serve` is driven by tests/steward/test_e2e.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.errors import ChainInvalid, UsageError
from enarx.keep import attest
from enarx.platform.sim import SimBackend
from enarx.steward import kbs
from enarx.steward.ca import StewardCA
from tests.keep.stubsteward import StubSteward
from tests.net.netkeep import guest, listen, need_tool, toml

ENARX = Path(sys.executable).with_name("enarx")
HELLO = b"Hello, world!"


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with the other sim tests, so the RSA-4096 test chain is made once per session.
    return tmp_path_factory.getbasetemp() / "sim-state"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A private HOME (state, cache and config dirs) so a test sees every file a run writes."""
    h = tmp_path / "home"
    h.mkdir()
    return h


def _env(home: Path, sim_dir: Path, module_cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENARX_", "XDG_"))}
    env.update(HOME=str(home), ENARX_SIM_DIR=str(sim_dir), ENARX_CACHE_DIR=str(module_cache))
    return env


def run_keep(home: Path, sim_dir: Path, module_cache: Path, *args: str | Path,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ENARX), "run", *map(str, args)], capture_output=True,
                          text=True, env=_env(home, sim_dir, module_cache), timeout=timeout,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def stub(tmp_path: Path, sim_dir: Path, request: pytest.FixtureRequest) -> Iterator[StubSteward]:
    mode = getattr(request, "param", "issue")
    with StubSteward(tmp_path / "stub", SimBackend(sim_dir).ark_pem(), mode=mode) as s:
        yield s


# --- refusals: exit 4, the failed rules on stderr, the workload never starts -----------------


@pytest.mark.parametrize("stub", ["refuse"], indirect=True)
def test_refused_attestation_exits_4_listing_failed_rules_and_the_guest_never_runs(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path,
) -> None:
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--steward", stub.url,
                 "--steward-ca", stub.ca_file, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert HELLO.decode() not in r.stdout  # the guest would have printed it
    assert "the steward refused this Keep's attestation" in r.stderr
    assert "- allow: sim evidence is not allowed by this policy" in r.stderr
    assert "- workload.allow: workload not allowed" in r.stderr
    assert "Traceback" not in r.stderr
    assert stub.routes() == ["auth", "attest"]  # never asked for a certificate


def test_nil_with_a_steward_attests_as_sample_and_a_refusal_stops_it(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path,
) -> None:
    r = run_keep(home, sim_dir, module_cache, "--backend", "nil", "--steward", stub.url,
                 "--steward-ca", stub.ca_file, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert HELLO.decode() not in r.stdout
    assert "nil evidence is not allowed" in r.stderr
    auth, att = stub.requests[0][1], stub.requests[1][1]
    assert auth == {"version": "0.4.0", "tee": "sample", "extra-params": ""}
    assert att["tee-evidence"] == {"primary_evidence": None, "additional_evidence": ""}


def test_steward_tls_is_trusted_only_through_steward_ca(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path, tmp_path: Path,
) -> None:
    other = tmp_path / "other-ca.pem"
    other.write_bytes(StewardCA.create("some other CA").cert_pem)
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--steward", stub.url,
                 "--steward-ca", other, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert "steward.tls: " in r.stderr and "not trusted" in r.stderr
    assert HELLO.decode() not in r.stdout
    assert stub.requests == []  # nothing was sent to an unauthenticated server


@pytest.mark.parametrize("stub", ["foreign"], indirect=True)
def test_a_certificate_from_another_ca_is_refused(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path,
) -> None:
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--steward", stub.url,
                 "--steward-ca", stub.ca_file, guest("hello.c"))
    assert r.returncode == 4, r.stderr
    assert "steward.chain.issuer" in r.stderr
    assert HELLO.decode() not in r.stdout


def test_unreachable_steward_is_a_clear_error(
    home: Path, sim_dir: Path, module_cache: Path, tmp_path: Path,
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    ca = tmp_path / "ca.pem"
    ca.write_bytes(StewardCA.create().cert_pem)
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--steward",
                 f"https://127.0.0.1:{port}", "--steward-ca", ca, guest("hello.c"))
    assert r.returncode == 1, r.stderr
    assert f"error: https://127.0.0.1:{port}/kbs/v0/auth:" in r.stderr
    assert "hint: check --steward" in r.stderr
    assert HELLO.decode() not in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize(("args", "expect"), [
    (["--steward", "http://127.0.0.1:1"], "is not an https:// URL"),
    (["--steward", "https://127.0.0.1:1"], "needs the CA that signs its TLS certificate"),
    (["--steward", "https://127.0.0.1:1", "--steward-ca", "/nonexistent/ca.pem"],
     "steward CA /nonexistent/ca.pem: cannot read"),
])
def test_steward_options_are_checked_before_anything_runs(
    args: list[str], expect: str, home: Path, sim_dir: Path, module_cache: Path,
    tmp_path: Path,
) -> None:
    if "http://" in args[1]:
        ca = tmp_path / "ca.pem"
        ca.write_bytes(StewardCA.create().cert_pem)
        args = [*args, "--steward-ca", str(ca)]
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", *args, guest("hello.c"))
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr and "hint:" in r.stderr
    assert HELLO.decode() not in r.stdout


def test_enarx_toml_steward_keys_are_used_with_the_ca_relative_to_the_file(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path, tmp_path: Path,
) -> None:
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    (cfgdir / "steward-ca.pem").write_bytes(stub.ca_file.read_bytes())
    (cfgdir / "Enarx.toml").write_text(
        f'steward = "{stub.url}"\nsteward_ca = "steward-ca.pem"\n' + toml())
    r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--wasmcfgfile",
                 cfgdir / "Enarx.toml", guest("hello.c"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(HELLO.decode())
    assert re.search(rf"enarx: attested to {re.escape(stub.url)}: workload sha384:[0-9a-f]{{96}}",
                     r.stderr), r.stderr
    assert stub.routes() == ["auth", "attest", "certificate"]


# --- success: the issued chain serves the TLS listener; the key stays in memory --------------


def test_issued_certificate_serves_tls_listeners_and_the_key_is_never_written(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path, tmp_path: Path,
) -> None:
    from enarx import config
    from enarx.workload import identity_of
    from tests.net.netkeep import _FP_RE, _LISTEN_RE, _Lines

    cfg = tmp_path / "Enarx.toml"
    # 127.0.0.2: the Keep asks for its listener's address besides localhost/127.0.0.1/::1.
    cfg.write_text(toml(listen("web", "tls", addr="127.0.0.2")))
    wasm = guest("net_poll.c")
    before = _files(home) | _files(module_cache)
    proc = subprocess.Popen(
        [str(ENARX), "run", "--backend", "sim", "--steward", stub.url, "--steward-ca",
         str(stub.ca_file), "--wasmcfgfile", str(cfg), str(wasm), "1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(home, sim_dir, module_cache),
    )
    assert proc.stdout is not None and proc.stderr is not None
    err, out = _Lines(proc.stderr), _Lines(proc.stdout)
    try:
        m = err.wait_for(_LISTEN_RE.pattern, 120)
        assert m, err.text
        port = int(m.group(4))
        fp = err.wait_for(_FP_RE.pattern, 10)
        assert fp and "(issued to this Keep)" in fp.string, err.text
        r = subprocess.run(
            [need_tool("curl"), "--silent", "--show-error", "--http0.9", "--cacert",
             str(stub.ca_file), f"https://127.0.0.2:{port}/"],
            capture_output=True, timeout=30)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout == b"3:GET / HTTP/1.1\r\n"
        assert proc.wait(60) == 0, err.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        out.join(5)
        err.join(5)
        proc.stdout.close()
        proc.stderr.close()
    # The workload identity the Keep bound is the one `enarx identity` computes.
    att = dict(stub.requests)["attest"]
    conf = config.loads(cfg.read_text())
    assert att["runtime-data"]["workload"] == identity_of(wasm.read_bytes(), conf,
                                                          extra_args=["1"])
    # The key is the attested one-time key: the CSR's key is the tee-pubkey.
    csr = dict(stub.requests)["certificate"]
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in sans] == [
        "localhost", "127.0.0.1", "::1", "127.0.0.2"]
    assert attest.tee_pubkey_jwk(csr.public_key()) == att["runtime-data"]["tee-pubkey"]
    # Nothing the run wrote under HOME (state, config) or in the module cache holds a key.
    for path in (_files(home) | _files(module_cache)) - before:
        data = path.read_bytes()
        assert b"PRIVATE KEY" not in data and b"\x30\x77\x02\x01\x01\x04\x20" not in data, path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- unit level ------------------------------------------------------------------------------


def test_tee_pubkey_is_a_p256_jwk_the_key_broker_accepts() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = attest.tee_pubkey_jwk(key)
    assert kbs.validate_tee_pubkey(jwk) == "ECDH-ES+A256KW"
    secret = kbs.decrypt_resource(kbs.encrypt_resource(b"s3cret", jwk), key)
    assert secret == b"s3cret"


def test_sim_evidence_binds_the_report_data_and_carries_its_chain(sim_dir: Path) -> None:
    from enarx.attestation.snp import parse_report

    rd = bytes(range(64))
    tee, ev = attest.evidence_for(SimBackend(sim_dir), rd)
    assert tee == "snp" and ev["additional_evidence"] == ""
    parsed = kbs.parse_snp_evidence(ev)
    assert parse_report(parsed.report).report_data == rd
    assert len(parsed.cert_chain) == 3


def test_chain_check_accepts_upstream_der_sequence_and_rejects_a_foreign_leaf() -> None:
    import datetime as dt

    from enarx.steward.app import der_sequence

    ca = StewardCA.create()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue(key.public_key(), ["127.0.0.1"], dt.timedelta(hours=1))
    der = [c.public_bytes(serialization.Encoding.DER) for c in (ca.cert, leaf)]
    chain = attest._check_chain("application/pkcs7-mime", der_sequence(der), key, ca.cert_pem)
    assert chain == [der[1], der[0]]  # leaf first
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ChainInvalid) as e:
        attest._check_chain("", der_sequence(der), other, ca.cert_pem)
    assert e.value.check == "steward.chain.leaf"
    with pytest.raises(ChainInvalid) as e:
        attest._check_chain("", der_sequence(der), key, StewardCA.create().cert_pem)
    assert e.value.check == "steward.chain.issuer"


def test_steward_target_refuses_plain_http_and_a_ca_without_certificates() -> None:
    pem = StewardCA.create().cert_pem
    with pytest.raises(UsageError):
        attest.StewardTarget("http://steward:3000", pem)
    with pytest.raises(UsageError):
        attest.StewardTarget("https://steward:3000", b"not a pem")
    assert attest.StewardTarget("https://steward:3000/prefix", pem).url.endswith("/prefix")



def test_tls_connects_present_the_issued_certificate_as_client_certificate(
    stub: StubSteward, home: Path, sim_dir: Path, module_cache: Path, tmp_path: Path,
) -> None:
    """openssl s_server admits only clients with a certificate from the steward CA."""
    import socket

    key_pem, chain_pem = stub.ca.server_cert()
    (tmp_path / "srv-key.pem").write_bytes(key_pem)
    (tmp_path / "srv-chain.pem").write_bytes(chain_pem)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = subprocess.Popen(
        [need_tool("openssl"), "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
         "-rev", "-cert", str(tmp_path / "srv-chain.pem"), "-key", str(tmp_path / "srv-key.pem"),
         "-Verify", "1", "-CAfile", str(stub.ca_file), "-verify_return_error"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert srv.stdout is not None
        for line in srv.stdout:  # wait until it listens
            if b"ACCEPT" in line:
                break
        cfg = tmp_path / "Enarx.toml"
        cfg.write_text(toml(
            f'kind = "connect"\nname = "api"\nprot = "tls"\nhost = "localhost"\nport = {port}\n'
            f'trust = "{stub.ca_file}"'))
        r = run_keep(home, sim_dir, module_cache, "--backend", "sim", "--steward", stub.url,
                     "--steward-ca", stub.ca_file, "--wasmcfgfile", cfg,
                     guest("net_scenario.c"), "client")
        s_out = srv.communicate(timeout=30)[0].decode()
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    assert r.returncode == 0, r.stdout + r.stderr + s_out
    assert "reply: peek olleh" in r.stdout
    # s_server verified the client's chain: the issued leaf under the steward CA.
    assert "depth=1 CN = stub steward CA\nverify return:1\ndepth=0 CN = enarx keep\n" \
        "verify return:1" in s_out, s_out


def test_refusal_text_from_the_steward_cannot_drive_the_terminal() -> None:
    import json

    body = {"type": "x/PolicyDeny", "detail": "no\x1b[2J",
            "failed": [{"rule": "allow\x07", "message": "m\r\nforged line", "expected": [],
                        "actual": "sim\x1b]0;t\x07"}]}
    err = attest._refusal("https://s/kbs/v0/attest", 401, json.dumps(body).encode())
    assert isinstance(err, attest.AttestationRefused) and err.exit_code == 4
    assert "\x1b" not in err.message and "\x07" not in err.message and "\r" not in err.message
    assert err.message.count("\n") == 1  # one header line and one line per failed rule
    assert "  - allow?: m??forged line (expected [], got 'sim\\x1b]0;t\\x07')" in err.message
    other = attest._refusal("https://s/x", 502, b"\x1b[31mbad gateway")
    assert isinstance(other, attest.StewardUnavailable) and "\x1b" not in other.message


_KEY = ec.generate_private_key(ec.SECP256R1())
_CA_PEM = StewardCA.create().cert_pem


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=600),
                      st.binary(max_size=600).map(lambda b: b"\x30\x82\x01\x00" + b)),
       status=st.integers(400, 599))
def test_any_steward_answer_is_a_typed_error(data: bytes, status: int) -> None:
    from enarx.errors import EnarxError

    with pytest.raises((attest.StewardUnavailable, ChainInvalid)):
        attest._check_chain("application/octet-stream", data, _KEY, _CA_PEM)
    assert isinstance(attest._refusal("https://s/x", status, data), EnarxError)
