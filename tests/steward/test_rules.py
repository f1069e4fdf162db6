"""Per-platform sections and rules (steward/rules.py), checked directly; the appraisal as a
whole is in test_policy.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from enarx.steward.rules import Checks, SnpSection, abi_matches, check_snp, show
from enarx.steward.upstream import parse_upstream_csr, verify_upstream

MILAN = Path(__file__).parent.parent / "data" / "steward" / "upstream" / "milan.signed.crl.csr"


@pytest.mark.parametrize(
    ("req", "ok", "bad"),
    [(">=1.51", [(1, 51), (1, 52), (2, 0)], [(1, 50), (0, 99)]),
     ("1.51", [(1, 51), (1, 99)], [(2, 0), (1, 50)]),
     ("=1.51", [(1, 51)], [(1, 52)]),
     ("~1.51", [(1, 51)], [(1, 52)]),
     (">=1.0, <2", [(1, 0), (1, 99)], [(2, 0)]),
     ("*", [(0, 0), (9, 9)], [])],
)
def test_abi_requirements(req: str, ok: list[tuple[int, int]], bad: list[tuple[int, int]]) -> None:
    assert all(abi_matches(req, *v) for v in ok)
    assert not any(abi_matches(req, *v) for v in bad)


def test_abi_requirement_syntax_errors() -> None:
    for bad in ("newest", ">=", "1.x", ">>1"):
        with pytest.raises(ValueError):
            abi_matches(bad, 1, 51)


def test_check_snp_records_every_failure_with_its_area() -> None:
    ev = verify_upstream(parse_upstream_csr(MILAN.read_bytes()),
                         at=dt.datetime(2022, 12, 23, 12, tzinfo=dt.UTC))
    assert ev is not None
    c = Checks()
    check_snp(SnpSection(hash=["00" * 48], abi=">=2"), ev, c)
    assert [f.rule for f in c.failed] == ["snp.hash", "snp.abi"]
    assert c.areas == {"executables", "configuration"}
    assert show(c.failed[0].actual) == ev.measurement.hex()
    clean = Checks()
    check_snp(None, ev, clean)  # only the always-on VMPL / migration-agent checks
    assert clean.failed == []
