"""Appraisal policy: is this authentic evidence what the workload owner accepts?

Verification (``snp/``, ``dcap/``) answers "is it genuine and which TCB is it?"; appraisal
answers "do we accept it?". ``appraise`` checks every rule and raises one ``PolicyViolation``
listing *every* failed rule (check ``policy.<rule>`` with expected/actual), so an operator fixes
everything in one round. Unset rules accept anything, except the secure defaults: only
``UpToDate`` TCB, no advisories, no debug, no SNP migration agent. An allow-list that is set
but empty (``measurements = []``, ``snp.vmpls = []``, ...) allows *nothing*: it fails closed,
never "any" (tests/attestation/test_policy.py).

SEV-SNP has no vendor TCB status: its results say ``UpToDate`` once the VCEK matches
REPORTED_TCB, so an owner who cares about SNP firmware levels sets ``min_tcb``.

Policy files are TOML or JSON; load the text at the edge and pass the dict to ``Policy.load``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enarx.attestation.result import Platform, TcbStatus, VerifiedEvidence
from enarx.errors import AttestationError, ConfigError, PolicyViolation

__all__ = ["Policy", "SgxRules", "SnpRules", "appraise", "violations"]


def _hex_list(values: Iterable[str] | None, field: str) -> list[str] | None:
    if values is None:
        return None
    out = []
    for v in values:
        s = str(v).strip().lower().removeprefix("0x")
        try:
            bytes.fromhex(s)
        except ValueError:
            raise ValueError(f"{field}: {v!r} is not hex") from None
        out.append(s)
    return out


class SnpRules(BaseModel):
    """SEV-SNP specifics (evidence ``attributes``: ``vmpl``, ``policy`` bits)."""

    model_config = ConfigDict(extra="forbid")

    vmpls: list[int] | None = Field(None, description="allowed VMPLs (0 = most privileged)")
    allow_smt: bool = True
    allow_migration_agent: bool = False
    min_abi: str | None = Field(None, description='minimum guest ABI "major.minor"')

    @field_validator("min_abi")
    @classmethod
    def _abi(cls, v: str | None) -> str | None:
        if v is not None:
            major, sep, minor = v.partition(".")
            if not (sep and major.isdigit() and minor.isdigit()):
                raise ValueError('min_abi must look like "1.51"')
        return v


class SgxRules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_isv_svn: int | None = Field(None, ge=0, le=0xFFFF)
    isv_prod_ids: list[int] | None = None


class Policy(BaseModel):
    """What a workload owner accepts. Field names are the TOML/JSON keys."""

    model_config = ConfigDict(extra="forbid")

    platforms: list[Platform] | None = None
    products: list[str] | None = None
    measurements: list[str] | None = Field(None, description="allowed launch measurements (hex)")
    signers: list[str] | None = Field(
        None, description="allowed signers (hex): SGX MRSIGNER, SNP ID-key digest"
    )
    author_keys: list[str] | None = Field(None, description="allowed SNP author-key digests")
    min_tcb: dict[str, int] = Field(default_factory=dict, description="component -> min SVN")
    tcb_statuses: list[TcbStatus] = Field(default_factory=lambda: [TcbStatus.UP_TO_DATE])
    advisory_ids: list[str] = Field(default_factory=list, description="accepted advisories")
    allow_debug: bool = False
    report_data: str | None = Field(None, description="exact expected report_data (hex)")
    snp: SnpRules = Field(default_factory=SnpRules)
    sgx: SgxRules = Field(default_factory=SgxRules)

    @field_validator("measurements", "signers", "author_keys")
    @classmethod
    def _hex(cls, v: list[str] | None, info: Any) -> list[str] | None:
        return _hex_list(v, info.field_name)

    @field_validator("report_data")
    @classmethod
    def _rd(cls, v: str | None) -> str | None:
        got = _hex_list([v], "report_data") if v is not None else None
        return got[0] if got else None

    @classmethod
    def load(cls, data: Mapping[str, Any], *, source: str = "policy") -> Policy:
        """Build from a TOML/JSON dict; errors name the key (``ConfigError``)."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
            raise ConfigError(
                first["msg"] + more,
                path=source,
                key=key or None,
                hint="see docs/attestation.md (Appraisal) for the policy keys",
            ) from None

    @classmethod
    def loads(cls, text: str, *, fmt: str = "toml", source: str = "policy") -> Policy:
        """Parse TOML or JSON text (already read by the caller) into a policy."""
        import json
        import tomllib

        try:
            data = tomllib.loads(text) if fmt == "toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, ValueError) as e:
            raise ConfigError(f"not valid {fmt.upper()}: {e}", path=source) from None
        except RecursionError:  # both parsers recurse per nesting level
            raise ConfigError(f"{fmt.upper()} is nested too deeply", path=source) from None
        if not isinstance(data, dict):
            raise ConfigError("policy must be a table/object", path=source)
        return cls.load(data, source=source)


def _in(value: bytes, allowed: list[str]) -> bool:
    # Constant-time per candidate; the list itself is public.
    return any(hmac.compare_digest(value, bytes.fromhex(a)) for a in allowed)


def _violation(rule: str, message: str, expected: Any, actual: Any) -> AttestationError:
    return AttestationError(f"policy.{rule}", message, expected=expected, actual=actual)


def _snp_attr(ev: VerifiedEvidence, name: str) -> Any:
    """SNP fields live at the top of ``attributes`` or under its ``policy`` mapping."""
    if name in ev.attributes:
        return ev.attributes[name]
    pol = ev.attributes.get("policy")
    return pol.get(name) if isinstance(pol, Mapping) else None


def _check_snp(ev: VerifiedEvidence, rules: SnpRules, out: list[AttestationError]) -> None:
    vmpl = _snp_attr(ev, "vmpl")
    if rules.vmpls is not None and vmpl not in rules.vmpls:
        out.append(_violation("snp.vmpl", "VMPL not allowed", rules.vmpls, vmpl))
    smt = _snp_attr(ev, "smt")
    if not rules.allow_smt and smt is not False:
        out.append(_violation("snp.smt", "guest policy allows SMT", False, smt))
    ma = _snp_attr(ev, "migrate_ma")
    if not rules.allow_migration_agent and ma is not False:
        out.append(_violation("snp.migration_agent", "migration agent allowed", False, ma))
    if rules.min_abi is not None:
        want = tuple(int(x) for x in rules.min_abi.split("."))
        major, minor = _snp_attr(ev, "abi_major"), _snp_attr(ev, "abi_minor")
        have = (major, minor) if isinstance(major, int) and isinstance(minor, int) else None
        if have is None or have < want:
            shown = f"{have[0]}.{have[1]}" if have else None
            out.append(_violation("snp.min_abi", "guest ABI too old", f">= {rules.min_abi}",
                                  shown))


def _check_sgx(ev: VerifiedEvidence, rules: SgxRules, out: list[AttestationError]) -> None:
    svn = ev.attributes.get("isv_svn")
    if rules.min_isv_svn is not None and (not isinstance(svn, int) or svn < rules.min_isv_svn):
        out.append(_violation("sgx.min_isv_svn", "ISV SVN too low", f">= {rules.min_isv_svn}",
                              svn))
    prod = ev.attributes.get("isv_prod_id")
    if rules.isv_prod_ids is not None and prod not in rules.isv_prod_ids:
        out.append(_violation("sgx.isv_prod_id", "ISV product ID not allowed",
                              rules.isv_prod_ids, prod))


def violations(ev: VerifiedEvidence, policy: Policy) -> list[AttestationError]:
    """Every rule ``ev`` breaks (empty list: accepted)."""
    out: list[AttestationError] = []
    if policy.platforms is not None and ev.platform not in policy.platforms:
        out.append(_violation("platform", "platform not allowed",
                              [p.value for p in policy.platforms], ev.platform.value))
    if policy.products is not None and ev.product not in policy.products:
        out.append(_violation("product", "product not allowed", policy.products, ev.product))
    if policy.measurements is not None and not _in(ev.measurement, policy.measurements):
        out.append(_violation("measurement", "measurement not allowed", policy.measurements,
                              ev.measurement))
    if policy.signers is not None and not _in(ev.signer, policy.signers):
        out.append(_violation("signer", "signer not allowed", policy.signers, ev.signer))
    if policy.author_keys is not None and not _in(ev.author_key_digest, policy.author_keys):
        out.append(_violation("author_key", "author key not allowed", policy.author_keys,
                              ev.author_key_digest))
    for comp, minimum in sorted(policy.min_tcb.items()):
        have = ev.tcb.reported.get(comp)
        if have is None or have < minimum:
            out.append(_violation(f"min_tcb.{comp}", f"TCB component {comp} too low",
                                  f">= {minimum}", have))
    if ev.tcb.status not in policy.tcb_statuses:
        out.append(_violation("tcb_status", "TCB status not accepted",
                              [s.value for s in policy.tcb_statuses], ev.tcb.status.value))
    unaccepted = [a for a in ev.tcb.advisory_ids if a not in policy.advisory_ids]
    if unaccepted:
        out.append(_violation("advisory_ids", "unaccepted security advisories",
                              policy.advisory_ids, unaccepted))
    if ev.debug and not policy.allow_debug:
        out.append(_violation("debug", "debug TEE: its memory is not confidential", False, True))
    if policy.report_data is not None and not hmac.compare_digest(
        ev.report_data, bytes.fromhex(policy.report_data)
    ):
        out.append(_violation("report_data", "report_data differs", policy.report_data,
                              ev.report_data))
    if ev.platform is Platform.SNP:
        _check_snp(ev, policy.snp, out)
    if ev.platform is Platform.SGX:
        _check_sgx(ev, policy.sgx, out)
    return out


def appraise(evidence: VerifiedEvidence, policy: Policy) -> None:
    """Accept silently, or raise ``PolicyViolation`` listing every failed rule."""
    found = violations(evidence, policy)
    if found:
        raise PolicyViolation(found)
