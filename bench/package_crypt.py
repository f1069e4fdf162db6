"""Benchmark: encrypted-package decryption vs raw AES-256-GCM from `cryptography`, in one run.

    .venv/bin/python bench/package_crypt.py [MIB ...]      (default: 20 100)

For each size (20 MiB ~ the python3.11.wasm package, 100 MiB the large-module case) one
random file is encrypted with enarx.package.crypt (256 KiB chunks, every chunk authenticated
with its AAD) and, as the baseline, with one raw ``AESGCM.encrypt`` call over the same bytes.
Reported, best of several rounds, interleaved so both see the same machine load:

- ``decrypt_bytes`` (the Keep's path: ciphertext in memory -> plaintext ``bytes``) vs one
  ``AESGCM.decrypt`` of the whole buffer. Goal (issue 10): >= 0.8x.
- ``decrypt_stream`` to a null sink (the streaming path) vs the same baseline.
- ``encrypt_bytes`` vs one ``AESGCM.encrypt``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.package import crypt

IDENTITY = "sha384:" + "ab" * 48


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        return len(b)


def _rounds(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
            del out
    return best


def bench(mib: int, rounds: int = 7) -> None:
    size = mib << 20
    data = os.urandom(size)
    key = crypt.new_key()
    raw = AESGCM(key)
    nonce = os.urandom(12)
    raw_ct = raw.encrypt(nonce, data, None)
    ct = crypt.encrypt_bytes(data, key, identity=IDENTITY, path="main.wasm")
    assert crypt.decrypt_bytes(ct, key, identity=IDENTITY, path="main.wasm") == data
    t = _rounds({
        "raw decrypt": lambda: raw.decrypt(nonce, raw_ct, None),
        "decrypt_bytes": lambda: crypt.decrypt_bytes(ct, key, identity=IDENTITY,
                                                     path="main.wasm"),
        "decrypt_stream": lambda: crypt.decrypt_stream(io.BytesIO(ct), _Null(), key,
                                                       identity=IDENTITY, path="main.wasm"),
        "raw encrypt": lambda: raw.encrypt(nonce, data, None),
        "encrypt_bytes": lambda: crypt.encrypt_bytes(data, key, identity=IDENTITY,
                                                     path="main.wasm"),
    }, rounds)

    def row(name: str, base: str) -> str:
        return (f"  {name:<15} {size / t[name] / 1e9:6.2f} GB/s   vs {base}: "
                f"{t[base] / t[name]:.2f}x")

    print(f"{mib} MiB ({crypt.CHUNK_SIZE // 1024} KiB chunks), best of {rounds}:")
    print(f"  {'raw decrypt':<15} {size / t['raw decrypt'] / 1e9:6.2f} GB/s")
    print(row("decrypt_bytes", "raw decrypt"))
    print(row("decrypt_stream", "raw decrypt"))
    print(f"  {'raw encrypt':<15} {size / t['raw encrypt'] / 1e9:6.2f} GB/s")
    print(row("encrypt_bytes", "raw encrypt"))


def main(argv: list[str]) -> None:
    for mib in [int(a) for a in argv] or [20, 100]:
        bench(mib)


if __name__ == "__main__":
    main(sys.argv[1:])
