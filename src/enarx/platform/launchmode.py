"""Where an ``sev-snp`` / ``tdx`` Keep runs: inside this confidential VM (guest), in a
confidential VM that enarx launches with QEMU (host), or nowhere (neither).

:func:`decide` is pure: it takes the facts :func:`gather` probed (through ``Backend.path``, so
tests use fake /dev, /sys and /proc trees) and returns the mode with the reason, and for a
host every piece that is missing for a launch (QEMU too old, no firmware). A confidential
guest wins over a host (nested set-ups run the workload in-process, as before).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Literal

from enarx.platform import tsm
from enarx.platform.base import Backend, Check

__all__ = ["FIRMWARE_DEFAULT", "FIRMWARE_ENV", "MIN_QEMU", "Facts", "HostLaunchable", "Mode",
           "decide", "gather", "mode_checks", "parse_qemu_version", "qemu_too_old"]

Tee = Literal["snp", "tdx"]

#: Oldest QEMU that has what each VM mode uses: q35 + virtio-serial (kvm/tcg), the
#: ``sev-snp-guest`` object (9.1), the ``tdx-guest`` object (10.1).
MIN_QEMU: dict[str, tuple[int, int]] = {"kvm": (7, 2), "tcg": (7, 2), "snp": (9, 1),
                                        "tdx": (10, 1)}
#: Where the firmware comes from unless ``--firmware`` names it.
FIRMWARE_ENV: dict[Tee, str] = {"snp": "ENARX_SNP_FIRMWARE", "tdx": "ENARX_TDX_FIRMWARE"}
#: Distribution paths tried last (Ubuntu's ovmf package ships both names).
FIRMWARE_DEFAULT: dict[Tee, str] = {"snp": "/usr/share/ovmf/OVMF.amdsev.fd",
                                    "tdx": "/usr/share/ovmf/OVMF.inteltdx.fd"}
_LABEL: dict[Tee, str] = {"snp": "SEV-SNP", "tdx": "TDX"}
_A: dict[Tee, str] = {"snp": "an", "tdx": "a"}
_NEITHER_HINT: dict[Tee, str] = {
    "snp": "run inside an SEV-SNP guest, or on an SNP host (kvm_amd sev_snp=Y and /dev/sev: "
           "SNP enabled in the BIOS and a host kernel with SNP support)",
    "tdx": "run inside a TD, or on a TDX host (kvm_intel tdx=Y: TDX enabled in the BIOS and a "
           "host kernel with TDX support)",
}
_FW_HINT: dict[Tee, str] = {
    "snp": "build OVMF.amdsev.fd (docs/vm-keeps.md) and pass --firmware PATH or set "
           "ENARX_SNP_FIRMWARE",
    "tdx": "install TDVF (OVMF.inteltdx.fd) and pass --firmware PATH or set ENARX_TDX_FIRMWARE",
}


@dataclass(frozen=True)
class Facts:
    """What the probes found; every field is a plain value so :func:`decide` stays pure."""

    tee: Tee
    cpu_flag: bool  # sev_snp / tdx_guest in /proc/cpuinfo
    guest_device: bool  # /dev/sev-guest / /dev/tdx_guest
    configfs_tsm: bool  # /sys/kernel/config/tsm/report
    host_param: str | None  # /sys/module/kvm_amd/parameters/sev_snp (kvm_intel/…/tdx); None: absent
    host_device: bool  # snp: /dev/sev (the PSP); tdx: always True (no such node)
    kvm: bool  # /dev/kvm readable and writable
    qemu: str | None = None  # QEMU's version; only probed for a host
    firmware: str | None = None  # the firmware path that would be used
    firmware_exists: bool = False


@dataclass(frozen=True)
class Mode:
    mode: Literal["guest", "host", "neither"]
    reason: str
    #: For a host: what a launch needs (QEMU, firmware), each as a platform-info row.
    pieces: tuple[Check, ...] = ()
    #: For a host: the firmware a launch uses (when found).
    firmware: str | None = None

    @property
    def missing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.pieces if not c.passed)


def parse_qemu_version(text: str | None) -> tuple[int, int] | None:
    """(major, minor) of a version such as ``9.1.2`` or ``8.2.2 (Debian 1:8.2.2+ds-0)``."""
    m = re.match(r"\s*(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def qemu_too_old(mode: str, version: str | None) -> str | None:
    """Why ``version`` cannot run ``mode`` (None when it can)."""
    need = MIN_QEMU[mode]
    have = parse_qemu_version(version)
    if version is None:
        return "qemu-system-x86_64 not found"
    if have is None:
        return f"cannot read QEMU's version from {version!r}"
    if have < need:
        what = {"snp": " (sev-snp-guest)", "tdx": " (tdx-guest)"}.get(mode, "")
        return f"QEMU {version} is too old for {mode}{what}: needs {need[0]}.{need[1]} or newer"
    return None


def _param_on(value: str | None) -> bool:
    return value is not None and value.strip() in ("Y", "y", "1")


def decide(facts: Facts) -> Mode:
    """guest / host / neither for ``facts``, with the reason (the single place this is decided)."""
    label = f"{_A[facts.tee]} {_LABEL[facts.tee]}"
    if facts.tee == "snp":
        dev, param = "/dev/sev-guest", "kvm_amd sev_snp"
        guest = facts.guest_device or (facts.configfs_tsm and facts.cpu_flag)
    else:
        dev, param = "/dev/tdx_guest", "kvm_intel tdx"
        guest = facts.cpu_flag or facts.guest_device  # tdx_guest only exists inside a TD
    if guest:
        why = (f"{dev} present" if facts.guest_device else
               "configfs-tsm and the cpu flag present" if facts.tee == "snp" else
               "the tdx_guest cpu flag is set")
        return Mode("guest", f"inside {label} guest ({why}): the workload runs in-process")
    host_on = _param_on(facts.host_param)
    if not host_on or not facts.host_device or not facts.kvm:
        lacks = []
        if not host_on:
            lacks.append(f"{param} is {facts.host_param.strip() or 'empty'}"
                         if facts.host_param is not None else f"{param} is not loaded")
        if facts.tee == "snp" and not facts.host_device:
            lacks.append("/dev/sev is missing")
        if not facts.kvm:
            lacks.append("/dev/kvm is not usable")
        return Mode("neither", f"not {label} guest (no {dev}) and not {label} host ("
                    + ", ".join(lacks) + ")")
    need = MIN_QEMU[facts.tee]
    old = qemu_too_old(facts.tee, facts.qemu)
    pieces = [Check(f"QEMU >= {need[0]}.{need[1]}", old is None, old or f"QEMU {facts.qemu}",
                    f"install QEMU {need[0]}.{need[1]} or newer (qemu-system-x86)")]
    fw_ok = facts.firmware is not None and facts.firmware_exists
    fw_detail = (f"{facts.firmware} not found" if facts.firmware else "not set") \
        if not fw_ok else str(facts.firmware)
    pieces.append(Check(f"{_LABEL[facts.tee]} firmware", fw_ok, fw_detail, _FW_HINT[facts.tee]))
    return Mode("host", f"{label} host ({param}=Y): each workload boots in its own "
                f"{_LABEL[facts.tee]} VM", tuple(pieces), facts.firmware if fw_ok else None)


def _read(backend: Backend, path: str) -> str | None:
    try:
        return backend.path(path).read_text(errors="replace")
    except OSError:
        return None


def gather(backend: Backend, tee: Tee, firmware: str | None = None,
           qemu_version: str | None = None) -> Facts:
    """Probe the facts for ``tee`` below ``backend.root``. QEMU's version is asked (a
    subprocess) only on a host; ``firmware`` (``--firmware``) beats the environment."""
    from enarx.platform.kvm import cpu_flags

    flags = cpu_flags(backend)
    if tee == "snp":
        flag, dev, param = "sev_snp", "/dev/sev-guest", "/sys/module/kvm_amd/parameters/sev_snp"
        host_device = backend.path("/dev/sev").exists()
    else:
        flag, dev, param = "tdx_guest", "/dev/tdx_guest", "/sys/module/kvm_intel/parameters/tdx"
        host_device = True
    kvm_node = backend.path("/dev/kvm")
    facts = Facts(tee=tee, cpu_flag=flag in flags, guest_device=backend.path(dev).exists(),
                  configfs_tsm=backend.path(tsm.TSM_REPORT_DIR).is_dir(),
                  host_param=_read(backend, param), host_device=host_device,
                  kvm=kvm_node.exists() and os.access(kvm_node, os.R_OK | os.W_OK))
    if decide(facts).mode != "host":
        return facts
    if qemu_version is None:
        from enarx.vm.launcher import qemu_version as probe_qemu

        qemu_version = probe_qemu()
    fw = firmware or os.environ.get(FIRMWARE_ENV[tee]) or None
    if fw is not None:
        exists = os.path.isfile(fw)
    else:
        default = backend.path(FIRMWARE_DEFAULT[tee])
        fw, exists = (str(default), True) if default.is_file() else (None, False)
    return replace(facts, qemu=qemu_version, firmware=fw, firmware_exists=exists)


def mode_checks(mode: Mode, tee: Tee) -> list[Check]:
    """The `enarx platform info` rows for a host or neither (a guest adds its own rows)."""
    if mode.mode == "neither":
        return [Check("mode", False, f"neither: {mode.reason}", _NEITHER_HINT[tee])]
    return [Check("mode", True, f"{mode.mode}: {mode.reason}",
                  "docs/vm-keeps.md: 'What a user with SEV-SNP / TDX hardware does'"),
            *mode.pieces]


class HostLaunchable(Backend):
    """What ``sev-snp`` and ``tdx`` share: the mode (probed once per firmware choice), the
    ``--firmware`` choice, the VM mode for the launcher and the platform-info rows. A backend
    names its ``tee`` and lists the checks that apply inside a guest."""

    tee: Tee
    #: ``--firmware`` for a host launch; else the FIRMWARE_ENV variable or FIRMWARE_DEFAULT.
    firmware: str | None = None
    _decided: tuple[str | None, Mode] | None = None

    def mode(self) -> Mode:
        """guest / host / neither (probed once per firmware choice)."""
        if self._decided is None or self._decided[0] != self.firmware:
            self._decided = (self.firmware, decide(gather(self, self.tee, self.firmware)))
        return self._decided[1]

    def use_firmware(self, path: str) -> None:
        self.firmware = path

    def vm_mode(self) -> str | None:
        return self.tee if self.mode().mode == "host" else None

    def info(self) -> tuple[list[Check], dict[str, object]]:
        mode = self.mode()
        return self._checks(mode), {"mode": mode.mode, "reason": mode.reason}

    def probe(self) -> list[Check]:
        return self._checks(self.mode())

    def _checks(self, mode: Mode) -> list[Check]:
        rows = mode_checks(mode, self.tee)
        return [*rows, *self.guest_checks()] if mode.mode == "guest" else rows

    def guest_checks(self) -> list[Check]:
        """The checks of an in-process Keep inside a confidential guest."""
        raise NotImplementedError
