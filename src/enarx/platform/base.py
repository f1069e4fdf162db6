"""The one interface every backend implements.

A backend is where a Keep runs: ``nil`` (no TEE), ``sim`` (simulated evidence), ``kvm``,
``sev-snp``, ``tdx``, ``sgx``. Callers only use ``probe()``, ``available()``,
``evidence(report_data)`` and the ``confidential`` flag, so new backends need no caller change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Backend", "Check", "Evidence"]


@dataclass(frozen=True)
class Check:
    """One probe result: what was checked, whether it passed, and how to fix it if not."""

    name: str
    passed: bool
    detail: str = ""
    hint: str = ""


@dataclass(frozen=True)
class Evidence:
    """Evidence produced by a platform for some report_data.

    ``kind`` names the format (``snp-report``, ``tdx-quote``, ``sgx-quote``); ``blob`` is the
    raw report or quote; ``certs`` holds any certificates the platform handed out with it
    (SNP extended report / configfs ``auxblob``: VCEK/VLEK, ASK, ARK), DER-encoded.
    """

    kind: str
    blob: bytes
    certs: tuple[bytes, ...] = ()
    provider: str = ""
    extra: dict[str, bytes] = field(default_factory=dict)


class Backend(ABC):
    name: str = ""
    #: False for nil/sim/kvm: the host can see the workload's memory.
    confidential: bool = False
    #: One line printed whenever the backend is used, if it is insecure.
    warning: str | None = None

    def __init__(self, root: Path | None = None) -> None:
        # Injectable filesystem root so device trees can be simulated in tests.
        self.root = root or Path("/")

    def path(self, p: str) -> Path:
        return self.root / p.lstrip("/")

    @abstractmethod
    def probe(self) -> list[Check]:
        """Checks that decide whether this backend can run here, each with a fix hint."""

    def available(self) -> bool:
        return all(c.passed for c in self.probe())

    def vm_mode(self) -> str | None:
        """The VM mode (``enarx.vm.qemu.MODES``) enarx boots for each workload on this backend,
        or None when the workload runs in this process (nil, sim, inside a TEE guest)."""
        return None

    def use_firmware(self, path: str) -> None:
        """``--firmware``: only the sev-snp and tdx host launches take one."""
        from enarx.errors import UsageError

        raise UsageError(f"--firmware applies to sev-snp and tdx host launches, not to the "
                         f"{self.name} backend", hint="drop --firmware")

    def info(self) -> tuple[list[Check], dict[str, Any]]:
        """`enarx platform info`: the probe's rows (plus informational ones) and facts for
        ``--json``. Unlike ``probe()`` this may be slower (it never builds or boots)."""
        return self.probe(), {}

    def evidence(self, report_data: bytes) -> Evidence:
        """Hardware evidence binding ``report_data`` (64 bytes). Raises EvidenceError."""
        from enarx.errors import EvidenceError

        raise EvidenceError(f"the {self.name} backend produces no attestation evidence")
