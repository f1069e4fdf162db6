"""Helpers shared by the SNP tests: load a vector's report and certificates, and a sim
state that is generated once per test session (RSA-4096 generation is slow)."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation.result import VerifiedEvidence
from enarx.attestation.snp import verify_report
from tests.vectors import load_manifest


@dataclass
class SnpVector:
    name: str
    manifest: dict[str, Any]
    folder: Path
    leaf: bytes
    chain: list[bytes]
    verify_at: dt.datetime

    @property
    def evidence(self) -> list[dict[str, Any]]:
        return list(self.manifest["evidence"])

    def report(self, index: int = 0) -> bytes:
        return (self.folder / self.evidence[index]["file"]).read_bytes()

    def verify(self, report: bytes | None = None, **kw: Any) -> VerifiedEvidence:
        kw.setdefault("at", self.verify_at)
        kw.setdefault("chain", self.chain)
        return verify_report(self.report() if report is None else report, cert=self.leaf, **kw)

    def leaf_x509(self) -> x509.Certificate:
        """The leaf parsed straight by cryptography (independent of our loader)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if self.leaf.startswith(b"-----"):
                return x509.load_pem_x509_certificate(self.leaf)
            return x509.load_der_x509_certificate(self.leaf)


def load_snp(name: str) -> SnpVector:
    m = load_manifest("snp", name)
    folder: Path = m["_dir"]
    certs = m["certs"]
    leaf_file = certs.get("vcek") or certs["vlek"]
    chain = [(folder / f).read_bytes() for role, f in certs.items() if role not in ("vcek", "vlek")]
    at = dt.datetime.fromisoformat(m["verify_at"].replace("Z", "+00:00"))
    return SnpVector(name, m, folder, (folder / leaf_file).read_bytes(), chain, at)


def sim_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sim state directory for the whole session (SimBackend reuses what it finds)."""
    return tmp_path_factory.getbasetemp() / "sim-state"


def cert_spls(cert: x509.Certificate) -> dict[str, int]:
    """SPL extensions decoded here, independently of enarx's certificate code."""
    names = {1: "bootloader", 2: "tee", 3: "snp", 8: "microcode", 9: "fmc"}
    out = {}
    for ext in cert.extensions:
        arc = ext.oid.dotted_string.split(".")
        if ext.oid.dotted_string.startswith("1.3.6.1.4.1.3704.1.3.") and int(arc[-1]) in names:
            value = ext.value.value  # DER INTEGER: 02 len bytes
            out[names[int(arc[-1])]] = int.from_bytes(value[2:], "big")
    return out
