"""The steward's typed refusals: each knows its HTTP status and Trustee error name.

``steward.app`` answers them as JSON ``{"type": ".../kbs/errors/<name>", "detail", "hint"?,
"failed"?}``; ``failed`` lists the policy rules that failed (rule, expected, actual, message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enarx.errors import EnarxError

__all__ = [
    "BadRequest",
    "Conflict",
    "NotFound",
    "PayloadTooLarge",
    "Refused",
    "StewardError",
    "Unauthorized",
    "UnsupportedMediaType",
]


class StewardError(EnarxError):
    """A request the steward refuses. ``status`` is the HTTP status, ``name`` the Trustee
    error type (``…/kbs/errors/<name>``), ``failed`` the failed policy rules if any."""

    exit_code = 2
    status = 400
    name = "InvalidRequest"

    def __init__(self, message: str, *, hint: str | None = None,
                 failed: Sequence[dict[str, Any]] = ()) -> None:
        super().__init__(message, hint=hint)
        self.failed = list(failed)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.failed:
            out["failed"] = self.failed
        return out


class BadRequest(StewardError):
    pass


class Unauthorized(StewardError):
    status = 401
    name = "Unauthorized"


class Refused(Unauthorized):
    """Authentic or not, the evidence does not satisfy the policy (every failed rule listed)."""

    exit_code = 4
    name = "PolicyDeny"


class NotFound(StewardError):
    status = 404
    name = "ResourceNotFound"


class Conflict(StewardError):
    status = 409
    name = "AlreadyIssued"


class PayloadTooLarge(StewardError):
    status = 413
    name = "PayloadTooLarge"


class UnsupportedMediaType(StewardError):
    status = 415
    name = "UnsupportedMediaType"
