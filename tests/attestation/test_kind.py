"""Evidence kind detection from the header: every real vector is recognised as what it is."""

from __future__ import annotations

import pytest

from enarx.attestation.kind import detect
from tests.vectors import vector_dir

VECTORS = [
    ("snp", "ms-milan-v3", "report.bin"),
    ("snp", "gosevguest-milan-v2", "report.bin"),
    ("snp", "ms-turin-v5", "report.bin"),
    ("snp", "trustee-aws-milan-vlek-v3", "report.bin"),
    ("sgx", "dcapqvl-sgx-v3", "quote.bin"),
    ("sgx", "dcaprs-sgx-v3", "quote.bin"),
    ("tdx", "dcapqvl-tdx-v4", "quote.bin"),
    ("tdx", "zkdcap-tdx-v4", "quote.bin"),
    ("tdx", "gotdxguest-tdx-v5", "quote.bin"),
]


@pytest.mark.parametrize(("kind", "name", "file"), VECTORS)
def test_real_evidence_is_recognised(kind: str, name: str, file: str) -> None:
    assert detect((vector_dir(kind, name) / file).read_bytes()) == kind


def test_other_bytes_are_not_guessed() -> None:
    hcl = (vector_dir("snp", "trustee-azure-genoa-v3") / "hcl_report.bin").read_bytes()
    assert detect(hcl) is None  # an SNP report wrapped in Azure's HCL envelope is not a report
    assert detect(b"") is None
    assert detect(b"-----BEGIN CERTIFICATE-----\n" * 100) is None
    report = bytearray((vector_dir("snp", "ms-milan-v3") / "report.bin").read_bytes())
    report[0x34] = 7  # unknown signature algorithm: not recognisable as a report
    assert detect(bytes(report)) is None
