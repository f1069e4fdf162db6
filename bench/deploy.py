"""Benchmark: `enarx deploy` of the python3.11.wasm package vs `enarx run` of the same files,
per phase, in one run.

    .venv/bin/python bench/deploy.py [RUNS] [--against SRC]     (default 3; medians)

The four warm CLI rows are run interleaved (one of each per round), so load that drifts
during the run shifts them alike. ``--against SRC`` also runs them, in the same rounds, with
``PYTHONPATH=SRC`` (the ``src`` directory of a copy of another tree, e.g. before a change)
and prints both, so a change is measured against its baseline in one run.

The package is python3.11.wasm (20 MiB) as main.wasm, its stdlib (~1500 files, 29 MiB) under
lib/python3.11, and an Enarx.toml that pre-opens that directory read-only at
/usr/local/lib/python3.11 and runs ``print("hi")``. Everything runs on the sim backend on
this host, with a real `enarx steward serve` on 127.0.0.1 (so "network" is loopback).

Rows (docs/performance.md):

- baseline: ``enarx run --backend sim`` of python3.11.wasm with the stdlib ``--dir`` (warm
  module cache); for reference also ``enarx run --wasmcfgfile`` with the package's own
  Enarx.toml (parsing a config costs the import of its schema library);
- ``enarx deploy`` of the plaintext package from ``file://`` (warm cache, no steward);
- ``enarx deploy`` of the ENCRYPTED package with the steward (attest, key release, fetch,
  decrypt+verify), warm SEALED cache (keep/sealedcache.py: the compiled module is cached
  encrypted under a key derived from the content key); goal (issue 10): <= 1.5x the
  baseline + network; and the same with ``--no-cache`` (compiles every run);
- per phase of the encrypted deploy, in process: resolve, attest, key release, fetch,
  decrypt+verify, secrets, compile+start+run;
- decrypt+verify of the whole package in memory vs one raw ``AESGCM.decrypt`` per file over
  the same bytes (goal >= 0.8x).
"""

from __future__ import annotations

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
sys.path.insert(0, str(REPO))

from tests import guestbuild  # noqa: E402
from tests.keep.deploykit import Steward, make_env, sim_policy  # noqa: E402

ENARX = Path(sys.executable).with_name("enarx")
STDLIB_GUEST = guestbuild.PYTHON_STDLIB_GUEST


def _median(f: Callable[[], float], runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        f()
    return statistics.median(f() for _ in range(runs))


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env,
                       check=False)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0 or b"hi" not in p.stdout:
        sys.exit(f"failed ({p.returncode}): {' '.join(argv)}\n{p.stderr.decode()[-2000:]}")
    return elapsed


def _package(dest: Path, wasm: Path, stdlib: Path) -> Path:
    """The python package; empty directories (a package has none) are left out."""
    from enarx.package.tree import check_name

    dest.mkdir()
    shutil.copyfile(wasm, dest / "main.wasm")
    lib = dest / "lib" / "python3.11"
    for src in sorted(stdlib.rglob("*")):
        rel = src.relative_to(stdlib)
        if not src.is_file() or src.is_symlink():
            continue
        try:
            for part in rel.parts:
                check_name(part)
        except Exception:  # a name a package cannot hold: leave the file out
            continue
        (lib / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, lib / rel)
    (dest / "Enarx.toml").write_text(
        'args = ["-c", "print(\\"hi\\")"]\n\n[env]\nPYTHONHOME = "/usr/local"\n\n'
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        f'[[files]]\nkind = "dir"\nhost = "lib/python3.11"\nguest = "{STDLIB_GUEST}"\n'
        "readonly = true\n")
    return dest


def main() -> None:
    args = sys.argv[1:]
    against = None
    if "--against" in args:
        i = args.index("--against")
        against = str(Path(args[i + 1]).resolve())
        del args[i:i + 2]
    runs = int(args[0]) if args else 3
    try:
        wasm, stdlib = guestbuild.python_wasm()
    except guestbuild.ToolchainMissing as e:
        sys.exit(f"python3.11.wasm missing: {e}")
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from enarx.keep.attest import StewardTarget
    from enarx.keep.deploy import DeployRequest, deploy
    from enarx.package import crypt
    from enarx.platform.sim import SimBackend
    from enarx.runtime.engine import compile_module
    from enarx.runtime.run import RunLimits

    with tempfile.TemporaryDirectory(prefix="enarx-bench-deploy-") as t:
        tmp = Path(t)
        env = make_env(tmp / "host", tmp / "cache", tmp / "sim")
        # An installed enarx has its bytecode compiled; let this one write its .pyc too.
        env.env.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["ENARX_SIM_DIR"] = str(tmp / "sim")
        plain = _package(tmp / "plain", wasm, stdlib)
        enc = crypt.encrypt_package(plain, tmp / "enc")
        nfiles = sum(1 for p in plain.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in plain.rglob("*") if p.is_file()) / (1 << 20)
        print(f"package: {nfiles} files, {size:.1f} MiB, identity {enc.identity[:20]}…")
        s = Steward(env, "steward", sim_policy(env, {enc.resource: [enc.identity]}))
        try:
            s.put(enc.resource, enc.key)
            run_argv = [str(ENARX), "run", "--backend", "sim", "--dir",
                        f"{stdlib}::{STDLIB_GUEST}:ro", "--env", "PYTHONHOME=/usr/local",
                        str(wasm), "-c", 'print("hi")']
            cfg_argv = [str(ENARX), "run", "--backend", "sim", "--wasmcfgfile",
                        str(plain / "Enarx.toml"), str(plain / "main.wasm")]
            plain_argv = [str(ENARX), "deploy", "--backend", "sim", "--allow-insecure",
                          f"file://{plain}"]
            enc_argv = [str(ENARX), "deploy", "--backend", "sim", "--allow-insecure",
                        "--steward", s.url, "--steward-ca", str(s.ca), f"file://{tmp / 'enc'}"]
            envs = {"now": env.env}
            if against is not None:
                envs["against"] = {**env.env, "PYTHONPATH": against}
            warm = _interleaved({"run": run_argv, "cfg": cfg_argv, "plain": plain_argv,
                                 "enc": enc_argv}, envs, runs)
            base, base_cfg, dep_plain, dep_enc = (warm["now", k]
                                                  for k in ("run", "cfg", "plain", "enc"))
            dep_cold = _median(lambda: _timed([*enc_argv[:2], "--no-cache", *enc_argv[2:]],
                                              env.env), runs, warmup=0)

            limits = RunLimits(max_memory=4 << 30)
            compile_s = _median(lambda: _clock(lambda: compile_module(
                (plain / "main.wasm").read_bytes(), limits.settings, cache=None)), runs, 0)

            phases: dict[str, list[float]] = {}
            target = StewardTarget(url=s.url, ca_pem=s.ca.read_bytes())
            req = DeployRequest(spec=f"file://{tmp / 'enc'}", steward=target,
                                allow_insecure=True)
            from enarx.runtime.cache import ModuleCache

            cache = ModuleCache(tmp / "cache", b"b" * 32)
            with open(os.devnull, "wb") as null:
                for _ in range(runs + 1):  # the first fills the sealed cache
                    code = deploy(req, limits=limits, backend=SimBackend(), cache=cache,
                                  stdio=(null.fileno(), null.fileno(), null.fileno()),
                                  on_phase=lambda n, d: phases.setdefault(n, []).append(d))
                    assert code == 0
            phases = {n: v[1:] for n, v in phases.items()}

            files = {p: (tmp / "enc" / p).read_bytes()
                     for p in (str(x.relative_to(tmp / "enc"))
                               for x in (tmp / "enc").rglob("*") if x.is_file())}
            manifest = crypt.read_manifest(files[crypt.MANIFEST_NAME])
            ours = _median(lambda: _clock(lambda: crypt.decrypt_package(files, enc.key,
                                                                        manifest)), runs)
            raw = {p: AESGCM(enc.key).encrypt(b"\0" * 12, d, None) for p, d in files.items()}
            gcm = AESGCM(enc.key)
            base_gcm = _median(lambda: _clock(lambda: [gcm.decrypt(b"\0" * 12, c, None)
                                                       for c in raw.values()]), runs)
        finally:
            s.stop()

    print("\n| measure | time | vs `enarx run` | goal |\n|---|---|---|---|")
    print(f"| `enarx run` python3.11.wasm + stdlib dir, warm cache (baseline) | {base:.2f} s "
          "| 1.0x | |")
    print(f"| `enarx run` of the package's main.wasm + its Enarx.toml (`--wasmcfgfile`) | "
          f"{base_cfg:.2f} s | {base_cfg / base:.2f}x | report |")
    print(f"| `enarx deploy file://` plaintext package, warm cache | {dep_plain:.2f} s | "
          f"{dep_plain / base:.2f}x | <= 1.5x |")
    print(f"| `enarx deploy` encrypted package + steward, warm sealed cache | {dep_enc:.2f} s"
          f" | {dep_enc / base:.2f}x | <= 1.5x + network |")
    print(f"| the same with --no-cache (compiles every run) | {dep_cold:.2f} s | "
          f"{dep_cold / base:.2f}x | report |")
    print(f"| compile_module of python3.11.wasm, no cache | {compile_s:.2f} s | | report |")
    if against is not None:
        _print_against(warm)
    print("\nPhases of the encrypted deploy (in process, median of "
          f"{runs}):\n\n| phase | time |\n|---|---|")
    for name, values in phases.items():
        label = "load sealed module + start + run" if name == "run" else name
        print(f"| {label} | {statistics.median(values) * 1e3:.0f} ms |")
    print(f"\n| decrypt + recompute identity, whole package (in memory) | {ours * 1e3:.0f} ms "
          f"| raw AESGCM.decrypt per file {base_gcm * 1e3:.0f} ms | {base_gcm / ours:.2f}x "
          "| report (decryption alone: bench/package_crypt.py, goal >= 0.8x) |")


def _interleaved(cmds: dict[str, list[str]], envs: dict[str, dict[str, str]],
                 runs: int) -> dict[tuple[str, str], float]:
    """Median seconds of each command under each environment, run round by round (one
    warm-up round first)."""
    times: dict[tuple[str, str], list[float]] = {(e, c): [] for e in envs for c in cmds}
    for i in range(runs + 1):
        for c, argv in cmds.items():
            for e, env in envs.items():
                t = _timed(argv, env)
                if i:
                    times[e, c].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def _print_against(warm: dict[tuple[str, str], float]) -> None:
    rows = [("run", "`enarx run` + stdlib dir (baseline)"), ("cfg", "`enarx run --wasmcfgfile`"),
            ("plain", "`enarx deploy file://` plaintext"),
            ("enc", "`enarx deploy` encrypted + steward")]
    print("\nInterleaved with --against, same rounds:\n\n| measure | against | now |\n"
          "|---|---|---|")
    for key, label in rows:
        cells = [f"{warm[e, key]:.3f} s ({warm[e, key] / warm[e, 'run']:.2f}x)"
                 for e in ("against", "now")]
        print(f"| {label} | {cells[0]} | {cells[1]} |")


def _clock(f: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
