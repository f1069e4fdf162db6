"""``kvm``: plain KVM virtual machines (not confidential, no evidence), plus the probe helpers
every hardware backend shares (device nodes, CPU flags), all read through ``Backend.path``."""

from __future__ import annotations

import os

from enarx.platform.base import Backend, Check

__all__ = ["KvmBackend", "cpu_flags", "flag_check", "node_check"]


def cpu_flags(backend: Backend) -> set[str]:
    try:
        text = backend.path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags.update(value.split())
    return flags


def flag_check(backend: Backend, names: tuple[str, ...], hint: str) -> Check:
    have = cpu_flags(backend)
    found = [n for n in names if n in have]
    label = "/".join(names)
    return Check(f"cpu flag {label}", bool(found),
                 f"{found[0]} present" if found else f"{label} not in /proc/cpuinfo", hint)


def node_check(backend: Backend, node: str, hint: str, *, rw: bool = False) -> Check:
    p = backend.path(node)
    if not p.exists():
        return Check(node, False, "missing", hint)
    if rw and not os.access(p, os.R_OK | os.W_OK):
        return Check(node, False, "present but not readable/writable by this user",
                     f"add yourself to the owning group of {node} (e.g. kvm) or run as root")
    return Check(node, True, "present", hint)


class KvmBackend(Backend):
    """One QEMU VM per workload (``enarx.vm``): ``-accel kvm`` when a probe boot under KVM
    reached the agent, else TCG emulation. Never the default unless that probe succeeded."""

    name = "kvm"
    confidential = False
    warning = "kvm: the host can read the Keep's memory; this is not confidential"

    def vm_mode(self) -> str | None:
        return "kvm"  # the launcher picks -accel kvm or TCG (choose_accel)

    def _accel(self) -> tuple[Check, str, dict[str, str] | None]:
        from enarx.vm.launcher import cached_probe

        kvm = node_check(self, "/dev/kvm", "enable virtualization in firmware and load kvm_intel "
                         "or kvm_amd", rw=True)
        probe = cached_probe()
        if not kvm.passed:
            accel = "TCG emulation (no usable /dev/kvm)"
        elif probe is None:
            accel = "not probed yet: the first `enarx run --backend kvm` boots a KVM probe"
        elif probe.get("accel") == "kvm":
            accel = f"KVM ({probe.get('why')}, QEMU {probe.get('qemu')})"
        else:
            accel = f"TCG fallback: {probe.get('why')} (QEMU {probe.get('qemu')})"
        return kvm, accel, probe

    def probe(self) -> list[Check]:
        return self._rows()[0]

    def _rows(self) -> tuple[list[Check], str | None, dict[str, str] | None]:
        from enarx.platform.launchmode import MIN_QEMU, qemu_too_old
        from enarx.vm.launcher import qemu_version

        version = qemu_version()
        old = qemu_too_old("kvm", version)
        kvm, accel, probe = self._accel()
        need = ".".join(map(str, MIN_QEMU["kvm"]))
        return [
            Check("qemu-system-x86_64", old is None,
                  "not found" if version is None else old or f"QEMU {version}",
                  f"install qemu-system-x86 ({need} or newer)"),
            # Informational: without KVM the VM Keep still runs, under TCG emulation.
            Check("/dev/kvm", True, kvm.detail + ("" if kvm.passed else ": TCG fallback"), kvm.hint),
            Check("vm accelerator", True, accel,
                  "delete ~/.cache/enarx/vm/kvm-probe.json to probe again"),
        ], version, probe

    def info(self) -> tuple[list[Check], dict[str, object]]:
        """Also the Keep image's status (hashes the inputs; never builds or boots)."""
        from enarx.vm.image import image_status

        rows, version, probe = self._rows()
        status = image_status()
        state = str(status["state"])
        if state == "ready":
            detail = (f"built: initramfs {int(status['initrd_size']) / 2**20:.1f} MiB, "
                      f"key {str(status['key'])[:16]}… in {status['directory']}")
        elif state == "not built":
            detail = f"not built yet (key {str(status['key'])[:16]}…)"
        else:
            detail = f"inputs missing: {status.get('detail')}"
        rows.append(Check("keep image", state != "inputs missing", detail,
                          str(status.get("hint") or "`enarx keep image build`")))
        forced = os.environ.get("ENARX_VM_ACCEL")
        uses = (forced if forced in ("kvm", "tcg") else "tcg" if "TCG" in rows[1].detail
                else str(probe.get("accel")) if probe else "not probed yet")
        return rows, {"qemu": version, "kvm_device": rows[1].detail, "accelerator": uses,
                      "accelerator_detail": rows[2].detail, "probe": probe, "image": status}

    def available(self) -> bool:
        """Default selection only when KVM itself boots the image (a cached probe said so);
        ``--backend kvm`` still works with the TCG fallback."""
        from enarx.vm.launcher import cached_probe

        probe = cached_probe()  # read first: a default `enarx run` must not spawn QEMU
        return probe is not None and probe.get("accel") == "kvm" and super().available()
