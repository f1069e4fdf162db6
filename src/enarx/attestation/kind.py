"""Which kind of evidence a blob is (SNP report, SGX or TDX quote), from its header alone.

Pure and cheap: used at the edge so a wrong ``--platform`` (or a quote handed to the VCEK
fetcher) gets "use --platform tdx" instead of a size error from the wrong parser. It only
guesses; the verifiers still check everything.
"""

from __future__ import annotations

import struct

from enarx.attestation.dcap.quote import ATT_KEY_ECDSA_P256, HEADER_LEN, TEE_SGX, TEE_TDX
from enarx.attestation.snp.abi import (
    REPORT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    SUPPORTED_VERSIONS,
)

__all__ = ["DESCRIPTIONS", "detect"]

_SNP_SIG_ALGO_OFFSET = 0x34

#: What each kind is called in messages.
DESCRIPTIONS = {
    "snp": "an AMD SEV-SNP attestation report",
    "sgx": "an Intel SGX DCAP quote",
    "tdx": "an Intel TDX DCAP quote",
}


def detect(blob: bytes) -> str | None:
    """``"snp"``, ``"sgx"``, ``"tdx"``, or None when the header matches none of them."""
    if len(blob) >= HEADER_LEN:
        version, key_type, tee = struct.unpack_from("<HHI", blob, 0)
        if key_type == ATT_KEY_ECDSA_P256:
            if tee == TEE_SGX and version == 3:
                return "sgx"
            if tee == TEE_TDX and version in (4, 5):
                return "tdx"
    if len(blob) == REPORT_SIZE:
        (version,) = struct.unpack_from("<I", blob, 0)
        (algo,) = struct.unpack_from("<I", blob, _SNP_SIG_ALGO_OFFSET)
        if version in SUPPORTED_VERSIONS and algo == SIG_ALGO_ECDSA_P384_SHA384:
            return "snp"
    return None
