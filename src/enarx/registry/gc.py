"""Garbage collection: pending tags nobody finished and blob files no node uses.

A pending tag older than ``pending_after`` (default one day) is dropped with its nodes; then a
blob file no node row references is deleted if it was not written or re-used within
``grace`` seconds (one hour): an upload commits its blob before its row, and a re-used blob is
touched at commit, so a blob about to be referenced is always fresh. Safe to run while the
registry serves: an upload whose pending tag was dropped meanwhile is refused (409).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

from enarx.registry.blobs import BlobStore
from enarx.registry.db import RegistryDB

__all__ = ["DEFAULT_GRACE", "DEFAULT_PENDING_AFTER", "GcReport", "collect"]

DEFAULT_PENDING_AFTER = 24 * 3600.0
DEFAULT_GRACE = 3600.0


@dataclass
class GcReport:
    pending_tags: list[str] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0


def collect(db: RegistryDB, blobs: BlobStore, *, pending_after: float = DEFAULT_PENDING_AFTER,
            grace: float = DEFAULT_GRACE, now: float | None = None) -> GcReport:
    now = time.time() if now is None else now
    report = GcReport(pending_tags=db.delete_pending_before(now - pending_after))
    used = db.referenced_blobs()
    for name, path in blobs.all_blobs():
        if name in used:
            continue
        with contextlib.suppress(OSError):
            st = path.stat()
            if st.st_mtime < now - grace:
                path.unlink()
                report.blobs += 1
                report.bytes += st.st_size
    blobs.remove_stale(grace)
    return report
