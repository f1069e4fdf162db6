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
    name = "kvm"
    confidential = False
    warning = "kvm: the host can read the Keep's memory; this is not confidential"

    def probe(self) -> list[Check]:
        return [
            node_check(self, "/dev/kvm", "enable virtualization in firmware and load kvm_intel "
                       "or kvm_amd", rw=True),
            flag_check(self, ("vmx", "svm"), "enable VT-x/AMD-V in the firmware setup"),
            # Honesty over convenience: running in-process and calling it "kvm" would claim
            # VM isolation the workload does not get.
            Check("kvm keep launcher", False, "not in this release: workloads run in-process",
                  "use --backend nil (same isolation) or a confidential VM (sev-snp, tdx)"),
        ]
