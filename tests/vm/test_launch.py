"""`enarx run --backend kvm`: one real QEMU VM per workload (TCG here), through the real CLI.

Every boot costs seconds, so the tests share one image (built once per session) and each
test boots exactly one VM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from enarx.platform.kvm import KvmBackend
from tests.cliutil import ENARX, RunEnarx
from tests.guestbuild import build_c

KVM = ("--backend", "kvm")


def test_args_env_and_exit_code_as_on_nil(enarx: RunEnarx, vm_env: dict[str, str]) -> None:
    wasm = build_c("cli_env.c")
    r = enarx("run", *KVM, "--env", "A=1", "--env", "EXIT_CODE=42", wasm, "one", "--two",
              env=vm_env)
    assert r.returncode == 42, r.stderr
    out = r.stdout.decode().splitlines()
    assert out[:3] == [f"arg[0]={wasm.name}", "arg[1]=one", "arg[2]=--two"]
    envs = [ln.removeprefix("env:") for ln in out if ln.startswith("env:")]
    assert envs == ["FD_COUNT=3", "FD_NAMES=stdin:stdout:stderr", "A=1", "EXIT_CODE=42"]
    err = r.stderr.decode()
    # One line says why this is TCG; the kvm backend's not-confidential warning is there too.
    assert err.count("TCG") == 1 and "ENARX_VM_ACCEL=tcg" in err
    assert "not confidential" in err
    # ...but not the inner nil run's: the VM's runtime is an implementation detail.
    assert "nil backend" not in err


def test_one_mib_stdin_to_stdout_byte_exact(enarx: RunEnarx, vm_env: dict[str, str]) -> None:
    data = os.urandom(1 << 20)
    r = enarx("run", *KVM, build_c("cli_cat.c"), input=data, env=vm_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_trap_exits_134_with_output_before_it(enarx: RunEnarx, vm_env: dict[str, str]) -> None:
    r = enarx("run", *KVM, build_c("cli_trap.c", "-g"), env=vm_env)
    assert r.returncode == 134, r.stderr
    assert r.stdout == b"about to trap\n"
    assert "error: trap: unreachable" in r.stderr.decode()


def _qemu_children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and cmd.startswith(b"qemu-system-x86_64"):
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_timeout_kills_the_vm_and_exits_124(enarx: RunEnarx, vm_env: dict[str, str]) -> None:
    started = time.monotonic()
    r = enarx("run", *KVM, "--timeout", "4", build_c("cli_spin.c"), env=vm_env)
    assert r.returncode == 124, r.stderr
    assert "the VM was stopped" in r.stderr.decode()  # the host enforced the deadline
    assert time.monotonic() - started < 100


def test_no_orphaned_qemu_after_sigkill(module_cache: Path, vm_env: dict[str, str],
                                        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    # A SIGKILLed enarx cannot remove its temp dir: keep it inside tmp_path.
    env.update(vm_env, ENARX_CACHE_DIR=str(module_cache), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([str(ENARX), "run", *KVM, build_c("cli_spin.c"), "sleep"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        qemu: list[int] = []
        while not qemu and time.monotonic() < deadline:
            qemu = _qemu_children(proc.pid)
            time.sleep(0.1)
        assert qemu, "enarx never started QEMU"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while _alive(qemu[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphaned = _alive(qemu[0])
    if orphaned:
        os.kill(qemu[0], signal.SIGKILL)
    assert not orphaned, "QEMU outlived the enarx process that started it"


def test_ctrl_c_tears_the_vm_down(module_cache: Path, vm_env: dict[str, str],
                                  tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    env.update(vm_env, ENARX_CACHE_DIR=str(module_cache), TMPDIR=str(tmp_path))
    proc = subprocess.Popen([str(ENARX), "run", *KVM, build_c("cli_spin.c"), "sleep"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        qemu: list[int] = []
        while not qemu and time.monotonic() < deadline:
            qemu = _qemu_children(proc.pid)
            time.sleep(0.1)
        assert qemu, "enarx never started QEMU"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        proc.stderr.close()
    assert code == 130 and "Traceback" not in err
    assert not _alive(qemu[0])
    assert not list(tmp_path.glob("enarx-vm-*"))  # no leaked temp dir


# --- accelerator choice and platform info (no boot) ------------------------------------------


def _probe_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accel: str) -> None:
    from enarx.vm.launcher import qemu_version

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("ENARX_VM_ACCEL", raising=False)
    probe = tmp_path / "enarx" / "vm" / "kvm-probe.json"
    probe.parent.mkdir(parents=True)
    probe.write_text(json.dumps({"qemu": qemu_version(), "kernel": "/k", "initrd": "/i",
                                 "accel": accel, "why": f"probe said {accel}"}))


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="needs /dev/kvm")
def test_cached_probe_decides_the_accelerator_without_booting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enarx.vm.launcher import choose_accel

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    assert not KvmBackend().available()  # not probed: a default run never boots a probe
    _probe_result(tmp_path, monkeypatch, "tcg")
    assert choose_accel("/k", "/i") == ("tcg", "probe said tcg")
    assert not KvmBackend().available()  # never the default unless KVM really boots
    _probe_result(tmp_path / "b", monkeypatch, "kvm")
    assert choose_accel("/k", "/i") == ("kvm", "probe said kvm")
    assert KvmBackend().available()


def test_platform_info_shows_qemu_and_the_accelerator(
        enarx: RunEnarx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _probe_result(tmp_path, monkeypatch, "tcg")
    checks = {c.name: c for c in KvmBackend().probe()}
    assert checks["qemu-system-x86_64"].passed
    assert checks["qemu-system-x86_64"].detail.startswith("QEMU ")
    assert "TCG fallback: probe said tcg" in checks["vm accelerator"].detail or \
        "no usable /dev/kvm" in checks["vm accelerator"].detail
    r = enarx("platform", "info", env={"XDG_CACHE_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "qemu-system-x86_64" in r.stdout.decode()


# --- bad input (no boot) ---------------------------------------------------------------------


def test_missing_qemu_is_a_clear_error(enarx: RunEnarx, tmp_path: Path) -> None:
    r = enarx("run", *KVM, build_c("hello.c"), env={"PATH": str(tmp_path)})
    assert r.returncode == 3
    err = r.stderr.decode()
    assert "qemu-system-x86_64: not found" in err and "hint: install qemu-system-x86" in err
    assert "Traceback" not in err


def test_protocol_frames_round_trip_and_refuse_oversized_lengths() -> None:
    import io
    import struct

    from enarx.vm.agent import FRAME_LIMIT, encode, read_frame

    stream = io.BytesIO(encode(b"O", b"x" * 70000) + encode(b"E"))
    assert read_frame(stream.read) == (b"O", b"x" * 70000)
    assert read_frame(stream.read) == (b"E", b"")
    assert read_frame(stream.read) is None
    with pytest.raises(ValueError, match="exceeds"):
        read_frame(io.BytesIO(struct.pack(">BI", ord("M"), FRAME_LIMIT + 1)).read)
    with pytest.raises(EOFError):
        read_frame(io.BytesIO(encode(b"O", b"abc")[:-1]).read)


def test_closed_stdout_stops_a_flooding_guest(module_cache: Path,
                                              vm_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENARX_")}
    env.update(vm_env, ENARX_CACHE_DIR=str(module_cache))
    proc = subprocess.Popen([str(ENARX), "run", *KVM, build_c("cli_yes.c"), "big"], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.read(1 << 20) == b"y" * (1 << 20)  # the flood arrives...
        proc.stdout.close()  # ...and the reader goes away, as with `| head`
        code = proc.wait(timeout=60)
        err = proc.stderr.read().decode()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    assert code == 1 and "Traceback" not in err


def test_guest_ram_is_sized_from_max_memory(enarx: RunEnarx, vm_env: dict[str, str],
                                            tmp_path: Path) -> None:
    """`--max-memory` sizes the VM: 320 MiB for the kernel, Python and wasmtime plus the
    workload's limit (1 GiB without one, at most 2 GiB), read from the QEMU command line a
    stand-in records."""
    from tests.vm import fakeqemu

    bin_dir = fakeqemu.install(tmp_path / "bin", "7.2.22")  # refuses to start: no boot
    env = {**vm_env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for limit in ([], ["--max-memory", "64M"], ["--max-memory", "3G"]):
        r = enarx("run", *KVM, *limit, build_c("hello.c"), env=env)
        assert r.returncode == 1 and fakeqemu.ERROR in r.stderr.decode(), r.stderr
    sizes = [argv[argv.index("-m") + 1] for argv in fakeqemu.recorded(bin_dir)]
    assert sizes == ["1344M", "384M", "2368M"]
