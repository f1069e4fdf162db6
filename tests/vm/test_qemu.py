"""QEMU command lines for VM Keeps, checked against QEMU's documented options.

The tcg line is also booted by the installed QEMU in test_launch.py;
SNP/TDX lines need QEMU >= 9.1 / 10.1 and the hardware, so here they are checked against the
option spellings of QEMU's documentation (amd-memory-encryption, tdx).
"""

from __future__ import annotations

import base64

import pytest

from enarx.errors import UsageError
from enarx.vm.qemu import AGENT_PORT, VmSpec, command_line

SPEC = VmSpec(kernel="/img/vmlinuz", initrd="/img/initrd.gz", append="console=ttyS0",
              agent_socket="/run/k/agent.sock", console_log="/run/k/console.log",
              memory_mib=640, vcpus=2, firmware="/fw/OVMF.fd", identity=b"\x11" * 32)


def _opt(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == name]


def _props(value: str) -> dict[str, str]:
    head, *rest = value.split(",")
    props = dict(p.split("=", 1) for p in rest)
    props["_type"] = head
    return props


@pytest.mark.parametrize("mode", ["kvm", "tcg", "snp", "tdx"])
def test_every_mode_is_headless_with_explicit_chardevs(mode: str) -> None:
    argv = command_line(mode, SPEC)
    assert argv[0] == "qemu-system-x86_64"
    assert _opt(argv, "-display") == ["none"]
    assert "-nographic" not in argv and "-nodefaults" in argv
    assert _opt(argv, "-m") == ["640M"] and _opt(argv, "-smp") == ["2"]
    assert _opt(argv, "-kernel") == ["/img/vmlinuz"]
    assert _opt(argv, "-initrd") == ["/img/initrd.gz"]
    assert _opt(argv, "-append") == ["console=ttyS0"]
    chardevs = {_props(c)["id"]: _props(c) for c in _opt(argv, "-chardev")}
    assert chardevs["agent"]["_type"] == "socket"
    assert chardevs["agent"]["path"] == "/run/k/agent.sock"
    assert chardevs["agent"]["server"] == "on"
    assert chardevs["console"] == {"_type": "file", "id": "console", "path": "/run/k/console.log"}
    assert _opt(argv, "-serial") == ["chardev:console"]
    assert f"virtserialport,chardev=agent,name={AGENT_PORT}" in _opt(argv, "-device")


def test_tcg_and_kvm_boot_q35_with_their_accelerator() -> None:
    tcg, kvm = command_line("tcg", SPEC), command_line("kvm", SPEC)
    assert _opt(tcg, "-accel") == ["tcg"] and _opt(tcg, "-cpu") == ["max"]
    assert _opt(kvm, "-accel") == ["kvm"] and _opt(kvm, "-cpu") == ["host"]
    for argv in (tcg, kvm):
        # q35: the Debian kernel finds no virtio-mmio devices on microvm.
        assert _opt(argv, "-M") == ["q35"]
        assert "-bios" not in argv  # direct kernel boot: no firmware, nothing to measure
        assert "virtio-serial-pci" in _opt(argv, "-device")
        # wait=off: the guest must see the host connect after its driver is up, or its
        # first write blocks forever (measured: the agent hung with wait=on).
        agent = next(c for c in _opt(argv, "-chardev") if c.startswith("socket,id=agent"))
        assert _props(agent)["wait"] == "off"


def test_snp_uses_sev_snp_guest_with_kernel_hashes_and_host_data() -> None:
    argv = command_line("snp", SPEC)
    assert _opt(argv, "-accel") == ["kvm"] and _opt(argv, "-bios") == ["/fw/OVMF.fd"]
    objects = {_props(o)["_type"]: _props(o) for o in _opt(argv, "-object")}
    snp = objects["sev-snp-guest"]
    assert snp["id"] == "sev0" and snp["kernel-hashes"] == "on"
    assert {"cbitpos", "reduced-phys-bits"} <= snp.keys()
    assert base64.b64decode(snp["host-data"]) == b"\x11" * 32
    machine = _props(_opt(argv, "-machine")[0])
    assert machine["_type"] == "q35" and machine["confidential-guest-support"] == "sev0"
    assert objects["memory-backend-memfd"]["id"] == machine["memory-backend"]
    assert "virtio-serial-pci,disable-legacy=on,iommu_platform=on" in _opt(argv, "-device")


def test_tdx_uses_tdx_guest_with_mrconfigid_padded_to_48_bytes() -> None:
    argv = command_line("tdx", SPEC)
    tdx = _props(_opt(argv, "-object")[0])
    assert tdx["_type"] == "tdx-guest" and tdx["id"] == "tdx0"
    assert base64.b64decode(tdx["mrconfigid"]) == b"\x11" * 32 + b"\0" * 16
    machine = _props(_opt(argv, "-machine")[0])
    assert machine["confidential-guest-support"] == "tdx0"
    assert machine["kernel-irqchip"] == "split"
    assert _opt(argv, "-bios") == ["/fw/OVMF.fd"]


@pytest.mark.parametrize(("mode", "size"), [("snp", 33), ("tdx", 49)])
def test_identity_longer_than_the_field_is_refused(mode: str, size: int) -> None:
    from dataclasses import replace

    with pytest.raises(UsageError, match="at most"):
        command_line(mode, replace(SPEC, identity=b"x" * size))


def test_confidential_modes_need_firmware_and_bad_modes_are_refused() -> None:
    from dataclasses import replace

    with pytest.raises(UsageError, match="firmware"):
        command_line("snp", replace(SPEC, firmware=None))
    with pytest.raises(UsageError, match="unknown VM mode"):
        command_line("xen", SPEC)
    with pytest.raises(UsageError, match="64 MiB"):
        command_line("tcg", replace(SPEC, memory_mib=16))


def test_confidential_modes_give_every_virtio_device_platform_dma() -> None:
    from dataclasses import replace

    from enarx.vm.network import NetSpec
    from enarx.vm.shares import Share

    spec = replace(SPEC, net=NetSpec(),
                   shares=(Share(host="/data", tag="enarx0", readonly=True),))
    for mode in ("snp", "tdx"):
        pci = [d for d in _opt(command_line(mode, spec), "-device")
               if d.split(",")[0].startswith("virtio-") and d.split(",")[0].endswith("-pci")]
        assert [d.split(",")[0] for d in pci] == ["virtio-serial-pci", "virtio-net-pci",
                                                  "virtio-9p-pci"]
        for device in pci:
            props = _props(device)
            assert props["iommu_platform"] == "on" and props["disable-legacy"] == "on", device
    for mode in ("kvm", "tcg"):  # plain VMs: unchanged (what boots in test_launch.py)
        assert not any("iommu_platform" in d for d in _opt(command_line(mode, spec), "-device"))
