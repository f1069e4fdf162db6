"""The SEV-SNP launch digest of a Keep image, computed ahead of time with ``sev-snp-measure``.

The digest covers the OVMF firmware, the VMSAs of ``vcpus`` vCPUs of ``vcpu_type`` and —
through OVMF's SNP kernel-hashes table — the SHA-256 of the kernel, the initramfs and the
kernel command line. It only exists for an OVMF built with SNP kernel-hashes metadata (edk2's
``OvmfPkg/AmdSev`` build, ``OVMF.amdsev.fd``); Debian's ``ovmf`` package has none, and the
error says so. For TDX no maintained Python tool computes MRTD/RTMRs, so ``TDX_UNSUPPORTED``
states what is missing instead of a made-up value.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sevsnpmeasure.guest import snp_calc_launch_digest  # type: ignore[import-untyped]
from sevsnpmeasure.ovmf import OVMF, SectionType  # type: ignore[import-untyped]
from sevsnpmeasure.vcpu_types import CPU_SIGS  # type: ignore[import-untyped]
from sevsnpmeasure.vmm_types import VMMType  # type: ignore[import-untyped]

from enarx.errors import UsageError

__all__ = [
    "DEFAULT_GUEST_FEATURES", "DEFAULT_VCPU_TYPE", "MAX_VCPUS", "TDX_UNSUPPORTED",
    "MeasureError", "sim_launch_digest", "snp_launch_digest", "vcpu_types",
]

DEFAULT_VCPU_TYPE = "EPYC-v4"
#: SEV_FEATURES of the guest's VMSA: bit 0 = SNP active (QEMU's default for sev-snp-guest).
DEFAULT_GUEST_FEATURES = 0x1
MAX_VCPUS = 512
_AMDSEV_HINT = ("use an OVMF built from edk2's OvmfPkg/AmdSev/AmdSevX64.dsc (OVMF.amdsev.fd); "
                "Debian's ovmf package has no SNP kernel-hashes metadata")
TDX_UNSUPPORTED = (
    "TDX MRTD/RTMR values cannot be computed ahead of time here: no maintained Python tool "
    "computes them, and MRTD depends on the TDVF build and the QEMU version that loads it. "
    "Read MRTD/RTMR[0-2] from a first TD quote of the image (`enarx attest`) and pin those."
)


class MeasureError(UsageError):
    """The measurement inputs are unusable (bad OVMF, vCPU type or count)."""

    default_hint = "see `enarx keep image measure --help` and docs/vm-keeps.md, 'Measuring'"


def vcpu_types() -> list[str]:
    """vCPU model names ``sev-snp-measure`` knows the CPUID signature of."""
    return sorted(CPU_SIGS)


def _check_ovmf(ovmf: Path) -> None:
    if not ovmf.is_file():
        raise MeasureError(f"OVMF firmware not found: {ovmf}", hint=_AMDSEV_HINT)
    try:
        parsed = OVMF(str(ovmf))
        ok = (parsed.has_metadata_section(SectionType.SNP_KERNEL_HASHES)
              and parsed.is_sev_hashes_table_supported())
    except (RuntimeError, ValueError, OSError) as exc:
        raise MeasureError(f"{ovmf} is not a usable SEV OVMF image: {exc}",
                           hint=_AMDSEV_HINT) from None
    if not ok:
        raise MeasureError(f"{ovmf} has no SNP kernel-hashes metadata, so the kernel, "
                           "initramfs and command line would not be measured",
                           hint=_AMDSEV_HINT)


def snp_launch_digest(*, kernel: Path, initrd: Path, append: str, ovmf: Path, vcpus: int = 1,
                      vcpu_type: str = DEFAULT_VCPU_TYPE,
                      guest_features: int = DEFAULT_GUEST_FEATURES) -> bytes:
    """The 48-byte SNP launch digest (MEASUREMENT) of this kernel+initrd+append under QEMU."""
    if not 1 <= vcpus <= MAX_VCPUS:
        raise MeasureError(f"--vcpus must be between 1 and {MAX_VCPUS}, not {vcpus}")
    if vcpu_type not in CPU_SIGS:
        raise MeasureError(f"unknown vCPU type {vcpu_type!r}",
                           hint="one of: " + ", ".join(vcpu_types()))
    for what, path in (("kernel", kernel), ("initramfs", initrd)):
        if not path.is_file():
            raise MeasureError(f"the image's {what} is missing: {path}",
                               hint="build it with `enarx keep image build`")
    _check_ovmf(ovmf)
    try:
        digest = snp_calc_launch_digest(vcpus, CPU_SIGS[vcpu_type], str(ovmf), str(kernel),
                                        str(initrd), append, guest_features, "", VMMType.QEMU)
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise MeasureError(f"cannot measure with {ovmf}: {exc}", hint=_AMDSEV_HINT) from None
    return bytes(digest)


def sim_launch_digest(*, kernel: Path, initrd: Path, append: str, vcpus: int = 1,
                      vcpu_type: str = DEFAULT_VCPU_TYPE) -> bytes:
    """The launch digest a sim VM Keep reports: :func:`snp_launch_digest` with the generated
    sim firmware (``enarx.vm.simfw``) in place of OVMF."""
    from enarx.vm.simfw import SIM_FIRMWARE_ID, sim_firmware

    with tempfile.TemporaryDirectory(prefix="enarx-simfw-") as tmp:
        fw = Path(tmp, SIM_FIRMWARE_ID + ".fd")
        fw.write_bytes(sim_firmware())
        return snp_launch_digest(kernel=kernel, initrd=initrd, append=append, ovmf=fw,
                                 vcpus=vcpus, vcpu_type=vcpu_type)
