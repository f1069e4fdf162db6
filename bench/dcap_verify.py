"""DCAP quote verification time per quote (mean over N runs) for each SGX/TDX vector at its
manifest's verify_at. Also times dcap-qvl alone, to show our wrapper's overhead.

Usage: .venv/bin/python bench/dcap_verify.py [N]   (vectors: $ENARX_VECTORS or tests/data/vectors)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from pathlib import Path

import dcap_qvl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from enarx.attestation.dcap import COLLATERAL_FILES, Collateral, verify_quote
from enarx.errors import AttestationError
from tests.vectors import location as _vectors


def main(n: int) -> None:
    root = _vectors()
    print(f"{'vector':28} {'outcome':34} {'enarx ms':>9} {'dcap-qvl ms':>12}")
    for kind in ("sgx", "tdx"):
        for folder in sorted((root / kind).iterdir()):
            m = json.loads((folder / "manifest.json").read_text())
            files = {COLLATERAL_FILES[r]: (folder / f).read_bytes()
                     for r, f in m["collateral"].items() if r in COLLATERAL_FILES}
            coll = Collateral.from_files(files)
            quote = (folder / m["evidence"]["file"]).read_bytes()
            at = dt.datetime.fromisoformat(m["verify_at"].replace("Z", "+00:00"))

            def ours(quote: bytes = quote, coll: Collateral = coll,
                     at: dt.datetime = at) -> str:
                try:
                    return verify_quote(quote, coll, at=at).tcb.status.value
                except AttestationError as e:
                    return f"rejected {e.check}"

            outcome = ours()
            t0 = time.perf_counter()
            for _ in range(n):
                ours()
            mine = (time.perf_counter() - t0) / n * 1e3
            raw = "-"
            try:
                q = coll.to_dcap_qvl()
                secs = int(at.timestamp())
                t0 = time.perf_counter()
                for _ in range(n):
                    with contextlib.suppress(ValueError):
                        dcap_qvl.verify(quote, q, secs)
                raw = f"{(time.perf_counter() - t0) / n * 1e3:.2f}"
            except AttestationError:
                pass
            print(f"{folder.name:28} {outcome:34} {mine:9.2f} {raw:>12}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
