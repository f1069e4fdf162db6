"""Every real SGX/TDX vector gives its manifest's outcome at verify_at, and today's date gives
what the collateral validity windows imply."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography import x509

from enarx.attestation.dcap import parse_quote
from enarx.attestation.dcap.collateral import signed_json_value
from enarx.attestation.result import Platform, TcbStatus
from enarx.errors import ChainInvalid, MalformedEvidence, TcbMismatch
from tests.attestation.dcap_support import DCAP, load_dcap


@pytest.mark.parametrize(("kind", "name"), DCAP)
def test_vector_outcome_at_verify_at(kind: str, name: str) -> None:
    v = load_dcap(kind, name)
    exp = v.expected
    if exp["outcome"] == "invalid":
        with pytest.raises(TcbMismatch) as err:
            v.verify()
        assert err.value.check == "dcap.tcb.no_match"
        assert "No matching TCB level" in err.value.message
        return
    ev = v.verify()
    assert exp["outcome"] == "valid"
    assert ev.platform is Platform(kind)
    assert ev.version == v.manifest["evidence"]["version"]
    assert ev.tcb.status is TcbStatus(exp["tcb_status"])
    advisories = exp.get("advisory_ids", exp.get("advisory_ids_local_analysis", []))
    assert list(ev.tcb.advisory_ids) == advisories
    # evidence.report_data_hex is authoritative: zkdcap-sgx-v3's expected.report_data_hex
    # carries one stray "00" (65 bytes), a typo in the manifest, not in the quote.
    want_rd = v.manifest["evidence"]["report_data_hex"]
    assert ev.report_data.hex() == want_rd
    assert exp.get("report_data_hex", want_rd).startswith(want_rd)
    assert ev.attributes["fmspc"].hex() == v.manifest["evidence"]["fmspc"]
    assert ev.attributes["trailing_bytes"] == v.manifest["evidence"]["trailing_bytes_after_quote"]
    assert ev.debug is False
    assert ev.verified_at == v.verify_at
    assert ev.chain[0].subject.endswith("CN=Intel SGX PCK Certificate")
    assert v.manifest["evidence"]["pck_ca"] in ev.chain[1].subject
    assert len(ev.measurement) == (32 if kind == "sgx" else 48)
    if kind == "tdx":
        assert len(ev.rtmrs) == 4 and all(len(r) == 48 for r in ev.rtmrs)
        assert "td_attributes" in ev.attributes and "mr_seam" in ev.attributes
    else:
        assert len(ev.signer) == 32 and "isv_svn" in ev.attributes
    out = ev.to_dict()
    json.dumps(out)  # JSON-ready
    assert out["tcb_status"] == exp["tcb_status"] and out["report_data"] == want_rd


def test_tcb_info_v2_with_a_tdx_quote_is_rejected_with_a_named_check() -> None:
    """TCB Info v2 exists for SGX only (dcaprs-sgx-v3 goes through attestation/dcap/legacy.py);
    a TDX quote with it is refused before any signature work."""
    tdx = load_dcap("tdx", "dcapqvl-tdx-v4")
    v2 = load_dcap("sgx", "dcaprs-sgx-v3")
    with pytest.raises(MalformedEvidence) as err:
        tdx.verify(collateral=v2.collateral())
    assert err.value.check == "dcap.tcb_info.version"
    assert (err.value.expected, err.value.actual) == (3, 2)


def _earliest_expiry(v: object) -> dt.datetime:
    """Independent of the verifier: the first moment any collateral item or cert expires."""
    files = v.files  # type: ignore[attr-defined]
    ends = []
    for name, key in (("tcb_info.json", "tcbInfo"), ("qe_identity.json", "enclaveIdentity")):
        body, _ = signed_json_value(files[name], key, name.split(".")[0])
        ends.append(dt.datetime.fromisoformat(json.loads(body)["nextUpdate"].replace("Z", "+00:00")))
    for name in ("pck_crl.der", "root_ca_crl.der"):
        ends.append(x509.load_der_x509_crl(files[name]).next_update_utc)
    for name in ("tcb_info_issuer_chain.pem", "qe_identity_issuer_chain.pem"):
        ends += [c.not_valid_after_utc for c in x509.load_pem_x509_certificates(files[name])]
    return min(e for e in ends if e is not None)


@pytest.mark.parametrize(("kind", "name"), DCAP)
def test_vector_today_follows_validity_windows(kind: str, name: str) -> None:
    v = load_dcap(kind, name)
    now = dt.datetime.now(dt.UTC)
    if now <= _earliest_expiry(v):  # pragma: no cover - only before the collateral expires
        test_vector_outcome_at_verify_at(kind, name)
        return
    with pytest.raises(ChainInvalid) as err:
        v.verify(at=now)
    assert "expired" in err.value.check
    assert err.value.actual is not None and err.value.expected.startswith("before ")


def test_reissued_tcb_signing_cert_gotcha() -> None:
    """gotdxguest-tdx-v5 as shipped by its source carries the 2018 TCB signing certificate
    (expired 2025-05-21): rejected at verify_at, naming the expired chain; the re-issued
    2025 certificate (same key and serial) verifies. Both behaviours are the manifest's."""
    v = load_dcap("tdx", "gotdxguest-tdx-v5")
    old_chain = (v.folder / "tcb_info_issuer_chain.pem").read_bytes()
    with pytest.raises(ChainInvalid) as err:
        v.verify(collateral=v.collateral(tcb_info_issuer_chain=old_chain))
    assert err.value.check == "dcap.chain.expired"
    assert err.value.expected == "before 2025-05-21T10:50:10Z"
    assert v.verify().tcb.status is TcbStatus.UP_TO_DATE
    # Before the old certificate expired (and within the 2023 QE identity's window) the
    # source's own chain would have been fine; the 2026 TCB Info is simply not yet issued.


@pytest.mark.parametrize(("kind", "name"), DCAP)
def test_parser_reads_manifest_fields(kind: str, name: str) -> None:
    v = load_dcap(kind, name)
    q = parse_quote(v.quote)
    ev = v.manifest["evidence"]
    assert q.header.version == ev["version"]
    assert hex(q.header.tee_type) == ev["tee_type"]
    assert q.trailing == ev["trailing_bytes_after_quote"]
    assert len(q.raw) + q.trailing == len(v.quote)
    assert q.report.report_data.hex() == ev["report_data_hex"]
    assert q.sig.pck_chain_pem().count(b"BEGIN CERTIFICATE") == 3
