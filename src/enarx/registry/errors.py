"""The registry's HTTP refusals: JSON ``{"type": "<Name>", "detail": "…", "hint"?: "…"}``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["RegistryHTTPError", "bad_request", "conflict", "not_found"]


class RegistryHTTPError(Exception):
    """A refusal with its HTTP status and type name."""

    def __init__(self, status: int, name: str, detail: str, hint: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail, self.hint = status, name, detail, hint

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"type": self.name, "detail": self.detail}
        if self.hint:
            body["hint"] = self.hint
        return JSONResponse(body, status_code=self.status)


def bad_request(detail: str, hint: str | None = None) -> RegistryHTTPError:
    return RegistryHTTPError(400, "BadRequest", detail, hint)


def not_found(detail: str, hint: str | None = None) -> RegistryHTTPError:
    return RegistryHTTPError(404, "NotFound", detail, hint)


def conflict(detail: str, hint: str | None = None) -> RegistryHTTPError:
    return RegistryHTTPError(409, "Conflict", detail, hint)
