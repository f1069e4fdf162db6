"""The steward's policy (``steward.toml``) and its appraisal of verified evidence.

Pure: the server reads the file and the trust roots; this module parses text and decides.
``appraise`` checks every rule and returns *all* failures, each named by a rule
(``allow.sim``, ``debug``, ``snp.hash``, ``sgx.features``, ``workload.allow``, ...) with what
the policy expected and what the evidence showed, plus the EAR status and trustworthiness
vector the result should carry.

Nothing insecure is implicit: ``nil``, ``kvm`` and ``sim`` Keeps, debug TEEs and evidence that
chains to a non-vendor root (``trust_roots``, e.g. the sim ARK) are refused unless ``allow``
names them. Upstream Enarx's ``[snp]`` and ``[sgx]`` sections keep their meaning (digest
lengths enforced, at least one of ``signer``/``hash``/``hash_blacklist``), with two
tightenings: ``policy_flags`` is enforced (the guest policy may set only the listed flags plus
the mandatory reserved bit) and SNP guests must have VMPL 0 and no migration agent, as
upstream's verifier required. ``[tdx]`` pins MRTD (``hash``) and RTMR0..3. The platform
sections and their rules live in ``steward/rules.py``.

The EAR status is the worst tier of the vector (EAR's rule), or ``contraindicated`` when a
rule failed; so an allowed ``sim`` Keep is issued a certificate but its result honestly says
``runtime-opaque`` = 96 (visible) and ``hardware`` = 97 (unrecognized).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import ipaddress
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enarx.attestation.result import TcbStatus, VerifiedEvidence
from enarx.errors import AttestationError, ConfigError, PolicyViolation
from enarx.steward.rules import (
    Checks,
    Failure,
    SgxSection,
    SnpSection,
    TdxSection,
    abi_matches,
    check_launch_binding,
    check_sgx,
    check_snp,
    check_tdx,
    show,
)

__all__ = [
    "VECTOR_KEYS",
    "Appraisal",
    "Failure",
    "Kind",
    "SgxSection",
    "SnpSection",
    "StewardPolicy",
    "TdxSection",
    "WorkloadSection",
    "abi_matches",
    "appraise",
]

Kind = Literal["snp", "sgx", "tdx", "sim", "nil", "kvm"]
_HINT = "see docs/steward.md (policy reference)"
_WORKLOAD_RE = re.compile(r"^sha384:[0-9a-f]{96}$")
_DURATION_RE = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_MAX_VALIDITY = 397 * 86400
_PLATFORMS = {"snp": "snp", "sim": "snp", "sgx": "sgx", "tdx": "tdx"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkloadSection(_Section):
    """``[workload] allow = ["sha384:<hex>", ...]``; absent = any workload (and unbound
    upstream CSRs are then accepted). ``signers = ["KEY.pub.pem", ...]``: packages must be
    signed by one of these keys."""

    allow: list[str] | None = None
    #: PEM public keys (relative to the policy file) one of which must have signed the
    #: package; the server reads them (``steward/signers.py``). Empty/absent: not required.
    signers: list[str] = Field(default_factory=list)

    @field_validator("allow")
    @classmethod
    def _ids(cls, v: list[str] | None) -> list[str] | None:
        for w in v or []:
            if not _WORKLOAD_RE.match(w):
                raise ValueError(f'{w!r} is not a workload identity ("sha384:" + 96 hex)')
        return v


class StewardPolicy(_Section):
    """The whole ``steward.toml``. Paths in ``trust_roots`` are relative to the policy file;
    the server reads them (this module does no I/O)."""

    allow: list[Literal["sim", "nil", "kvm", "debug"]] = Field(default_factory=list)
    trust_roots: list[str] = Field(default_factory=list)
    cert_validity: str = "24h"
    sans: list[str] = Field(default_factory=lambda: ["*"])
    workload: WorkloadSection = Field(default_factory=WorkloadSection)
    resources: dict[str, list[str]] = Field(default_factory=dict)
    snp: SnpSection | None = None
    sgx: SgxSection | None = None
    tdx: TdxSection | None = None

    @field_validator("cert_validity")
    @classmethod
    def _validity(cls, v: str) -> str:
        m = _DURATION_RE.match(v)
        if m is None or int(m.group(1)) * _UNITS[m.group(2)] > _MAX_VALIDITY:
            raise ValueError('a duration like "30m", "24h" or "7d", at most 397 days')
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for path, who in v.items():
            if path.count("/") != 2:
                raise ValueError(f'{path!r}: resource paths are "repo/type/tag" (globs allowed)')
            for w in who:
                if w != "*" and not _WORKLOAD_RE.match(w):
                    raise ValueError(f'{path!r}: {w!r} is neither "*" nor a workload identity')
        return v

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, data: Mapping[str, Any], *, source: str = "steward.toml") -> StewardPolicy:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ConfigError(msg + more, path=source, key=key or None, hint=_HINT) from None

    @classmethod
    def loads(cls, text: str, *, source: str = "steward.toml") -> StewardPolicy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"not valid TOML: {e}", path=source, hint=_HINT) from None
        except RecursionError:
            raise ConfigError("TOML is nested too deeply", path=source, hint=_HINT) from None
        return cls.load(data, source=source)

    # --- derived values --------------------------------------------------------------------

    @functools.cached_property
    def policy_id(self) -> str:
        """``sha256:<hex>`` of the JCS form of the policy (stable across key order)."""
        doc = json.loads(self.model_dump_json())
        if not doc["workload"]["signers"]:
            del doc["workload"]["signers"]  # ids of policies without signers stay as they were
        for sec, key in (("snp", "host_data"), ("tdx", "mrconfigid")):  # the same for these
            if isinstance(doc.get(sec), dict) and doc[sec].get(key) == "if-set":
                del doc[sec][key]
        return "sha256:" + hashlib.sha256(rfc8785.dumps(doc)).hexdigest()

    @property
    def validity_seconds(self) -> int:
        m = _DURATION_RE.match(self.cert_validity)
        assert m is not None  # validated
        return int(m.group(1)) * _UNITS[m.group(2)]

    def san_allowed(self, name: str) -> bool:
        """Whether a SAN the Keep asks for may go in its certificate (``sans`` patterns:
        DNS globs, case-insensitive; IP addresses match literally or by ``*``)."""
        try:
            ipaddress.ip_address(name)
            return any(p == "*" or p == name for p in self.sans)
        except ValueError:
            pass
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in self.sans)

    def appraise(
        self, evidence: VerifiedEvidence | None, *, kind: Kind, vendor_root: bool,
        workload: str | None, workload_bound: bool,
    ) -> Appraisal:
        """``policy.appraise(evidence, ...)`` = module-level ``appraise(policy, evidence, ...)``."""
        return appraise(self, evidence, kind=kind, vendor_root=vendor_root, workload=workload,
                        workload_bound=workload_bound)

    def may_receive(self, path: str, workload: str | None) -> bool:
        """Whether a Keep with ``workload`` may receive resource ``path`` (deny unless a
        ``[resources]`` entry, exact or glob, lists the workload or ``"*"``)."""
        for pattern, who in self.resources.items():
            if fnmatch.fnmatchcase(path, pattern) and ("*" in who or (
                    workload is not None and workload in who)):
                return True
        return False


# --- appraisal -------------------------------------------------------------------------------

VECTOR_KEYS = ("instance-identity", "configuration", "executables", "file-system",
               "hardware", "runtime-opaque", "storage-opaque", "sourced-data")


@dataclass(frozen=True)
class Appraisal:
    ok: bool
    failed: tuple[Failure, ...]
    status: Literal["affirming", "warning", "contraindicated"]
    vector: dict[str, int]
    policy_id: str
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "status": self.status, "vector": dict(self.vector),
                "policy_id": self.policy_id, "failed": [f.to_dict() for f in self.failed],
                "notes": list(self.notes)}

    def error(self) -> PolicyViolation | None:
        """The failures as one ``PolicyViolation`` (exit 4), or None when accepted."""
        if self.ok:
            return None
        return PolicyViolation([
            AttestationError(f.rule, f.message, expected=show(f.expected),
                             actual=show(f.actual)) for f in self.failed
        ])


def appraise(
    policy: StewardPolicy,
    evidence: VerifiedEvidence | None,
    *,
    kind: Kind,
    vendor_root: bool,
    workload: str | None,
    workload_bound: bool,
) -> Appraisal:
    """Appraise verified ``evidence`` (None for nil/kvm) of ``kind``. ``vendor_root`` says
    whether it chains to a shipped vendor root; ``workload_bound`` whether the evidence binds
    ``workload`` (False for upstream CSRs). Never raises for evidence content."""
    c = Checks()
    tee = kind in ("snp", "sgx", "tdx", "sim") and evidence is not None
    insecure = kind in ("nil", "kvm", "sim") or (tee and not vendor_root)
    if kind in ("nil", "kvm", "sim") and kind not in policy.allow:
        c.fail("hardware", f"allow.{kind}", f"{kind} Keeps are not allowed by this policy",
               f'"{kind}" in allow', list(policy.allow))
    elif tee and not vendor_root and "sim" not in policy.allow:
        c.fail("hardware", "allow.sim", "evidence chains to a non-vendor root",
               '"sim" in allow', list(policy.allow))
    if kind in ("snp", "sgx", "tdx", "sim") and evidence is None:
        c.fail("hardware", "evidence", f"{kind} Keeps must present evidence", kind, None)
    want = _PLATFORMS.get(kind)
    if evidence is not None and evidence.platform.value != want:
        c.fail("hardware", "platform", f"{kind} Keeps must present {want} evidence", want,
               evidence.platform.value)
        evidence = None  # its fields mean something else: no platform rule applies
    debug = bool(evidence is not None and evidence.debug)
    if debug and "debug" not in policy.allow:
        c.fail("configuration", "debug", "debug TEE: its memory is not confidential",
               False, True)
    if evidence is not None:
        if kind in ("snp", "sim"):
            check_snp(policy.snp, evidence, c)
        elif kind == "sgx":
            check_sgx(policy.sgx, evidence, c)
        elif kind == "tdx":
            check_tdx(policy.tdx, evidence, c)
        if want in ("snp", "tdx"):
            sec = policy.snp if want == "snp" else policy.tdx
            mode = ("if-set" if sec is None else
                    sec.host_data if isinstance(sec, SnpSection) else sec.mrconfigid)
            check_launch_binding(want, mode, evidence, workload if workload_bound else None, c)
    allowed = policy.workload.allow
    if allowed is not None:
        if not workload_bound:
            c.fail("file-system", "workload.bound",
                   "the policy requires a workload, but this evidence binds none",
                   "a workload bound in the evidence", "unbound")
        elif workload is None or workload not in allowed:
            c.fail("file-system", "workload.allow", "workload identity not allowed",
                   allowed, workload)
    pinned = _pinned(policy, kind)
    vector = _vector(c, evidence, tee, vendor_root, debug, insecure, pinned,
                     allowed is not None and workload_bound)
    status = "contraindicated" if c.failed else _worst(vector)
    notes = []
    if insecure:
        notes.append(f"{kind} evidence accepted because the policy allows it" if not c.failed
                     else f"{kind} evidence")
    return Appraisal(ok=not c.failed, failed=tuple(c.failed), status=status, vector=vector,
                     policy_id=policy.policy_id, notes=tuple(notes))


def _pinned(policy: StewardPolicy, kind: str) -> bool:
    if kind in ("snp", "sim"):
        return policy.snp is not None and bool(
            policy.snp.hash or policy.snp.signer or policy.snp.id_key_digest)
    if kind == "sgx":
        return policy.sgx is not None and bool(policy.sgx.hash or policy.sgx.signer)
    if kind == "tdx":
        return policy.tdx is not None and bool(policy.tdx.hash)
    return False


def _vector(
    c: Checks, ev: VerifiedEvidence | None, tee: bool, vendor_root: bool, debug: bool,
    insecure: bool, pinned: bool, workload_checked: bool,
) -> dict[str, int]:
    genuine = tee and vendor_root
    v = dict.fromkeys(VECTOR_KEYS, 0)
    if ev is not None:
        v["instance-identity"] = 2 if genuine else 97
        v["hardware"] = 2 if genuine else 97
        v["runtime-opaque"] = 96 if (debug or insecure) else 2
        if "configuration" in c.areas:
            v["configuration"] = 96
        elif debug or ev.tcb.status is not TcbStatus.UP_TO_DATE or ev.tcb.advisory_ids:
            v["configuration"] = 32
        else:
            v["configuration"] = 2
        v["executables"] = 96 if "executables" in c.areas else (2 if pinned else 33)
    else:
        v["runtime-opaque"] = 96  # nil / kvm: the host sees everything
        if "hardware" in c.areas:
            v["hardware"] = 97
    if "file-system" in c.areas:
        v["file-system"] = 96
    elif workload_checked:
        v["file-system"] = 2
    return v


def _tier(value: int) -> int:
    a = abs(value)
    return 0 if a <= 1 else 1 if a <= 31 else 2 if a <= 95 else 3


def _worst(vector: Mapping[str, int]) -> Literal["affirming", "warning", "contraindicated"]:
    worst = max(_tier(x) for x in vector.values())
    return "contraindicated" if worst == 3 else "warning" if worst == 2 else "affirming"

