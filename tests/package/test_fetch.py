"""enarx.package.fetch: the ``file://`` source (what `enarx deploy file://` reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from enarx.package.fetch import open_source, read_files
from enarx.package.spec import parse_spec

WASM = b"\0asm\x01\0\0\0"


def _package(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "main.wasm").write_bytes(WASM)
    (root / "data" / "big.bin").write_bytes(os.urandom(3 << 20))
    return root


def test_a_file_package_is_read_once_the_bytes_served_are_the_bytes_hashed(
        tmp_path: Path) -> None:
    pkg = _package(tmp_path / "pkg")
    src = open_source(parse_spec(f"file://{pkg}"))
    try:
        resolved = src.resolve()
        big = (pkg / "data" / "big.bin").read_bytes()
        (pkg / "main.wasm").write_bytes(b"\0asm\x01\0\0\x01")  # the host changes the disk
        (pkg / "data" / "big.bin").unlink()
        files = read_files(src, resolved)
    finally:
        src.close()
    assert files == {"main.wasm": WASM, "data/big.bin": big}


def test_a_file_deploy_does_not_load_the_network_stack(tmp_path: Path) -> None:
    pkg = _package(tmp_path / "pkg")
    code = textwrap.dedent(f"""
        import sys
        from enarx.cli import deploy_cmd
        from enarx.keep.deploy import DeployRequest, prepare
        from enarx.platform.sim import SimBackend
        ready = prepare(DeployRequest(spec="file://{pkg}", allow_insecure=True), SimBackend())
        assert ready.files["main.wasm"] == {WASM!r}
        print(sorted(m for m in ("httpx", "enarx.package.drawbridge")
                     if m in sys.modules))
    """)
    env = {**os.environ, "ENARX_SIM_DIR": str(tmp_path / "sim")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
