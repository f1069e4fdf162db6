"""``sev-snp``: AMD SEV-SNP. Inside an SNP guest the workload runs in-process and evidence comes
from configfs-tsm when the kernel has it (Linux 6.7+) and from the ``/dev/sev-guest``
extended-report ioctl otherwise. On an SNP host each workload boots in its own SNP VM
(``enarx.vm.hostlaunch``); ``launchmode.decide`` says which applies."""

from __future__ import annotations

from enarx.errors import EvidenceError
from enarx.platform import sev_guest, tsm
from enarx.platform.base import Check, Evidence
from enarx.platform.kvm import flag_check
from enarx.platform.launchmode import HostLaunchable

__all__ = ["SnpBackend"]


class SnpBackend(HostLaunchable):
    name = "sev-snp"
    confidential = True
    #: configfs-tsm ``privlevel`` (SNP VMPL); None lets the kernel choose.
    vmpl: int | None = None
    #: Injection points for tests that play the kernel (configfs) or the device (ioctl).
    tsm_ops: tsm.FileOps | None = None
    ioctl: sev_guest.Ioctl | None = None
    tee = "snp"

    def _tsm(self) -> bool:
        return self.path(tsm.TSM_REPORT_DIR).is_dir()

    def guest_checks(self) -> list[Check]:
        has_tsm = self._tsm()
        has_dev = self.path("/dev/sev-guest").exists()
        iface = "configfs-tsm" if has_tsm else "/dev/sev-guest" if has_dev else "none"
        return [
            flag_check(self, ("sev_snp",), "this is not an SEV-SNP guest: launch the VM with "
                       "SEV-SNP on an AMD EPYC (Milan or newer) host"),
            Check("report interface (configfs-tsm or /dev/sev-guest)", has_tsm or has_dev,
                  iface, "modprobe sev-guest; mount -t configfs none /sys/kernel/config"),
        ]

    def evidence(self, report_data: bytes) -> Evidence:
        if self._tsm():
            got = tsm.get_report(self.path(tsm.TSM_REPORT_DIR), report_data,
                                 privlevel=self.vmpl, expect_provider="sev_guest",
                                 ops=self.tsm_ops)
            table = sev_guest.parse_cert_table(got.auxblob) if got.auxblob else {}
            return Evidence("snp-report", got.outblob, sev_guest.ordered_certs(table),
                            provider="configfs-tsm/sev_guest")
        dev = self.path("/dev/sev-guest")
        if not dev.exists():
            raise EvidenceError("neither configfs-tsm nor /dev/sev-guest is present",
                                hint="run inside an SEV-SNP guest with the sev-guest driver")
        got2 = sev_guest.get_report(dev, report_data, vmpl=self.vmpl or 0, ioctl=self.ioctl)
        table = sev_guest.parse_cert_table(got2.certs) if got2.certs.strip(b"\0") else {}
        return Evidence("snp-report", got2.report, sev_guest.ordered_certs(table),
                        provider="sev-guest")
