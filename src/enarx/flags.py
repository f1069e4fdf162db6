"""Values shared by command-line flags and Enarx.toml: sizes, env keys, ``--dir`` specs.

Pure and light on purpose: no pydantic, so ``enarx run`` without an Enarx.toml never
imports the config model (about 150 ms of start-up). :mod:`enarx.config` re-exports these.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enarx.errors import UsageError

__all__ = [
    "DEFAULT_FILES",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_TIMEOUT",
    "MAX_FUEL",
    "MAX_TIMEOUT",
    "RESERVED_ENV",
    "SIZE_RE",
    "DirSpec",
    "StdioSpec",
    "check_env_key",
    "fd_environment",
    "file_name",
    "parse_dir_spec",
    "parse_env_flag",
    "parse_size",
]

DEFAULT_MAX_MEMORY = 4 << 30  # the whole 32-bit address space: limits are opt-in
DEFAULT_TIMEOUT: float | None = None
#: Longest timeout (a year): anything longer, inf or nan cannot arm the run's timer.
MAX_TIMEOUT = 365 * 24 * 3600.0
#: Largest fuel budget: wasmtime's fuel counter is an unsigned 64-bit integer.
MAX_FUEL = (1 << 64) - 1

SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """``64M`` / ``1GiB`` / ``65536`` -> bytes. Raises ValueError with the accepted forms."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = SIZE_RE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r}: use bytes or a K/M/G/T suffix, e.g. 64M")
    n, unit = int(m.group(1)), (m.group(2) or "").lower()
    shift = {"": 0, "b": 0, "k": 10, "m": 20, "g": 30, "t": 40}[unit[:1] if unit != "b" else "b"]
    return n << shift


RESERVED_ENV = frozenset({"FD_COUNT", "FD_NAMES"})


def check_env_key(key: str) -> str:
    if not key or "=" in key or "\0" in key:
        raise ValueError(f"invalid environment variable name {key!r}")
    if key in RESERVED_ENV:
        raise ValueError(f"{key} is set by enarx from [[files]] and cannot be overridden")
    return key


def parse_env_flag(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    try:
        if not sep:
            raise ValueError("missing '='")
        check_env_key(key)
    except ValueError as e:
        hint = ("drop it; --no-fd-env leaves FD_COUNT/FD_NAMES out" if key in RESERVED_ENV
                else "use --env KEY=VALUE (an empty value is KEY=)")
        raise UsageError(f"invalid --env {value!r}: {e}", hint=hint) from None
    return key, val


@dataclass(frozen=True)
class DirSpec:
    """A ``--dir`` pre-open; the same fields as Enarx.toml's ``kind = "dir"`` entry."""

    host: str
    guest: str | None = None
    readonly: bool = False
    name: str | None = None
    kind: str = "dir"
    #: ``:enc=KEYFILE``: an encrypted directory (enarx.encdir) opened with the 32-byte key
    #: held in this local file.
    encryption_key_file: str | None = None
    encryption_key: str | None = None  # a steward resource (Enarx.toml only)

    @property
    def guest_path(self) -> str:
        return self.guest or self.host


_DIR_HINT = "use --dir HOST[::GUEST][:ro][:enc=KEYFILE]"


def parse_dir_spec(value: str) -> DirSpec:
    """``--dir HOST[::GUEST][:ro][:enc=KEYFILE]`` (wasmtime's syntax plus a read-only
    suffix and, for an encrypted directory, the file holding its 32-byte key)."""
    readonly = False
    spec = value
    key_file: str | None = None
    # ":enc=KEYFILE" comes last (only ":ro" may follow it); the key file path may hold ':'.
    head, enc, tail = spec.partition(":enc=")
    if enc:
        if tail.endswith(":ro"):  # ":ro" may also follow the key file
            readonly, tail = True, tail[: -len(":ro")]
        elif tail.endswith(":rw"):
            tail = tail[: -len(":rw")]
        if not tail:
            raise UsageError(f"invalid --dir {value!r}: :enc= needs a key file", hint=_DIR_HINT)
        spec, key_file = head, tail
    if spec.endswith(":ro"):
        readonly, spec = True, spec[: -len(":ro")]
    elif spec.endswith(":rw"):
        spec = spec[: -len(":rw")]
    host, sep, guest = spec.partition("::")
    if not host or (sep and not guest):
        raise UsageError(f"invalid --dir {value!r}", hint=_DIR_HINT)
    return DirSpec(host=host, guest=guest or None, readonly=readonly,
                   encryption_key_file=key_file)


@dataclass(frozen=True)
class StdioSpec:
    """stdin/stdout/stderr entries of the default file list (no Enarx.toml)."""

    kind: str
    name: str | None = None


#: With no ``files`` the guest gets stdin, stdout and stderr as fds 0-2, as upstream.
DEFAULT_FILES = (StdioSpec("stdin"), StdioSpec("stdout"), StdioSpec("stderr"))


def file_name(f: Any) -> str:
    """The name an entry gets in FD_NAMES (upstream defaults: kind, or host for connect)."""
    if f.kind == "connect":
        return str(f.name or f.host)
    if f.kind == "dir":
        return str(f.name or f.guest_path)
    return str(f.name or f.kind)


def fd_environment(files: Sequence[Any]) -> dict[str, str]:
    """FD_COUNT and FD_NAMES for a file list (set before the user's env)."""
    names = [file_name(f) for f in files]
    return {"FD_COUNT": str(len(names)), "FD_NAMES": ":".join(names)}
