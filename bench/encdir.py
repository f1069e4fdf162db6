"""Benchmark: an encrypted pre-open vs a plain pre-open vs raw AES-256-GCM, in one run.

    .venv/bin/python bench/encdir.py [--mib 64] [--files 2000] [--runs 5]

The guest (bench/guests/encdir.c) runs under the real `enarx run --backend nil` and times
its own kernel (clock_gettime around it, so start-up and compilation do not count):

- sequential write: create one file and write MIB MiB in 64 KiB write() calls, close;
- sequential read: read that file back in 64 KiB read() calls;
- small-file create: N files of 100 bytes (open + write + close each).

with ``--dir TMP::/work`` (plain), the same with ``ENARX_NATIVE=0`` (plain, without the
native read/write fast path: the Python shim's own cost) and ``--dir TMP::/work:enc=KEY``
(encrypted), interleaved, medians of ``--runs``. The baseline for the cost of the
cryptography itself is raw ``AESGCM.encrypt``/``decrypt`` of the same bytes in blocks of the
format's block size (``enarx.encdir.fileformat.BLOCK``, 64 KiB), in this process. Ratios are encrypted / plain throughput
(higher is better), against both plain rows. Goal (issue 12): sequential read >= 0.5x plain.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*
from enarx.encdir.fileformat import BLOCK
from tests import guestbuild

ENARX = Path(sys.executable).with_name("enarx")
GUESTS = Path(__file__).resolve().parent / "guests"


def build_wasm() -> Path:
    # build_c keys its cache on the .c file and flags: the shared header's digest is a flag.
    digest = hashlib.sha256((GUESTS / "timing.h").read_bytes()).hexdigest()[:12]
    return guestbuild.build_c(GUESTS / "encdir.c", f"-I{GUESTS}", f"-DTIMING_H={digest}")


def kernel_s(stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("kernel_ns "):
            return int(line.split()[1]) / 1e9
    raise SystemExit(f"no kernel_ns line in:\n{stderr}")


def _enarx(env: dict[str, str], wasm: Path, dir_spec: str, *args: str) -> float:
    if dir_spec.endswith("#python"):  # the plain pre-open without the native fast path
        env = {**env, "ENARX_NATIVE": "0"}
        dir_spec = dir_spec[: -len("#python")]
    r = subprocess.run([str(ENARX), "run", "--backend", "nil", "--dir", dir_spec, str(wasm),
                        *args], capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"enarx run {' '.join(args)} ({dir_spec}) exited {r.returncode}:\n"
                         f"{r.stderr}")
    return kernel_s(r.stderr)


def _fresh(tmp: Path, key: Path | None, name: str) -> tuple[Path, str]:
    """An empty directory (encrypted when ``key``) and its --dir spec."""
    d = tmp / name
    if d.exists():
        shutil.rmtree(d)
    if key is None:
        d.mkdir()
        return d, f"{d}::/work" + ("#python" if name == "plain-py" else "")
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    r = subprocess.run([str(ENARX), "dir", "encrypt", str(empty), str(d), "--key", str(key)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"enarx dir encrypt failed:\n{r.stderr}")
    return d, f"{d}::/work:enc={key}"


def _raw(mib: int, runs: int) -> tuple[float, float]:
    """Seconds for raw AES-256-GCM seal and open of ``mib`` MiB in BLOCK-sized blocks."""
    aead = AESGCM(os.urandom(32))
    block = os.urandom(BLOCK)
    n = (mib << 20) // BLOCK
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, block, b"a" * 32)

    def seal() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            aead.encrypt(os.urandom(12), block, b"a" * 32)
        return time.perf_counter() - t0

    def unseal() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            aead.decrypt(nonce, sealed, b"a" * 32)
        return time.perf_counter() - t0

    return min(seal() for _ in range(runs)), min(unseal() for _ in range(runs))


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args(argv)
    wasm = build_wasm()
    with tempfile.TemporaryDirectory(prefix="enarx-bench-encdir-") as t:
        tmp = Path(t)
        key = tmp / "key"
        key.write_bytes(os.urandom(32))
        key.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        env["ENARX_CACHE_DIR"] = str(tmp / "cache")
        results: dict[tuple[str, str], list[float]] = {}
        cases: dict[str, Path | None] = {"plain": None, "plain-py": None, "encrypted": key}
        for _ in range(a.runs):
            for name, k in cases.items():  # interleaved: both see the same machine load
                _d, spec = _fresh(tmp, k, name)
                for what, args in (("write", ("write", str(a.mib))), ("read", ("read",))):
                    results.setdefault((name, what), []).append(_enarx(env, wasm, spec, *args))
                _d, spec = _fresh(tmp, k, name)
                results.setdefault((name, "create"), []).append(
                    _enarx(env, wasm, spec, "create", str(a.files)))
        seal, unseal = _raw(a.mib, a.runs)

    med: dict[tuple[str, str], float] = {k: statistics.median(v) for k, v in results.items()}
    size = a.mib << 20

    def rate(name: str, what: str) -> float:
        secs = med[(name, what)]
        return (a.files if what == "create" else size / 1e6) / secs

    print(f"encrypted directory vs plain pre-open: {a.mib} MiB sequential, {a.files} small "
          f"files, medians of {a.runs} (kernel time inside the guest)")
    print(f"  {'measure':<18} {'plain':>12} {'plain (Py)':>12} {'encrypted':>12} "
          f"{'enc/plain':>10} {'enc/Py':>7}  goal")
    units: dict[str, Callable[[float], str]] = {
        "write": lambda v: f"{v:7.1f} MB/s", "read": lambda v: f"{v:7.1f} MB/s",
        "create": lambda v: f"{v:6.0f} f/s"}
    for what, label, goal in (("write", "sequential write", ""),
                              ("read", "sequential read", ">= 0.5x"),
                              ("create", "small-file create", "")):
        p, py, e = rate("plain", what), rate("plain-py", what), rate("encrypted", what)
        print(f"  {label:<18} {units[what](p):>12} {units[what](py):>12} {units[what](e):>12} "
              f"{e / p:9.2f}x {e / py:6.2f}x  {goal}")
    print(f"  raw AES-256-GCM, {BLOCK >> 10} KiB blocks: seal {size / seal / 1e6:.0f} MB/s, "
          f"open {size / unseal / 1e6:.0f} MB/s")
    print(f"  encrypted read vs raw open: {rate('encrypted', 'read') / (size / unseal / 1e6):.2f}x"
          f"; encrypted write vs raw seal: "
          f"{rate('encrypted', 'write') / (size / seal / 1e6):.2f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
