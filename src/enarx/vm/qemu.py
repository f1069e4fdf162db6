"""The one place QEMU command lines for a VM Keep are built (kvm, TCG, SEV-SNP, TDX).

Pure: no I/O, no process state. The launcher runs what :func:`command_line` returns; the
docs print the same lists for a user with SNP/TDX hardware. The guest talks to the host over
exactly one virtio-serial port (:data:`AGENT_PORT`), backed by a UNIX socket the host owns.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from enarx.errors import UsageError
from enarx.vm.network import NetSpec, qemu_args
from enarx.vm.shares import Share
from enarx.vm.shares import qemu_args as share_args

__all__ = ["AGENT_PORT", "MODES", "VmSpec", "command_line"]

#: The virtio-serial port name the in-VM agent looks for (/sys/class/virtio-ports/*/name).
AGENT_PORT = "org.enarx.agent"
#: kvm and tcg boot a plain VM; snp and tdx a confidential one (host side, real hardware).
MODES = ("kvm", "tcg", "snp", "tdx")


@dataclass(frozen=True)
class VmSpec:
    """What differs between Keeps: image, size, the host sockets/files, the workload identity."""

    kernel: str
    initrd: str
    append: str
    agent_socket: str
    console_log: str
    memory_mib: int = 512
    vcpus: int = 1
    #: OVMF.amdsev.fd (snp) or TDVF (tdx); unused for kvm/tcg, which boot the kernel directly.
    firmware: str | None = None
    #: The workload identity bound into the launch: SNP HOST_DATA (32 bytes), TDX
    #: MRCONFIGID (48 bytes). Shorter values are zero-padded; longer ones are refused.
    identity: bytes = b""
    qemu: str = "qemu-system-x86_64"
    #: The NIC (vm/network.py); None: the VM has no network device at all.
    net: NetSpec | None = None
    #: Pre-opened host directories, one virtio-9p device each (vm/shares.py).
    shares: tuple[Share, ...] = ()


def _pad(identity: bytes, size: int, what: str) -> str:
    if len(identity) > size:
        raise UsageError(f"{what} takes at most {size} bytes, got {len(identity)}",
                         hint="pass a digest of the workload identity, not the identity itself")
    return base64.b64encode(identity.ljust(size, b"\0")).decode()


def command_line(mode: str, spec: VmSpec) -> list[str]:
    """argv for ``mode`` (one of :data:`MODES`) booting ``spec``'s kernel and initramfs."""
    if mode not in MODES:
        raise UsageError(f"unknown VM mode {mode!r}", hint="choose one of: " + ", ".join(MODES))
    if spec.memory_mib < 64 or spec.vcpus < 1:
        raise UsageError(f"a VM Keep needs >= 64 MiB and >= 1 vCPU (got {spec.memory_mib} MiB, "
                         f"{spec.vcpus} vCPUs)", hint="raise --max-memory")
    argv = [spec.qemu, "-nodefaults", "-no-user-config", "-display", "none",
            "-m", f"{spec.memory_mib}M", "-smp", str(spec.vcpus)]
    if mode == "tcg":
        argv += ["-accel", "tcg", "-M", "q35", "-cpu", "max"]
        serial_bus = "virtio-serial-pci"
    elif mode == "kvm":
        argv += ["-accel", "kvm", "-M", "q35", "-cpu", "host"]
        serial_bus = "virtio-serial-pci"
    else:
        if spec.firmware is None:
            raise UsageError(f"{mode} needs its firmware",
                             hint="OVMF.amdsev.fd for snp, TDVF (OVMF.inteltdx.fd) for tdx")
        if mode == "snp":
            argv += ["-accel", "kvm", "-cpu", "EPYC-v4",
                     "-machine", "q35,confidential-guest-support=sev0,"
                     "memory-backend=ram0",
                     "-object", f"memory-backend-memfd,id=ram0,size={spec.memory_mib}M,"
                     "share=true",
                     "-object", "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,"
                     f"kernel-hashes=on,host-data={_pad(spec.identity, 32, 'SNP HOST_DATA')}"]
        else:
            argv += ["-accel", "kvm", "-cpu", "host",
                     "-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx0,"
                     "hpet=off",
                     "-object", "tdx-guest,id=tdx0,"
                     f"mrconfigid={_pad(spec.identity, 48, 'TDX MRCONFIGID')}"]
        argv += ["-bios", spec.firmware]
        serial_bus = "virtio-serial-pci"
    argv += [
        "-kernel", spec.kernel, "-initrd", spec.initrd, "-append", spec.append,
        "-chardev", f"file,id=console,path={spec.console_log}",
        "-serial", "chardev:console",
        "-chardev", f"socket,id=agent,path={spec.agent_socket},server=on,wait=off",
        "-device", serial_bus,
        "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
        "-no-reboot",
    ]
    if spec.net is not None:
        argv += qemu_args(spec.net)
    argv += share_args(spec.shares)
    if mode in ("snp", "tdx"):
        argv = _private_dma(argv)
    return argv


def _private_dma(argv: list[str]) -> list[str]:
    """Confidential guests keep their memory private: every virtio PCI device must use the
    platform DMA API (bounce buffers the guest shares), which the guest kernel insists on,
    and no legacy (pre-1.0) interface, which cannot offer it."""
    out = []
    for prev, arg in zip(["", *argv[:-1]], argv, strict=True):
        device = arg.split(",", 1)[0]
        if prev == "-device" and device.startswith("virtio-") and device.endswith("-pci"):
            arg += ",disable-legacy=on,iommu_platform=on"
        out.append(arg)
    return out
