"""``tdx``: Intel TDX. Inside a TD the workload runs in-process and quotes come from
configfs-tsm (provider ``tdx_guest``; the old ``/dev/tdx_guest`` GET_QUOTE ioctl was removed
from Linux, so configfs-tsm is required). On a TDX host each workload boots in its own TD
(``enarx.vm.hostlaunch``); ``launchmode.decide`` says which applies."""

from __future__ import annotations

from enarx.platform import tsm
from enarx.platform.base import Check, Evidence
from enarx.platform.kvm import flag_check, node_check
from enarx.platform.launchmode import HostLaunchable

__all__ = ["TdxBackend"]


class TdxBackend(HostLaunchable):
    name = "tdx"
    confidential = True
    #: Injection point for tests that play the kernel's configfs.
    tsm_ops: tsm.FileOps | None = None
    tee = "tdx"

    def guest_checks(self) -> list[Check]:
        report_dir = self.path(tsm.TSM_REPORT_DIR)
        return [
            flag_check(self, ("tdx_guest",), "this is not a TDX guest: launch the VM as a TD "
                       "on a TDX-enabled host"),
            node_check(self, "/dev/tdx_guest", "load the tdx_guest driver (modprobe tdx_guest)"),
            Check("configfs-tsm", report_dir.is_dir(),
                  "mounted" if report_dir.is_dir() else f"{tsm.TSM_REPORT_DIR} missing",
                  "mount -t configfs none /sys/kernel/config (Linux 6.7+, CONFIG_TSM_REPORTS)"),
        ]

    def evidence(self, report_data: bytes) -> Evidence:
        got = tsm.get_report(self.path(tsm.TSM_REPORT_DIR), report_data,
                             expect_provider="tdx_guest", ops=self.tsm_ops)
        return Evidence("tdx-quote", got.outblob, provider="configfs-tsm/tdx_guest")
