"""The official WASI testsuite (preview1) through scripts/wasi-testsuite.sh.

The suite is not vendored (about 100 MB of prebuilt tests). The test runs when a checkout
is available: ``$WASI_TESTSUITE`` (a checkout, see the script's header), or a clone/mirror
of WebAssembly/wasi-testsuite at ``$WASI_TESTSUITE_GIT`` (default: a mirror next to the
repository, ``../.mirror/WebAssembly+wasi-testsuite/repo``) from which a checkout is made.
Otherwise it skips and says how to enable it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "wasi-testsuite.sh"
CHECKOUT = REPO / "scripts" / "wasi-testsuite" / "checkout.sh"
DEFAULT_GIT = REPO.parent / ".mirror" / "WebAssembly+wasi-testsuite" / "repo"

pytestmark = pytest.mark.slow


def _checkout() -> Path:
    given = os.environ.get("WASI_TESTSUITE")
    if given:
        if not (Path(given) / "test-runner").is_dir():
            pytest.fail(f"WASI_TESTSUITE={given} has no test-runner/: not a wasi-testsuite checkout")
        return Path(given)
    git = Path(os.environ.get("WASI_TESTSUITE_GIT", DEFAULT_GIT))
    if not git.is_dir():
        pytest.skip(
            "no wasi-testsuite checkout: set WASI_TESTSUITE to a checkout (runner from `main`, "
            "tests from `prod/testsuite-base`) or WASI_TESTSUITE_GIT to a clone of "
            "WebAssembly/wasi-testsuite"
        )
    proc = subprocess.run(
        [str(CHECKOUT), str(git)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return Path(proc.stdout.strip())


def test_enarx_passes_what_wasmtime_passes(tmp_path: Path) -> None:
    suite = _checkout()
    env = dict(os.environ)
    # A fresh module cache: the run also exercises cold compiles and cache writes.
    env["ENARX_CACHE_DIR"] = str(tmp_path / "modules")
    env.setdefault("ENARX", str(Path(sys.executable).with_name("enarx")))
    env.setdefault("PYTHON", sys.executable)
    proc = subprocess.run(
        [str(SCRIPT), str(suite), "both"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    assert "enarx passes every test wasmtime passes" in proc.stdout, report
    assert proc.returncode == 0, report
    # Both runtimes ran the whole preview1 suite, not an empty selection.
    counts = [ln for ln in proc.stdout.splitlines() if " passed" in ln and "/" in ln]
    assert len(counts) == 2, report
    for line in counts:
        _passed, total = line.split(":")[1].split()[0].split("/")
        assert int(total) >= 70, line
    assert counts[0].startswith("enarx:")


def test_encrypted_preopens_pass_what_plain_ones_pass(tmp_path: Path) -> None:
    """The suite's filesystem tests against encrypted pre-opens (enarx.wasi.encfs): every
    test that passes on a plain pre-open passes encrypted (symlinks and hard links
    included)."""
    suite = _checkout()
    env = dict(os.environ)
    env["ENARX_CACHE_DIR"] = str(tmp_path / "modules")
    env.setdefault("ENARX", str(Path(sys.executable).with_name("enarx")))
    env.setdefault("PYTHON", sys.executable)
    # Results and encrypted copies of this run only (another run may share the default
    # cache); the runner's venv is reused from there when it exists.
    shared = Path(env.get("ENARX_TESTSUITE_CACHE")
                  or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                  / "enarx-wasi-testsuite")
    cache = tmp_path / "suite"
    cache.mkdir()
    if (shared / "runner-venv").is_dir():
        (cache / "runner-venv").symlink_to(shared / "runner-venv")
    env["ENARX_TESTSUITE_CACHE"] = str(cache)
    proc = subprocess.run(
        [str(SCRIPT), str(suite), "encrypted"],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )  # fmt: skip
    report = proc.stdout + proc.stderr
    assert "pass every test plain ones pass" in proc.stdout, report
    assert proc.returncode == 0, report
    counts = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines()
                  if ln.startswith(("enarx: ", "enarx-encrypted: ")))
    plain, enc = (int(counts[k].split("/")[0]) for k in ("enarx", "enarx-encrypted"))
    assert plain >= 70 and enc == plain, report
    assert not (cache / "encrypted-roots").exists()  # the encrypted copies are removed
