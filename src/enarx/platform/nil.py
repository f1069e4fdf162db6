"""The ``nil`` backend: runs the workload in this process with no TEE at all."""

from __future__ import annotations

from enarx.platform.base import Backend, Check

__all__ = ["NilBackend"]


class NilBackend(Backend):
    name = "nil"
    confidential = False
    warning = (
        "nil backend: the workload is NOT confidential; the host can read and change its memory"
    )

    def probe(self) -> list[Check]:
        return [Check("in-process runtime", True, "always available (no TEE)")]
