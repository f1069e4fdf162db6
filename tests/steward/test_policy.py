"""steward.toml (steward/policy.py): loading, and appraisal of real verified evidence
(upstream's Milan CSR, sim reports, the DCAP vectors) with every failure named."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.attestation.result import VerifiedEvidence
from enarx.attestation.snp import verify_report
from enarx.errors import ConfigError, PolicyViolation
from enarx.platform.sim import SimBackend
from enarx.steward.policy import StewardPolicy, appraise
from enarx.steward.upstream import parse_upstream_csr, verify_upstream
from tests.attestation.dcap_support import load_dcap
from tests.attestation.snp_support import sim_state

UPSTREAM = Path(__file__).parent.parent / "data" / "steward" / "upstream"
WL = "sha384:" + "ab" * 48
WL2 = "sha384:" + "cd" * 48


def P(text: str = "") -> StewardPolicy:
    return StewardPolicy.loads(text)


@pytest.fixture(scope="module")
def milan() -> VerifiedEvidence:
    csr = parse_upstream_csr((UPSTREAM / "milan.signed.crl.csr").read_bytes())
    ev = verify_upstream(csr, at=dt.datetime(2022, 12, 23, 12, tzinfo=dt.UTC))
    assert ev is not None
    return ev


def _sim(tmp_path_factory: pytest.TempPathFactory, **kw: Any) -> VerifiedEvidence:
    sim = SimBackend(sim_state(tmp_path_factory), **kw)
    e = sim.evidence(bytes(64))
    return verify_report(e.blob, cert=e.certs[0], chain=e.certs[1:],
                         trust_roots=(sim.ark_pem(),))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> VerifiedEvidence:
    return _sim(tmp_path_factory)


def _snp(policy: StewardPolicy, ev: VerifiedEvidence | None, kind: str = "snp",
         vendor: bool = True, workload: str | None = None, bound: bool = True) -> Any:
    return appraise(policy, ev, kind=kind, vendor_root=vendor,  # type: ignore[arg-type]
                    workload=workload, workload_bound=bound)


def _rules(appraisal: Any) -> list[str]:
    return [f.rule for f in appraisal.failed]


# --- loading -------------------------------------------------------------------------------


def test_upstream_policy_file_loads_with_its_meaning() -> None:
    pol = P((UPSTREAM / "steward.toml").read_text())
    assert pol.snp is not None and pol.sgx is not None
    assert pol.snp.abi == ">=1.51" and pol.snp.policy_flags == ["SMT"]
    assert pol.sgx.features == ["Debug", "ProvisioningKey", "EInitKey", "KSS"]
    assert pol.allow == [] and pol.workload.allow is None and pol.validity_seconds == 86400


def test_policy_id_is_stable_and_content_bound() -> None:
    a = P('allow = ["sim"]\ncert_validity = "1h"\n')
    b = P('cert_validity = "1h"\nallow = ["sim"]\n')
    assert a.policy_id == b.policy_id and a.policy_id.startswith("sha256:")
    assert len(a.policy_id) == 7 + 64
    assert P('allow = ["nil"]').policy_id != a.policy_id


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[snp]\nsigner = ["' + "ab" * 32 + '"]', "snp.signer", "48 bytes"),
        ('[sgx]\nhash = ["zz"]', "sgx.hash", "not hex"),
        ("[snp]\nabi = \">=1.51\"", "snp", "at least one of"),
        ('[snp]\nhash = ["' + "ab" * 48 + '"]\nabi = "newest"', "snp.abi", "requirement"),
        ('allow = ["everything"]', "allow.0", "sim"),
        ('cert_validity = "1y"', "cert_validity", "duration"),
        ('cert_validity = "400d"', "cert_validity", "397"),
        ('[workload]\nallow = ["sha256:00"]', "workload.allow", "workload identity"),
        ('typo = 1', "typo", "Extra inputs"),
        ('[resources]\n"a/b" = ["*"]', "resources", "repo/type/tag"),
        ('[tdx]\nrtmr0 = ["00"]', "tdx.rtmr0", "48 bytes"),
    ],
)
def test_bad_policies_name_the_key(text: str, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        StewardPolicy.loads(text, source="steward.toml")
    assert err.value.key == key and needle in err.value.message
    assert err.value.hint and err.value.exit_code == 2
    assert err.value.message.startswith("steward.toml: ")


def test_not_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        StewardPolicy.loads("allow = [")


def test_sans_resources_and_validity() -> None:
    pol = P('sans = ["*.keep.example", "127.0.0.1"]\ncert_validity = "30m"\n'
            f'[resources]\n"db/key/*" = ["{WL}"]\n"pub/cfg/x" = ["*"]\n')
    assert pol.san_allowed("a.keep.example") and pol.san_allowed("A.KEEP.example")
    assert not pol.san_allowed("keep.example") and not pol.san_allowed("evil.com")
    assert pol.san_allowed("127.0.0.1") and not pol.san_allowed("10.0.0.1")
    assert P().san_allowed("anything.example")
    assert pol.may_receive("db/key/1", WL) and not pol.may_receive("db/key/1", WL2)
    assert not pol.may_receive("db/key/1", None) and pol.may_receive("pub/cfg/x", None)
    assert not pol.may_receive("other/a/b", WL)
    assert pol.validity_seconds == 1800


# --- insecure kinds are refused unless allowed ----------------------------------------------


@pytest.mark.parametrize("kind", ["nil", "kvm"])
def test_nil_and_kvm_need_allow(kind: str) -> None:
    refused = _snp(P(), None, kind, vendor=False)
    assert _rules(refused) == [f"allow.{kind}"] and refused.status == "contraindicated"
    assert refused.failed[0].expected == f'"{kind}" in allow'
    allowed = _snp(P(f'allow = ["{kind}"]'), None, kind, vendor=False)
    assert allowed.ok and allowed.vector["runtime-opaque"] == 96
    assert allowed.status == "contraindicated"  # honest: the host sees everything
    assert allowed.notes


def test_sim_needs_allow_and_says_so(sim: VerifiedEvidence) -> None:
    assert _rules(_snp(P(), sim, "sim", vendor=False)) == ["allow.sim"]
    # Evidence from a non-vendor root is "sim" whatever the caller labels it.
    assert _rules(_snp(P(), sim, "snp", vendor=False)) == ["allow.sim"]
    ok = _snp(P('allow = ["sim"]'), sim, "sim", vendor=False)
    assert ok.ok and ok.vector["hardware"] == 97 and ok.vector["runtime-opaque"] == 96


def test_debug_guest_needs_allow(tmp_path_factory: pytest.TempPathFactory) -> None:
    dbg = _sim(tmp_path_factory, policy=0x30000 | 1 << 19)
    assert dbg.debug
    assert _rules(_snp(P('allow = ["sim"]'), dbg, "sim", vendor=False)) == ["debug"]
    assert _snp(P('allow = ["sim", "debug"]'), dbg, "sim", vendor=False).ok
    flags = P('allow = ["sim", "debug"]\n[snp]\nhash_blacklist = ["' + "00" * 48 +
              '"]\npolicy_flags = ["SMT"]')
    got = _snp(flags, dbg, "sim", vendor=False)
    assert _rules(got) == ["snp.policy_flags"] and got.failed[0].actual == ["Debug"]


def test_vmpl_and_migration_agent_are_refused(tmp_path_factory: pytest.TempPathFactory) -> None:
    pol = P('allow = ["sim"]')
    assert _rules(_snp(pol, _sim(tmp_path_factory, vmpl=2), "sim", False)) == ["snp.vmpl"]
    ma = _sim(tmp_path_factory, policy=0x30000 | 1 << 18)
    assert _rules(_snp(pol, ma, "sim", False)) == ["snp.migrate_ma"]


# --- upstream [snp] rules on real Milan evidence --------------------------------------------


def test_every_failed_snp_rule_is_listed_with_expected_and_actual(milan: VerifiedEvidence) -> None:
    other = "ab" * 48
    pol = P(f'''[snp]
signer = ["{other}"]
id_key_digest = ["{other}"]
id_key_digest_blacklist = ["{milan.signer.hex()}"]
hash_blacklist = ["{milan.measurement.hex()}"]
abi = ">=1.52"
platform_info_flags = "TSME"
min_tcb = {{snp = 99}}
''')
    got = _snp(pol, milan)
    assert _rules(got) == ["snp.signer", "snp.hash_blacklist", "snp.id_key_digest",
                           "snp.id_key_digest_blacklist", "snp.abi",
                           "snp.platform_info_flags", "snp.min_tcb.snp"]
    by = {f.rule: f for f in got.failed}
    assert by["snp.abi"].actual == "1.51" and by["snp.abi"].expected == ">=1.52"
    assert by["snp.signer"].actual == milan.author_key_digest
    assert by["snp.platform_info_flags"].actual == ["SME"]
    assert got.vector["executables"] == 96 and got.vector["configuration"] == 96
    err = got.error()
    assert isinstance(err, PolicyViolation) and err.exit_code == 4
    assert [v.check for v in err.violations] == _rules(got)
    json.dumps(got.to_dict())  # bytes rendered as hex


def test_unpinned_vendor_snp_is_a_warning_pinned_is_affirming(milan: VerifiedEvidence) -> None:
    unpinned = _snp(P(), milan)
    assert unpinned.ok and unpinned.status == "warning" and unpinned.vector["executables"] == 33
    pinned = _snp(P(f'[snp]\nhash = ["{milan.measurement.hex()}"]'), milan)
    assert pinned.ok and pinned.status == "affirming"
    assert pinned.vector["hardware"] == 2 and pinned.vector["runtime-opaque"] == 2


def test_workload_rules(milan: VerifiedEvidence) -> None:
    pol = P(f'[workload]\nallow = ["{WL}"]')
    good = _snp(pol, milan, workload=WL)
    assert good.ok and good.vector["file-system"] == 2
    bad = _snp(pol, milan, workload=WL2)
    assert _rules(bad) == ["workload.allow"]
    assert bad.failed[0].expected == [WL] and bad.failed[0].actual == WL2
    assert _rules(_snp(pol, milan, workload=None, bound=False)) == ["workload.bound"]
    assert _snp(P(), milan, workload=None, bound=False).ok


# --- SGX and TDX ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sgx() -> VerifiedEvidence:
    return load_dcap("sgx", "zkdcap-sgx-v3").verify()  # SWHardeningNeeded, 2 advisories


def test_sgx_tcb_needs_upstream_to_date_or_allowed_advisories(sgx: VerifiedEvidence) -> None:
    def run(text: str) -> Any:
        return appraise(P(text), sgx, kind="sgx", vendor_root=True, workload=None,
                        workload_bound=True)

    assert _rules(run("")) == ["sgx.tcb_status", "sgx.allowed_advisories"]
    adv = json.dumps(list(sgx.tcb.advisory_ids))
    ok = run(f'[sgx]\nsigner = ["{sgx.signer.hex()}"]\nallowed_advisories = {adv}')
    assert ok.ok and ok.status == "warning" and ok.vector["configuration"] == 32
    strict = run(f'[sgx]\nhash = ["{"00" * 32}"]\nenclave_security_version = 65535\n'
                 f'enclave_product_id = 7\nfeatures = []\nmisc_select = []\n'
                 f'allowed_advisories = {adv}')
    assert "sgx.hash" in _rules(strict) and "sgx.enclave_security_version" in _rules(strict)
    assert "sgx.enclave_product_id" in _rules(strict)
    assert "sgx.features" not in _rules(strict)  # INIT | MODE64BIT only
    # The same enclave with the provisioning key and EXINFO (appraisal reads these fields).
    pk = dataclasses.replace(sgx, attributes={**sgx.attributes, "flags": 0x15,
                                              "misc_select": 1})
    base = f'[sgx]\nsigner = ["{sgx.signer.hex()}"]\nallowed_advisories = {adv}\n'
    tight = appraise(P(base + "features = []\nmisc_select = []"), pk, kind="sgx",
                     vendor_root=True, workload=None, workload_bound=True)
    assert _rules(tight) == ["sgx.features", "sgx.misc_select"]
    assert tight.failed[0].actual == ["ProvisioningKey"]
    loose = appraise(P(base + 'features = ["ProvisioningKey"]\nmisc_select = ["EXINFO"]'), pk,
                     kind="sgx", vendor_root=True, workload=None, workload_bound=True)
    assert loose.ok
    statuses = run(f'[sgx]\nsigner = ["{sgx.signer.hex()}"]\ntcb_statuses = ["UpToDate"]\n'
                   f'allowed_advisories = {adv}')
    assert _rules(statuses) == ["sgx.tcb_status"]


def test_tdx_pins_mrtd_and_rtmrs() -> None:
    tdx = load_dcap("tdx", "dcapqvl-tdx-v4").verify()  # UpToDate

    def run(text: str) -> Any:
        return appraise(P(text), tdx, kind="tdx", vendor_root=True, workload=None,
                        workload_bound=True)

    assert run("").ok and run("").status == "warning"
    rt = [r.hex() for r in tdx.rtmrs]
    pinned = run(f'[tdx]\nhash = ["{tdx.measurement.hex()}"]\nrtmr0 = ["{rt[0]}"]\n'
                 f'rtmr3 = ["{rt[3]}"]')
    assert pinned.ok and pinned.status == "affirming"
    wrong = run(f'[tdx]\nhash = ["{tdx.measurement.hex()}"]\nrtmr1 = ["{"00" * 48}"]')
    assert _rules(wrong) == ["tdx.rtmr1"]


# --- fuzzing --------------------------------------------------------------------------------

_scalar = st.none() | st.booleans() | st.integers() | st.text(max_size=12)
_value = st.recursive(_scalar, lambda i: st.lists(i, max_size=3) | st.dictionaries(
    st.sampled_from(["hash", "signer", "abi", "allow", "features", "rtmr0", "min_tcb"]),
    i, max_size=3), max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["allow", "trust_roots", "cert_validity", "sans",
                                        "workload", "resources", "snp", "sgx", "tdx", "x"]),
                       _value, max_size=4))
def test_fuzz_policy_documents_raise_only_config_errors(doc: dict[str, Any]) -> None:
    with contextlib.suppress(ConfigError):
        StewardPolicy.load(doc)


def test_evidence_of_another_platform_than_the_kind_is_refused(milan: VerifiedEvidence) -> None:
    got = appraise(P('[sgx]\nsigner = ["' + "00" * 32 + '"]'), milan, kind="sgx",
                   vendor_root=True, workload=None, workload_bound=True)
    assert _rules(got) == ["platform"]  # and no SGX rule reads SNP fields
    assert got.failed[0].expected == "sgx" and got.failed[0].actual == "snp"
    assert _rules(_snp(P('allow = ["nil"]'), milan, "nil", vendor=True)) == ["platform"]


def test_host_data_must_bind_the_claimed_workload(tmp_path_factory: pytest.TempPathFactory,
                                                  sim: VerifiedEvidence) -> None:
    from enarx.workload import launch_binding

    bound = _sim(tmp_path_factory, host_data=launch_binding(WL, 32))
    pol = P('allow = ["sim"]')
    assert _snp(pol, bound, kind="sim", vendor=False, workload=WL).ok
    wrong = _snp(pol, bound, kind="sim", vendor=False, workload=WL2)
    assert _rules(wrong) == ["snp.host_data"]
    assert wrong.failed[0].to_dict()["expected"] == launch_binding(WL2, 32).hex()
    assert wrong.failed[0].to_dict()["actual"] == launch_binding(WL, 32).hex()
    assert wrong.vector["file-system"] == 96
    # a guest that claims no workload (a Trustee guest: HOST_DATA = its init-data digest,
    # an upstream CSR) has nothing to bind to: passes by default, refused when required
    assert _snp(pol, bound, kind="sim", vendor=False, bound=False).ok
    # all-zero HOST_DATA (a Keep launched without one) passes by default ("if-set") ...
    assert _snp(pol, sim, kind="sim", vendor=False, workload=WL).ok
    # ... but not when the policy requires the binding; "ignore" skips the check
    pinned = '[snp]\nhash_blacklist = ["' + "00" * 48 + '"]\n'
    need = P('allow = ["sim"]\n' + pinned + 'host_data = "workload"')
    assert _rules(_snp(need, sim, kind="sim", vendor=False, workload=WL)) == ["snp.host_data"]
    assert _snp(need, bound, kind="sim", vendor=False, workload=WL).ok
    assert _rules(_snp(need, bound, kind="sim", vendor=False, bound=False)) == [
        "snp.host_data"]
    skip = P('allow = ["sim"]\n' + pinned + 'host_data = "ignore"')
    assert _snp(skip, bound, kind="sim", vendor=False, workload=WL2).ok
    # the default adds nothing to the policy id; a chosen mode is part of it
    assert P(pinned).policy_id == P(pinned + 'host_data = "if-set"').policy_id
    assert P(pinned).policy_id != P(pinned + 'host_data = "workload"').policy_id


def test_tdx_mrconfigid_must_bind_the_claimed_workload() -> None:
    from enarx.workload import launch_binding

    tdx = load_dcap("tdx", "dcapqvl-tdx-v4").verify()
    assert not any(tdx.attributes["mr_config_id"])  # this quote's TD was launched without one
    bound = dataclasses.replace(tdx, attributes={**tdx.attributes,
                                                 "mr_config_id": launch_binding(WL, 48)})

    def run(text: str, ev: VerifiedEvidence) -> Any:
        return appraise(P(text), ev, kind="tdx", vendor_root=True, workload=WL,
                        workload_bound=True)

    assert run("", tdx).ok and run("", bound).ok
    assert _rules(run('[tdx]\nmrconfigid = "workload"', tdx)) == ["tdx.mrconfigid"]
    assert run('[tdx]\nmrconfigid = "workload"', bound).ok
    other = dataclasses.replace(tdx, attributes={**tdx.attributes,
                                                 "mr_config_id": launch_binding(WL2, 48)})
    assert _rules(run("", other)) == ["tdx.mrconfigid"]
