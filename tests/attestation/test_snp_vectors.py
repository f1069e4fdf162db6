"""Every real SEV-SNP vector gives its manifest's outcome, at its verify_at and today."""

from __future__ import annotations

import datetime as dt

import pytest

from enarx.attestation.result import Platform, TcbStatus
from enarx.attestation.snp import parse_report
from enarx.errors import ChainInvalid
from tests.attestation.snp_support import cert_spls, load_snp
from tests.vectors import all_vectors

SNP = all_vectors("snp")


@pytest.mark.parametrize("name", SNP)
def test_vector_verifies_at_verify_at(name: str) -> None:
    v = load_snp(name)
    assert v.manifest["expected"]["outcome"] == "valid"
    for i, item in enumerate(v.evidence):
        ev = v.verify(v.report(i))
        assert ev.platform is Platform.SNP
        assert ev.product == v.manifest["product"]
        assert ev.version == item["version"]
        assert ev.report_data.hex() == item["report_data_hex"]
        assert ev.attributes["signing_key"] == item["signing_key"]
        assert ev.tcb.status is TcbStatus.UP_TO_DATE
        assert ev.verified_at == v.verify_at
        assert len(ev.chain) == 3 and all(c.verify_at == v.verify_at for c in ev.chain)
        # The VCEK/VLEK's own TCB extensions, read independently, are the reported TCB.
        assert ev.tcb.reported == cert_spls(v.leaf_x509())
        expected_measurement = v.manifest["expected"].get("expected_measurement_hex")
        if expected_measurement and i == 0:
            assert ev.measurement.hex() == expected_measurement


@pytest.mark.parametrize("name", SNP)
def test_vector_without_supplied_chain_uses_shipped_intermediates(name: str) -> None:
    v = load_snp(name)
    ev = v.verify(chain=())
    assert ev.product == v.manifest["product"]


@pytest.mark.parametrize("name", SNP)
def test_vector_at_todays_date_follows_the_validity_windows(name: str) -> None:
    v = load_snp(name)
    now = dt.datetime.now(dt.UTC)
    leaf = v.leaf_x509()
    if leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        ev = v.verify(at=None)
        assert ev.verified_at is not None and ev.verified_at >= now
    else:
        with pytest.raises(ChainInvalid) as err:
            v.verify(at=None)
        assert err.value.check == "snp.chain.validity"


def test_aws_vlek_is_expired_today_and_valid_inside_its_year() -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    with pytest.raises(ChainInvalid) as err:
        v.verify(at=dt.datetime(2025, 12, 11, tzinfo=dt.UTC))
    assert err.value.check == "snp.chain.validity"
    assert err.value.expected[1].startswith("2025-12-10")
    with pytest.raises(ChainInvalid):
        v.verify(at=dt.datetime(2024, 12, 9, tzinfo=dt.UTC))
    assert v.verify(at=dt.datetime(2025, 12, 10, tzinfo=dt.UTC)).product == "Milan"


def test_v2_report_takes_its_product_from_the_vcek() -> None:
    v = load_snp("gosevguest-milan-v2")
    rep = parse_report(v.report())
    assert rep.version == 2 and rep.product is None and rep.cpuid_family is None
    ev = v.verify()
    assert ev.product == "Milan"
    assert ev.attributes["product_name"] == "Milan-B0"
    assert ev.attributes["cpuid"] is None


def test_turin_uses_the_turin_tcb_layout_and_8_byte_hwid() -> None:
    v = load_snp("ms-turin-v5")
    rep = parse_report(v.report())
    assert rep.product == "Turin" and rep.version == 5
    spls = cert_spls(v.leaf_x509())
    assert "fmc" in spls
    ev = v.verify()
    assert ev.tcb.reported == spls
    # The Milan/Genoa byte layout would read different values from the same TCB word.
    assert rep.tcb("reported", "Milan").to_dict() != {k: spls[k] for k in
                                                      ("bootloader", "tee", "snp", "microcode")}
    hwid = next(e.value.value for e in v.leaf_x509().extensions
                if e.oid.dotted_string == "1.3.6.1.4.1.3704.1.4")
    assert len(hwid) == 8 and ev.attributes["chip_id"][:8] == hwid
    assert ev.attributes["launch_mit_vector"] is not None


def test_vlek_report() -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    ev = v.verify()
    assert ev.attributes["signing_key"] == "VLEK"
    assert ev.attributes["key_info"]["signing_key"] == "VLEK"
    assert ev.attributes["csp_id"] and "amazonaws" in ev.attributes["csp_id"]
    assert ev.attributes["chip_id"] == bytes(64)
    assert ev.attributes["vmpl"] == 1


def test_trustee_current_tcb_differs_and_reported_tcb_is_what_counts() -> None:
    v = load_snp("trustee-milan-v2")
    ev = v.verify()
    assert ev.tcb.current != ev.tcb.reported
    assert ev.tcb.reported == cert_spls(v.leaf_x509())
    assert ev.tcb.current["microcode"] != cert_spls(v.leaf_x509())["microcode"]


def test_attributes_decode_policy_and_platform_info() -> None:
    v = load_snp("trustee-azure-genoa-v3")
    rep = parse_report(v.report())
    ev = v.verify()
    pol = ev.attributes["policy"]
    assert pol["raw"] == rep.policy
    assert pol["abi_minor"] == rep.policy & 0xFF and pol["abi_major"] == rep.policy >> 8 & 0xFF
    assert pol["smt"] == bool(rep.policy & 1 << 16)
    assert pol["debug"] is ev.debug is bool(rep.policy & 1 << 19)
    assert ev.attributes["guest_svn"] == rep.guest_svn
    assert ev.attributes["platform_info"]["raw"] == rep.platform_info
    assert ev.signer == rep.id_key_digest and len(ev.measurement) == 48
    assert ev.to_dict()["tcb_status"] == "UpToDate"
