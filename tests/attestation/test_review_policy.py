"""Adversarial review, appraisal: an empty allow-list allows nothing (it never means "any")."""

from __future__ import annotations

import pytest
from dcap_support import load_dcap

from enarx.attestation.policy import Policy, violations
from enarx.attestation.result import VerifiedEvidence

from snp_support import load_snp


@pytest.fixture(scope="module")
def snp() -> VerifiedEvidence:
    return load_snp("ms-milan-v3").verify()


@pytest.fixture(scope="module")
def sgx() -> VerifiedEvidence:
    return load_dcap("sgx", "zkdcap-sgx-v3").verify()


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
