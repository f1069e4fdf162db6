"""Trustee's SEV-SNP evidence form: the JSON attestation report ↔ the 1184-byte binary report.

CoCo's SNP attester (guest-components) sends ``tee-evidence.primary_evidence`` as the serde
JSON of ``{"attestation_report": AttestationReport, "cert_chain": [CertTableEntry] | null}``
from the ``sev`` crate. Byte arrays are JSON arrays of integers, bit-field words
(``policy``, ``plat_info``, ``key_info``) are plain integers, TCB versions are objects
``{"fmc": int | null, "bootloader", "tee", "snp", "microcode"}``, firmware versions
``{"major", "minor", "build"}``, the signature ``{"r": [72], "s": [72]}``, and certificate
entries ``{"cert_type": "VCEK" | "VLEK" | "ASK" | "ARK" | "CRL" | ..., "data": [DER bytes]}``.

The signature covers the binary report, so verification needs those exact bytes back. The
mapping (AMD SEV-SNP firmware ABI, ATTESTATION_REPORT; all integers little-endian, every gap
reserved and zero):

======  ====  ====================  ========================================================
offset  size  binary field          JSON member
======  ====  ====================  ========================================================
0x000   4     VERSION               ``version``
0x004   4     GUEST_SVN             ``guest_svn``
0x008   8     POLICY                ``policy``
0x010   16    FAMILY_ID             ``family_id``
0x020   16    IMAGE_ID              ``image_id``
0x030   4     VMPL                  ``vmpl``
0x034   4     SIGNATURE_ALGO        ``sig_algo``
0x038   8     CURRENT_TCB           ``current_tcb`` (TCB layout below)
0x040   8     PLATFORM_INFO         ``plat_info``
0x048   4     KEY_INFO              ``key_info``; 0x04C..0x050 reserved
0x050   64    REPORT_DATA           ``report_data``
0x090   48    MEASUREMENT           ``measurement``
0x0C0   32    HOST_DATA             ``host_data``
0x0E0   48    ID_KEY_DIGEST         ``id_key_digest``
0x110   48    AUTHOR_KEY_DIGEST     ``author_key_digest``
0x140   32    REPORT_ID             ``report_id``
0x160   32    REPORT_ID_MA          ``report_id_ma``
0x180   8     REPORTED_TCB          ``reported_tcb``
0x188   1+1+1 CPUID_FAM/MOD/STEP    ``cpuid_fam_id``, ``cpuid_mod_id``, ``cpuid_step``
                                    (version >= 3; null and reserved in version 2)
0x1A0   64    CHIP_ID               ``chip_id``
0x1E0   8     COMMITTED_TCB         ``committed_tcb``
0x1E8   3     CURRENT_BUILD/MINOR/  ``current`` {build, minor, major}, in that byte order;
              MAJOR                 0x1EB reserved
0x1EC   3     COMMITTED_BUILD/...   ``committed``; 0x1EF reserved
0x1F0   8     LAUNCH_TCB            ``launch_tcb``
0x1F8   8     LAUNCH_MIT_VECTOR     ``launch_mit_vector`` (version >= 5, else null/absent)
0x200   8     CURRENT_MIT_VECTOR    ``current_mit_vector`` (version >= 5, else null/absent)
0x2A0   72    SIGNATURE.R           ``signature.r``
0x2E8   72    SIGNATURE.S           ``signature.s``; 0x330..0x4A0 reserved
======  ====  ====================  ========================================================

TCB versions (8 bytes): Milan and Genoa ``[bootloader, tee, 0, 0, 0, 0, snp, microcode]``
(``fmc`` null); Turin ``[fmc, bootloader, tee, snp, 0, 0, 0, microcode]``. The generation
comes from CPUID family/model (version >= 3: family 0x19 model 0x00-0x0F Milan, 0x10-0x1F or
0xA0-0xAF Genoa; family 0x1A model 0x00-0x11 Turin) or, for version 2, from CHIP_ID (Turin's
is 8 bytes, the rest zero; an all-zero CHIP_ID cannot be placed). Anything a Trustee client
could not have produced (a missing member, a value out of range, an unknown generation) is a
``ProtocolError`` (InvalidEvidence), never a silently different report.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from enarx.errors import ProtocolError

__all__ = [
    "REPORT_SIZE",
    "chain_from_json",
    "chain_to_json",
    "report_from_json",
    "report_to_json",
]

REPORT_SIZE = 0x4A0
_HINT = ("send the sev crate's serde JSON of the report, or the binary report as base64 "
         "(docs/steward.md)")

# (JSON member, offset, kind, size): "u" little-endian unsigned, "b" byte array, "tcb" TCB
# version, "ver" firmware version; the CPUID and mitigation-vector fields are handled apart.
_FIELDS: tuple[tuple[str, int, str, int], ...] = (
    ("version", 0x000, "u", 4),
    ("guest_svn", 0x004, "u", 4),
    ("policy", 0x008, "u", 8),
    ("family_id", 0x010, "b", 16),
    ("image_id", 0x020, "b", 16),
    ("vmpl", 0x030, "u", 4),
    ("sig_algo", 0x034, "u", 4),
    ("current_tcb", 0x038, "tcb", 8),
    ("plat_info", 0x040, "u", 8),
    ("key_info", 0x048, "u", 4),
    ("report_data", 0x050, "b", 64),
    ("measurement", 0x090, "b", 48),
    ("host_data", 0x0C0, "b", 32),
    ("id_key_digest", 0x0E0, "b", 48),
    ("author_key_digest", 0x110, "b", 48),
    ("report_id", 0x140, "b", 32),
    ("report_id_ma", 0x160, "b", 32),
    ("reported_tcb", 0x180, "tcb", 8),
    ("chip_id", 0x1A0, "b", 64),
    ("committed_tcb", 0x1E0, "tcb", 8),
    ("current", 0x1E8, "ver", 3),
    ("committed", 0x1EC, "ver", 3),
    ("launch_tcb", 0x1F0, "tcb", 8),
)
_CPUID = (("cpuid_fam_id", 0x188), ("cpuid_mod_id", 0x189), ("cpuid_step", 0x18A))
_MIT = (("launch_mit_vector", 0x1F8), ("current_mit_vector", 0x200))
_SIG_R, _SIG_S, _SIG_LEN = 0x2A0, 0x2E8, 72
_LEGACY = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_TURIN = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}
#: cert_type names of the sev crate's CertType, in the order our verifier wants the chain.
_CHAIN_ORDER = ("VCEK", "VLEK", "ASK", "ARK")


def _bad(message: str) -> ProtocolError:
    return ProtocolError("InvalidEvidence", message, hint=_HINT)


def _turin(version: int, fam: int, mod: int, chip_id: bytes) -> bool:
    """True for the Turin TCB layout (the sev crate's generation rule, see the docstring)."""
    if version == 2:
        if chip_id == bytes(64):
            raise _bad("a version 2 report with a masked CHIP_ID does not say its TCB layout")
        return chip_id[8:] == bytes(56)
    if fam == 0x19 and (mod <= 0x1F or 0xA0 <= mod <= 0xAF):
        return False  # Milan (models 0x00-0x0F) or Genoa (0x10-0x1F, 0xA0-0xAF)
    if fam == 0x1A and mod <= 0x11:
        return True
    raise _bad(f"CPUID family {fam:#x} model {mod:#x} is not a known SEV-SNP processor")


# --- JSON → binary -----------------------------------------------------------------------


def _int(obj: Mapping[str, Any], key: str, size: int) -> int:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << (8 * size):
        raise _bad(f"attestation_report.{key} must be an integer in [0, 2^{8 * size})")
    return v


def _bytes(obj: Mapping[str, Any], key: str, size: int | None,
           where: str = "attestation_report") -> bytes:
    v = obj.get(key)
    if (not isinstance(v, list) or (size is not None and len(v) != size)
            or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255
                       for x in v)):
        raise _bad(f"{where}.{key} must be an array of {size or 'some'} bytes")
    return bytes(v)


def _sub(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise _bad(f"attestation_report.{key} must be an object")
    return v


def _tcb_bytes(obj: Mapping[str, Any], key: str, turin: bool) -> bytes:
    tcb = _sub(obj, key)
    out = bytearray(8)
    for name, pos in (_TURIN if turin else _LEGACY).items():
        if name == "fmc" and tcb.get("fmc") is None:
            continue  # the sev crate writes a missing FMC as 0
        out[pos] = _int(tcb, name, 1) if name in tcb else _missing(f"{key}.{name}")
    if not turin and tcb.get("fmc") is not None:
        raise _bad(f"attestation_report.{key}.fmc is set but the processor is not Turin")
    return bytes(out)


def _missing(what: str) -> int:
    raise _bad(f"attestation_report.{what} is missing")


def report_from_json(report: Any) -> bytes:
    """The binary report for the sev crate's JSON ``AttestationReport`` (see the module doc)."""
    if not isinstance(report, dict):
        raise _bad("attestation_report must be an object or a base64 string")
    version = _int(report, "version", 4)
    if version < 2:
        raise _bad(f"attestation report version {version} is not supported (2 or later)")
    out = bytearray(REPORT_SIZE)
    cpuid = [0, 0, 0]
    if version >= 3:
        cpuid = [_int(report, k, 1) for k, _ in _CPUID]
        for (_, off), v in zip(_CPUID, cpuid, strict=True):
            out[off] = v
    elif any(report.get(k) is not None for k, _ in _CPUID):
        raise _bad("a version 2 report has no CPUID fields")
    chip_id = _bytes(report, "chip_id", 64)
    turin = _turin(version, cpuid[0], cpuid[1], chip_id)
    for key, off, kind, size in _FIELDS:
        if kind == "u":
            out[off:off + size] = _int(report, key, size).to_bytes(size, "little")
        elif kind == "b":
            out[off:off + size] = _bytes(report, key, size)
        elif kind == "tcb":
            out[off:off + size] = _tcb_bytes(report, key, turin)
        else:
            ver = _sub(report, key)
            out[off:off + 3] = bytes(_int(ver, k, 1) for k in ("build", "minor", "major"))
    for key, off in _MIT:
        if version >= 5:
            mit = 0 if report.get(key) is None else _int(report, key, 8)
            out[off:off + 8] = mit.to_bytes(8, "little")
        elif report.get(key) is not None:
            raise _bad(f"attestation_report.{key} needs a version 5 report")
    sig = _sub(report, "signature")
    out[_SIG_R:_SIG_R + _SIG_LEN] = _bytes(sig, "r", _SIG_LEN, "attestation_report.signature")
    out[_SIG_S:_SIG_S + _SIG_LEN] = _bytes(sig, "s", _SIG_LEN, "attestation_report.signature")
    return bytes(out)


# --- binary → JSON (what a Trustee attester sends; for tests and tools) ------------------


def report_to_json(data: bytes) -> dict[str, Any]:
    """The sev crate's JSON for a binary report (the inverse of ``report_from_json``)."""
    if len(data) != REPORT_SIZE:
        raise _bad(f"an SNP report is {REPORT_SIZE} bytes, got {len(data)}")
    version = struct.unpack_from("<I", data, 0)[0]
    if version < 2:
        raise _bad(f"attestation report version {version} is not supported (2 or later)")
    fam, mod = data[0x188], data[0x189]
    turin = _turin(version, fam, mod, data[0x1A0:0x1E0])
    out: dict[str, Any] = {}
    for key, off, kind, size in _FIELDS:
        raw = data[off:off + size]
        if kind == "u":
            out[key] = int.from_bytes(raw, "little")
        elif kind == "b":
            out[key] = list(raw)
        elif kind == "tcb":
            layout = _TURIN if turin else _LEGACY
            tcb: dict[str, Any] = {"fmc": raw[0] if turin else None}
            tcb.update({k: raw[p] for k, p in layout.items() if k != "fmc"})
            out[key] = tcb
        else:
            out[key] = {"major": raw[2], "minor": raw[1], "build": raw[0]}
        if key == "reported_tcb":  # serde order: the CPUID members follow reported_tcb
            for k, o in _CPUID:
                out[k] = data[o] if version >= 3 else None
    for k, o in _MIT:
        out[k] = int.from_bytes(data[o:o + 8], "little") if version >= 5 else None
    out["signature"] = {"r": list(data[_SIG_R:_SIG_R + _SIG_LEN]),
                        "s": list(data[_SIG_S:_SIG_S + _SIG_LEN])}
    return out


def chain_from_json(entries: Any) -> list[bytes]:
    """DER certificates from ``cert_chain`` entries, ordered VCEK/VLEK, ASK, ARK (the order
    our verifier takes); other entry types (CRL, OTHER, Empty) are ignored."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _bad("cert_chain must be a list of {cert_type, data} entries")
    found: dict[str, bytes] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "cert_type" not in entry:
            raise _bad(f"cert_chain[{i}] must be an object with cert_type and data")
        kind = entry["cert_type"]
        data = _bytes(entry, "data", None, f"cert_chain[{i}]")
        if isinstance(kind, str) and kind in _CHAIN_ORDER:
            if kind in found:
                raise _bad(f"cert_chain has two {kind} certificates")
            if not data:
                raise _bad(f"cert_chain[{i}] ({kind}) has no data")
            found[kind] = data
    if "VCEK" in found and "VLEK" in found:
        raise _bad("cert_chain has both a VCEK and a VLEK")
    return [found[k] for k in _CHAIN_ORDER if k in found]


def chain_to_json(certs: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """``cert_chain`` entries for (cert_type, DER) pairs."""
    return [{"cert_type": kind, "data": list(der)} for kind, der in certs]
