"""Chain building: shipped vs explicit roots, the warm cache, and CRLs."""

from __future__ import annotations

import datetime as dt

import pytest

from enarx.attestation import roots
from enarx.attestation.snp import clear_chain_cache, verify_report
from enarx.attestation.snp.certs import load_cert
from enarx.attestation.snp.chain import chain_cache_stats
from enarx.errors import ChainInvalid, MalformedEvidence
from enarx.platform.sim import SimBackend

from snp_support import load_snp, sim_state


def test_warm_cache_skips_the_rsa_chain_on_repeat() -> None:
    v = load_snp("ms-milan-v3")
    clear_chain_cache()
    v.verify()
    assert chain_cache_stats() == (0, 1)
    for _ in range(3):
        v.verify()
    assert chain_cache_stats() == (3, 1)


def test_cache_never_extends_a_certificates_validity() -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    clear_chain_cache()
    v.verify()  # cached at verify_at, inside the VLEK's year
    with pytest.raises(ChainInvalid) as err:
        v.verify(at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    assert err.value.check == "snp.chain.validity"
    assert v.verify().product == "Milan"


def test_naive_time_is_utc() -> None:
    v = load_snp("ms-milan-v3")
    ev = v.verify(at=dt.datetime(2026, 6, 1))
    assert ev.verified_at == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_real_ark_as_explicit_trust_root_still_reports_the_product() -> None:
    v = load_snp("ms-genoa-v3")
    ev = v.verify(trust_roots=[roots.amd_ark("Genoa")])
    assert ev.product == "Genoa"


def test_another_products_chain_is_harmless_extra_material() -> None:
    # The caller's chain only offers intermediates; the right (shipped) ASK is still found.
    v = load_snp("ms-milan-v3")
    ev = v.verify(chain=[roots.amd_ask("Genoa"), roots.amd_ark("Genoa")])
    assert "CN=SEV-Milan" in ev.chain[1].subject
    assert "ARK-Milan" in ev.chain[2].subject


def test_non_leaf_certificate_and_garbage_chain() -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(chain=[b"garbage"])
    assert err.value.check == "snp.cert.chain"
    with pytest.raises(ChainInvalid) as err2:
        verify_report(v.report(), cert=roots.amd_ask("Milan"), at=v.verify_at)
    assert err2.value.check == "snp.chain.vcek"


# --- CRLs (AMD publishes no test CRLs; the sim ARK and ASK issue them) -----------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


def _sim_verify(sim: SimBackend, crls: list[bytes]) -> object:
    ev = sim.evidence(bytes(64))
    return verify_report(ev.blob, cert=ev.certs[0], chain=ev.certs[1:],
                         trust_roots=[sim.ark_pem()], crls=crls)


def test_crl_without_our_serials_passes(sim: SimBackend) -> None:
    assert _sim_verify(sim, [sim.crl([12345])])


def test_ark_crl_revoking_the_ask_rejects(sim: SimBackend) -> None:
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [sim.crl([sim.ask_serial()])])
    assert err.value.check == "snp.chain.revoked"


def test_ask_crl_revoking_the_vcek_rejects(sim: SimBackend) -> None:
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [sim.crl([1], issuer="ask")])
    assert err.value.check == "snp.chain.revoked"


def test_stale_crl_rejects(sim: SimBackend) -> None:
    stale = sim.crl([], next_update=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [stale])
    assert err.value.check == "snp.crl.validity"


def test_crl_with_a_broken_signature_rejects(sim: SimBackend) -> None:
    crl = bytearray(sim.crl([]))
    crl[-3] ^= 0xFF
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [bytes(crl)])
    assert err.value.check == "snp.crl"


def test_crl_of_another_issuer_does_not_concern_the_chain(sim: SimBackend) -> None:
    v = load_snp("ms-milan-v3")
    milan_ask = load_cert(roots.amd_ask("Milan"), "ask")
    crl = sim.crl([milan_ask.serial])  # same serial, but the sim ARK is not Milan's issuer
    assert v.verify(crls=[crl], at=dt.datetime.now(dt.UTC)).product == "Milan"
    with pytest.raises(MalformedEvidence) as err:
        v.verify(crls=[b"not a crl"])
    assert err.value.check == "snp.crl"
