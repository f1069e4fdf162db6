"""Names in the registry's URL space (pure): users, repositories, semver tags, tree paths and
the ``/api/v<semver>/`` prefix.

Users match ``[A-Za-z0-9]+`` and repositories ``[A-Za-z0-9-]+`` (upstream drawbridge's rules),
at most 64 characters. Tags are SemVer 2.0 versions. A tree path is ``/``-separated segments;
a segment is 1..255 bytes of UTF-8 without ``/``, NUL or control characters and is not ``.``
or ``..``.
"""

from __future__ import annotations

import re

__all__ = [
    "API_VERSION",
    "InvalidName",
    "check_path",
    "check_repo",
    "check_tag",
    "check_user",
    "parse_version",
    "semver_key",
]

API_VERSION = (0, 1, 0)

_USER = re.compile(r"[A-Za-z0-9]{1,64}")
_REPO = re.compile(r"[A-Za-z0-9-]{1,64}")
_NUM = r"(?:0|[1-9][0-9]*)"
_IDENT = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"({_NUM})\.({_NUM})\.({_NUM})(?:-({_IDENT}(?:\.{_IDENT})*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidName(ValueError):
    """A name in the URL is not valid; the message says which rule it breaks."""


def check_user(name: str) -> str:
    if not _USER.fullmatch(name):
        raise InvalidName(f"invalid user name {name[:70]!r}: use 1-64 letters and digits")
    return name


def check_repo(name: str) -> str:
    if not _REPO.fullmatch(name):
        raise InvalidName(
            f"invalid repository name {name[:70]!r}: use 1-64 letters, digits and '-'"
        )
    return name


def check_tag(name: str) -> str:
    if len(name) > 128 or not _SEMVER.fullmatch(name):
        raise InvalidName(f"invalid tag {name[:70]!r}: a tag is a semantic version (1.2.3)")
    return name


def check_path(path: str) -> str:
    """A normalised tree path ("" is the root directory); a trailing ``/`` is dropped."""
    path = path.strip("/") if path in ("", "/") else path.removesuffix("/")
    if path == "":
        return ""
    if len(path.encode("utf-8", "surrogatepass")) > 4096:
        raise InvalidName("tree path longer than 4096 bytes")
    for seg in path.split("/"):
        if seg in ("", ".", "..") or _CONTROL.search(seg) or len(seg.encode("utf-8")) > 255:
            raise InvalidName(f"invalid tree path segment {seg[:70]!r} in {path[:100]!r}")
    return path


def parse_version(text: str) -> tuple[int, int, int]:
    """The (major, minor, patch) of an API path's ``v<semver>`` segment."""
    if not text.startswith("v"):
        raise InvalidName(f"invalid API version {text[:40]!r}")
    m = _SEMVER.fullmatch(text[1:])
    if m is None:
        raise InvalidName(f"invalid API version {text[:40]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def semver_key(tag: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Sort key in SemVer precedence order (build metadata ignored)."""
    m = _SEMVER.fullmatch(tag)
    if m is None:
        return (-1, -1, -1, 0, ())
    pre = m.group(4)
    ids: tuple[tuple[int, int | str], ...] = ()
    if pre:
        ids = tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split("."))
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if pre else 1, ids
