"""RFC 8785 (JCS) canonical JSON bytes, fast for the documents packages are made of.

Directory documents and entries hold only objects, integers and printable-ASCII strings. For
such values the JCS bytes are exactly what the standard library's encoder writes with sorted
keys and no spaces: printable ASCII is escaped the same way (only ``"`` and ``\\``), ASCII
keys sort the same by UTF-16 code unit as by code point, and integers below 2^53 print
as plain digits. That encoder is C; the general implementation (:mod:`rfc8785`) is Python and
took most of a package tree's build time (1 500 files: ~70 ms). Anything else (non-ASCII or
control characters, floats, booleans, lists, large integers) goes to :mod:`rfc8785`, so the
bytes are always the JCS bytes. Pure; no I/O.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

__all__ = ["dumps"]

_MAX_SAFE_INT = 2**53 - 1  # rfc8785 refuses larger integers: they take the slow path
_encode = json.JSONEncoder(ensure_ascii=True, sort_keys=True, separators=(",", ":"),
                           allow_nan=False).encode


def _simple(value: Any) -> bool:
    """Whether ``value`` is made of dicts, safe ints and printable-ASCII strings only."""
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is str:
            if not (v.isascii() and v.isprintable()):
                return False
        elif t is int:
            if not -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                return False
        elif t is dict:
            for k, item in v.items():
                if type(k) is not str or not (k.isascii() and k.isprintable()):
                    return False
                stack.append(item)
        else:
            return False
    return True


def dumps(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (same result as ``rfc8785.dumps``)."""
    if _simple(value):
        return _encode(value).encode("ascii")
    return rfc8785.dumps(value)
