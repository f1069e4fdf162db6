"""AMD SEV-SNP: report layout (``abi``), certificates (``certs``), chain (``chain``) and
report verification (``verify``), hand-written because no maintained Python library exists."""

from enarx.attestation.snp.abi import SnpReport, TcbVersion, parse_report
from enarx.attestation.snp.chain import ChainVerifier
from enarx.attestation.snp.verify import SnpVerifier, verify_report

__all__ = ["ChainVerifier", "SnpReport", "SnpVerifier", "TcbVersion", "parse_report",
           "verify_report"]
