"""Benchmark: a VM Keep (`enarx run --backend kvm`) against `--backend nil`, in one run.

    .venv/bin/python bench/vmkeep.py [--runs 3] [--iterations 100000000]

Rows (medians of ``--runs``, kvm and nil runs interleaved):

- image: the Keep image's initramfs (gzip) and kernel sizes against the <= 40 MB goal, and
  the time `build_image()` takes on a cache hit (every input is re-hashed and ldd'd), first
  in this process (inputs maybe not in the page cache) and again (warm);
- boot to agent: QEMU start to the in-VM agent's hello (``launcher.Keep.boot``), no workload;
- first output: `enarx run` start to the first stdout byte of tests/guests/c/hello.c, for
  kvm and nil (the whole CLI: image lookup, QEMU, guest boot, in-VM Python + wasmtime);
- memory: while tests/guests/c/cli_cat.c echoes (so the workload is running), QEMU's peak RSS
  (VmHWM) + the enarx launcher's (and its current RSS), and the guest RAM QEMU was given
  (``-m``), against the peak RSS of the nil `enarx run` process;
- compute: bench/guests/intloop.c (integer loop), sha256.c (hashing) and matmul.c (floating
  point) timing their own kernels (clock_gettime around them), in the VM and on nil: the
  ratio is the cost of the accelerator, under TCG the TCG factor.

The accelerator is what `enarx run --backend kvm` picks (``ENARX_VM_ACCEL`` forces it); on
a host whose /dev/kvm does not boot the image (here: PVM) that is TCG, and the table says so.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUESTS = Path(__file__).resolve().parent / "guests"
sys.path.insert(0, str(REPO))  # the repo root, for tests.*
from tests import guestbuild  # noqa: E402

ENARX = Path(sys.executable).with_name("enarx")
MIB = 1 << 20


def _status(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` size field in bytes (VmHWM, VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise SystemExit(f"no {key} for pid {pid}")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _qemu_of(pid: int) -> int:
    for child in _children(pid):
        if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"qemu-system-x86_64"):
            return child
    raise SystemExit("the kvm run has no QEMU child")


def _guest_ram(qemu: int) -> int:
    argv = Path(f"/proc/{qemu}/cmdline").read_bytes().split(b"\0")
    return int(argv[argv.index(b"-m") + 1].rstrip(b"M")) * MIB


def _env(cache: Path, backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ENARX_BACKEND"}
    env.setdefault("ENARX_VM_BOOT_TIMEOUT", "240")
    env["ENARX_CACHE_DIR"] = str(cache)
    return env


def first_output(backend: str, wasm: Path, cache: Path) -> tuple[float, float]:
    """(seconds to the first stdout byte, seconds to exit) of `enarx run` on ``backend``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(ENARX), "run", "--backend", backend, str(wasm)],
                            env=_env(cache, backend), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    t1 = time.perf_counter()
    rest = proc.stdout.read()
    err = proc.stderr.read()
    code = proc.wait()
    t2 = time.perf_counter()
    proc.stdout.close()
    proc.stderr.close()
    if code != 0 or first + rest != b"Hello, world!\n":
        raise SystemExit(f"{backend} hello failed ({code}): {err.decode(errors='replace')}")
    return t1 - t0, t2 - t0


def memory(backend: str, wasm: Path, cache: Path) -> dict[str, int]:
    """Peak RSS while cli_cat echoes a line (the workload is running when it is sampled)."""
    proc = subprocess.Popen([str(ENARX), "run", "--backend", backend, str(wasm)],
                            env=_env(cache, backend), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        if proc.stdout.read(5) != b"ping\n":
            raise SystemExit(f"{backend}: cli_cat did not echo")
        out = {"enarx": _status(proc.pid, "VmHWM"), "enarx_now": _status(proc.pid, "VmRSS")}
        if backend == "kvm":
            qemu = _qemu_of(proc.pid)
            out.update(qemu=_status(qemu, "VmHWM"), guest_ram=_guest_ram(qemu))
        proc.stdin.close()
        proc.stdout.read()
        if proc.wait(timeout=120) != 0:
            raise SystemExit(f"{backend}: cli_cat failed")
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    return out


def compute(backend: str, wasm: Path, cache: Path, *args: str) -> float:
    r = subprocess.run([str(ENARX), "run", "--backend", backend, str(wasm), *args],
                       env=_env(cache, backend), capture_output=True, timeout=1800,
                       check=False)
    for line in r.stderr.decode().splitlines():
        if line.startswith("kernel_ns "):
            return int(line.split()[1]) / 1e9
    raise SystemExit(f"{backend} intloop failed ({r.returncode}): {r.stderr.decode()}")


def boot_to_agent() -> float:
    from enarx.vm.image import build_image
    from enarx.vm.launcher import BOOT_TIMEOUT, Keep

    image = build_image()
    accel = os.environ.get("ENARX_VM_ACCEL", "tcg")
    with Keep(accel, str(image.kernel.path), str(image.initrd.path), 512, image.append) as keep:
        t0 = time.perf_counter()
        keep.boot(BOOT_TIMEOUT)
        return time.perf_counter() - t0


def accelerator() -> str:
    from enarx.vm.launcher import cached_probe

    forced = os.environ.get("ENARX_VM_ACCEL")
    if forced:
        return f"{forced} (forced by ENARX_VM_ACCEL)"
    probe = cached_probe()
    if probe is not None:
        return f"{probe.get('accel')} ({probe.get('why')})"
    return "not probed yet (the first kvm run probes)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=100_000_000,
                    help="intloop iterations (default 1e8: ~0.3 s on nil)")
    a = ap.parse_args()
    os.environ.setdefault("ENARX_VM_BOOT_TIMEOUT", "240")
    from enarx.vm.image import build_image

    t0 = time.perf_counter()
    image = build_image()
    hit = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_image()
    warm = time.perf_counter() - t0
    hello = guestbuild.build_c("hello.c")
    cat = guestbuild.build_c("cli_cat.c")
    digest = hashlib.sha256((GUESTS / "timing.h").read_bytes()).hexdigest()[:12]
    kernel_wasm = {k: guestbuild.build_c(GUESTS / f"{k}.c", f"-I{GUESTS}",
                                         f"-DTIMING_H={digest}")
                   for k in ("intloop", "sha256", "matmul")}
    kernel_args = {"intloop": (str(a.iterations),), "sha256": (), "matmul": ()}
    with tempfile.TemporaryDirectory(prefix="enarx-bench-vm-") as tmp:
        cache = Path(tmp)
        for k, w in kernel_wasm.items():  # fill the module cache
            compute("nil", w, cache, *(("1000",) if k == "intloop" else ()))
        boots: list[float] = []
        firsts: dict[str, list[tuple[float, float]]] = {"kvm": [], "nil": []}
        mems: dict[str, list[dict[str, int]]] = {"kvm": [], "nil": []}
        kernels: dict[str, dict[str, list[float]]] = {
            k: {"kvm": [], "nil": []} for k in kernel_wasm}
        for _ in range(a.runs):
            boots.append(boot_to_agent())
            for backend in ("kvm", "nil"):
                firsts[backend].append(first_output(backend, hello, cache))
                mems[backend].append(memory(backend, cat, cache))
                for k, w in kernel_wasm.items():
                    kernels[k][backend].append(compute(backend, w, cache, *kernel_args[k]))
    med = statistics.median
    init_mib = image.initrd.size / MIB
    print(f"accelerator: {accelerator()}; load average {os.getloadavg()[0]:.1f}; "
          f"{a.runs} runs, medians\n")
    print("| measure | VM Keep (kvm backend) | nil | ratio |\n|---|---|---|---|")
    print(f"| initramfs (gzip) | {init_mib:.1f} MiB = {image.initrd.size / 1e6:.1f} MB "
          f"(goal <= 40 MB) | - | - |")
    print(f"| kernel | {image.kernel.size / MIB:.1f} MiB | - | - |")
    print(f"| image lookup (cache hit), first / warm | {hit:.2f} s / {warm:.2f} s | - | - |")
    print(f"| boot to agent (no workload) | {med(boots):.1f} s | - | - |")
    kf, nf = med(f for f, _ in firsts["kvm"]), med(f for f, _ in firsts["nil"])
    kt, nt = med(t for _, t in firsts["kvm"]), med(t for _, t in firsts["nil"])
    print(f"| hello: start to first output | {kf:.1f} s | {nf:.2f} s | {kf / nf:.0f}x |")
    print(f"| hello: start to exit | {kt:.1f} s | {nt:.2f} s | {kt / nt:.0f}x |")
    qemu = med(m["qemu"] for m in mems["kvm"]) / MIB
    launcher = med(m["enarx"] for m in mems["kvm"]) / MIB
    launcher_now = med(m["enarx_now"] for m in mems["kvm"]) / MIB
    ram = med(m["guest_ram"] for m in mems["kvm"]) / MIB
    nil_rss = med(m["enarx"] for m in mems["nil"]) / MIB
    print(f"| peak RSS | QEMU {qemu:.0f} MiB + launcher {launcher:.0f} MiB = "
          f"{qemu + launcher:.0f} MiB | {nil_rss:.0f} MiB | {(qemu + launcher) / nil_rss:.1f}x |")
    print(f"| launcher RSS while the workload runs | {launcher_now:.0f} MiB (its peak is the "
          f"image lookup hashing every input) | - | - |")
    print(f"| guest RAM given (-m) | {ram:.0f} MiB | - | - |")
    for k, times in kernels.items():
        kk, nk = med(times["kvm"]), med(times["nil"])
        label = f"intloop {a.iterations:.0e}" if k == "intloop" else k
        print(f"| compute: {label} kernel | {kk:.2f} s | {nk:.2f} s | "
              f"{kk / nk:.1f}x (accelerator factor) |")


if __name__ == "__main__":
    main()
