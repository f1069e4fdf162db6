"""Appraisal policy over real verified evidence (DCAP vectors; SNP when its verifier is here)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from enarx.attestation.policy import Policy, appraise, violations
from enarx.attestation.result import TcbStatus, VerifiedEvidence
from enarx.errors import ConfigError, PolicyViolation
from tests.attestation.dcap_support import load_dcap
from tests.attestation.snp_support import load_snp


@pytest.fixture(scope="module")
def sgx() -> VerifiedEvidence:
    return load_dcap("sgx", "zkdcap-sgx-v3").verify()  # SWHardeningNeeded, 2 advisories


@pytest.fixture(scope="module")
def tdx() -> VerifiedEvidence:
    return load_dcap("tdx", "dcapqvl-tdx-v4").verify()  # UpToDate


@pytest.fixture(scope="module")
def snp() -> VerifiedEvidence:
    return load_snp("ms-milan-v3").verify()


def _checks(ev: VerifiedEvidence, policy: Policy) -> list[str]:
    return [v.check for v in violations(ev, policy)]


def test_default_policy_accepts_up_to_date_tdx(tdx: VerifiedEvidence) -> None:
    appraise(tdx, Policy())


def test_default_policy_rejects_sw_hardening_and_unaccepted_advisories(
    sgx: VerifiedEvidence,
) -> None:
    with pytest.raises(PolicyViolation) as err:
        appraise(sgx, Policy())
    assert [v.check for v in err.value.violations] == ["policy.tcb_status", "policy.advisory_ids"]
    adv = err.value.violations[1]
    assert adv.actual == ["INTEL-SA-00334", "INTEL-SA-00615"]
    assert err.value.to_dict()["violations"][0]["actual"] == "SWHardeningNeeded"


def test_owner_can_accept_status_and_advisories(sgx: VerifiedEvidence) -> None:
    appraise(sgx, Policy.load({
        "tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
        "advisory_ids": ["INTEL-SA-00334", "INTEL-SA-00615"],
        "measurements": [sgx.measurement.hex().upper()],
        "signers": ["0x" + sgx.signer.hex()],
        "platforms": ["sgx"],
        "report_data": sgx.report_data.hex(),
        "sgx": {"min_isv_svn": sgx.attributes["isv_svn"],
                "isv_prod_ids": [sgx.attributes["isv_prod_id"]]},
        "min_tcb": {"pce_svn": sgx.tcb.reported["pce_svn"]},
    }))


def test_every_failed_rule_is_listed(tdx: VerifiedEvidence) -> None:
    policy = Policy.load({
        "platforms": ["snp", "sgx"],
        "products": ["Milan"],
        "measurements": ["00" * 48],
        "signers": ["11" * 32],
        "min_tcb": {"tdx_comp01": 99, "no_such_component": 1},
        "tcb_statuses": ["OutOfDate"],
        "report_data": "00" * 64,
    })
    assert _checks(tdx, policy) == [
        "policy.platform", "policy.product", "policy.measurement", "policy.signer",
        "policy.min_tcb.no_such_component", "policy.min_tcb.tdx_comp01",
        "policy.tcb_status", "policy.report_data",
    ]
    with pytest.raises(PolicyViolation) as err:
        appraise(tdx, policy)
    assert len(err.value.violations) == 8
    assert err.value.check == "policy.platform"
    tcb = next(v for v in err.value.violations if v.check == "policy.min_tcb.tdx_comp01")
    assert (tcb.expected, tcb.actual) == (">= 99", tdx.tcb.reported["tdx_comp01"])


def test_report_data_must_match_exactly(tdx: VerifiedEvidence) -> None:
    assert _checks(tdx, Policy(report_data=tdx.report_data.hex())) == []
    flipped = bytes([tdx.report_data[0] ^ 1]) + tdx.report_data[1:]
    assert _checks(tdx, Policy(report_data=flipped.hex())) == ["policy.report_data"]
    assert _checks(tdx, Policy(report_data=tdx.report_data[:32].hex())) == ["policy.report_data"]


def test_debug_is_forbidden_by_default(tdx: VerifiedEvidence) -> None:
    # dcap-qvl refuses debug quotes itself, so build the debug variant of a real result.
    debug = dataclasses.replace(tdx, debug=True)
    assert _checks(debug, Policy()) == ["policy.debug"]
    assert _checks(debug, Policy(allow_debug=True)) == []


def test_sgx_rules(sgx: VerifiedEvidence) -> None:
    base = {"tcb_statuses": ["SWHardeningNeeded"], "advisory_ids": list(sgx.tcb.advisory_ids)}
    too_high = Policy.load({**base, "sgx": {"min_isv_svn": sgx.attributes["isv_svn"] + 1,
                                            "isv_prod_ids": [sgx.attributes["isv_prod_id"] + 1]}})
    assert _checks(sgx, too_high) == ["policy.sgx.min_isv_svn", "policy.sgx.isv_prod_id"]


def _snp_like(tdx: VerifiedEvidence, **attrs: object) -> VerifiedEvidence:
    from enarx.attestation.result import Platform

    return dataclasses.replace(tdx, platform=Platform.SNP, attributes=dict(attrs))


def test_snp_rules(tdx: VerifiedEvidence) -> None:
    ok = _snp_like(tdx, vmpl=0, policy={"smt": True, "migrate_ma": False,
                                        "abi_major": 1, "abi_minor": 55})
    assert _checks(ok, Policy.load({"snp": {"vmpls": [0], "min_abi": "1.51"}})) == []
    bad = _snp_like(tdx, vmpl=2, policy={"smt": True, "migrate_ma": True,
                                         "abi_major": 0, "abi_minor": 31})
    assert _checks(bad, Policy.load({"snp": {"vmpls": [0, 1], "allow_smt": False,
                                             "min_abi": "1.51"}})) == [
        "policy.snp.vmpl", "policy.snp.smt", "policy.snp.migration_agent", "policy.snp.min_abi",
    ]


def test_snp_real_vector_if_available() -> None:
    ev = load_snp("ms-milan-v3").verify()
    appraise(ev, Policy.load({"platforms": ["snp"], "measurements": [ev.measurement.hex()],
                              "snp": {"vmpls": [ev.attributes["vmpl"]], "min_abi": "0.0"}}))
    with pytest.raises(PolicyViolation) as err:
        appraise(ev, Policy.load({"snp": {"vmpls": [ev.attributes["vmpl"] + 1]}}))
    assert err.value.check == "policy.snp.vmpl"


@pytest.mark.parametrize(("data", "key"), [
    ({"measurements": ["xyz"]}, "measurements"),
    ({"tcb_statuses": ["Fine"]}, "tcb_statuses.0"),
    ({"snp": {"min_abi": "one"}}, "snp.min_abi"),
    ({"unknown_rule": 1}, "unknown_rule"),
    ({"sgx": {"min_isv_svn": -1}}, "sgx.min_isv_svn"),
])
def test_bad_policy_names_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Policy.load(data, source="policy.toml")
    assert err.value.key == key and "policy.toml" in err.value.message


def test_policy_from_toml_and_json_text() -> None:
    toml = 'tcb_statuses = ["UpToDate", "OutOfDate"]\nallow_debug = false\n[snp]\nvmpls = [0]\n'
    p = Policy.loads(toml)
    assert p.tcb_statuses == [TcbStatus.UP_TO_DATE, TcbStatus.OUT_OF_DATE] and p.snp.vmpls == [0]
    assert Policy.loads(json.dumps({"advisory_ids": ["A"]}), fmt="json").advisory_ids == ["A"]
    with pytest.raises(ConfigError):
        Policy.loads("tcb_statuses = [", source="p.toml")


# --- an empty allow-list allows nothing (it never means "any") ------------------------------


def _open_policy(ev: VerifiedEvidence, **extra: object) -> dict[str, object]:
    """A policy that accepts ``ev`` on every rule, plus ``extra``."""
    base: dict[str, object] = {
        "tcb_statuses": [ev.tcb.status.value],
        "advisory_ids": list(ev.tcb.advisory_ids),
        "snp": {"allow_migration_agent": True},
    }
    return {**base, **extra}


@pytest.mark.parametrize(("key", "rule"), [
    ("platforms", "policy.platform"),
    ("products", "policy.product"),
    ("measurements", "policy.measurement"),
    ("signers", "policy.signer"),
    ("author_keys", "policy.author_key"),
    ("tcb_statuses", "policy.tcb_status"),
])
def test_empty_allow_list_allows_nothing(snp: VerifiedEvidence, key: str, rule: str) -> None:
    assert violations(snp, Policy.load(_open_policy(snp))) == []
    found = violations(snp, Policy.load(_open_policy(snp, **{key: []})))
    assert [v.check for v in found] == [rule]


def test_empty_snp_vmpl_and_sgx_product_lists_allow_nothing(
    snp: VerifiedEvidence, sgx: VerifiedEvidence,
) -> None:
    open_snp = _open_policy(snp)
    found = violations(snp, Policy.load({**open_snp, "snp": {"vmpls": [],
                                                               "allow_migration_agent": True}}))
    assert [v.check for v in found] == ["policy.snp.vmpl"]
    found = violations(sgx, Policy.load({**_open_policy(sgx), "sgx": {"isv_prod_ids": []}}))
    assert [v.check for v in found] == ["policy.sgx.isv_prod_id"]


def test_empty_advisory_list_accepts_no_advisory(sgx: VerifiedEvidence) -> None:
    assert sgx.tcb.advisory_ids
    found = violations(sgx, Policy.load({**_open_policy(sgx), "advisory_ids": []}))
    assert [v.check for v in found] == ["policy.advisory_ids"]


def test_defaults_are_the_secure_ones() -> None:
    p = Policy()
    assert p.allow_debug is False
    assert [s.value for s in p.tcb_statuses] == ["UpToDate"]
    assert p.advisory_ids == []
    assert p.snp.allow_migration_agent is False
