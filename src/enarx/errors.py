"""The typed error tree.

Every failure a user can cause or meet is one of these types. Each knows the process exit
code the CLI uses for it and carries an optional one-line hint that tells the user how to fix
it. The CLI prints ``error: <message>`` and ``hint: <hint>``; it never prints a traceback for
an ``EnarxError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AttestationError",
    "BackendUnavailable",
    "ChainInvalid",
    "ConfigError",
    "EnarxError",
    "EvidenceError",
    "Interrupted",
    "InvalidModule",
    "MalformedEvidence",
    "OutOfFuel",
    "PlatformError",
    "PolicyViolation",
    "ProtocolError",
    "ResourceError",
    "SignatureInvalid",
    "StoreError",
    "TcbMismatch",
    "Timeout",
    "Trap",
    "UsageError",
    "WorkloadNotFound",
]


class EnarxError(Exception):
    """Base of every error enarx raises on purpose."""

    exit_code: int = 1
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form used by ``--json`` output."""
        out: dict[str, Any] = {"type": type(self).__name__, "message": self.message}
        if self.hint:
            out["hint"] = self.hint
        return out


# --- configuration -------------------------------------------------------------------------


class ConfigError(EnarxError):
    """Enarx.toml (or an equivalent flag) is invalid.

    ``line`` and ``key`` point at the fault when known, so the message can say
    ``Enarx.toml:12: files[2].port: ...``.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if path:
            where = path + (f":{line}" if line else "") + ": "
        elif line:
            where = f"line {line}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message, hint=hint)
        self.path = path
        self.line = line
        self.key = key
        self.detail = message

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update({"path": self.path, "line": self.line, "key": self.key})
        return out


class UsageError(EnarxError):
    """A command-line value is malformed (e.g. ``--max-memory 12Q``)."""

    exit_code = 2


# --- workloads and the engine --------------------------------------------------------------


class WorkloadNotFound(EnarxError):
    exit_code = 2
    default_hint = "check the path; `enarx run` takes a .wasm or .wat file"


class InvalidModule(EnarxError):
    """The bytes are not a valid WebAssembly module, or it cannot be linked."""

    exit_code = 2
    default_hint = "build the program for the wasm32-wasi (WASI preview1) target"


class Trap(EnarxError):
    """The guest trapped (unreachable, out-of-bounds access, stack overflow, ...)."""

    exit_code = 134  # like SIGABRT, as a crashed native program

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class Timeout(Trap):
    """The wall-clock limit (``--timeout``) ran out."""

    exit_code = 124  # as coreutils timeout(1)
    default_hint = "raise --timeout (or `timeout` in Enarx.toml) if the workload needs longer"


class OutOfFuel(Trap):
    exit_code = 124
    default_hint = "raise --fuel (or `fuel` in Enarx.toml)"


class Interrupted(Trap):
    """The run was interrupted (Ctrl-C / SIGINT) while the guest ran."""

    exit_code = 130  # 128 + SIGINT, as a shell reports it


class ResourceError(EnarxError):
    """A host resource named in the config could not be set up (dir, socket, ...)."""

    exit_code = 2


class StoreError(ResourceError):
    """The steward's database (``--db``) cannot be opened, reached or used."""

    default_hint = "check --db: the SQLite file's directory, or that PostgreSQL is reachable"


class ProtocolError(EnarxError):
    """A steward request is malformed: JSON, JWK, JWE, CSR or evidence envelope.

    ``kind`` is the key-broker error name the service reports as
    ``{"type": ".../kbs/errors/<kind>"}`` (e.g. ``InvalidRequest``, ``JWEFailed``).
    """

    exit_code = 2

    def __init__(self, kind: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["kind"] = self.kind
        return out


# --- platforms -----------------------------------------------------------------------------


class PlatformError(EnarxError):
    """A backend could not do what was asked."""


class BackendUnavailable(PlatformError):
    exit_code = 3
    default_hint = "run `enarx platform info` to see which checks fail"


class EvidenceError(PlatformError):
    """The platform device did not produce evidence."""


# --- attestation ---------------------------------------------------------------------------


class AttestationError(EnarxError):
    """Verification of evidence failed.

    ``check`` names the failed check (e.g. ``snp.signature``, ``snp.vcek.tcb``,
    ``chain.root``); ``expected``/``actual`` say what differed, for debuggable failures.
    """

    exit_code = 4

    def __init__(
        self,
        check: str,
        message: str,
        *,
        expected: Any = None,
        actual: Any = None,
        hint: str | None = None,
    ) -> None:
        detail = message
        if expected is not None or actual is not None:
            detail += f" (expected {_show(expected)}, got {_show(actual)})"
        super().__init__(f"{check}: {detail}", hint=hint)
        self.check = check
        self.detail = message
        self.expected = expected
        self.actual = actual

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            {"check": self.check, "expected": _show(self.expected), "actual": _show(self.actual)}
        )
        return out


class MalformedEvidence(AttestationError):
    """The evidence bytes do not parse (wrong size, unknown version, bad field)."""


class SignatureInvalid(AttestationError):
    pass


class ChainInvalid(AttestationError):
    """A certificate chain does not link, is outside its validity, is revoked or
    does not end in a trusted root."""


class TcbMismatch(AttestationError):
    """TCB values in the evidence disagree with the certificate, or no TCB level matched."""


class PolicyViolation(AttestationError):
    """Evidence is authentic but the appraisal policy rejects it; every failed rule is listed."""

    def __init__(self, violations: list[AttestationError]) -> None:
        first = violations[0]
        super().__init__(
            first.check,
            "; ".join(v.message for v in violations),
            expected=first.expected,
            actual=first.actual,
        )
        self.violations = violations

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["violations"] = [v.to_dict() for v in self.violations]
        return out


def _show(value: Any) -> Any:
    """Render bytes as hex so expected/actual are readable and JSON-safe."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_show(v) for v in value]
    return value
