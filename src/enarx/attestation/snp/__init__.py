"""AMD SEV-SNP: report layout (``abi``), certificates (``certs``), chain (``chain``) and
report verification (``verify``), hand-written because no maintained Python library exists."""

from enarx.attestation.snp.abi import SnpReport, TcbVersion, parse_report
from enarx.attestation.snp.chain import clear_chain_cache
from enarx.attestation.snp.verify import verify_report

__all__ = ["SnpReport", "TcbVersion", "clear_chain_cache", "parse_report", "verify_report"]
