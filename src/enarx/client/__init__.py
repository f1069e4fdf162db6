"""Client-side Python API: check a Keep before trusting it with data.

``verify_keep(host, port, ca_pem, workload=None, trust_roots=())`` connects to a Keep's TLS
listener, checks its certificate chains to the steward CA, re-verifies the evidence embedded
in the certificate with enarx's own verifiers and returns a :class:`KeepReport` (platform,
measurement, TCB status, workload identity); any failure raises an ``enarx.errors`` error
naming the failed check. See docs/steward.md, "Keeps and the steward".
"""

from enarx.client.verify_keep import KeepReport, verify_certificate, verify_keep

__all__ = ["KeepReport", "verify_certificate", "verify_keep"]
