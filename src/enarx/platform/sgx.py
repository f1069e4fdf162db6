"""``sgx``: Intel SGX, with the Keep inside a Gramine-SGX enclave using DCAP attestation.

The probe lists what the host needs (CPU flag, enclave and provisioning device nodes) and
whether we are inside Gramine with DCAP; evidence only works inside the enclave.
"""

from __future__ import annotations

from enarx.platform import gramine
from enarx.platform.base import Backend, Check, Evidence
from enarx.platform.kvm import flag_check, node_check

__all__ = ["SgxBackend"]


class SgxBackend(Backend):
    name = "sgx"
    confidential = True

    def probe(self) -> list[Check]:
        kind = gramine.attestation_type(self.path)
        return [
            flag_check(self, ("sgx",), "enable SGX in the firmware setup (and flexible launch "
                       "control)"),
            node_check(self, "/dev/sgx_enclave", "use Linux 5.11+ (in-kernel SGX driver)"),
            node_check(self, "/dev/sgx_provision", "use Linux 5.11+; add the user to the "
                       "sgx_prv group for DCAP provisioning"),
            Check("gramine /dev/attestation (dcap)", kind == "dcap",
                  f"attestation_type={kind}" if kind else "not inside Gramine-SGX",
                  'run under gramine-sgx with sgx.remote_attestation = "dcap"'),
        ]

    def evidence(self, report_data: bytes) -> Evidence:
        return Evidence("sgx-quote", gramine.get_quote(self.path, report_data),
                        provider="gramine")
