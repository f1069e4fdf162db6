"""The typed errors of packages: bad package layout or metadata, a SPEC that does not
parse or needs ``--allow-insecure``, and content that does not match its digest.

Exit codes follow the CLI's rule: 2 for bad input (a malformed package, name or SPEC), 4 for
a failed integrity check (the bytes received are not the bytes the tree commits to).
"""

from __future__ import annotations

from typing import Any

from enarx.errors import EnarxError, UsageError

__all__ = ["DigestMismatch", "InsecureTransport", "PackageError", "SpecError"]


class PackageError(EnarxError):
    """A package directory, entry or directory document is malformed or not allowed.

    ``path`` is the file or directory inside the package the fault is about, when known.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["path"] = self.path
        return out


class DigestMismatch(PackageError):
    """Content does not match the entry (digest or length) that commits to it."""

    exit_code = 4
    default_hint = ("the registry, the network or the host altered or truncated the content; "
                    "fetch again, and if it persists the source is not trustworthy")

    def __init__(self, message: str, *, path: str | None = None,
                 expected: str | None = None, actual: str | None = None,
                 hint: str | None = None) -> None:
        detail = message
        if expected is not None or actual is not None:
            detail += f" (expected {expected}, got {actual})"
        super().__init__(detail, path=path, hint=hint)
        self.expected = expected
        self.actual = actual

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(expected=self.expected, actual=self.actual)
        return out


class SpecError(UsageError):
    """A package SPEC does not parse."""

    default_hint = ("a SPEC is [HOST/]USER/REPO:TAG (TAG a semantic version), "
                    "oci://HOST[:PORT]/NAME:TAG or oci://HOST/NAME@sha256:HEX, an https:// URL, "
                    "or file://DIR")


class InsecureTransport(UsageError):
    """Plain HTTP to a host that is not a loopback address, without ``--allow-insecure``."""

    default_hint = ("use https:// (or oci:// over TLS), or pass --allow-insecure if you accept "
                    "that anyone on the network can see and block the transfer")
