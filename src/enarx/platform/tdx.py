"""``tdx``: Intel TDX. Inside a TD the workload runs in-process and quotes come from
configfs-tsm (provider ``tdx_guest``; the old ``/dev/tdx_guest`` GET_QUOTE ioctl was removed
from Linux, so configfs-tsm is required). On a TDX host each workload boots in its own TD
(``enarx.vm.hostlaunch``); ``launchmode.decide`` says which applies."""

from __future__ import annotations

from enarx.platform import launchmode, tsm
from enarx.platform.base import Backend, Check, Evidence
from enarx.platform.kvm import flag_check, node_check

__all__ = ["TdxBackend"]


class TdxBackend(Backend):
    name = "tdx"
    confidential = True
    #: Injection point for tests that play the kernel's configfs.
    tsm_ops: tsm.FileOps | None = None
    #: ``--firmware`` (TDVF) for a host launch; else ENARX_TDX_FIRMWARE.
    firmware: str | None = None

    _decided: tuple[str | None, launchmode.Mode] | None = None

    def mode(self) -> launchmode.Mode:
        """guest / host / neither (probed once per firmware choice)."""
        if self._decided is None or self._decided[0] != self.firmware:
            facts = launchmode.gather(self, "tdx", self.firmware)
            self._decided = (self.firmware, launchmode.decide(facts))
        return self._decided[1]

    def use_firmware(self, path: str) -> None:
        self.firmware = path

    def vm_mode(self) -> str | None:
        return "tdx" if self.mode().mode == "host" else None

    def info(self) -> tuple[list[Check], dict[str, object]]:
        mode = self.mode()
        return self._checks(mode), {"mode": mode.mode, "reason": mode.reason}

    def probe(self) -> list[Check]:
        return self._checks(self.mode())

    def _checks(self, mode: launchmode.Mode) -> list[Check]:
        if mode.mode != "guest":
            return launchmode.mode_checks(mode, "tdx")
        report_dir = self.path(tsm.TSM_REPORT_DIR)
        return [
            *launchmode.mode_checks(mode, "tdx"),
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
