"""wasi-testsuite runtime adapter for ``enarx run`` (WASI preview1 only).

The suite's test runner loads this file as a module (see its doc/adapters.md) and calls
``compute_argv`` once per test. Which enarx to run comes from ``$ENARX`` (a command line,
split like a shell would), default ``enarx`` on PATH. Used by scripts/wasi-testsuite.sh.

With ``ENARX_TESTSUITE_ENCRYPT=1`` every pre-opened directory becomes an encrypted one
(docs/encrypted-dirs.md): the test's root is encrypted into a fresh directory with a fresh
key (``enarx dir encrypt``) and pre-opened with ``--dir ENC::/:enc=KEY``, so the suite's
filesystem tests run against the encrypted layer.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

ENARX = shlex.split(os.environ.get("ENARX", "enarx"))


def get_name() -> str:
    return "enarx"


def get_version() -> str:
    out = subprocess.run(
        [*ENARX, "--version"], encoding="utf-8", capture_output=True, check=True
    ).stdout
    # "enarx, version 0.1.0" -> "0.1.0"
    return out.split()[-1] if out.split() else "unknown"


def get_wasi_versions() -> list[str]:
    return ["wasm32-wasip1"]


def get_wasi_worlds() -> list[str]:
    return ["wasi:cli/command"]


def get_timeout_seconds() -> float:
    # The first run of each test compiles it (Rust tests are ~2 MB); later runs hit the
    # module cache. The runner's default of 5 s is too tight for a cold compile on a
    # loaded 2-core machine.
    return float(os.environ.get("ENARX_TESTSUITE_TIMEOUT", "60"))


def compute_argv(
    test_path: str,
    args_env_root: tuple[list[str], dict[str, str], str | None],
    proposals: list[str],
    wasi_world: str,
    wasi_version: str,
) -> list[str]:
    args, env, root = args_env_root
    # --no-fd-env: the environ tests expect exactly the variables they set, and a plain WASI
    # runtime adds none (enarx adds FD_COUNT/FD_NAMES by default, as upstream Enarx does).
    argv = [*ENARX, "run", "--backend", "nil", "--no-fd-env"]
    for k, v in env.items():
        argv += ["--env", f"{k}={v}"]
    if root and os.environ.get("ENARX_TESTSUITE_ENCRYPT") == "1":
        argv += ["--dir", _encrypted_copy(root)]
    elif root:
        argv += ["--dir", f"{root}::/"]
    return [*argv, test_path, *args]


def _encrypted_copy(root: str) -> str:
    """``--dir`` value pre-opening an encrypted copy of ``root`` at "/" (fresh key)."""
    # under $ENARX_TESTSUITE_ENC_TMP, which scripts/wasi-testsuite.sh removes after the run
    work = tempfile.mkdtemp(prefix="enc-", dir=os.environ.get("ENARX_TESTSUITE_ENC_TMP"))
    key = os.path.join(work, "dir.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    enc = os.path.join(work, "enc")
    subprocess.run([*ENARX, "dir", "encrypt", root, enc, "--key", key],
                   capture_output=True, check=True)
    return f"{enc}::/:enc={key}"
