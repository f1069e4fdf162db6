"""Intel DCAP quote layout (SGX quote v3, TDX quote v4 and v5): a pure parser.

We parse the header and the report body ourselves, so the typed result fields and the error
messages do not depend on dcap-qvl's internals; dcap-qvl then checks every signature, chain and
TCB level over exactly the bytes this parser sized (``ParsedQuote.raw``).

Layouts follow Intel's "SGX ECDSA Quote Library API" and "TDX DCAP Quoting Library API":
header (48) ‖ body ‖ sig_data_len (u32 LE) ‖ sig_data. Quote v5 prefixes the body with
body_type (u16) and body_size (u32). Real quotes are often handed over in a larger buffer
(zero padding, appended text), so the quote is sized from its own length fields and anything
after ``sig_data`` is reported as ``trailing`` and ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from enarx.errors import MalformedEvidence

__all__ = [
    "ATT_KEY_ECDSA_P256", "CERT_PCK_CHAIN", "CERT_QE_REPORT", "CHECK", "HEADER_LEN",
    "INTEL_QE_VENDOR_ID", "SGX_REPORT_LEN", "TD10_REPORT_LEN", "TD15_REPORT_LEN", "TEE_SGX",
    "TEE_TDX", "ParsedQuote", "QuoteHeader", "SgxReport", "SignatureData", "TdReport",
    "parse_quote", "parse_sgx_report", "parse_td_report",
]

HEADER_LEN = 48
SGX_REPORT_LEN = 384
TD10_REPORT_LEN = 584
TD15_REPORT_LEN = 648

TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# Quote v5 body types -> report length.
_V5_BODY = {1: ("sgx", SGX_REPORT_LEN), 2: ("td10", TD10_REPORT_LEN), 3: ("td15", TD15_REPORT_LEN)}

# Certification data types (Intel QuoteLib): 5 = PCK chain (PEM), 6 = QE report cert data.
CERT_PCK_CHAIN = 5
CERT_QE_REPORT = 6

# Generous upper bound: real sig_data is ~4-5 KiB; a bound stops absurd length fields early.
_MAX_SIG_DATA = 1 << 20

CHECK = "dcap.quote.format"


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True)
class SgxReport:
    """SGX REPORTBODY (384 bytes); also the QE report inside the signature data."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes  # 16 bytes: flags (u64 LE) ‖ xfrm (u64 LE)
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def flags(self) -> int:
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        return bool(self.flags & 0x2)  # ATTRIBUTES.DEBUG


@dataclass(frozen=True)
class TdReport:
    """TDX TD quote body: TDREPORT 1.0 (584 bytes) or 1.5 (648: + TEE_TCB_SVN2, MRSERVICETD)."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes
    tee_tcb_svn2: bytes = b""
    mr_service_td: bytes = b""

    @property
    def td_attributes_int(self) -> int:
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes_int & 0x1)  # TUD.DEBUG


@dataclass(frozen=True)
class SignatureData:
    signature: bytes  # ECDSA P-256 r‖s over header‖body
    attestation_key: bytes  # raw P-256 public key x‖y
    qe_report: SgxReport | None = None
    qe_report_signature: bytes = b""
    qe_auth_data: bytes = b""
    cert_type: int = 0
    cert_data: bytes = b""  # PEM chain when cert_type == 5

    def pck_chain_pem(self) -> bytes:
        return self.cert_data.rstrip(b"\0") if self.cert_type == CERT_PCK_CHAIN else b""


@dataclass(frozen=True)
class ParsedQuote:
    header: QuoteHeader
    body_type: str  # "sgx" | "td10" | "td15"
    report: SgxReport | TdReport
    sig: SignatureData
    raw: bytes  # exactly the quote, trailing bytes cut off
    trailing: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TDX


class _Reader:
    """Bounds-checked cursor: every short read becomes MalformedEvidence, never IndexError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, name: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedEvidence(
                CHECK,
                f"{self.what} truncated reading {name}",
                expected=f">= {self.pos + n} bytes",
                actual=f"{len(self.data)} bytes",
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, name: str) -> int:
        return int(struct.unpack("<H", self.take(2, name))[0])

    def u32(self, name: str) -> int:
        return int(struct.unpack("<I", self.take(4, name))[0])


def parse_sgx_report(b: bytes) -> SgxReport:
    if len(b) != SGX_REPORT_LEN:
        raise MalformedEvidence(CHECK, "SGX report body has the wrong size",
                                expected=SGX_REPORT_LEN, actual=len(b))
    return SgxReport(
        cpu_svn=b[0:16],
        misc_select=int.from_bytes(b[16:20], "little"),
        isv_ext_prod_id=b[32:48],
        attributes=b[48:64],
        mr_enclave=b[64:96],
        mr_signer=b[128:160],
        config_id=b[192:256],
        isv_prod_id=int.from_bytes(b[256:258], "little"),
        isv_svn=int.from_bytes(b[258:260], "little"),
        config_svn=int.from_bytes(b[260:262], "little"),
        isv_family_id=b[304:320],
        report_data=b[320:384],
    )


def parse_td_report(b: bytes) -> TdReport:
    if len(b) not in (TD10_REPORT_LEN, TD15_REPORT_LEN):
        raise MalformedEvidence(CHECK, "TD report body has the wrong size",
                                expected=[TD10_REPORT_LEN, TD15_REPORT_LEN], actual=len(b))
    return TdReport(
        tee_tcb_svn=b[0:16],
        mr_seam=b[16:64],
        mr_signer_seam=b[64:112],
        seam_attributes=b[112:120],
        td_attributes=b[120:128],
        xfam=b[128:136],
        mr_td=b[136:184],
        mr_config_id=b[184:232],
        mr_owner=b[232:280],
        mr_owner_config=b[280:328],
        rtmrs=(b[328:376], b[376:424], b[424:472], b[472:520]),
        report_data=b[520:584],
        tee_tcb_svn2=b[584:600],
        mr_service_td=b[600:648],
    )


def _parse_header(r: _Reader) -> QuoteHeader:
    h = QuoteHeader(
        version=r.u16("header.version"),
        att_key_type=r.u16("header.att_key_type"),
        tee_type=r.u32("header.tee_type"),
        qe_svn=r.u16("header.qe_svn"),
        pce_svn=r.u16("header.pce_svn"),
        qe_vendor_id=r.take(16, "header.qe_vendor_id"),
        user_data=r.take(20, "header.user_data"),
    )
    if h.version not in (3, 4, 5):
        raise MalformedEvidence(CHECK, "unsupported quote version", expected=[3, 4, 5],
                                actual=h.version, hint="only DCAP quotes v3 (SGX) and v4/v5 (TDX)")
    if h.tee_type not in (TEE_SGX, TEE_TDX):
        raise MalformedEvidence(CHECK, "unknown TEE type", expected=[hex(TEE_SGX), hex(TEE_TDX)],
                                actual=hex(h.tee_type))
    if h.tee_type == TEE_SGX and h.version != 3:
        raise MalformedEvidence(CHECK, "SGX quotes must be version 3", expected=3,
                                actual=h.version)
    if h.tee_type == TEE_TDX and h.version not in (4, 5):
        raise MalformedEvidence(CHECK, "TDX quotes must be version 4 or 5", expected=[4, 5],
                                actual=h.version)
    if h.att_key_type != ATT_KEY_ECDSA_P256:
        raise MalformedEvidence(CHECK, "unsupported attestation key type",
                                expected=ATT_KEY_ECDSA_P256, actual=h.att_key_type)
    return h


def _parse_body(r: _Reader, h: QuoteHeader) -> tuple[str, SgxReport | TdReport]:
    if h.version == 5:
        body_type = r.u16("body.type")
        body_size = r.u32("body.size")
        if body_type not in _V5_BODY:
            raise MalformedEvidence(CHECK, "unsupported quote v5 body type",
                                    expected=sorted(_V5_BODY), actual=body_type)
        kind, size = _V5_BODY[body_type]
        if body_size != size:
            raise MalformedEvidence(CHECK, "quote v5 body size does not match its type",
                                    expected=size, actual=body_size)
        if (kind == "sgx") != (h.tee_type == TEE_SGX):
            raise MalformedEvidence(CHECK, "quote v5 body type does not match the TEE type",
                                    expected=hex(h.tee_type), actual=body_type)
    elif h.tee_type == TEE_SGX:
        kind, size = "sgx", SGX_REPORT_LEN
    else:
        kind, size = "td10", TD10_REPORT_LEN
    body = r.take(size, "report body")
    return kind, (parse_sgx_report(body) if kind == "sgx" else parse_td_report(body))


def _parse_qe_cert_data(r: _Reader) -> tuple[SgxReport, bytes, bytes, int, bytes]:
    qe_report = parse_sgx_report(r.take(SGX_REPORT_LEN, "QE report"))
    qe_sig = r.take(64, "QE report signature")
    auth = r.take(r.u16("QE auth data size"), "QE auth data")
    cert_type = r.u16("certification data type")
    cert = r.take(r.u32("certification data size"), "certification data")
    return qe_report, qe_sig, auth, cert_type, cert


def _parse_sig_data(data: bytes, version: int) -> SignatureData:
    r = _Reader(data, "quote signature data")
    sig = r.take(64, "quote signature")
    key = r.take(64, "attestation key")
    if version == 3:
        qe_report, qe_sig, auth, cert_type, cert = _parse_qe_cert_data(r)
    else:
        outer = r.u16("certification data type")
        inner = r.take(r.u32("certification data size"), "certification data")
        if outer != CERT_QE_REPORT:
            raise MalformedEvidence(CHECK, "unsupported certification data type",
                                    expected=CERT_QE_REPORT, actual=outer)
        qe_report, qe_sig, auth, cert_type, cert = _parse_qe_cert_data(_Reader(inner, "QE "
                                                                       "certification data"))
    return SignatureData(sig, key, qe_report, qe_sig, auth, cert_type, cert)


def parse_quote(data: bytes) -> ParsedQuote:
    """Parse a DCAP quote; ``data`` may carry trailing bytes after the quote (ignored)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedEvidence(CHECK, "quote must be bytes", actual=type(data).__name__)
    data = bytes(data)
    r = _Reader(data, "quote")
    header = _parse_header(r)
    kind, report = _parse_body(r, header)
    sig_len = r.u32("sig_data_len")
    if sig_len > _MAX_SIG_DATA:
        raise MalformedEvidence(CHECK, "signature data length is implausible",
                                expected=f"<= {_MAX_SIG_DATA}", actual=sig_len)
    sig = _parse_sig_data(r.take(sig_len, "signature data"), header.version)
    return ParsedQuote(header, kind, report, sig, raw=data[: r.pos], trailing=len(data) - r.pos)
