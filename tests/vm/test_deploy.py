"""`enarx deploy --backend kvm`: the whole deploy (resolve, fetch, verify, run) inside one VM
Keep, from a real embedded registry (`enarx registry serve`) on the host's loopback, which
the VM reaches through QEMU's user networking (enarx.vm.guestnet); the package's listener
is forwarded from the host. One boot."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cliutil import ENARX, RunEnarx
from tests.guestbuild import build_c
from tests.keep.deploykit import probe_package
from tests.registry.server import RegistryServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path, enarx: RunEnarx) -> Iterator[tuple[RegistryServer, dict[str, str]]]:
    reg = RegistryServer(tmp_path / "registry")
    try:
        env = {"ENARX_REGISTRY_TOKEN": reg.token("alice"), "HOME": str(tmp_path / "home")}
        for args in (("user", "register", f"{reg.url}/alice"),
                     ("repo", "register", f"{reg.url}/alice/web")):
            r = enarx(*args, env=env)
            assert r.returncode == 0, r.stderr
        yield reg, env
    finally:
        reg.stop()


def test_deploy_a_public_package_with_a_listener_into_a_vm_keep(
        tmp_path: Path, enarx: RunEnarx, vm_env: dict[str, str], module_cache: Path,
        registry: tuple[RegistryServer, dict[str, str]]) -> None:
    """The package (vm_net.c as main.wasm, a tcp listener in its Enarx.toml) is fetched and
    verified inside the VM; its listener is forwarded from the host's 127.0.0.1."""
    reg, env = registry
    port = _free_port()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "main.wasm").write_bytes(build_c("vm_net.c").read_bytes())
    (pkg / "Enarx.toml").write_text(
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        f'[[files]]\nkind = "listen"\nname = "web"\nprot = "tcp"\naddr = "127.0.0.1"\n'
        f"port = {port}\n")
    r = enarx("package", "publish", f"{reg.url}/alice/web:1.0.0", pkg, env=env)
    assert r.returncode == 0, r.stderr
    full = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    full.update({**env, **vm_env}, ENARX_CACHE_DIR=str(module_cache), ENARX_VM_BOOT_TIMEOUT="240")
    proc = subprocess.Popen([str(ENARX), "deploy", "--backend", "kvm", "--allow-insecure",
                             f"{reg.url}/alice/web:1.0.0"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full)
    try:
        answer = b""
        deadline = time.monotonic() + 500
        while not answer and time.monotonic() < deadline and proc.poll() is None:
            # QEMU accepts on the host at once; until the Keep listens the VM resets it
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                s.sendall(b"over the forward\n")
                answer = s.recv(1024)
            if not answer:
                time.sleep(1)
        out, err_b = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = err_b.decode()
    assert proc.returncode == 0, err
    assert answer == b"vm:over the forward\n"
    assert out.decode().splitlines()[-1] == "served"
    assert f"files[3] (web): host 127.0.0.1:{port} -> VM Keep port {port}" in err
    assert f"listening on 127.0.0.1:{port} (tcp)" in err
    assert "not confidential" in err and err.count("TCG emulation") == 1
    assert "no --steward" in err
    assert "nil backend" not in err  # the VM's runtime does not speak for the Keep


def test_file_packages_and_a_missing_allow_insecure_are_refused_before_booting(
        enarx: RunEnarx, tmp_path: Path) -> None:
    pkg = probe_package(tmp_path / "pkg", args=["cat:/data/info.txt"])
    env = {"ENARX_VM_IMAGE_CACHE": str(tmp_path / "no-image")}
    r = enarx("deploy", "--backend", "kvm", "--allow-insecure", f"file://{pkg}", env=env)
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "a file:// package is on the host, not in the VM Keep" in err
    assert "hint: publish it to a registry" in err
    r = enarx("deploy", "--backend", "kvm", f"file://{pkg}", env=env)
    assert r.returncode == 2 and b"the kvm backend is not confidential" in r.stderr
    assert not (tmp_path / "no-image").exists()  # nothing was built or booted


def test_the_agent_runs_the_deploy_with_the_hosts_flags(tmp_path: Path) -> None:
    """What the agent starts inside the VM for a deploy request (no boot)."""
    from enarx.vm.vmdeploy import inner_command

    req = {"mode": "deploy", "deploy": {
        "spec": "http://127.0.0.1:8080/alice/web:1.0.0", "steward": "https://127.0.0.1:3000",
        "steward_ca": "STEWARD CA\n", "signer": "SIGNER\n", "ca_bundle": None,
        "token": "tok", "registry": "127.0.0.1:8080", "max_memory": 64 << 20,
        "timeout": 5.0, "fuel": 1000}}
    argv, env = inner_command(req, str(tmp_path))
    assert argv[argv.index("deploy"):] == [
        "deploy", "--backend", "nil", "--allow-insecure", "--no-cache",
        "--steward", "https://127.0.0.1:3000", "--steward-ca", str(tmp_path / "steward_ca.pem"),
        "--signer", str(tmp_path / "signer.pem"), "--max-memory", str(64 << 20),
        "--timeout", "5.0", "--fuel", "1000", "--", "http://127.0.0.1:8080/alice/web:1.0.0"]
    assert (tmp_path / "steward_ca.pem").read_text() == "STEWARD CA\n"
    assert not (tmp_path / "ca_bundle.pem").exists()
    assert env == {"ENARX_REGISTRY_TOKEN": "tok", "ENARX_REGISTRY": "127.0.0.1:8080"}
    with pytest.raises(ValueError, match=r"deploy\.spec"):
        inner_command({"mode": "deploy"}, str(tmp_path))
