"""Benchmark: full SEV-SNP report verification (warm chain cache) vs one raw ECDSA verify.

    .venv/bin/python bench/snp_verify.py [N]

The goal is verify_report with a warm cache <= 2x the bare ECDSA-P384 verification of the
same 672 signed bytes, i.e. parsing, TCB/chip checks and building the result cost less than
the one signature check that cannot be avoided. Uses the ms-milan-v3 vector.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from enarx.attestation.snp import SnpVerifier
from tests.vectors import location


def _vector() -> Path:
    return location() / "snp" / "ms-milan-v3"


def _best(fn: object, n: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()  # type: ignore[operator]
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    d = _vector()
    report = (d / "report.bin").read_bytes()
    vcek = (d / "vcek.pem").read_bytes()
    chain = [(d / "ask.pem").read_bytes(), (d / "ark.pem").read_bytes()]
    at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)

    verifier = SnpVerifier()  # owns the warm-chain cache
    t0 = time.perf_counter()
    verifier.verify(report, cert=vcek, chain=chain, at=at)
    cold = time.perf_counter() - t0

    warm = _best(lambda: verifier.verify(report, cert=vcek, chain=chain, at=at), n)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        key = x509.load_pem_x509_certificate(vcek).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    r = int.from_bytes(report[0x2A0:0x2E8], "little")
    s = int.from_bytes(report[0x2E8:0x330], "little")
    sig = encode_dss_signature(r, s)
    body = report[:0x2A0]
    raw = _best(lambda: key.verify(sig, body, ec.ECDSA(hashes.SHA384())), n)

    print(f"cold verify_report (chain + report): {cold * 1e3:8.2f} ms")
    print(f"warm verify_report:                  {warm * 1e6:8.1f} us")
    print(f"raw ECDSA-P384 verify:               {raw * 1e6:8.1f} us")
    print(f"ratio warm/raw:                      {warm / raw:8.2f}x (goal <= 2x)")


if __name__ == "__main__":
    main()
