"""SGX quotes from inside a Gramine-SGX enclave via its ``/dev/attestation`` pseudo-files.

Gramine (with ``sgx.remote_attestation = "dcap"``) exposes: ``attestation_type`` ("dcap"),
``user_report_data`` (write 64 bytes) and ``quote`` (read: a DCAP quote v3 over them).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from enarx.errors import EvidenceError

__all__ = ["ATTESTATION_DIR", "attestation_type", "get_quote"]

ATTESTATION_DIR = "/dev/attestation"


def attestation_type(path: Callable[[str], Path]) -> str | None:
    try:
        return path(f"{ATTESTATION_DIR}/attestation_type").read_text().strip()
    except OSError:
        return None


def get_quote(path: Callable[[str], Path], report_data: bytes) -> bytes:
    """Write ``report_data`` (64 bytes) and read back the DCAP quote binding it."""
    if len(report_data) != 64:
        raise EvidenceError(f"report_data must be 64 bytes, got {len(report_data)}")
    kind = attestation_type(path)
    if kind != "dcap":
        raise EvidenceError(
            f"Gramine attestation type is {kind!r}, need 'dcap'"
            if kind else "not inside a Gramine-SGX enclave (/dev/attestation is missing)",
            hint='run under gramine-sgx with sgx.remote_attestation = "dcap" in the manifest',
        )
    try:
        with open(path(f"{ATTESTATION_DIR}/user_report_data"), "wb", buffering=0) as f:
            f.write(report_data)
        quote = path(f"{ATTESTATION_DIR}/quote").read_bytes()
    except OSError as e:
        raise EvidenceError(f"Gramine quote request failed: {e.strerror or e}",
                            hint="check that the AESM/QCNL service is reachable") from None
    if not quote:
        raise EvidenceError("Gramine returned an empty quote")
    return quote
