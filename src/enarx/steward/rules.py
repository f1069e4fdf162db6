"""Upstream Enarx's per-platform policy sections (``[snp]``, ``[sgx]``, ``[tdx]``) and the
rules that check verified evidence against them. Pure; used by ``steward/policy.py``, which
owns the whole ``steward.toml`` and the appraisal result. Each failed rule is recorded as a
``Failure`` naming the rule (``snp.hash``, ``sgx.features``, ``tdx.rtmr0``, ...) with what the
policy expected and what the evidence showed; no rule stops the others.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from enarx.attestation.result import TcbStatus, VerifiedEvidence
from enarx.workload import HOST_DATA_SIZE, MRCONFIGID_SIZE, launch_binding

__all__ = [
    "Checks",
    "Failure",
    "SgxSection",
    "SnpSection",
    "TdxSection",
    "abi_matches",
    "check_launch_binding",
    "check_sgx",
    "check_snp",
    "check_tdx",
    "show",
]

#: How ``[snp] host_data`` / ``[tdx] mrconfigid`` treat the launch field the host sets:
#: "workload" = must be the workload's binding (``enarx.workload.launch_binding``);
#: "if-set" (default) = must be when it is not all zero and the Keep claims a workload (a
#: Keep launched without one, or a guest that claims none, e.g. a Trustee guest whose
#: HOST_DATA is its init-data digest, passes); "ignore" = not checked.
BindingMode = Literal["workload", "if-set", "ignore"]

_ABI_RE = re.compile(r"^\s*(>=|<=|>|<|=|\^|~)?\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$")

# SNP guest policy flag bits (policy >> 16) and platform-info bits, upstream's names.
_SNP_FLAGS = {"SMT": 1 << 0, "Reserved": 1 << 1, "MigrateMA": 1 << 2, "Debug": 1 << 3,
              "SingleSocket": 1 << 4}
_SNP_PLATFORM = {"SME": 1 << 0, "TSME": 1 << 1}
# SGX ATTRIBUTES.FLAGS bits, MISCSELECT bits.
_SGX_FEATURES = {"Init": 1 << 0, "Debug": 1 << 1, "Mode64Bit": 1 << 2,
                 "ProvisioningKey": 1 << 4, "EInitKey": 1 << 5, "CET": 1 << 6, "KSS": 1 << 7}
_SGX_MISC = {"EXINFO": 1 << 0}


def _digests(values: list[str], size: int, field_name: str) -> list[str]:
    out = []
    for v in values:
        s = str(v).strip().lower().removeprefix("0x")
        try:
            raw = bytes.fromhex(s)
        except ValueError:
            raise ValueError(f"{field_name}: {v!r} is not hex") from None
        if len(raw) != size:
            raise ValueError(f"{field_name}: {v!r} must be {size} bytes ({2 * size} hex digits)")
        out.append(s)
    return out


def abi_matches(requirement: str, major: int, minor: int) -> bool:
    """Whether ABI ``major.minor`` satisfies a semver requirement (``">=1.51"``, ``"^1.0"``,
    ``"1.51"`` = caret, ``"*"``, comma-separated = all must hold), as upstream reads ``abi``."""
    if requirement.strip() in ("", "*"):
        return True
    have = (major, minor, 0)
    for part in requirement.split(","):
        m = _ABI_RE.match(part)
        if m is None:
            raise ValueError(f"abi: {part.strip()!r} is not a version requirement")
        op = m.group(1) or "^"
        given = tuple(int(g) for g in m.groups()[1:] if g is not None)
        n = len(given)
        head = have[:n]
        if not {">=": head >= given, ">": head > given, "<=": head <= given,
                "<": head < given, "=": head == given,
                "~": head >= given and have[: min(n, 2)] == given[: min(n, 2)],
                "^": head >= given and _caret_prefix(have, given)}[op]:
            return False
    return True


def _caret_prefix(have: tuple[int, ...], given: tuple[int, ...]) -> bool:
    # ^M.m.p: the left-most non-zero component given must not change.
    for i, g in enumerate(given):
        if g != 0 or i == len(given) - 1:
            return have[: i + 1] == given[: i + 1]
    return True


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Measured(_Section):
    signer: list[str] = Field(default_factory=list)
    hash: list[str] = Field(default_factory=list)
    hash_blacklist: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of(self) -> _Measured:
        if not (self.signer or self.hash or self.hash_blacklist):
            raise ValueError("the section needs at least one of signer, hash, hash_blacklist")
        return self


class SnpSection(_Measured):
    """Upstream's ``[snp]``: ``signer`` = author_key_digest, ``hash`` = launch measurement
    (SHA-384, 48 bytes), ``id_key_digest`` (+ ``_blacklist``), ``abi`` (semver requirement on
    the guest policy's ABI), ``policy_flags`` (flags the guest policy may set),
    ``platform_info_flags`` ("SME"/"TSME": must equal), plus ``min_tcb`` (component ->
    minimum SVN of REPORTED_TCB)."""

    id_key_digest: list[str] = Field(default_factory=list)
    id_key_digest_blacklist: list[str] = Field(default_factory=list)
    abi: str | None = None
    policy_flags: list[Literal["SMT", "SingleSocket", "Debug"]] | None = None
    platform_info_flags: Literal["SME", "TSME"] | None = None
    min_tcb: dict[str, int] = Field(default_factory=dict)
    #: HOST_DATA vs the workload identity the Keep claims (see :data:`BindingMode`)
    host_data: BindingMode = "if-set"

    @field_validator("signer", "hash", "hash_blacklist", "id_key_digest",
                     "id_key_digest_blacklist")
    @classmethod
    def _sha384(cls, v: list[str], info: Any) -> list[str]:
        return _digests(v, 48, info.field_name)

    @field_validator("abi")
    @classmethod
    def _abi(cls, v: str | None) -> str | None:
        if v is not None:
            abi_matches(v, 0, 0)  # raises ValueError on a malformed requirement
        return v

    @model_validator(mode="after")
    def _one_of(self) -> SnpSection:
        if not (self.signer or self.hash or self.hash_blacklist or self.id_key_digest):
            raise ValueError("the section needs at least one of signer, hash, hash_blacklist, "
                             "id_key_digest")
        return self


class _Tcb(_Section):
    allowed_advisories: list[str] = Field(default_factory=list)
    tcb_statuses: list[TcbStatus] | None = None
    min_tcb: dict[str, int] = Field(default_factory=dict)


class SgxSection(_Measured, _Tcb):
    """Upstream's ``[sgx]``: ``signer`` = MRSIGNER, ``hash`` = MRENCLAVE (SHA-256, 32
    bytes), ``features`` (ATTRIBUTES flags the enclave may have besides INIT and MODE64BIT;
    "Debug" admits debug enclaves), ``enclave_security_version`` (minimum ISVSVN),
    ``enclave_product_id`` (exact ISVPRODID), ``misc_select``, ``allowed_advisories`` (with
    none listed the TCB must be UpToDate), and ``tcb_statuses`` (explicit accepted list)."""

    features: list[Literal["CET", "Debug", "EInitKey", "KSS", "ProvisioningKey"]] | None = None
    enclave_security_version: int | None = Field(None, ge=0, le=0xFFFF)
    enclave_product_id: int | None = Field(None, ge=0, le=0xFFFF)
    misc_select: list[Literal["EXINFO"]] | None = None

    @field_validator("signer", "hash", "hash_blacklist")
    @classmethod
    def _sha256(cls, v: list[str], info: Any) -> list[str]:
        return _digests(v, 32, info.field_name)


class TdxSection(_Tcb):
    """``[tdx]``: ``hash`` = allowed MRTD (48 bytes), ``hash_blacklist``, ``rtmr0``..``rtmr3``
    allowed values, advisories and statuses as for SGX."""

    hash: list[str] = Field(default_factory=list)
    hash_blacklist: list[str] = Field(default_factory=list)
    rtmr0: list[str] | None = None
    rtmr1: list[str] | None = None
    rtmr2: list[str] | None = None
    rtmr3: list[str] | None = None
    #: MRCONFIGID vs the workload identity the Keep claims (see :data:`BindingMode`)
    mrconfigid: BindingMode = "if-set"

    @field_validator("hash", "hash_blacklist", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
    @classmethod
    def _sha384(cls, v: list[str] | None, info: Any) -> list[str] | None:
        return None if v is None else _digests(v, 48, info.field_name)


@dataclass(frozen=True)
class Failure:
    rule: str
    expected: Any
    actual: Any
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "expected": show(self.expected),
                "actual": show(self.actual), "message": self.message}


def show(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [show(v) for v in value]
    return value


def _in(value: bytes, allowed: list[str]) -> bool:
    # Constant time per candidate; the list itself is public.
    return any(hmac.compare_digest(value, bytes.fromhex(a)) for a in allowed)


class Checks:
    """Collects every failed rule and the EAR vector area it concerns."""

    def __init__(self) -> None:
        self.failed: list[Failure] = []
        self.areas: set[str] = set()

    def fail(self, area: str, rule: str, message: str, expected: Any, actual: Any) -> None:
        self.failed.append(Failure(rule, expected, actual, message))
        self.areas.add(area)


def _measured(sec: Any, ev: VerifiedEvidence, c: Checks, plat: str, signer: bytes) -> None:
    if sec.signer and not _in(signer, sec.signer):
        c.fail("executables", f"{plat}.signer", "signer not allowed", sec.signer, signer)
    if sec.hash and not _in(ev.measurement, sec.hash):
        c.fail("executables", f"{plat}.hash", "measurement not allowed", sec.hash,
               ev.measurement)
    if sec.hash_blacklist and _in(ev.measurement, sec.hash_blacklist):
        c.fail("executables", f"{plat}.hash_blacklist", "measurement is blacklisted",
               "not in hash_blacklist", ev.measurement)


def _snp_policy(ev: VerifiedEvidence) -> tuple[int, int, int]:
    pol = ev.attributes.get("policy", {})
    raw = int(pol.get("raw", 0)) if isinstance(pol, Mapping) else 0
    return raw >> 16 & 0x1F, raw >> 8 & 0xFF, raw & 0xFF


def check_snp(sec: SnpSection | None, ev: VerifiedEvidence, c: Checks) -> None:
    vmpl = ev.attributes.get("vmpl")
    if vmpl != 0:
        c.fail("configuration", "snp.vmpl", "the report is not from VMPL 0", 0, vmpl)
    flags, major, minor = _snp_policy(ev)
    if flags & _SNP_FLAGS["MigrateMA"]:
        c.fail("configuration", "snp.migrate_ma", "the guest policy allows a migration agent",
               False, True)
    if sec is None:
        return
    key_info = ev.attributes.get("key_info", {})
    author_en = bool(key_info.get("author_key_en")) if isinstance(key_info, Mapping) else False
    if sec.signer and not author_en:
        c.fail("executables", "snp.signer", "the report has no author key digest",
               sec.signer, None)
    else:
        _measured(sec, ev, c, "snp", ev.author_key_digest)
    if sec.id_key_digest and not _in(ev.signer, sec.id_key_digest):
        c.fail("executables", "snp.id_key_digest", "ID key not allowed", sec.id_key_digest,
               ev.signer)
    if sec.id_key_digest_blacklist and _in(ev.signer, sec.id_key_digest_blacklist):
        c.fail("executables", "snp.id_key_digest_blacklist", "ID key is blacklisted",
               "not in id_key_digest_blacklist", ev.signer)
    if sec.abi is not None and not abi_matches(sec.abi, major, minor):
        c.fail("configuration", "snp.abi", "guest policy ABI does not match", sec.abi,
               f"{major}.{minor}")
    if sec.policy_flags is not None:
        allowed = _SNP_FLAGS["Reserved"]
        for name in sec.policy_flags:
            allowed |= _SNP_FLAGS[name]
        extra = [n for n, b in _SNP_FLAGS.items() if flags & b and not allowed & b]
        if extra:
            c.fail("configuration", "snp.policy_flags", "guest policy sets flags not allowed",
                   sorted(sec.policy_flags), extra)
    if sec.platform_info_flags is not None:
        info = ev.attributes.get("platform_info", {})
        raw = int(info.get("raw", 0)) if isinstance(info, Mapping) else 0
        names = [n for n, b in _SNP_PLATFORM.items() if raw & b]
        if raw & 0x3 != _SNP_PLATFORM[sec.platform_info_flags]:
            c.fail("configuration", "snp.platform_info_flags", "platform info flags differ",
                   sec.platform_info_flags, names)
    _min_tcb(sec.min_tcb, ev, c, "snp")


def _min_tcb(mins: dict[str, int], ev: VerifiedEvidence, c: Checks, plat: str) -> None:
    for comp, minimum in sorted(mins.items()):
        have = ev.tcb.reported.get(comp)
        if have is None or have < minimum:
            c.fail("configuration", f"{plat}.min_tcb.{comp}", f"TCB component {comp} too low",
                   f">= {minimum}", have)


def _tcb(sec: _Tcb | None, ev: VerifiedEvidence, c: Checks, plat: str) -> None:
    advisories = list(sec.allowed_advisories) if sec else []
    statuses = sec.tcb_statuses if sec else None
    if statuses is not None:
        if ev.tcb.status not in statuses:
            c.fail("configuration", f"{plat}.tcb_status", "TCB status not accepted",
                   [s.value for s in statuses], ev.tcb.status.value)
    elif not advisories and ev.tcb.status is not TcbStatus.UP_TO_DATE:
        c.fail("configuration", f"{plat}.tcb_status",
               "TCB is not UpToDate and no advisories are allowed", "UpToDate",
               ev.tcb.status.value)
    extra = [a for a in ev.tcb.advisory_ids if a not in advisories]
    if extra:
        c.fail("configuration", f"{plat}.allowed_advisories",
               "the TCB has advisories the policy does not allow", advisories, extra)
    if sec is not None:
        _min_tcb(sec.min_tcb, ev, c, plat)


def check_sgx(sec: SgxSection | None, ev: VerifiedEvidence, c: Checks) -> None:
    _tcb(sec, ev, c, "sgx")
    if sec is None:
        return
    _measured(sec, ev, c, "sgx", ev.signer)
    attrs = ev.attributes
    if sec.enclave_product_id is not None and attrs.get("isv_prod_id") != sec.enclave_product_id:
        c.fail("configuration", "sgx.enclave_product_id", "enclave product ID differs",
               sec.enclave_product_id, attrs.get("isv_prod_id"))
    svn = attrs.get("isv_svn")
    if sec.enclave_security_version is not None and (
            not isinstance(svn, int) or svn < sec.enclave_security_version):
        c.fail("configuration", "sgx.enclave_security_version", "enclave SVN too low",
               f">= {sec.enclave_security_version}", svn)
    if sec.features is not None:
        flags = int(attrs.get("flags", 0))
        allowed = _SGX_FEATURES["Init"] | _SGX_FEATURES["Mode64Bit"]
        for name in sec.features:
            allowed |= _SGX_FEATURES[name]
        extra = [n for n, b in _SGX_FEATURES.items() if flags & b and not allowed & b]
        if extra:
            c.fail("configuration", "sgx.features", "enclave has features not allowed",
                   sorted(sec.features), extra)
    if sec.misc_select is not None:
        misc = int(attrs.get("misc_select", 0))
        allowed = sum(_SGX_MISC[n] for n in set(sec.misc_select))
        if misc & ~allowed:
            c.fail("configuration", "sgx.misc_select", "MISCSELECT has bits not allowed",
                   sorted(sec.misc_select), hex(misc))


def check_tdx(sec: TdxSection | None, ev: VerifiedEvidence, c: Checks) -> None:
    _tcb(sec, ev, c, "tdx")
    if sec is None:
        return
    if sec.hash and not _in(ev.measurement, sec.hash):
        c.fail("executables", "tdx.hash", "MRTD not allowed", sec.hash, ev.measurement)
    if sec.hash_blacklist and _in(ev.measurement, sec.hash_blacklist):
        c.fail("executables", "tdx.hash_blacklist", "MRTD is blacklisted",
               "not in hash_blacklist", ev.measurement)
    for i in range(4):
        allowed = getattr(sec, f"rtmr{i}")
        have = ev.rtmrs[i] if i < len(ev.rtmrs) else b""
        if allowed is not None and not _in(have, allowed):
            c.fail("executables", f"tdx.rtmr{i}", f"RTMR{i} not allowed", allowed, have)


def check_launch_binding(platform: str, mode: BindingMode, ev: VerifiedEvidence,
                         workload: str | None, c: Checks) -> None:
    """SNP HOST_DATA / TDX MRCONFIGID: the host-set launch field must be the binding of the
    workload identity the Keep claims in its runtime data (``enarx.workload.launch_binding``),
    so a Keep cannot present another workload's launch. Rule ``snp.host_data`` or
    ``tdx.mrconfigid``."""
    if mode == "ignore":
        return
    if platform == "snp":
        rule, what, size, have = "snp.host_data", "HOST_DATA", HOST_DATA_SIZE, ev.host_data
    else:
        raw = ev.attributes.get("mr_config_id", b"")
        rule, what, size = "tdx.mrconfigid", "MRCONFIGID", MRCONFIGID_SIZE
        have = bytes.fromhex(raw) if isinstance(raw, str) else bytes(raw)
    if mode == "if-set" and (not any(have) or workload is None):
        return
    if workload is None:
        c.fail("file-system", rule, f"the policy requires {what} to bind a workload, but "
               "the evidence binds none", "a workload identity in the runtime data", have)
        return
    want = launch_binding(workload, size)
    if not hmac.compare_digest(have, want):
        c.fail("file-system", rule,
               f"{what} is not the binding of the workload identity the Keep claims"
               + (" (the Keep was launched without one)" if not any(have) else ""),
               want, have)
