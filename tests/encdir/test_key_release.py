"""`encryption_key = "<steward resource>"`: the directory key reaches the Keep only after
attestation, through a real steward on 127.0.0.1, and never touches the host disk or logs.
Without a steward, or with a resource that is not a 32-byte key, the workload never starts."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.encdir.encutil import BLOCK, guest, record
from tests.keep.deploykit import Env, Steward, make_env, sim_policy, steward

RESOURCE = "app/dirkey/v1"
SHORT = "app/dirkey/short"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_cache: Path) -> Env:
    root = tmp_path_factory.mktemp("encdir-release")
    return make_env(root, module_cache, root / "sim-state")


class Setup:
    def __init__(self, env: Env, root: Path, resource: str) -> None:
        self.key = os.urandom(32)
        src, self.enc = root / "plain", root / "enc"
        src.mkdir()
        (src / "a").write_bytes(record(5, 0, 1) * (BLOCK // 16))
        owner_key = root / "owner.key"  # the owner's copy: gone before the Keep runs
        owner_key.write_bytes(self.key)
        r = env.run("dir", "encrypt", src, self.enc, "--key", owner_key)
        assert r.returncode == 0, r.stderr
        owner_key.unlink()
        (src / "a").unlink()
        self.cfg = root / "Enarx.toml"
        self.cfg.write_text(
            'args = ["check", "/data/a"]\n'
            '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
            f'[[files]]\nkind = "dir"\nhost = "{self.enc}"\nguest = "/data"\n'
            f'encryption_key = "{resource}"\n')
        self.wasm = guest()
        r = env.run("identity", "--wasmcfgfile", self.cfg, self.wasm)
        assert r.returncode == 0, r.stderr
        self.ident = r.stdout.strip()


@pytest.fixture(scope="module")
def setup(env: Env) -> Setup:
    root = env.root / "work"
    root.mkdir()
    return Setup(env, root, RESOURCE)


@pytest.fixture(scope="module")
def short(env: Env) -> Setup:
    root = env.root / "short"
    root.mkdir()
    return Setup(env, root, SHORT)


@pytest.fixture(scope="module")
def srv(env: Env, setup: Setup, short: Setup) -> Iterator[Steward]:
    for s in steward(env, "steward", sim_policy(env, {"app/dirkey/*": [setup.ident,
                                                                         short.ident]})):
        s.put(RESOURCE, setup.key)
        s.put(SHORT, short.key[:31])
        yield s


def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                yield Path(dirpath) / f


def test_the_released_key_opens_the_directory_and_is_never_on_disk_or_in_logs(
        env: Env, setup: Setup, srv: Steward) -> None:
    r = env.run("run", "--backend", "sim", "--steward", srv.url, "--steward-ca", srv.ca,
                "--wasmcfgfile", setup.cfg, setup.wasm)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"open 0 {BLOCK}", "b0 0 5 0 1"]
    forms = [setup.key, setup.key.hex().encode(), base64.b64encode(setup.key).rstrip(b"="),
             base64.urlsafe_b64encode(setup.key).rstrip(b"=")]
    logs = (r.stdout + r.stderr).encode()
    assert not [f for f in forms if f in logs]
    # the Keep's side of the host: HOME (state), the module cache, the workload's files
    scanned = 0
    for path in _files_under(Path(env.env["HOME"]), Path(env.env["ENARX_CACHE_DIR"]),
                             env.root / "work"):
        data = path.read_bytes()
        scanned += 1
        assert not [f for f in forms if f in data], path
    assert scanned >= 3


def test_a_resource_that_is_not_a_32_byte_key_is_refused_before_the_start(
        env: Env, short: Setup, srv: Steward) -> None:
    r = env.run("run", "--backend", "sim", "--steward", srv.url, "--steward-ca", srv.ca,
                "--wasmcfgfile", short.cfg, short.wasm)
    assert r.returncode == 4 and r.stdout == "", r.stderr
    assert "32-byte" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_without_a_steward_the_workload_never_starts(env: Env, setup: Setup) -> None:
    r = env.run("run", "--backend", "nil", "--wasmcfgfile", setup.cfg, setup.wasm)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert "steward" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
