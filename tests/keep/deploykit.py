"""Shared by the deploy tests: a real `enarx steward serve` on 127.0.0.1 (started and stopped
by the tests), package directories built from the deploy_probe guest, encryption with the
real package code, and the steward admin API to store keys and secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from enarx.client.steward_admin import StewardAdmin, read_admin_token
from tests.servers import ServerProcess
from tests.wasi.wasirun import guest

ENARX = Path(sys.executable).with_name("enarx")

#: Marker strings: each must reach the guest and appear nowhere else in the clear.
MODULE_MARKER = "MODULE-MARKER-7f3a9c"  # in a custom section of main.wasm
DATA_MARKER = "DATA-MARKER-51be02"
SECRET_MARKER = "SECRET-MARKER-c0ffee"
FILE_SECRET_MARKER = "FILESECRET-MARKER-d00d"


@dataclass
class Env:
    root: Path
    env: dict[str, str]
    ark: Path

    def run(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ENARX), *map(str, args)], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)


def make_env(root: Path, module_cache: Path, sim_state: Path) -> Env:
    (root / "home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENARX_", "XDG_"))}
    env.update(HOME=str(root / "home"), ENARX_CACHE_DIR=str(module_cache),
               ENARX_SIM_DIR=str(sim_state))
    e = Env(root, env, root / "r.bin.ark.pem")
    r = e.run("attest", "report", "--platform", "sim", "--out", root / "r.bin")
    assert r.returncode == 0 and e.ark.exists(), r.stderr
    return e


class Steward:
    """`enarx steward serve --port 0` in the background: URL, CA file, admin session."""

    def __init__(self, env: Env, name: str, policy: str) -> None:
        d = env.root / name
        d.mkdir()
        (d / "steward.toml").write_text(policy)
        self.state = d / "state"
        try:
            self.server = ServerProcess("steward", [
                "--policy", str(d / "steward.toml"), "--addr", "127.0.0.1",
                "--state-dir", str(self.state)], env.env)
        except RuntimeError as e:
            pytest.fail(str(e))
        self.url = self.server.url
        self.ca = d / "steward-ca.pem"
        try:
            ca = env.run("steward", "ca", "--state-dir", self.state)
            assert ca.returncode == 0, ca.stderr
            self.ca.write_text(ca.stdout)
            self.admin = StewardAdmin(self.url, read_admin_token(self.state / "admin-token"),
                                      self.ca)
        except BaseException:
            self.server.stop()
            raise

    def put(self, path: str, data: bytes) -> None:
        self.admin.put_resource(path, data)

    def stop(self) -> None:
        self.server.stop()


def steward(env: Env, name: str, policy: str) -> Iterator[Steward]:
    s = Steward(env, name, policy)
    try:
        yield s
    finally:
        s.stop()


def sim_policy(env: Env, resources: dict[str, list[str]]) -> str:
    lines = [f'allow = ["sim"]\ntrust_roots = ["{env.ark}"]\n\n[resources]']
    lines += [f'"{path}" = {who!r}'.replace("'", '"') for path, who in resources.items()]
    return "\n".join(lines) + "\n"


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_marker(wasm: bytes, marker: str) -> bytes:
    """``wasm`` with a custom section "enarx-test" holding ``marker`` (still valid)."""
    name = b"enarx-test"
    payload = _leb(len(name)) + name + marker.encode()
    return wasm + b"\0" + _leb(len(payload)) + payload


def probe_package(dest: Path, *, secrets: str = "", args: list[str] | None = None,
                  module_marker: str = MODULE_MARKER, data: str = DATA_MARKER) -> Path:
    """A package: the probe guest as main.wasm, data/info.txt, and an Enarx.toml whose args
    make the guest print the data file, the secrets and the module marker."""
    dest.mkdir(parents=True)
    (dest / "main.wasm").write_bytes(with_marker(guest("deploy_probe.c").read_bytes(),
                                                 module_marker))
    (dest / "data").mkdir()
    (dest / "data" / "info.txt").write_text(data)
    probe = args if args is not None else [
        "cat:/data/info.txt", "env:DB_PASSWORD", "cat:/run/secrets/api", "ls:/run/secrets",
        "write:/data/new"]
    quoted = ", ".join(f'"{a}"' for a in probe)
    (dest / "Enarx.toml").write_text(
        f"args = [{quoted}]\n\n"
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        '[[files]]\nkind = "dir"\nhost = "data"\nguest = "/data"\nreadonly = true\n'
        + secrets)
    return dest


SECRETS_TOML = ('\n[[secrets]]\nresource = "app/secret/db"\nenv = "DB_PASSWORD"\n'
                '\n[[secrets]]\nresource = "app/secret/api"\nfile = "api"\n')
