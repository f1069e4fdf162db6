"""``Steward`` (the protocol logic): upstream Enarx CSRs (real fixtures from upstream's
repository, verified as of their capture time), bundles, single-use nonces under threads,
and nothing recorded when a request fails."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.platform.sim import SimBackend
from enarx.steward import extensions
from enarx.steward.app import create_app, der_sequence
from enarx.steward.ca import StewardCA
from enarx.steward.ear import EarSigner
from enarx.steward.policy import StewardPolicy
from enarx.steward.service import Refused, Steward, Unauthorized
from enarx.steward.store import open_store
from tests.steward.kbsflow import AsgiClient, attest_body, new_key, policy_text, sim_state

DATA = Path(__file__).resolve().parents[1] / "data" / "steward" / "upstream"
MILAN = DATA / "milan.signed.crl.csr"
UPSTREAM_POLICY = (DATA / "steward.toml").read_text()
CAPTURED = dt.datetime(2022, 12, 23, 12, tzinfo=dt.UTC)


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Any]:
    opened: list[Any] = []

    def build(policy: str, *, roots: list[bytes] | None = None,
              evidence_at: dt.datetime | None = None) -> Steward:
        store = open_store(None, tmp_path / f"s{len(opened)}")
        opened.append(store)
        return Steward(StewardPolicy.loads(policy), StewardCA.create("svc CA"),
                       EarSigner.generate(), store, roots or [],
                       evidence_clock=(lambda: evidence_at) if evidence_at else None)

    yield build
    for s in opened:
        s.close()


def _seq(der: bytes) -> list[bytes]:
    from asn1crypto.core import Any as Asn1Any
    from asn1crypto.core import SequenceOf

    class _Seq(SequenceOf):  # type: ignore[misc]
        _child_spec = Asn1Any

    return [c.dump() for c in _Seq.load(der)]


def _post(steward: Steward, body: bytes, ctype: str = "application/pkcs10") -> Any:
    client = AsgiClient(create_app(steward, admin_token="x"))
    try:
        return client.post("/", content=body, headers={"content-type": ctype})
    finally:
        client.close()


def test_upstream_milan_csr_accepted_by_a_policy_naming_it(make: Any) -> None:
    steward = make(UPSTREAM_POLICY, evidence_at=CAPTURED)
    r = _post(steward, MILAN.read_bytes())
    assert r.status_code == 200, r.text
    ca_der, leaf_der = _seq(r.content)
    leaf = x509.load_der_x509_certificate(leaf_der)
    leaf.verify_directly_issued_by(x509.load_der_x509_certificate(ca_der))
    csr = x509.load_der_x509_csr(MILAN.read_bytes())
    assert leaf.public_key() == csr.public_key()
    # upstream's CSR path binds no workload, and the certificate says so
    assert extensions.find_workload(leaf) == (True, None)
    cmw = extensions.find_cmw(leaf)
    assert cmw is not None and cmw.platform == "snp" and len(cmw.report) == 1184
    [rec] = steward.store.list_issuances()
    assert rec.kind == "upstream" and rec.platform == "snp" and rec.workload is None
    assert rec.evidence_digest.startswith("sha384:")


def test_upstream_milan_csr_refused_by_other_policies(make: Any) -> None:
    other = UPSTREAM_POLICY.replace("ff717ae7", "00717ae7")
    r = _post(make(other, evidence_at=CAPTURED), MILAN.read_bytes())
    assert r.status_code == 401
    assert any(f["rule"].startswith("snp.hash") for f in r.json()["failed"]), r.text
    # a policy that requires a workload refuses unbound upstream certificates
    needs = UPSTREAM_POLICY + f'\n[workload]\nallow = ["sha384:{"ab" * 48}"]\n'
    steward = make(needs, evidence_at=CAPTURED)
    r = _post(steward, MILAN.read_bytes())
    assert r.status_code == 401 and "workload" in json.dumps(r.json()["failed"])
    assert steward.store.list_issuances() == []


def test_upstream_milan_csr_refused_today(make: Any) -> None:
    # its CRL expired in 2023: verified as of now, the evidence is not current
    steward = make(UPSTREAM_POLICY)
    r = _post(steward, MILAN.read_bytes())
    assert r.status_code == 401 and r.json()["failed"][0]["rule"].startswith("snp.")
    assert steward.store.list_issuances() == []


def test_upstream_bundle(make: Any) -> None:
    steward = make(UPSTREAM_POLICY, evidence_at=CAPTURED)
    bundle = der_sequence([MILAN.read_bytes(), MILAN.read_bytes()])
    r = _post(steward, bundle, "application/vnd.steward.pkcs10-bundle.v1")
    assert r.status_code == 200, r.text
    chain, issued = _seq(r.content)
    assert len(_seq(chain)) == 1 and len(_seq(issued)) == 2
    assert len(steward.store.list_issuances()) == 2


def _kvm_csr() -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    kvm = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.58270.1.1"), b"")
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .add_extension(kvm, critical=False).sign(key, hashes.SHA384())
            .public_bytes(serialization.Encoding.DER))


def test_bundle_with_one_refused_csr_issues_nothing(make: Any) -> None:
    steward = make(UPSTREAM_POLICY, evidence_at=CAPTURED)
    bundle = der_sequence([MILAN.read_bytes(), _kvm_csr()])
    r = _post(steward, bundle, "application/vnd.steward.pkcs10-bundle.v1")
    assert r.status_code == 401 and r.json()["failed"][0]["rule"] == "allow.kvm"
    assert steward.store.list_issuances() == []


def test_upstream_kvm_csr_needs_allow_kvm(make: Any) -> None:
    csr = _kvm_csr()
    steward = make("")
    r = _post(steward, csr)
    # no implicit debug mode: a self-signed steward CA does not make KVM acceptable
    assert r.status_code == 401 and r.json()["failed"][0]["rule"] == "allow.kvm"
    r = _post(make('allow = ["kvm"]\n'), csr)
    assert r.status_code == 200, r.text
    leaf = x509.load_der_x509_certificate(_seq(r.content)[1])
    assert extensions.find_cmw(leaf) is None and extensions.find_workload(leaf) == (True, None)


def test_concurrent_redemption_succeeds_once(make: Any,
                                             tmp_path_factory: pytest.TempPathFactory,
                                             tmp_path: Path) -> None:
    sim = SimBackend(sim_state(tmp_path_factory))
    ark = tmp_path / "ark.pem"
    ark.write_bytes(sim.ark_pem())
    steward = make(policy_text(ark), roots=[sim.ark_pem()])
    sid, challenge = steward.auth(b'{"version": "0.4.0", "tee": "snp"}')
    body = json.dumps(attest_body(sim, challenge["nonce"], new_key())).encode()

    def once() -> str:
        try:
            steward.attest(sid, body)
            return "ok"
        except Unauthorized:
            return "refused"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = sorted(pool.map(lambda _: once(), range(16)))
    assert results == ["ok"] + ["refused"] * 15


def test_refusal_records_nothing_and_names_every_rule(make: Any,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    sim = SimBackend(sim_state(tmp_path_factory))
    steward = make(f'allow = []\n[workload]\nallow = ["sha384:{"ab" * 48}"]\n')
    sid, challenge = steward.auth(b'{"version": "0.4.0", "tee": "sample"}')
    body = json.dumps(attest_body(None, challenge["nonce"], new_key(),
                                  workload="sha384:" + "cd" * 48)).encode()
    with pytest.raises(Refused) as info:
        steward.attest(sid, body)
    rules = {f["rule"] for f in info.value.failed}
    assert "allow.nil" in rules and any("workload" in r for r in rules)
    session = steward.store.get_session(sid)
    assert session is not None and session.token is None
    assert steward.store.list_issuances() == []
    del sim


def test_upstream_sgx_csr_without_qe_identity_is_refused_not_500(make: Any) -> None:
    steward = make(UPSTREAM_POLICY, evidence_at=dt.datetime(2023, 1, 27, tzinfo=dt.UTC))
    r = _post(steward, (DATA / "icelake.signed.tcb.crl.single.i5.csr").read_bytes())
    assert r.status_code == 401, r.text
    assert r.json()["failed"][0]["rule"].startswith("upstream.sgx"), r.text
    assert steward.store.list_issuances() == []


def test_expired_sessions_are_purged_as_auths_arrive(tmp_path: Path) -> None:
    from tests.steward.kbsflow import Clock

    clock = Clock()
    store = open_store(None, tmp_path / "s")
    try:
        steward = Steward(StewardPolicy.loads(""), StewardCA.create("p"), EarSigner.generate(),
                          store, [], clock, purge_every=3)
        old = [steward.auth(b'{"version": "0.4.0", "tee": "snp"}')[0] for _ in range(2)]
        clock.offset = dt.timedelta(minutes=11)
        steward.auth(b'{"version": "0.4.0", "tee": "snp"}')  # the 3rd: no purge yet
        assert all(store.get_session(s) is not None for s in old)
        steward.auth(b'{"version": "0.4.0", "tee": "snp"}')  # the 4th purges
        assert all(store.get_session(s) is None for s in old)
    finally:
        store.close()


def test_upstream_sgx_csr_is_checked_with_a_given_qe_identity(tmp_path: Path) -> None:
    """``--sgx-qe-identity``: the QE Identity reaches DCAP verification. The only real SGX QE
    Identities vendored are from 2025, not valid when the CSR was made (2023), so the refusal
    is now about that collateral, no longer about a missing QE Identity."""
    from enarx.steward.server import load_qe_identity

    vec = Path(__file__).resolve().parents[1] / "data" / "vectors" / "sgx" / "zkdcap-sgx-v3"
    qe = load_qe_identity(vec / "qe_identity.json")
    store = open_store(None, tmp_path / "s")
    try:
        steward = Steward(StewardPolicy.loads(UPSTREAM_POLICY), StewardCA.create("svc CA"),
                          EarSigner.generate(), store, [], sgx_qe_identity=qe,
                          evidence_clock=lambda: dt.datetime(2023, 1, 27, tzinfo=dt.UTC))
        r = _post(steward, (DATA / "icelake.signed.tcb.crl.single.i5.csr").read_bytes())
        assert r.status_code == 401, r.text
        [failed] = r.json()["failed"]
        assert failed["rule"] == "dcap.collateral.not_yet_valid", r.text
        assert "QE Identity" in failed["message"]
        assert steward.store.list_issuances() == []
    finally:
        store.close()
