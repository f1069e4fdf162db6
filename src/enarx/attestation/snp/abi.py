"""AMD SEV-SNP attestation report layout: bytes in, typed fields out.

Layout from the SEV Secure Nested Paging Firmware ABI specification (AMD pub. 56860,
ATTESTATION_REPORT structure). Report versions 2, 3 (adds CPUID family/model/stepping) and
5 (adds launch/current mitigation vectors) are 1184 bytes; the ECDSA P-384 signature at 0x2A0
covers bytes 0x000..0x29F. This module does no cryptography: see ``verify``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from enarx.errors import MalformedEvidence

__all__ = [
    "ECDSA_COMPONENT_SIZE", "PLATFORM_INFO_BITS", "POLICY_BITS", "REPORT_SIZE",
    "SIGNATURE_OFFSET", "SIGNED_SIZE", "SIGNING_KEY_NAMES", "SIGNING_KEY_NONE",
    "SIGNING_KEY_VCEK", "SIGNING_KEY_VLEK", "SIG_ALGO_ECDSA_P384_SHA384", "SUPPORTED_VERSIONS",
    "SnpReport", "TcbVersion", "build_report", "decode_bits", "parse_report",
    "product_from_cpuid", "tcb_layout_is_turin",
]

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SIGNATURE_OFFSET = 0x2A0
ECDSA_COMPONENT_SIZE = 72  # r and s, little-endian, zero-padded from 48 bytes
SUPPORTED_VERSIONS = frozenset({2, 3, 4, 5})
SIG_ALGO_ECDSA_P384_SHA384 = 1

SIGNING_KEY_VCEK = 0
SIGNING_KEY_VLEK = 1
SIGNING_KEY_NONE = 7
SIGNING_KEY_NAMES = {SIGNING_KEY_VCEK: "VCEK", SIGNING_KEY_VLEK: "VLEK", SIGNING_KEY_NONE: "none"}

# Guest POLICY bits (ABI spec, "GUEST_POLICY").
POLICY_BITS: dict[str, int] = {
    "smt": 16,
    "reserved_1": 17,  # must be one
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
# PLATFORM_INFO bits.
PLATFORM_INFO_BITS: dict[str, int] = {
    "smt_en": 0,
    "tsme_en": 1,
    "ecc_en": 2,
    "rapl_dis": 3,
    "ciphertext_hiding_en": 4,
    "alias_check_complete": 5,
    "iommu_write_safe": 6,
    "tio_en": 7,
}

# TCB_VERSION byte positions. Turin moved to a new layout with an FMC SPL.
_TCB_LAYOUT_MILAN = {"bootloader": 0, "tee": 1, "snp": 6, "microcode": 7}
_TCB_LAYOUT_TURIN = {"fmc": 0, "bootloader": 1, "tee": 2, "snp": 3, "microcode": 7}

# Reserved (must-be-zero) byte ranges that do not depend on the version.
_MBZ_ALWAYS = ((0x04C, 0x050), (0x18B, 0x1A0), (0x1EB, 0x1EC), (0x1EF, 0x1F0), (0x208, 0x2A0))


def tcb_layout_is_turin(product: str | None) -> bool:
    return product == "Turin"


@dataclass(frozen=True)
class TcbVersion:
    """One TCB_VERSION (u64): per-component security patch levels (SPLs)."""

    raw: int
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None  # Turin and later only

    @classmethod
    def decode(cls, raw: int, *, turin: bool) -> TcbVersion:
        b = raw.to_bytes(8, "little")
        layout = _TCB_LAYOUT_TURIN if turin else _TCB_LAYOUT_MILAN
        return cls(
            raw=raw,
            bootloader=b[layout["bootloader"]],
            tee=b[layout["tee"]],
            snp=b[layout["snp"]],
            microcode=b[layout["microcode"]],
            fmc=b[layout["fmc"]] if turin else None,
        )

    def to_dict(self) -> dict[str, int]:
        out = {
            "bootloader": self.bootloader,
            "tee": self.tee,
            "snp": self.snp,
            "microcode": self.microcode,
        }
        if self.fmc is not None:
            out["fmc"] = self.fmc
        return out

    @classmethod
    def encode(cls, values: dict[str, int], *, turin: bool) -> int:
        """Inverse of :meth:`decode` (used by the sim backend to build reports)."""
        layout = _TCB_LAYOUT_TURIN if turin else _TCB_LAYOUT_MILAN
        b = bytearray(8)
        for name, pos in layout.items():
            b[pos] = values.get(name, 0) & 0xFF
        return int.from_bytes(b, "little")


def product_from_cpuid(family: int, model: int) -> str | None:
    """Map CPUID family/model (report v3+) to the product name KDS uses."""
    if family == 0x19:
        if model <= 0x0F:
            return "Milan"
        if 0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF:  # Genoa, Bergamo, Siena
            return "Genoa"
    if family == 0x1A and model <= 0x1F:
        return "Turin"
    return None


def decode_bits(value: int, bits: dict[str, int]) -> dict[str, bool]:
    return {name: bool(value >> bit & 1) for name, bit in bits.items()}


@dataclass(frozen=True)
class SnpReport:
    """A parsed attestation report. ``raw`` keeps the exact bytes for signature checks."""

    raw: bytes = field(repr=False)
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb_raw: int
    platform_info: int
    key_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb_raw: int
    cpuid_family: int | None
    cpuid_model: int | None
    cpuid_stepping: int | None
    chip_id: bytes
    committed_tcb_raw: int
    current_build: int
    current_minor: int
    current_major: int
    committed_build: int
    committed_minor: int
    committed_major: int
    launch_tcb_raw: int
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: int
    signature_s: int

    # --- derived views --------------------------------------------------------------------

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def product(self) -> str | None:
        """Product from CPUID (v3+); None for v2 reports (take it from the VCEK)."""
        if self.cpuid_family is None or self.cpuid_model is None:
            return None
        return product_from_cpuid(self.cpuid_family, self.cpuid_model)

    @property
    def signing_key(self) -> int:
        return (self.key_info >> 2) & 7

    @property
    def signing_key_name(self) -> str:
        return SIGNING_KEY_NAMES.get(self.signing_key, f"reserved({self.signing_key})")

    @property
    def mask_chip_key(self) -> bool:
        return bool(self.key_info & 2)

    @property
    def author_key_en(self) -> bool:
        return bool(self.key_info & 1)

    @property
    def debug(self) -> bool:
        return bool(self.policy >> POLICY_BITS["debug"] & 1)

    def policy_bits(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "abi_minor": self.policy & 0xFF,
            "abi_major": self.policy >> 8 & 0xFF,
        }
        out.update(decode_bits(self.policy, POLICY_BITS))
        del out["reserved_1"]
        return out

    def platform_info_bits(self) -> dict[str, bool]:
        return decode_bits(self.platform_info, PLATFORM_INFO_BITS)

    def tcb(self, which: str, product: str | None = None) -> TcbVersion:
        """Decode ``reported``/``current``/``committed``/``launch`` TCB for ``product``
        (default: the CPUID product; v2 reports predate Turin so Milan layout is right)."""
        raw = {
            "reported": self.reported_tcb_raw,
            "current": self.current_tcb_raw,
            "committed": self.committed_tcb_raw,
            "launch": self.launch_tcb_raw,
        }[which]
        return TcbVersion.decode(raw, turin=tcb_layout_is_turin(product or self.product))


def parse_report(data: bytes) -> SnpReport:
    """Parse an attestation report. Raises MalformedEvidence on any structural fault."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidence("snp.size", "report must be bytes", actual=type(data).__name__)
    data = bytes(data)
    if len(data) != REPORT_SIZE:
        raise MalformedEvidence(
            "snp.size", "attestation report has the wrong size",
            expected=REPORT_SIZE, actual=len(data),
        )
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0x00)
    if version not in SUPPORTED_VERSIONS:
        raise MalformedEvidence(
            "snp.version", "unsupported report version",
            expected=sorted(SUPPORTED_VERSIONS), actual=version,
        )
    vmpl, sig_algo, current_tcb, platform_info, key_info = struct.unpack_from(
        "<IIQQI", data, 0x30
    )
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise MalformedEvidence(
            "snp.signature_algo", "unknown signature algorithm",
            expected=SIG_ALGO_ECDSA_P384_SHA384, actual=sig_algo,
        )
    if vmpl > 3:
        raise MalformedEvidence("snp.vmpl", "VMPL out of range", expected="0..3", actual=vmpl)
    if key_info >> 5:
        raise MalformedEvidence("snp.key_info", "reserved KEY_INFO bits set", actual=key_info)
    signing_key = (key_info >> 2) & 7
    if signing_key not in SIGNING_KEY_NAMES:
        raise MalformedEvidence(
            "snp.key_info", "reserved SIGNING_KEY value",
            expected=sorted(SIGNING_KEY_NAMES), actual=signing_key,
        )
    if not policy >> POLICY_BITS["reserved_1"] & 1:
        raise MalformedEvidence("snp.policy", "POLICY bit 17 must be one", actual=hex(policy))
    for lo, hi in _mbz_ranges(version):
        if any(data[lo:hi]):
            raise MalformedEvidence(
                "snp.reserved", f"reserved bytes 0x{lo:x}..0x{hi:x} are not zero",
                actual=data[lo:hi],
            )
    (reported_tcb,) = struct.unpack_from("<Q", data, 0x180)
    has_cpuid = version >= 3
    committed_tcb, cur_build, cur_minor, cur_major, _r, com_build, com_minor, com_major, _r2 = (
        struct.unpack_from("<Q8B", data, 0x1E0)
    )
    (launch_tcb,) = struct.unpack_from("<Q", data, 0x1F0)
    has_mit = version >= 5
    launch_mit, current_mit = struct.unpack_from("<QQ", data, 0x1F8)
    sig = data[SIGNATURE_OFFSET:]
    return SnpReport(
        raw=data,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb_raw=current_tcb,
        platform_info=platform_info,
        key_info=key_info,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb_raw=reported_tcb,
        cpuid_family=data[0x188] if has_cpuid else None,
        cpuid_model=data[0x189] if has_cpuid else None,
        cpuid_stepping=data[0x18A] if has_cpuid else None,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb_raw=committed_tcb,
        current_build=cur_build,
        current_minor=cur_minor,
        current_major=cur_major,
        committed_build=com_build,
        committed_minor=com_minor,
        committed_major=com_major,
        launch_tcb_raw=launch_tcb,
        launch_mit_vector=launch_mit if has_mit else None,
        current_mit_vector=current_mit if has_mit else None,
        signature_r=int.from_bytes(sig[:ECDSA_COMPONENT_SIZE], "little"),
        signature_s=int.from_bytes(sig[ECDSA_COMPONENT_SIZE : 2 * ECDSA_COMPONENT_SIZE], "little"),
    )


def _mbz_ranges(version: int) -> list[tuple[int, int]]:
    ranges = list(_MBZ_ALWAYS)
    if version < 3:
        ranges.append((0x188, 0x18B))  # CPUID bytes are reserved before v3
    if version < 5:
        ranges.append((0x1F8, 0x208))  # mitigation vectors are reserved before v5
    # The signature field is 512 bytes; only r and s (144 bytes) are used.
    ranges.append((SIGNATURE_OFFSET + 2 * ECDSA_COMPONENT_SIZE, REPORT_SIZE))
    return ranges


def build_report(fields: dict[str, Any]) -> bytes:
    """Serialise the signed part (0x000..0x29F) of a report from named fields.

    Only what the sim backend needs; the signature is appended by the signer. Unknown
    names raise KeyError so a typo cannot silently produce a zero field.
    """
    buf = bytearray(SIGNED_SIZE)
    layout: dict[str, tuple[int, str]] = {
        "version": (0x00, "<I"), "guest_svn": (0x04, "<I"), "policy": (0x08, "<Q"),
        "vmpl": (0x30, "<I"), "signature_algo": (0x34, "<I"), "current_tcb": (0x38, "<Q"),
        "platform_info": (0x40, "<Q"), "key_info": (0x48, "<I"), "reported_tcb": (0x180, "<Q"),
        "cpuid_family": (0x188, "<B"), "cpuid_model": (0x189, "<B"),
        "cpuid_stepping": (0x18A, "<B"), "committed_tcb": (0x1E0, "<Q"),
        "current_build": (0x1E8, "<B"), "current_minor": (0x1E9, "<B"),
        "current_major": (0x1EA, "<B"), "committed_build": (0x1EC, "<B"),
        "committed_minor": (0x1ED, "<B"), "committed_major": (0x1EE, "<B"),
        "launch_tcb": (0x1F0, "<Q"),
    }
    blobs: dict[str, tuple[int, int]] = {
        "family_id": (0x10, 16), "image_id": (0x20, 16), "report_data": (0x50, 64),
        "measurement": (0x90, 48), "host_data": (0xC0, 32), "id_key_digest": (0xE0, 48),
        "author_key_digest": (0x110, 48), "report_id": (0x140, 32),
        "report_id_ma": (0x160, 32), "chip_id": (0x1A0, 64),
    }
    for name, value in fields.items():
        if name in layout:
            off, fmt = layout[name]
            struct.pack_into(fmt, buf, off, value)
        else:
            off, size = blobs[name]
            if len(value) != size:
                raise ValueError(f"{name} must be {size} bytes, got {len(value)}")
            buf[off : off + size] = value
    return bytes(buf)
