"""sev-snp / tdx: guest, host or neither (platform/launchmode.py), from fake /dev, /sys and /proc
trees read through ``Backend.path``, and what `enarx platform info` shows for each."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from enarx.platform import tsm
from enarx.platform.launchmode import Facts, decide, gather, parse_qemu_version, qemu_too_old
from enarx.platform.snp import SnpBackend
from enarx.platform.tdx import TdxBackend
from tests.cliutil import RunEnarx
from tests.vm import fakeqemu

SNP_HOST = Facts(tee="snp", cpu_flag=True, guest_device=False, configfs_tsm=False,
                 host_param="Y\n", host_device=True, kvm=True, qemu="9.1.0",
                 firmware="/fw/OVMF.amdsev.fd", firmware_exists=True)
TDX_HOST = Facts(tee="tdx", cpu_flag=False, guest_device=False, configfs_tsm=False,
                 host_param="Y\n", host_device=True, kvm=True, qemu="10.1.0",
                 firmware="/fw/OVMF.inteltdx.fd", firmware_exists=True)


def _tree(root: Path, files: dict[str, str], dirs: tuple[str, ...] = ()) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for d in dirs:
        (root / d.lstrip("/")).mkdir(parents=True)
    return root


def test_decide_guest_host_neither_with_reasons() -> None:
    host = decide(SNP_HOST)
    assert host.mode == "host" and host.missing == () and host.firmware == "/fw/OVMF.amdsev.fd"
    assert host.reason == ("an SEV-SNP host (kvm_amd sev_snp=Y): each workload boots in its "
                           "own SEV-SNP VM")
    # A guest wins over a host (nested): the workload runs in-process, as before.
    guest = decide(replace(SNP_HOST, guest_device=True))
    assert guest.mode == "guest" and "/dev/sev-guest present" in guest.reason
    assert decide(replace(SNP_HOST, host_param=None, host_device=False, configfs_tsm=True)
                  ).mode == "guest"  # configfs-tsm + the sev_snp flag
    neither = decide(replace(SNP_HOST, host_param="N\n", host_device=False, kvm=False))
    assert neither.mode == "neither"
    assert neither.reason == ("not an SEV-SNP guest (no /dev/sev-guest) and not an SEV-SNP "
                              "host (kvm_amd sev_snp is N, /dev/sev is missing, /dev/kvm is "
                              "not usable)")
    assert "kvm_intel tdx is not loaded" in decide(replace(TDX_HOST, host_param=None)).reason
    assert decide(replace(TDX_HOST, cpu_flag=True)).mode == "guest"
    assert decide(TDX_HOST).mode == "host"


def test_a_host_lacking_qemu_or_firmware_names_each_piece() -> None:
    old = decide(replace(SNP_HOST, qemu="8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)",
                         firmware=None, firmware_exists=False))
    assert old.mode == "host"
    assert [(c.name, c.detail) for c in old.missing] == [
        ("QEMU >= 9.1", "QEMU 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1) is too old for snp "
                        "(sev-snp-guest): needs 9.1 or newer"),
        ("SEV-SNP firmware", "not set")]
    assert "ENARX_SNP_FIRMWARE" in old.missing[1].hint
    tdx = decide(replace(TDX_HOST, qemu=None, firmware_exists=False))
    assert [(c.name, c.detail) for c in tdx.missing] == [
        ("QEMU >= 10.1", "qemu-system-x86_64 not found"),
        ("TDX firmware", "/fw/OVMF.inteltdx.fd not found")]
    assert decide(replace(TDX_HOST, qemu="10.0.3")).missing[0].detail == (
        "QEMU 10.0.3 is too old for tdx (tdx-guest): needs 10.1 or newer")


def test_qemu_versions() -> None:
    assert parse_qemu_version("7.2.22") == (7, 2)
    assert parse_qemu_version("10.1.0 (v10.1.0)") == (10, 1)
    assert parse_qemu_version("garbage") is None
    assert qemu_too_old("kvm", "7.2.0") is None and qemu_too_old("snp", "9.1.0") is None
    assert qemu_too_old("kvm", "7.1.0") == "QEMU 7.1.0 is too old for kvm: needs 7.2 or newer"
    assert qemu_too_old("tdx", "x") == "cannot read QEMU's version from 'x'"


def test_gather_reads_the_trees_and_finds_the_firmware(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENARX_SNP_FIRMWARE", raising=False)
    root = _tree(tmp_path / "host", {"sys/module/kvm_amd/parameters/sev_snp": "Y\n",
                                     "dev/sev": "", "dev/kvm": "",
                                     "proc/cpuinfo": "flags\t: fpu sev_snp\n",
                                     "usr/share/ovmf/OVMF.amdsev.fd": "fw"})
    b = SnpBackend(root)
    facts = gather(b, "snp", qemu_version="9.1.0")
    assert (facts.host_param, facts.host_device, facts.kvm) == ("Y\n", True, True)
    assert facts.firmware == str(root / "usr/share/ovmf/OVMF.amdsev.fd")  # the default path
    env_fw = tmp_path / "env.fd"
    env_fw.write_text("fw")
    monkeypatch.setenv("ENARX_SNP_FIRMWARE", str(env_fw))
    assert gather(b, "snp", qemu_version="9.1.0").firmware == str(env_fw)  # env beats default
    flag_fw = tmp_path / "flag.fd"
    assert gather(b, "snp", str(flag_fw), qemu_version="9.1.0") == replace(
        facts, firmware=str(flag_fw), firmware_exists=False)  # --firmware beats env
    # Not a host: QEMU is not even asked.
    guest = _tree(tmp_path / "guest", {"dev/sev-guest": "", "proc/cpuinfo": "flags\t: sev_snp\n"},
                  dirs=(tsm.TSM_REPORT_DIR,))
    facts = gather(SnpBackend(guest), "snp")
    assert facts.qemu is None and facts.guest_device and facts.configfs_tsm


def test_platform_rows_per_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{fakeqemu.install(tmp_path / 'bin', '10.1.0')}:"
                       f"{os.environ['PATH']}")
    fw = tmp_path / "OVMF.inteltdx.fd"
    fw.write_text("fw")
    monkeypatch.setenv("ENARX_TDX_FIRMWARE", str(fw))
    host = TdxBackend(_tree(tmp_path / "h", {"sys/module/kvm_intel/parameters/tdx": "Y\n",
                                             "dev/kvm": "", "proc/cpuinfo": "flags\t: vmx\n"}))
    rows = host.probe()
    assert [(c.name, c.passed) for c in rows] == [("mode", True), ("QEMU >= 10.1", True),
                                                  ("TDX firmware", True)]
    assert rows[0].detail.startswith("host: a TDX host (kvm_intel tdx=Y)")
    assert host.available() and host.vm_mode() == "tdx"
    checks, facts = host.info()
    assert checks == rows
    assert facts == {"mode": "host", "reason": rows[0].detail.removeprefix("host: ")}
    monkeypatch.delenv("ENARX_TDX_FIRMWARE")
    host = TdxBackend(host.root)
    assert [c.name for c in host.probe() if not c.passed] == ["TDX firmware"]
    assert not host.available() and host.vm_mode() == "tdx"
    guest = TdxBackend(_tree(tmp_path / "g", {"dev/tdx_guest": "",
                                              "proc/cpuinfo": "flags\t: tdx_guest\n"},
                             dirs=(tsm.TSM_REPORT_DIR,)))
    assert guest.probe()[0].detail.startswith("guest: inside a TDX guest")
    assert guest.available() and guest.vm_mode() is None  # in-process, as before


def test_platform_info_json_says_which_mode_and_why(enarx: RunEnarx) -> None:
    import json

    r = enarx("platform", "info", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["backend"]: row for row in json.loads(r.stdout)["backends"]}
    for name, backend in (("sev-snp", SnpBackend()), ("tdx", TdxBackend())):
        mode = backend.mode()  # this machine, decided in-process the same way
        assert rows[name]["details"] == {"mode": mode.mode, "reason": mode.reason}
        assert rows[name]["checks"][0]["name"] == "mode"
    r = enarx("platform", "info")
    assert r.returncode == 0 and "mode" in r.stdout.decode()
