"""Helpers shared by the DCAP tests: load an SGX/TDX vector's quote and collateral exactly as
its manifest names them (gotdxguest-tdx-v5 uses the re-issued TCB signing chain)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enarx.attestation.dcap import COLLATERAL_FILES, Collateral, verify_quote
from enarx.attestation.result import VerifiedEvidence
from tests.vectors import all_vectors, load_manifest

DCAP = [("sgx", n) for n in all_vectors("sgx")] + [("tdx", n) for n in all_vectors("tdx")]


@dataclass
class DcapVector:
    kind: str
    name: str
    manifest: dict[str, Any]
    folder: Path
    quote: bytes
    files: dict[str, bytes]  # collateral file name -> bytes
    verify_at: dt.datetime

    @property
    def expected(self) -> dict[str, Any]:
        return dict(self.manifest["expected"])

    def collateral(self, **replace: bytes) -> Collateral:
        files = dict(self.files)
        for role, data in replace.items():
            files[COLLATERAL_FILES[role]] = data
        return Collateral.from_files(files)

    def verify(self, quote: bytes | None = None, **kw: Any) -> VerifiedEvidence:
        kw.setdefault("at", self.verify_at)
        collateral = kw.pop("collateral", None) or self.collateral()
        return verify_quote(self.quote if quote is None else quote, collateral, **kw)

    def write_collateral_dir(self, target: Path) -> Path:
        """Lay the collateral out under the standard names (as `--collateral DIR` wants)."""
        target.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (target / name).write_bytes(data)
        return target


def load_dcap(kind: str, name: str) -> DcapVector:
    m = load_manifest(kind, name)
    folder: Path = m["_dir"]
    files = {
        COLLATERAL_FILES[role]: (folder / fname).read_bytes()
        for role, fname in m["collateral"].items()
        if role in COLLATERAL_FILES
    }
    at = dt.datetime.fromisoformat(m["verify_at"].replace("Z", "+00:00"))
    quote = (folder / m["evidence"]["file"]).read_bytes()
    return DcapVector(kind, name, m, folder, quote, files, at)
