"""The sim backend: loud, persistent, and verified by the real SNP verifier."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from enarx import platform
from enarx.attestation.result import VerifiedEvidence
from enarx.attestation.snp import parse_report, verify_report
from enarx.errors import ChainInvalid, EvidenceError
from enarx.platform.sim import SimBackend, default_state_dir


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with the attestation tests' sim, so RSA-4096 keys are made once per session.
    return tmp_path_factory.getbasetemp() / "sim-state"


def _verify(sim: SimBackend, blob: bytes, certs: tuple[bytes, ...],
            trust_roots: tuple[bytes, ...] = ()) -> VerifiedEvidence:
    return verify_report(blob, cert=certs[0], chain=certs[1:], trust_roots=trust_roots)


def test_is_labelled_insecure_and_always_available(state: Path) -> None:
    sim = SimBackend(state)
    assert sim.name == "sim" and sim.confidential is False
    assert sim.warning and "NOT confidential" in sim.warning
    assert sim.available() and all(c.passed for c in sim.probe())
    assert isinstance(platform.get("sim"), SimBackend)


def test_evidence_verifies_only_with_the_sim_ark_trusted(state: Path) -> None:
    sim = SimBackend(state)
    data = hashlib.sha512(b"nonce").digest()
    ev = sim.evidence(data)
    assert ev.kind == "snp-report" and len(ev.blob) == 1184 and len(ev.certs) == 3
    result = _verify(sim, ev.blob, ev.certs, trust_roots=(sim.ark_pem(),))
    assert result.report_data == data
    assert result.measurement == sim.measurement
    with pytest.raises(ChainInvalid) as err:
        _verify(sim, ev.blob, ev.certs)
    assert err.value.check == "snp.chain.root"


def test_measurement_tcb_and_policy_are_what_the_verifier_sees(state: Path) -> None:
    tcb = {"bootloader": 9, "tee": 1, "snp": 30, "microcode": 250}
    sim = SimBackend(state, measurement=b"\xab" * 48, tcb=tcb, policy=0x30000 | 1 << 19,
                     vmpl=2, guest_svn=7, host_data=b"\x01" * 32)
    ev = sim.evidence(bytes(64))
    res = _verify(sim, ev.blob, ev.certs, trust_roots=(sim.ark_pem(),))
    assert res.measurement == b"\xab" * 48
    assert res.tcb.reported == tcb
    assert res.debug is True
    assert res.attributes["vmpl"] == 2 and res.attributes["guest_svn"] == 7
    assert res.host_data == b"\x01" * 32
    assert parse_report(ev.blob).version == 3


@pytest.mark.parametrize("product", ["Genoa", "Turin"])
def test_other_products(state: Path, product: str) -> None:
    sim = SimBackend(state, product=product)
    ev = sim.evidence(b"\x05" * 64)
    res = _verify(sim, ev.blob, ev.certs, trust_roots=(sim.ark_pem(),))
    assert res.product == product
    assert ("fmc" in res.tcb.reported) is (product == "Turin")


def test_state_persists_across_instances(state: Path) -> None:
    a, b = SimBackend(state), SimBackend(state)
    assert a.ark_pem() == b.ark_pem()
    assert a.chip_id() == b.chip_id()
    ev = b.evidence(b"\x02" * 64)
    # A steward that trusted instance a's ARK accepts instance b's evidence.
    _verify(b, ev.blob, ev.certs, trust_roots=(a.ark_pem(),))


def test_state_is_private_and_complete(state: Path, tmp_path: Path) -> None:
    SimBackend(state).evidence(bytes(64))
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for key in ("ark.key", "ask.key", "chip.secret"):
        assert stat.S_IMODE((state / key).stat().st_mode) == 0o600
    # Atomic writes leave no temporary files behind.
    assert not [p for p in state.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    other = SimBackend(tmp_path / "not-created-yet")
    assert other.probe()  # probing touches nothing
    assert not (tmp_path / "not-created-yet").exists()


def test_report_data_must_be_64_bytes(state: Path) -> None:
    with pytest.raises(EvidenceError):
        SimBackend(state).evidence(b"short")


def test_unknown_product_is_refused(state: Path) -> None:
    with pytest.raises(EvidenceError):
        SimBackend(state, product="Naples")


def test_state_dir_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("ENARX_SIM_DIR", str(tmp_path / "x"))
    assert default_state_dir() == tmp_path / "x"
    assert SimBackend().state_dir == tmp_path / "x"
    monkeypatch.delenv("ENARX_SIM_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_state_dir() == tmp_path / "state" / "enarx" / "sim"


def test_relative_xdg_state_home_is_ignored(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    # XDG: relative paths in XDG_* are invalid; keys must not land in whatever cwd is.
    monkeypatch.delenv("ENARX_SIM_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "state")
    assert SimBackend().state_dir == tmp_path / ".local" / "state" / "enarx" / "sim"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory away")
def test_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    # Whoever owns the state directory could plant their own ARK and keys.
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    with pytest.raises(EvidenceError, match="another user") as err:
        SimBackend(theirs).evidence(bytes(64))
    assert err.value.hint and "ENARX_SIM_DIR" in err.value.hint
    assert list(theirs.iterdir()) == []
