"""VCEK -> ASK -> ARK and VLEK -> ASVK -> ARK chain verification, with a warm cache.

The caller's chain only *provides* intermediates: the chain must end in an ARK shipped in
``enarx.attestation.roots`` or one the caller passes explicitly in ``trust_roots`` (compared
as DER bytes), never in a root that merely arrived with the evidence.

RSA-4096 PSS verification costs far more than the report's ECDSA check, and a verifier sees
the same VCEK again and again, so a ``ChainVerifier`` keeps its verified chains in a small LRU
(its own: there is no process-wide cache) keyed by the
SHA-256 of every input blob. A cached chain remembers the time window in which all its
certificates (and CRLs) are valid; a lookup at a time outside it re-verifies from scratch,
so the cache can never turn an expired chain into a valid one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from enarx.attestation import roots
from enarx.attestation.result import CertInfo
from enarx.attestation.snp.certs import (
    AmdCert,
    crl_signed_by,
    is_p384,
    load_cert,
    load_certs,
    load_crl,
)
from enarx.errors import ChainInvalid, MalformedEvidence

__all__ = ["CACHE_SIZE", "ChainVerifier", "VerifiedChain", "verify_chain"]

CACHE_SIZE = 128


@dataclass(frozen=True)
class VerifiedChain:
    leaf: AmdCert
    intermediate: AmdCert
    root: AmdCert
    #: product of the shipped ARK the chain ends in, or None for an explicit trust root.
    root_product: str | None
    #: [start, end] in which every certificate and CRL used is valid.
    valid_from: dt.datetime
    valid_until: dt.datetime

    @property
    def kind(self) -> str:
        return self.leaf.kind

    def cert_infos(self, at: dt.datetime) -> tuple[CertInfo, ...]:
        return tuple(c.cert_info(at) for c in (self.leaf, self.intermediate, self.root))


@dataclass(frozen=True)
class _Anchors:
    arks: tuple[tuple[str, AmdCert], ...]
    intermediates: tuple[AmdCert, ...]


def _shipped() -> _Anchors:
    arks: list[tuple[str, AmdCert]] = []
    inters: list[AmdCert] = []
    for product in roots.AMD_PRODUCTS:
        arks.append((product, load_cert(roots.amd_ark(product), "ark")))
        inters.append(load_cert(roots.amd_ask(product), "ask"))
        inters.append(load_cert(roots.amd_asvk(product), "asvk"))
    return _Anchors(tuple(arks), tuple(inters))


class _Lru:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[tuple[bytes, ...], VerifiedChain] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[bytes, ...], at: dt.datetime) -> VerifiedChain | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None or not hit.valid_from <= at <= hit.valid_until:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: tuple[bytes, ...], value: VerifiedChain) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


class ChainVerifier:
    """Verifies VCEK/VLEK chains against its own trust anchors, with its own warm cache.

    The anchors are the shipped AMD ARKs (and their ASK/ASVK) plus ``trust_roots`` given
    here; ``verify`` may add more per call. Nothing is shared between instances: a
    long-running verifier keeps one instance, a one-shot caller makes one and drops it.
    """

    def __init__(self, trust_roots: Sequence[bytes] = (), *,
                 cache_size: int = CACHE_SIZE) -> None:
        self._shipped = _shipped()
        self.trust_roots: tuple[bytes, ...] = tuple(trust_roots)
        self._cache = _Lru(cache_size)

    def clear_cache(self) -> None:
        self._cache.clear()

    def cache_stats(self) -> tuple[int, int]:
        """(hits, misses) since the last clear; for benchmarks and tests."""
        return self._cache.hits, self._cache.misses

    def verify(
        self,
        cert: bytes,
        chain: Sequence[bytes] = (),
        crls: Sequence[bytes] = (),
        *,
        at: dt.datetime,
        trust_roots: Sequence[bytes] = (),
    ) -> VerifiedChain:
        """Verify the VCEK/VLEK ``cert`` up to a trusted ARK at time ``at`` (cached)."""
        # Materialise first: a one-shot iterable consumed by the cache key would reach
        # _build empty, silently dropping CRLs (and intermediates, roots) from the check.
        chain, crls = tuple(chain), tuple(crls)
        all_roots = self.trust_roots + tuple(trust_roots)
        key = (
            _digest(cert),
            b"|chain",
            *(_digest(c) for c in chain),
            b"|roots",
            *(_digest(r) for r in all_roots),
            b"|crls",
            *(_digest(c) for c in crls),
        )
        hit = self._cache.get(key, at)
        if hit is not None:
            return hit
        result = _build(self._shipped, cert, chain, all_roots, crls, at)
        self._cache.put(key, result)
        return result


def verify_chain(
    cert: bytes,
    chain: Sequence[bytes] = (),
    trust_roots: Sequence[bytes] = (),
    crls: Sequence[bytes] = (),
    *,
    at: dt.datetime,
) -> VerifiedChain:
    """One-shot ``ChainVerifier(trust_roots).verify(...)``: no state survives the call."""
    return ChainVerifier(trust_roots, cache_size=0).verify(cert, chain, crls, at=at)


def _digest(blob: bytes) -> bytes:
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise ChainInvalid("snp.chain", "certificates must be bytes", actual=type(blob).__name__)
    return hashlib.sha256(blob).digest()


def _build(
    shipped: _Anchors,
    cert: bytes,
    chain: Sequence[bytes],
    trust_roots: Sequence[bytes],
    crls: Sequence[bytes],
    at: dt.datetime,
) -> VerifiedChain:
    leaf = load_cert(cert, "vcek")
    kind = leaf.kind
    if kind == "ca":
        raise ChainInvalid(
            "snp.chain.vcek", "certificate is neither a VCEK (hwID) nor a VLEK (cspID)",
            actual=leaf.subject_str,
        )
    if not is_p384(leaf.public_key):
        raise ChainInvalid(f"snp.chain.{kind}", f"{kind.upper()} key is not EC P-384")

    supplied = [c for blob in chain for c in load_certs(blob, "chain")]
    explicit = [c for blob in trust_roots for c in load_certs(blob, "trust_root")]
    trusted = {c.der: None for c in explicit} | {c.der: p for p, c in shipped.arks}

    inters = [c for c in supplied if not c.self_issued] + list(shipped.intermediates)
    inter = _find_issuer(leaf, inters)
    if inter is None:
        issuer = leaf.issuer_str
        if any(c.subject == leaf.issuer for c in inters):
            raise ChainInvalid(
                f"snp.chain.{kind}",
                f"the {kind.upper()}'s signature does not verify with its issuer's key",
                expected=f"RSA-PSS SHA-384 signature by {issuer}", actual="invalid signature",
            )
        raise ChainInvalid(
            f"snp.chain.{kind}", f"no given or shipped ASK/ASVK issued the {kind.upper()}",
            expected=issuer, actual=[c.subject_str for c in supplied],
            hint="pass the KDS cert_chain for this product as chain=",
        )

    candidates = [c for c in explicit + supplied if c.self_issued]
    candidates += [c for _, c in shipped.arks]
    # Trusted roots first, so a bundled copy of the real ARK and the shipped one agree.
    candidates.sort(key=lambda c: c.der not in trusted)
    root = _find_issuer(inter, candidates)
    if root is None:
        raise ChainInvalid(
            "snp.chain.root", "the intermediate is not signed by any trusted ARK",
            expected=inter.issuer_str, actual=inter.subject_str,
        )
    if root.der not in trusted:
        raise ChainInvalid(
            "snp.chain.root", "the chain ends in a root that is not trusted",
            expected="a shipped AMD ARK or an explicit trust root",
            actual=f"{root.subject_str} sha256={root.sha256.hex()}",
            hint="trust it explicitly (--trust-root, or trust_roots in the API) only if you "
            "really do, e.g. the sim ARK",
        )
    if not root.signed_by(root):
        raise ChainInvalid("snp.chain.root", "the root is not self-signed",
                           actual=root.subject_str)
    # AMD's ARK/ASK/ASVK are CAs; under an explicitly trusted root this stops an end-entity
    # RSA certificate from acting as an ASK and minting VCEKs.
    for role, c in (("intermediate", inter), ("root", root)):
        if not c.can_issue:
            raise ChainInvalid(
                "snp.chain.ca", f"the {role} certificate is not a CA",
                expected="BasicConstraints cA=TRUE (and keyCertSign if KeyUsage is present)",
                actual=c.subject_str,
            )

    roles = ((kind, leaf), ("ask" if kind == "vcek" else "asvk", inter), ("ark", root))
    for role, c in roles:
        if not c.valid_at(at):
            raise ChainInvalid(
                "snp.chain.validity", f"the {role.upper()} certificate is not valid at that time",
                expected=[c.not_before.isoformat(), c.not_after.isoformat()],
                actual=at.isoformat(),
                hint="fetch a current certificate, or verify as of a time inside its validity",
            )
    start = max(c.not_before for _, c in roles)
    end = min(c.not_after for _, c in roles)
    for blob in crls:
        start, end = _apply_crl(blob, leaf, inter, root, at, start, end)
    return VerifiedChain(leaf, inter, root, trusted[root.der], start, end)


def _find_issuer(child: AmdCert, candidates: list[AmdCert]) -> AmdCert | None:
    for c in candidates:
        if c.subject == child.issuer and child.signed_by(c):
            return c
    return None


def _apply_crl(
    blob: bytes,
    leaf: AmdCert,
    inter: AmdCert,
    root: AmdCert,
    at: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[dt.datetime, dt.datetime]:
    """Check one CRL issued by the ARK (covers the ASK/ASVK) or the ASK (covers the leaf).

    A CRL from another issuer (e.g. another product's ARK) does not concern this chain.
    """
    crl = load_crl(blob)
    try:
        return _check_crl(crl, leaf, inter, root, at, start, end)
    except ValueError as exc:  # cryptography decodes CRL entries and extensions lazily
        raise MalformedEvidence("snp.crl", f"CRL does not parse: {exc}",
                                hint="pass the CRL AMD KDS serves (DER or PEM)") from None


def _check_crl(
    crl: x509.CertificateRevocationList,
    leaf: AmdCert,
    inter: AmdCert,
    root: AmdCert,
    at: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
) -> tuple[dt.datetime, dt.datetime]:
    if crl.issuer == root.subject:
        issuer, subject, role = root, inter, "intermediate"
    elif crl.issuer == inter.subject:
        issuer, subject, role = inter, leaf, leaf.kind.upper()
    else:
        return start, end
    if not crl_signed_by(crl, issuer):
        raise ChainInvalid("snp.crl", "CRL signature does not verify with its issuer",
                           expected=issuer.subject_str)
    last, nxt = crl.last_update_utc, crl.next_update_utc
    if at < last or (nxt is not None and at > nxt):
        raise ChainInvalid(
            "snp.crl.validity", "CRL is not current at that time",
            expected=[last.isoformat(), nxt.isoformat() if nxt else None],
            actual=at.isoformat(),
        )
    revoked = crl.get_revoked_certificate_by_serial_number(subject.serial)
    if revoked is not None:
        raise ChainInvalid(
            "snp.chain.revoked", f"the {role} certificate is revoked",
            expected="not listed", actual=f"serial {subject.serial:#x}",
        )
    return max(start, last), (min(end, nxt) if nxt is not None else end)
