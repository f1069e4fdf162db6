"""Linux configfs-tsm (``/sys/kernel/config/tsm/report``): one report interface for SNP and TDX.

Protocol (Documentation/ABI/testing/configfs-tsm): ``mkdir`` a report entry, write ``inblob``
(64 bytes of report data) and optionally ``privlevel``, read ``outblob`` (SNP report or TDX
quote), ``auxblob`` (SNP: the GUID-indexed certificate table) and ``provider``
(``sev_guest`` / ``tdx_guest``), then ``rmdir`` the entry. ``generation`` counts writes to the
entry: if it moved by more than our own writes, another writer raced us and the outblob may
belong to their inblob, so we retry.

File access goes through ``FileOps`` so tests can stand in for the kernel's configfs (a plain
directory cannot emulate mkdir auto-populating attributes or rmdir of a non-empty entry).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from enarx.errors import EvidenceError

__all__ = ["TSM_REPORT_DIR", "FileOps", "TsmReport", "get_report"]

TSM_REPORT_DIR = "/sys/kernel/config/tsm/report"


class FileOps:
    """The real filesystem. Attribute writes must reach configfs as one write(2)."""

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        with open(path, "wb", buffering=0) as f:
            f.write(data)


@dataclass(frozen=True)
class TsmReport:
    outblob: bytes
    auxblob: bytes
    provider: str
    generation: int


def _gen(ops: FileOps, entry: Path) -> int:
    raw = ops.read(entry / "generation").strip()
    try:
        return int(raw)
    except ValueError:
        raise EvidenceError(f"configfs-tsm generation is not a number: {raw!r}") from None


def get_report(
    report_dir: Path,
    report_data: bytes,
    *,
    privlevel: int | None = None,
    expect_provider: str | None = None,
    ops: FileOps | None = None,
    retries: int = 3,
) -> TsmReport:
    """Ask configfs-tsm for a report binding ``report_data`` (exactly 64 bytes)."""
    ops = ops or FileOps()
    if len(report_data) != 64:
        raise EvidenceError(f"report_data must be 64 bytes, got {len(report_data)}")
    if not report_dir.is_dir():
        raise EvidenceError(f"{report_dir} does not exist",
                            hint="mount configfs (mount -t configfs none /sys/kernel/config); "
                            "needs Linux 6.7+ with CONFIG_TSM_REPORTS")
    entry = report_dir / f"enarx-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        ops.mkdir(entry)
    except OSError as e:
        raise EvidenceError(f"cannot create configfs-tsm entry {entry}: {e.strerror}",
                            hint="run as root (configfs-tsm entries need CAP_SYS_ADMIN)") from None
    try:
        for _ in range(retries):
            got = _attempt(ops, entry, report_data, privlevel)
            if got is not None:
                if expect_provider and got.provider != expect_provider:
                    raise EvidenceError(
                        f"configfs-tsm provider is {got.provider!r}, expected {expect_provider!r}"
                    )
                return got
        raise EvidenceError(
            f"configfs-tsm entry changed under us {retries} times (another writer raced)",
            hint="retry; make sure no other process writes to enarx-* report entries",
        )
    finally:
        with contextlib.suppress(OSError):
            ops.rmdir(entry)


def _attempt(ops: FileOps, entry: Path, report_data: bytes,
             privlevel: int | None) -> TsmReport | None:
    try:
        before = _gen(ops, entry)
        writes = 1
        ops.write(entry / "inblob", report_data)
        if privlevel is not None:
            ops.write(entry / "privlevel", str(privlevel).encode())
            writes += 1
        outblob = ops.read(entry / "outblob")
        try:
            auxblob = ops.read(entry / "auxblob")
        except FileNotFoundError:  # providers without certificates have no auxblob
            auxblob = b""
        provider = ops.read(entry / "provider").decode("ascii", "replace").strip()
        after = _gen(ops, entry)
    except OSError as e:
        raise EvidenceError(f"configfs-tsm report failed: {e.strerror or e}",
                            hint="check dmesg for firmware errors") from None
    if after != before + writes:
        return None
    if not outblob:
        raise EvidenceError("configfs-tsm returned an empty outblob")
    return TsmReport(outblob, auxblob, provider, after)
