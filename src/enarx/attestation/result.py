"""The one typed result every verifier returns, whatever the platform."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["CertInfo", "Platform", "Tcb", "TcbStatus", "VerifiedEvidence"]


class Platform(StrEnum):
    SNP = "snp"
    SGX = "sgx"
    TDX = "tdx"


class TcbStatus(StrEnum):
    """Intel's TCB status names; SNP results use UP_TO_DATE once the VCEK matches."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    # TDX only: the TD should be relaunched to pick up a newer TDX module.
    TD_RELAUNCH_ADVISED = "TDRelaunchAdvised"
    TD_RELAUNCH_ADVISED_CONFIGURATION_NEEDED = "TDRelaunchAdvisedConfigurationNeeded"


@dataclass(frozen=True)
class Tcb:
    """TCB of the evidence. ``reported``/``committed``/``current`` are per-component SVNs
    (SNP: bootloader, tee, snp, microcode, fmc; SGX/TDX: the matched level's components)."""

    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()
    reported: dict[str, int] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str  # hex fingerprint of the DER
    verify_at: dt.datetime | None = None  # the time at which validity was checked


@dataclass(frozen=True)
class VerifiedEvidence:
    """Authentic evidence: signatures, chain and TCB checked. Not yet appraised (see policy).

    ``measurement`` is the SNP launch digest, SGX MRENCLAVE, or TDX MRTD;
    ``rtmrs`` holds TDX RTMR0..3; ``signer`` is SGX MRSIGNER / SNP ID-key digest;
    ``attributes`` holds platform-specific fields (SNP policy bits, VMPL, SGX attributes,
    TDX TD attributes) under documented names.
    """

    platform: Platform
    product: str
    version: int
    measurement: bytes
    report_data: bytes
    debug: bool
    tcb: Tcb
    signer: bytes = b""
    author_key_digest: bytes = b""
    host_data: bytes = b""
    rtmrs: tuple[bytes, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)
    chain: tuple[CertInfo, ...] = ()
    verified_at: dt.datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bytes as hex, times as ISO 8601)."""
        out: dict[str, Any] = _jsonable(asdict(self))
        # Flat keys scripts look for first.
        out["tcb_status"] = self.tcb.status.value
        out["advisory_ids"] = list(self.tcb.advisory_ids)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
