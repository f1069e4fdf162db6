"""`enarx run --backend sev-snp|tdx` on an SNP/TDX *host* (vm/hostlaunch.py) and the launcher's
fault paths, without hardware and without booting a VM.

Honest scope: no SNP/TDX host exists here. The host is a fake /dev + /sys tree read through
``Backend.path`` and QEMU 9.1+ is the stand-in of tests/vm/fakeqemu.py, which records the
argv the launcher runs and then refuses to start. What is checked is ours: the mode decision,
every missing piece named, the exact argv (sev-snp-guest with HOST_DATA = the workload's
launch binding, the firmware, the image's kernel/initrd/append), no KVM probe, and that the
private temp dir is removed on every error path.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from enarx.errors import PlatformError, UsageError
from enarx.platform.snp import SnpBackend
from enarx.platform.tdx import TdxBackend
from enarx.runtime.run import RunLimits
from enarx.vm.hostlaunch import guest_kernel_lacks, identity_binding, plan
from enarx.vm.launcher import run_cli
from enarx.vm.measure import MeasureError
from enarx.workload import identity_of, parse_identity
from tests.cliutil import RunEnarx
from tests.guestbuild import build_c
from tests.vm import fakeqemu
from tests.vm.test_measure import synthetic_ovmf


def _host(root: Path, tee: str) -> Path:
    """A fake SNP or TDX host: kvm module parameter on, /dev/kvm (and /dev/sev for SNP)."""
    param = ("sys/module/kvm_amd/parameters/sev_snp" if tee == "snp"
             else "sys/module/kvm_intel/parameters/tdx")
    (root / param).parent.mkdir(parents=True)
    (root / param).write_text("Y\n")
    (root / "dev").mkdir()
    (root / "dev/kvm").write_text("")
    if tee == "snp":
        (root / "dev/sev").write_text("")
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("flags\t: fpu sev sev_es sev_snp\n" if tee == "snp"
                                       else "flags\t: fpu vmx\n")
    return root


@pytest.fixture
def qemu91(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = fakeqemu.install(tmp_path / "bin", "9.1.0")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def _plan(backend: Any, wasm: bytes = b"\0asm\1\0\0\0") -> Any:
    return plan(backend, wasm, None, dirs=[], args=(), env=[], fd_env=True)


def test_snp_host_boots_the_snp_command_line_with_the_workload_binding(
        tmp_path: Path, qemu91: Path, vm_env: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from enarx.vm.image import load_image

    for key, value in vm_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ENARX_VM_ACCEL")  # a confidential launch never asks for an accelerator
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    backend = SnpBackend(_host(tmp_path / "root", "snp"))
    backend.use_firmware(str(synthetic_ovmf(tmp_path / "OVMF.amdsev.fd")))
    assert backend.vm_mode() == "snp" and backend.available()
    wasm = build_c("hello.c").read_bytes()
    with pytest.raises(PlatformError) as exc:
        run_cli(wasm, "hello.wasm", None, dirs=[], args=("a",), env=[("K", "v")],
                limits=RunLimits(max_memory=4 << 30, timeout=None, fuel=None), fd_env=True,
                steward=None, warn=lambda _: None, backend=backend)
    assert "QEMU exited (1) before the VM booted" in exc.value.message
    assert fakeqemu.ERROR in exc.value.message  # QEMU's own words reach the user
    [argv] = fakeqemu.recorded(qemu91)  # exactly one start: no KVM probe, no retry

    def opt(name: str) -> list[str]:
        return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]

    # The cached image the launcher used (re-hashed against its manifest).
    image = load_image(Path(opt("-initrd")[0]).parent)
    assert Path(image.directory).parent == Path(vm_env["ENARX_VM_IMAGE_CACHE"])
    assert opt("-kernel") == [str(image.kernel.path)]
    assert opt("-initrd") == [str(image.initrd.path)]
    assert opt("-append") == [image.append]  # byte-identical to what measure hashes
    assert opt("-bios") == [str(tmp_path / "OVMF.amdsev.fd")]
    assert opt("-accel") == ["kvm"] and opt("-cpu") == ["EPYC-v4"] and opt("-smp") == ["1"]
    snp = next(o for o in opt("-object") if o.startswith("sev-snp-guest,"))
    props = dict(p.split("=", 1) for p in snp.split(",")[1:])
    ident = identity_of(wasm, None, extra_args=("a",), extra_env=[("K", "v")])
    assert base64.b64decode(props["host-data"]) == hashlib.sha256(parse_identity(ident)).digest()
    assert props["kernel-hashes"] == "on"
    assert not list(tmp_path.glob("enarx-vm-*"))  # the private temp dir is gone
    assert not (Path(vm_env["XDG_CACHE_HOME"]) / "enarx/vm/kvm-probe.json").exists()


def test_tdx_binding_is_the_identity_itself_and_snp_its_sha256() -> None:
    ident = "sha384:" + "ab" * 48
    assert identity_binding("tdx", ident) == bytes.fromhex("ab" * 48)
    assert identity_binding("snp", ident) == hashlib.sha256(bytes.fromhex("ab" * 48)).digest()


def test_each_missing_host_piece_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _host(tmp_path / "root", "snp")
    monkeypatch.delenv("ENARX_SNP_FIRMWARE", raising=False)
    monkeypatch.setenv("PATH", f"{fakeqemu.install(tmp_path / 'old', '8.2.2')}:"
                       f"{os.environ['PATH']}")
    with pytest.raises(PlatformError) as exc:
        _plan(SnpBackend(root))
    assert exc.value.message == ("cannot launch SEV-SNP VM Keeps on this host: QEMU >= 9.1: "
                                 "QEMU 8.2.2 is too old for snp (sev-snp-guest): needs 9.1 or "
                                 "newer")
    assert exc.value.hint and "9.1" in exc.value.hint
    monkeypatch.setenv("PATH", f"{fakeqemu.install(tmp_path / 'new', '9.1.0')}:"
                       f"{os.environ['PATH']}")
    with pytest.raises(PlatformError, match="SEV-SNP firmware: not set") as exc:
        _plan(SnpBackend(root))
    assert exc.value.hint and "ENARX_SNP_FIRMWARE" in exc.value.hint
    monkeypatch.setenv("ENARX_SNP_FIRMWARE", str(tmp_path / "nope.fd"))
    with pytest.raises(PlatformError, match=r"SEV-SNP firmware: .*nope.fd not found"):
        _plan(SnpBackend(root))
    # Debian's OVMF (no kernel-hashes metadata) would leave the image unmeasured: refused.
    monkeypatch.setenv("ENARX_SNP_FIRMWARE",
                       str(synthetic_ovmf(tmp_path / "plain.fd", kernel_hashes=False)))
    with pytest.raises(MeasureError, match="no SNP kernel-hashes metadata"):
        _plan(SnpBackend(root))


def test_tdx_host_refuses_an_image_kernel_without_tdx_guest_support(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from enarx.vm.image import KERNEL_RELEASE

    config = Path(f"/boot/config-{KERNEL_RELEASE}")
    if not config.exists() or not guest_kernel_lacks("tdx", config.read_text()):
        pytest.skip("this machine's image kernel can boot as a TD")
    monkeypatch.setenv("PATH", f"{fakeqemu.install(tmp_path / 'bin', '10.1.0')}:"
                       f"{os.environ['PATH']}")
    backend = TdxBackend(_host(tmp_path / "root", "tdx"))
    backend.use_firmware(str(synthetic_ovmf(tmp_path / "OVMF.inteltdx.fd")))
    assert backend.vm_mode() == "tdx"
    with pytest.raises(PlatformError) as exc:
        _plan(backend)
    assert f"kernel {KERNEL_RELEASE} cannot boot as a TDX guest" in exc.value.message
    assert "CONFIG_INTEL_TDX_GUEST" in exc.value.message
    assert exc.value.hint and "ENARX_VM_KERNEL_RELEASE" in exc.value.hint


def test_guest_kernel_options() -> None:
    snp_ok = "CONFIG_AMD_MEM_ENCRYPT=y\nCONFIG_SEV_GUEST=m\n# CONFIG_INTEL_TDX_GUEST is not set\n"
    assert guest_kernel_lacks("snp", snp_ok) == []
    assert guest_kernel_lacks("tdx", snp_ok) == ["CONFIG_INTEL_TDX_GUEST"]
    assert guest_kernel_lacks("snp", "CONFIG_AMD_MEM_ENCRYPT=y\n") == ["CONFIG_SEV_GUEST"]


# --- the real CLI ----------------------------------------------------------------------------


def test_run_on_a_machine_that_is_neither_names_the_reason(enarx: RunEnarx) -> None:
    backend = SnpBackend()
    if backend.mode().mode != "neither":
        pytest.skip("this machine is an SNP host or guest")
    r = enarx("run", "--backend", "sev-snp", build_c("hello.c"))
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert "backend 'sev-snp' is not available here: mode: neither: not an SEV-SNP guest" in err
    assert "hint: run inside an SEV-SNP guest, or on an SNP host" in err
    r = enarx("run", "--backend", "kvm", "--firmware", "x.fd", build_c("hello.c"))
    assert r.returncode == 2
    assert "--firmware applies to sev-snp and tdx host launches" in r.stderr.decode()


def test_qemu_too_old_for_kvm_is_a_clear_error(enarx: RunEnarx, tmp_path: Path) -> None:
    bin_dir = fakeqemu.install(tmp_path / "bin", "6.2.0")
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "ENARX_VM_ACCEL": "tcg"}
    r = enarx("run", "--backend", "kvm", build_c("hello.c"), env=env)
    err = r.stderr.decode()
    assert r.returncode == 3, err
    assert "QEMU 6.2.0 is too old for kvm: needs 7.2 or newer" in err
    assert "hint: install qemu-system-x86 (7.2 or newer)" in err and "Traceback" not in err
    assert fakeqemu.recorded(bin_dir) == []  # refused before anything was started


def test_agent_dying_mid_run_is_a_clear_error_and_leaves_nothing(
        enarx: RunEnarx, vm_env: dict[str, str], tmp_path: Path) -> None:
    bin_dir = fakeqemu.install(tmp_path / "bin", "7.2.22", behaviour="die")
    env = {**vm_env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    r = enarx("run", "--backend", "kvm", build_c("hello.c"), env=env)
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert f"the VM Keep's agent died: {fakeqemu.CONSOLE_LINE}" in err  # the guest's last words
    assert "hint: re-run; if it persists, rebuild the image" in err and "Traceback" not in err
    assert len(fakeqemu.recorded(bin_dir)) == 1
    assert not list(tmp_path.glob("enarx-vm-*"))


def test_qemu_that_cannot_start_is_a_clear_error_and_leaves_no_temp_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from enarx.vm.launcher import APPEND, _boot

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "qemu-system-x86_64").write_text("not a program\n")  # not executable
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(PlatformError) as exc:
        _boot("tcg", "/img/vmlinuz", "/img/initramfs.img", 256, APPEND)
    assert exc.value.message == "cannot start qemu-system-x86_64: Permission denied"
    assert not list(tmp_path.glob("enarx-vm-*"))


def test_deploy_on_an_snp_host_is_refused_with_a_way_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import enarx.platform
    from enarx.cli.deploy_cmd import deploy

    monkeypatch.setenv("PATH", f"{fakeqemu.install(tmp_path / 'bin', '9.1.0')}:"
                       f"{os.environ['PATH']}")
    host = SnpBackend(_host(tmp_path / "root", "snp"))  # this machine is no SNP host
    monkeypatch.setattr(enarx.platform, "select", lambda name, **_: host)
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.wasm").write_bytes(build_c("hello.c").read_bytes())
    r = CliRunner().invoke(deploy, ["--backend", "sev-snp", f"file://{app}"])
    err = r.exception
    assert isinstance(err, UsageError), r.output  # enarx's main prints it, exit 2
    assert err.message.startswith("`enarx deploy --backend sev-snp` on this host (it would "
                                  "launch a confidential VM) is not supported yet")
    assert err.hint and "enarx run --backend sev-snp DIR/main.wasm" in err.hint
    assert fakeqemu.recorded(tmp_path / "bin") == []  # nothing was launched
