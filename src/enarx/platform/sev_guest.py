"""``/dev/sev-guest`` ioctls (SNP_GET_REPORT, SNP_GET_EXT_REPORT) and the SNP certificate table.

Layouts from the Linux uapi header ``include/uapi/linux/sev-guest.h``:

* ``struct snp_report_req``  {u8 user_data[64]; u32 vmpl; u8 rsvd[28]}          (96 bytes)
* ``struct snp_ext_report_req`` {snp_report_req data; u64 certs_address; u32 certs_len} (112)
* ``struct snp_report_resp`` {u8 data[4000]}: MSG_REPORT_RSP = u32 status, u32 report_size,
  24 reserved, then the 1184-byte report
* ``struct snp_guest_request_ioctl`` {u8 msg_version; u64 req_data; u64 resp_data;
  union {u64 exitinfo2; {u32 fw_error; u32 vmm_error}}}                          (32 bytes)
* ``SNP_GET_REPORT = _IOWR('S', 0x0, struct snp_guest_request_ioctl)``, ``SNP_GET_EXT_REPORT``
  is nr 0x2. vmm_error 1 (INVALID_LEN) means the certificate buffer was too small and the
  kernel wrote the needed size into ``certs_len``; 2 (BUSY) means try again.

Used when configfs-tsm is absent (kernels before 6.7). The ioctl is a parameter so tests can
play the device; buffers are ctypes objects whose addresses go into the request structs.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enarx.errors import EvidenceError

__all__ = [
    "CERT_GUIDS", "EXT_REPORT_REQ", "GUEST_REQ", "MSG_VERSION", "PAGE", "REPORT_REQ",
    "REPORT_SIZE", "RESP_SIZE", "SNP_GET_EXT_REPORT", "SNP_GET_REPORT", "VMM_ERR_BUSY",
    "VMM_ERR_INVALID_LEN", "GuestReport", "Ioctl", "get_report", "ordered_certs",
    "parse_cert_table",
]


def _iowr(type_: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (type_ << 8) | nr


GUEST_REQ = struct.Struct("<B7xQQQ")  # snp_guest_request_ioctl
REPORT_REQ = struct.Struct("<64sI28s")  # snp_report_req
EXT_REPORT_REQ = struct.Struct("<96sQI4x")  # snp_ext_report_req (padded to 8)
RESP_SIZE = 4000
REPORT_SIZE = 1184
MSG_VERSION = 1
SNP_GET_REPORT = _iowr(ord("S"), 0x0, GUEST_REQ.size)
SNP_GET_EXT_REPORT = _iowr(ord("S"), 0x2, GUEST_REQ.size)
VMM_ERR_INVALID_LEN = 1
VMM_ERR_BUSY = 2
PAGE = 4096

# GHCB spec, certificate table GUIDs (RFC 4122 byte order).
CERT_GUIDS = {
    uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"): "vcek",
    uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"): "vlek",
    uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"): "ask",
    uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"): "ark",
    uuid.UUID("92f81bc3-5811-4d3d-97ff-d19f88dc67ea"): "crl",
}
_ENTRY = struct.Struct("<16sII")

Ioctl = Callable[[int, int, Any], Any]


def parse_cert_table(blob: bytes) -> dict[str, bytes]:
    """Parse a GHCB certificate table: (guid, offset, length) entries ending in all zeros.

    Offsets are from the start of ``blob``. Unknown GUIDs are kept under their string form.
    """
    out: dict[str, bytes] = {}
    pos = 0
    while True:
        if pos + _ENTRY.size > len(blob):
            raise EvidenceError("certificate table is not terminated by a zero entry")
        raw_guid, offset, length = _ENTRY.unpack_from(blob, pos)
        pos += _ENTRY.size
        if raw_guid == bytes(16) and offset == 0 and length == 0:
            return out
        if offset + length > len(blob) or offset < pos:
            raise EvidenceError(f"certificate table entry points outside the table "
                                f"(offset {offset}, length {length}, table {len(blob)})")
        guid = uuid.UUID(bytes=raw_guid)
        out[CERT_GUIDS.get(guid, str(guid))] = blob[offset : offset + length]


def ordered_certs(table: dict[str, bytes]) -> tuple[bytes, ...]:
    """Leaf (VCEK or VLEK) then ASK then ARK, as ``Evidence.certs`` expects."""
    leaf = table.get("vcek") or table.get("vlek")
    return tuple(c for c in (leaf, table.get("ask"), table.get("ark")) if c)


@dataclass(frozen=True)
class GuestReport:
    report: bytes
    certs: bytes  # raw certificate table ("" for SNP_GET_REPORT)


def _request(fd: int, nr: int, req: Any, resp: Any, ioctl: Ioctl) -> tuple[int, int]:
    arg = bytearray(GUEST_REQ.pack(MSG_VERSION, ctypes.addressof(req), ctypes.addressof(resp), 0))
    try:
        ioctl(fd, nr, arg)
        err = None
    except OSError as e:
        err = e
    *_, exitinfo2 = GUEST_REQ.unpack(bytes(arg))
    fw_error, vmm_error = exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32
    if err is not None and not (fw_error or vmm_error):
        raise EvidenceError(f"sev-guest ioctl failed: {err.strerror or err}",
                            hint="check dmesg; the sev-guest driver logs firmware errors")
    return fw_error, vmm_error


def _report_from(resp: Any) -> bytes:
    status, size = struct.unpack_from("<II", bytes(resp), 0)
    if status != 0:
        raise EvidenceError(f"SNP firmware returned status {status:#x} for the report request")
    if size != REPORT_SIZE:
        raise EvidenceError(f"SNP firmware returned a {size}-byte report, expected {REPORT_SIZE}")
    return bytes(resp)[32 : 32 + REPORT_SIZE]


def get_report(
    device: Path,
    report_data: bytes,
    *,
    vmpl: int = 0,
    extended: bool = True,
    certs_len: int = 4 * PAGE,
    ioctl: Ioctl | None = None,
    retries: int = 4,
) -> GuestReport:
    """SNP report (and, if ``extended``, the host-provided certificate table).

    ``ioctl`` (default ``fcntl.ioctl``) lets tests play the device.
    """
    ioctl = ioctl or fcntl.ioctl
    if len(report_data) != 64:
        raise EvidenceError(f"report_data must be 64 bytes, got {len(report_data)}")
    try:
        fd = os.open(device, os.O_RDWR)
    except OSError as e:
        raise EvidenceError(f"cannot open {device}: {e.strerror}",
                            hint="load the sev-guest driver and run as root") from None
    try:
        base = REPORT_REQ.pack(report_data, vmpl, bytes(28))
        for _ in range(retries):
            resp = ctypes.create_string_buffer(RESP_SIZE)
            if not extended:
                req = ctypes.create_string_buffer(base, len(base))
                fw, vmm = _request(fd, SNP_GET_REPORT, req, resp, ioctl)
                if vmm == VMM_ERR_BUSY:
                    continue
                _raise_fw(fw, vmm)
                return GuestReport(_report_from(resp), b"")
            certs = ctypes.create_string_buffer(certs_len)
            packed = EXT_REPORT_REQ.pack(base, ctypes.addressof(certs), certs_len)
            req = ctypes.create_string_buffer(packed, len(packed))
            fw, vmm = _request(fd, SNP_GET_EXT_REPORT, req, resp, ioctl)
            if vmm == VMM_ERR_INVALID_LEN:
                # The kernel wrote the size it needs back into certs_len.
                (asked,) = struct.unpack_from("<I", bytes(req), 104)
                if asked <= certs_len:
                    raise EvidenceError("sev-guest said the certificate buffer is too small "
                                        f"but asked for {asked} bytes (gave {certs_len})")
                certs_len = -(-asked // PAGE) * PAGE
                continue
            if vmm == VMM_ERR_BUSY:
                continue
            _raise_fw(fw, vmm)
            return GuestReport(_report_from(resp), bytes(certs))
        raise EvidenceError(f"sev-guest did not produce a report after {retries} tries",
                            hint="the host may be busy; retry later")
    finally:
        os.close(fd)


def _raise_fw(fw: int, vmm: int) -> None:
    if fw or vmm:
        raise EvidenceError(f"sev-guest request failed (fw_error {fw:#x}, vmm_error {vmm:#x})",
                            hint="check dmesg; the host may not support extended reports")
