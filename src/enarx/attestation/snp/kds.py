"""AMD Key Distribution Service (KDS) naming helpers: pure string building, no I/O.

The platform layer (or an operator) fetches VCEKs from KDS; the verifier only needs these to
say, in an error hint, exactly which certificate would match a report.
"""

from __future__ import annotations

from enarx.attestation.snp.abi import SnpReport

__all__ = ["KDS_BASE", "cert_chain_path", "crl_path", "vcek_path"]

KDS_BASE = "https://kdsintf.amd.com"


def vcek_path(report: SnpReport, product: str) -> str:
    """KDS path of the VCEK for ``report``'s chip and REPORTED_TCB (never CURRENT_TCB)."""
    tcb = report.tcb("reported", product)
    if product == "Turin":
        hwid = report.chip_id[:8].hex()  # Turin KDS keys VCEKs by the first 8 bytes only
        params = f"fmcSPL={tcb.fmc}&blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}"
    else:
        hwid = report.chip_id.hex()
        params = f"blSPL={tcb.bootloader}&teeSPL={tcb.tee}&snpSPL={tcb.snp}"
    return f"/vcek/v1/{product}/{hwid}?{params}&ucodeSPL={tcb.microcode}"


def cert_chain_path(product: str, signing_key: str = "vcek") -> str:
    """KDS path of the ASK (or ASVK for ``vlek``) + ARK bundle for ``product``."""
    return f"/{signing_key}/v1/{product}/cert_chain"


def crl_path(product: str, signing_key: str = "vcek") -> str:
    return f"/{signing_key}/v1/{product}/crl"
