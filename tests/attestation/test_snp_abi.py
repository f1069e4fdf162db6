"""Report layout: fields of real reports, field validation, and fuzzing of the parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.attestation.snp import SnpReport, TcbVersion, parse_report, verify_report
from enarx.attestation.snp.abi import build_report
from enarx.errors import AttestationError, MalformedEvidence
from tests.attestation.snp_support import load_snp
from tests.vectors import MISSING, all_vectors

SNP = all_vectors("snp")


@pytest.mark.parametrize("name", SNP)
def test_real_reports_parse_to_their_manifest_fields(name: str) -> None:
    v = load_snp(name)
    for i, item in enumerate(v.evidence):
        raw = v.report(i)
        rep = parse_report(raw)
        assert isinstance(rep, SnpReport)
        assert rep.version == item["version"] == struct.unpack_from("<I", raw, 0)[0]
        assert rep.report_data.hex() == item["report_data_hex"]
        assert rep.signing_key_name == item["signing_key"]
        assert rep.signed_bytes == raw[:0x2A0]
        assert rep.product == (None if rep.version == 2 else v.manifest["product"])


def test_tcb_layouts_differ_between_milan_and_turin() -> None:
    raw = int.from_bytes(bytes([1, 2, 3, 4, 0, 0, 5, 6]), "little")
    milan = TcbVersion.decode(raw, turin=False)
    turin = TcbVersion.decode(raw, turin=True)
    assert (milan.bootloader, milan.tee, milan.snp, milan.microcode) == (1, 2, 5, 6)
    assert milan.fmc is None
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 6)
    for t in (milan, turin):
        turin_layout = t.fmc is not None
        again = TcbVersion.decode(TcbVersion.encode(t.to_dict(), turin=turin_layout),
                                  turin=turin_layout)
        assert again.to_dict() == t.to_dict()


def _valid(**fields: object) -> bytearray:
    base = {"version": 3, "policy": 0x30000, "signature_algo": 1}
    base.update(fields)
    return bytearray(build_report(base) + bytes(1184 - 0x2A0))


def test_built_report_round_trips() -> None:
    raw = _valid(report_data=bytes(range(64)), measurement=b"\x07" * 48, vmpl=2,
                 cpuid_family=0x19, cpuid_model=0x11, cpuid_stepping=1, guest_svn=9)
    rep = parse_report(bytes(raw))
    assert rep.report_data == bytes(range(64)) and rep.measurement == b"\x07" * 48
    assert (rep.vmpl, rep.guest_svn, rep.product) == (2, 9, "Genoa")


@pytest.mark.parametrize(("offset", "value", "check"), [
    (0x00, 1, "snp.version"),
    (0x00, 6, "snp.version"),
    (0x34, 2, "snp.signature_algo"),
    (0x30, 4, "snp.vmpl"),
    (0x48, 0x20, "snp.key_info"),
    (0x48, 2 << 2, "snp.key_info"),
    (0x4C, 1, "snp.reserved"),
    (0x190, 1, "snp.reserved"),
    (0x210, 1, "snp.reserved"),
])
def test_invalid_fields_are_named(offset: int, value: int, check: str) -> None:
    raw = _valid()
    raw[offset] = value
    with pytest.raises(MalformedEvidence) as err:
        parse_report(bytes(raw))
    assert err.value.check == check
    assert err.value.actual is not None


def test_policy_reserved_bit_must_be_set() -> None:
    with pytest.raises(MalformedEvidence) as err:
        parse_report(bytes(_valid(policy=0)))
    assert err.value.check == "snp.policy"


def test_v2_cpuid_bytes_are_reserved_but_v3_uses_them() -> None:
    raw = _valid(version=2)
    raw[0x188] = 0x19
    with pytest.raises(MalformedEvidence):
        parse_report(bytes(raw))
    raw[0:4] = (3).to_bytes(4, "little")
    assert parse_report(bytes(raw)).cpuid_family == 0x19


@pytest.mark.parametrize("bad", [b"", b"\0" * 1183, None, "report", 42])
def test_non_reports_are_malformed(bad: object) -> None:
    with pytest.raises(MalformedEvidence) as err:
        parse_report(bad)  # type: ignore[arg-type]
    assert err.value.check == "snp.size"


# --- property-based fuzzing ------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=2048), st.binary(min_size=1184, max_size=1184)))
def test_random_bytes_parse_or_raise_malformed(data: bytes) -> None:
    try:
        rep = parse_report(data)
    except MalformedEvidence:
        return
    assert len(rep.raw) == 1184


def _base_report() -> bytes:
    name = "ms-milan-v3" if "ms-milan-v3" in SNP else MISSING
    return load_snp(name).report()


mutations = st.lists(
    st.tuples(st.integers(0, 1183), st.integers(0, 255)), min_size=1, max_size=8
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations)
def test_mutated_real_reports_parse_or_raise_malformed(changes: list[tuple[int, int]]) -> None:
    raw = bytearray(_base_report())
    for off, val in changes:
        raw[off] = val
    try:
        parse_report(bytes(raw))
    except MalformedEvidence as e:
        assert e.check.startswith("snp.")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations, st.integers(-3, 3))
def test_mutated_reports_never_verify_and_fail_typed(
    changes: list[tuple[int, int]], resize: int,
) -> None:
    v = load_snp("ms-milan-v3" if "ms-milan-v3" in SNP else MISSING)
    good = v.report()
    raw = bytearray(good)
    for off, val in changes:
        raw[off] = val
    raw = raw[: len(raw) + resize] if resize < 0 else raw + bytes(resize)
    try:
        verify_report(bytes(raw), cert=v.leaf, chain=v.chain, at=v.verify_at)
    except AttestationError as e:
        assert e.check.startswith("snp.")
        return
    assert bytes(raw) == good  # only an unchanged report may verify
