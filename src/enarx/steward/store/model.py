"""What the steward keeps in its database, and the ``Store`` interface both backends implement.

Times are seconds since the Unix epoch (``float``); a timezone-aware ``datetime`` is accepted
wherever a time goes in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = ["Issuance", "Session", "Store", "Time", "to_epoch"]

Time = float | int | datetime


def to_epoch(t: Time) -> float:
    """Seconds since the epoch; a naive ``datetime`` is refused (it has no defined instant)."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one (e.g. datetime.now(UTC))")
        return t.timestamp()
    return float(t)


@dataclass(frozen=True, slots=True)
class Session:
    """One key-broker session: the challenge, then the attestation result, then one cert."""

    id: str
    nonce: str
    tee: str
    created_at: float
    expires_at: float
    #: The nonce was redeemed (by /kbs/v0/attest); it can never be redeemed again.
    used: bool
    #: EAR token, set once the evidence was appraised.
    token: str | None = None
    #: The attested tee-pubkey, as the JWK's JSON text.
    tee_pubkey: str | None = None
    workload: str | None = None
    evidence_digest: str | None = None
    #: When the attestation result (and so the session) stops being valid.
    attested_expires_at: float | None = None
    #: Serial (hex) of the one certificate issued for this session, if any.
    issued_serial: str | None = None
    #: The attested evidence as the certificate carries it (CMW bytes), if recorded.
    evidence: bytes | None = None

    @property
    def attested(self) -> bool:
        return self.token is not None


@dataclass(frozen=True, slots=True)
class Issuance:
    """The record of one issued certificate."""

    serial: str
    issued_at: float
    evidence_digest: str
    workload: str | None
    ear_status: str
    policy_id: str
    platform: str
    kind: str
    session_id: str | None = None


@runtime_checkable
class Store(Protocol):
    """The steward's persistent state. Every method is one transaction: it happens completely
    or (on an error, which is a :class:`enarx.errors.StoreError`) not at all. Thread-safe."""

    def create_session(self, id: str, nonce: str, tee: str, expires_at: Time) -> None: ...

    def redeem_nonce(self, session_id: str, nonce: str, now: Time) -> Session | None:
        """Mark the session's nonce used and return the session, if it exists, carries this
        nonce, is unused and has not expired; else ``None``. Of any number of concurrent
        calls, across threads, processes and replicas, at most one gets the session."""
        ...

    def attest_session(
        self,
        session_id: str,
        now: Time,
        token: str,
        tee_pubkey_json: str,
        workload: str | None,
        evidence_digest: str,
        expires_at: Time,
        evidence: bytes = b"",
    ) -> bool:
        """Redeem the session's nonce and record its attestation result in one transaction
        (the caller has already checked the nonce it read with ``get_session``): ``True`` if
        the session exists, is unused and has not expired at ``now``; else ``False`` and
        nothing written. Of any number of concurrent calls at most one succeeds."""
        ...

    def get_session(self, id: str) -> Session | None: ...

    def record_issuance(
        self,
        serial_hex: str,
        time: Time,
        evidence_digest: str,
        workload: str | None,
        ear_status: str,
        policy_id: str,
        platform: str,
        kind: str,
        *,
        session_id: str | None = None,
    ) -> bool:
        """Record an issued certificate. With ``session_id``, also claim the session's one
        certificate in the same transaction: ``False`` (and nothing written) when the session
        is unknown, not attested or already has one."""
        ...

    def list_issuances(self, limit: int | None = None) -> list[Issuance]: ...

    def put_resource(self, path: str, data: bytes, now: Time | None = None) -> None: ...

    def get_resource(self, path: str) -> bytes | None: ...

    def delete_resource(self, path: str) -> bool: ...

    def get_or_create_secret(self, name: str, factory: Callable[[], bytes]) -> bytes:
        """The secret stored under ``name``; if there is none, store ``factory()``. Replicas
        racing on one database all get the same value (the first one committed)."""
        ...

    def purge_expired(self, now: Time) -> int:
        """Delete sessions whose challenge and result have both expired; return how many."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...
