"""Trustee's JSON form of SEV-SNP evidence: the sev crate's serde of the attestation report,
converted to the binary report byte for byte (every vendored real report, both ways), and a
real Trustee attester's evidence verified by our SNP verifier after conversion."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.attestation.snp.verify import SnpVerifier
from enarx.errors import ProtocolError
from enarx.steward import kbs, trustee_snp

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors" / "snp"
TRUSTEE_EVIDENCE = Path(__file__).with_name("data") / "trustee-e2e-snp-evidence.json"
REPORTS = sorted(VECTORS.glob("*/report*.bin"))


def test_there_are_real_reports_of_every_version_and_generation() -> None:
    versions = {p.read_bytes()[0] for p in REPORTS}
    assert {2, 3, 5} <= versions and len(REPORTS) >= 9


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_reports_round_trip_byte_exact(path: Path) -> None:
    raw = path.read_bytes()
    as_json = json.loads(json.dumps(trustee_snp.report_to_json(raw)))  # through JSON text
    assert trustee_snp.report_from_json(as_json) == raw
    assert trustee_snp.report_to_json(trustee_snp.report_from_json(as_json)) == as_json


def test_turin_and_milan_tcb_layouts() -> None:
    turin = trustee_snp.report_to_json((VECTORS / "ms-turin-v5" / "report.bin").read_bytes())
    milan = trustee_snp.report_to_json((VECTORS / "ms-milan-v3" / "report.bin").read_bytes())
    assert turin["reported_tcb"]["fmc"] is not None and turin["launch_mit_vector"] is not None
    assert milan["reported_tcb"]["fmc"] is None and milan["launch_mit_vector"] is None
    v2 = trustee_snp.report_to_json((VECTORS / "trustee-milan-v2" / "report.bin").read_bytes())
    assert v2["cpuid_fam_id"] is None


def test_trustee_attesters_real_evidence_converts_and_verifies() -> None:
    doc = json.loads(TRUSTEE_EVIDENCE.read_bytes())
    report = trustee_snp.report_from_json(doc["attestation_report"])
    assert len(report) == 1184
    # The conversion reproduces exactly the JSON the attester sent.
    back = trustee_snp.report_to_json(report)
    assert {k: v for k, v in back.items() if v is not None} == doc["attestation_report"]
    ev = kbs.parse_snp_evidence({"primary_evidence": doc})
    assert ev.report == report and len(ev.cert_chain) == 1
    verified = SnpVerifier([]).verify(ev.report, cert=ev.cert_chain[0], chain=())
    assert verified.report_data == bytes(doc["attestation_report"]["report_data"])
    assert verified.measurement == bytes(doc["attestation_report"]["measurement"])


def test_a_changed_json_field_breaks_the_signature() -> None:
    doc = json.loads(TRUSTEE_EVIDENCE.read_bytes())
    doc["attestation_report"]["guest_svn"] = 1
    ev = kbs.parse_snp_evidence({"primary_evidence": doc})
    from enarx.errors import AttestationError

    with pytest.raises(AttestationError):
        SnpVerifier([]).verify(ev.report, cert=ev.cert_chain[0], chain=())


def test_cert_chain_entries_are_ordered_for_the_verifier() -> None:
    d = VECTORS / "ms-genoa-v3"
    pem = [ssl.PEM_cert_to_DER_cert((d / f"{n}.pem").read_text()) for n in ("vcek", "ask", "ark")]
    entries = trustee_snp.chain_to_json([("ARK", pem[2]), ("CRL", b"\x30\x00"),
                                         ("ASK", pem[1]), ("VCEK", pem[0])])
    primary = {"attestation_report": trustee_snp.report_to_json((d / "report.bin").read_bytes()),
               "cert_chain": entries}
    ev = kbs.parse_snp_evidence({"primary_evidence": primary})
    assert list(ev.cert_chain) == pem
    SnpVerifier([]).verify(ev.report, cert=ev.cert_chain[0], chain=ev.cert_chain[1:],
                           at=_verify_at(d))
    # the whole primary_evidence as a JSON string is accepted too
    assert kbs.parse_snp_evidence({"primary_evidence": json.dumps(primary)}) == ev


def _verify_at(d: Path) -> Any:
    import datetime as dt

    at = json.loads((d / "manifest.json").read_text())["verify_at"]
    return dt.datetime.fromisoformat(at.replace("Z", "+00:00")).replace(tzinfo=dt.UTC)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(TRUSTEE_EVIDENCE.read_bytes())["attestation_report"]
    return doc


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.pop("measurement"), "measurement"),
        (lambda d: d.update(vmpl=-1), "vmpl"),
        (lambda d: d.update(policy=1 << 64), "policy"),
        (lambda d: d.update(report_data=[0] * 63), "report_data"),
        (lambda d: d.update(chip_id=[256] * 64), "chip_id"),
        (lambda d: d.update(version=1), "version"),
        (lambda d: d.update(cpuid_fam_id=0x17), "CPUID"),
        (lambda d: d["reported_tcb"].update(fmc=1), "fmc"),
        (lambda d: d["reported_tcb"].pop("snp"), "snp"),
        (lambda d: d.update(launch_mit_vector=1), "version 5"),
        (lambda d: d.update(signature={"r": [0] * 72}), "signature"),
        (lambda d: d.update(current="1.55.40"), "current"),
        (lambda d: d.update(version=True), "version"),
    ],
)
def test_malformed_json_reports_are_typed(change: Any, needle: str) -> None:
    doc = _doc()
    change(doc)
    with pytest.raises(ProtocolError) as err:
        trustee_snp.report_from_json(doc)
    assert needle in err.value.message and err.value.kind == "InvalidEvidence"
    assert err.value.hint


@pytest.mark.parametrize("chain", [{"VCEK": []}, [{"data": [1]}], [{"cert_type": "VCEK"}],
                                   [{"cert_type": "VCEK", "data": [1]}] * 2,
                                   [{"cert_type": "VCEK", "data": [1]},
                                    {"cert_type": "VLEK", "data": [1]}]])
def test_malformed_cert_chains_are_typed(chain: Any) -> None:
    with pytest.raises(ProtocolError):
        trustee_snp.chain_from_json(chain)


_json = st.recursive(st.none() | st.booleans() | st.integers(-2, 300) | st.text(max_size=4),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                         c, max_size=4),
                     max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(sorted(_doc())), value=_json)
def test_fuzz_fields_raise_only_protocol_errors(key: str, value: Any) -> None:
    doc = _doc()
    doc[key] = value
    try:
        out = trustee_snp.report_from_json(doc)
    except ProtocolError:
        return
    assert len(out) == 1184
