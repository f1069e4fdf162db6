"""Enarx.toml: the workload's configuration (upstream Enarx v0.7 schema plus documented extensions).

Upstream keys, unchanged: ``steward``, ``args``, ``env`` and ``[[files]]`` with kinds ``null``,
``stdin``, ``stdout``, ``stderr``, ``listen`` and ``connect``. The i-th ``[[files]]`` entry is
WASI fd i. Unknown keys are rejected so typos do not pass silently.

Extensions (an upstream file stays valid; see docs/enarx-toml.md):
- ``[[files]] kind = "dir"`` pre-opens a host directory: ``host`` (host path), ``guest``
  (path the guest sees, default = ``host``), ``readonly`` (default false), ``name``.
- ``[limits]``: ``max_memory`` ("64M", "1G" or bytes), ``timeout`` (seconds), ``fuel``.

Pure: parsing text into a model; reading the file is the caller's job.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from enarx.errors import ConfigError
from enarx.flags import (  # re-exported: the light helpers live in enarx.flags
    DEFAULT_MAX_MEMORY,
    DEFAULT_TIMEOUT,
    RESERVED_ENV,
    SIZE_RE,
    check_env_key,
    fd_environment,
    file_name,
    parse_dir_spec,
    parse_env_flag,
    parse_size,
)

__all__ = [
    "RESERVED_ENV",
    "SIZE_RE",
    "check_env_key",
    "file_name",
    "parse_env_flag",
    "parse_size",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(name: str) -> str:
    # FD_NAMES joins names with ':', so a name holding one would split wrongly.
    if ":" in name:
        raise ValueError("file names may not contain ':'")
    if not name:
        raise ValueError("file names may not be empty")
    return name


Name = Annotated[str, AfterValidator(_check_name)]


class _Named(_Strict):
    name: Name | None = None


class NullFile(_Named):
    kind: Literal["null"]


class StdinFile(_Named):
    kind: Literal["stdin"]


class StdoutFile(_Named):
    kind: Literal["stdout"]


class StderrFile(_Named):
    kind: Literal["stderr"]


Port = Annotated[int, Field(ge=0, le=65535)]


class ListenFile(_Strict):
    kind: Literal["listen"]
    name: Name
    prot: Literal["tcp", "tls"] = "tls"
    addr: str = "::"
    port: Port | None = None
    #: Extension: PEM bundle of CAs whose client certificates the TLS listener requires (mTLS).
    client_ca: str | None = None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.prot == "tls" else 80


class ConnectFile(_Strict):
    kind: Literal["connect"]
    host: str
    port: Port
    prot: Literal["tcp", "tls"] = "tls"
    name: Name | None = None
    #: Extension: "system" (default) or a PEM file of trust anchors for TLS connections.
    trust: str = "system"

    @property
    def effective_name(self) -> str:
        return self.name or self.host

    @model_validator(mode="after")
    def _name_from_host(self) -> ConnectFile:
        if not self.host:
            raise ValueError("`host` may not be empty")
        if self.name is None and ":" in self.host:
            raise ValueError("`host` holds ':' (an IPv6 address), so it cannot be the default "
                             "name: set `name` (FD_NAMES joins names with ':')")
        return self


class DirFile(_Named):
    """Extension: a pre-opened host directory (upstream could not run CPython without it)."""

    kind: Literal["dir"]
    host: str
    guest: str | None = None
    readonly: bool = False

    @property
    def guest_path(self) -> str:
        return self.guest or self.host


File = Annotated[
    NullFile | StdinFile | StdoutFile | StderrFile | ListenFile | ConnectFile | DirFile,
    Field(discriminator="kind"),
]


class Limits(_Strict):
    max_memory: int = DEFAULT_MAX_MEMORY
    timeout: float | None = Field(default=DEFAULT_TIMEOUT, gt=0)
    fuel: int | None = Field(default=None, gt=0)

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ValueError("max_memory must be a size such as 64M or a byte count")
        return parse_size(v)


EnvKey = Annotated[str, AfterValidator(check_env_key)]


class Config(_Strict):
    steward: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[EnvKey, str] = Field(default_factory=dict)
    files: list[File] | None = None
    limits: Limits = Field(default_factory=Limits)

    @property
    def effective_files(self) -> list[Any]:
        """With no ``files`` the guest gets stdin, stdout and stderr, as upstream."""
        if self.files is None:
            return [StdinFile(kind="stdin"), StdoutFile(kind="stdout"), StderrFile(kind="stderr")]
        return list(self.files)

    def fd_environment(self) -> dict[str, str]:
        """FD_COUNT and FD_NAMES, set before the user's env (which may not override them)."""
        return fd_environment(self.effective_files)


_CONFIG = TypeAdapter(Config)


def loads(text: str, *, path: str | None = None) -> Config:
    """Parse Enarx.toml text. Errors name the file, the line and the key at fault."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else (text.count("\n") + 1 if "end of document" in str(e) else None)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "invalid TOML"
        raise ConfigError(msg, path=path, line=line, hint="check the TOML syntax") from None
    return from_dict(data, text=text, path=path)


def from_dict(data: dict[str, Any], *, text: str = "", path: str | None = None) -> Config:
    try:
        return _CONFIG.validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _clean_loc(err["loc"])
        key = _loc_str(loc)
        raise ConfigError(
            _message(err),
            path=path,
            # An unknown kind points at its `kind =` line, not the [[files]] header.
            line=_locate(text, (*loc, "kind") if err["type"] == "union_tag_invalid" else loc)
            if text else None,
            key=key or None,
            hint=_hint(err, loc),
        ) from None


_KINDS = frozenset({"null", "stdin", "stdout", "stderr", "listen", "connect", "dir"})


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # pydantic puts the union tag ("listen", "dir", ...) into the location: drop it.
    out: list[Any] = []
    for i, part in enumerate(loc):
        if i > 0 and isinstance(loc[i - 1], int) and part in _KINDS:
            continue
        out.append(part)
    return tuple(out)


def _loc_str(loc: tuple[Any, ...]) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] == "union_tag_invalid":
        return f"unknown kind {err['input'].get('kind')!r}" if isinstance(err["input"], dict) else err["msg"]
    if err["type"] == "union_tag_not_found":
        return "missing `kind`"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _hint(err: Any, loc: tuple[Any, ...]) -> str | None:
    if err["type"] == "extra_forbidden":
        hint = "remove it, or check its spelling against `enarx config init`"
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1) if loc else []
        return f"did you mean {close[0]!r}? " + hint if close else hint
    if err["type"] in {"union_tag_invalid", "union_tag_not_found"}:
        hint = "kind is one of null, stdin, stdout, stderr, listen, connect, dir"
        given = err["input"].get("kind") if isinstance(err["input"], dict) else None
        close = difflib.get_close_matches(str(given), sorted(_KINDS), n=1) if given else []
        return f"did you mean {close[0]!r}? " + hint if close else hint
    return None


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys valid where ``loc`` points, for "did you mean" hints."""
    if len(loc) == 1:
        return list(Config.model_fields)
    if loc[0] == "limits":
        return list(Limits.model_fields)
    if loc[0] == "files":
        models = (ListenFile, ConnectFile, DirFile, NullFile)
        return sorted({k for m in models for k in m.model_fields})
    return []


def _locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a key path in TOML text (tomllib keeps no positions)."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    section: int | None = None
    parts = list(loc)
    # [[files]] index: narrow to the n-th array-of-tables section (inline arrays stay whole).
    if len(parts) >= 2 and parts[0] == "files" and isinstance(parts[1], int):
        headers = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*files\s*\]\]", ln)]
        if parts[1] < len(headers):
            start = section = headers[parts[1]]
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), end)
            parts = parts[2:]
            if not parts:
                return start + 1
    elif parts and isinstance(parts[0], str):
        table = [i for i, ln in enumerate(lines)
                 if re.match(rf"\s*\[\[?\s*{re.escape(parts[0])}\s*\]", ln)]
        if table and len(parts) == 1:
            return table[0] + 1  # an unknown table such as [[file]]
        if table and len(parts) > 1:
            start = section = table[0]
            end = next((i for i in range(start + 1, len(lines)) if re.match(r"\s*\[", lines[i])), end)
            parts = parts[1:]
    key = next((p for p in parts if isinstance(p, str)), None)
    if key is not None:
        pat = re.compile(rf"\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start, end):
            if pat.match(lines[i]):
                return i + 1
    return section + 1 if section is not None else None


def parse_dir_flag(value: str) -> DirFile:
    """``--dir HOST[::GUEST][:ro]`` (wasmtime's syntax plus a read-only suffix)."""
    d = parse_dir_spec(value)
    return DirFile(kind="dir", host=d.host, guest=d.guest, readonly=d.readonly)


TEMPLATE = """\
# Enarx.toml: configuration of an Enarx workload (upstream Enarx v0.7 schema).
# Documentation: docs/enarx-toml.md

# Steward: the attestation service that issues this Keep's certificate.
# steward = "https://steward.example.com"

# Arguments passed to the workload (after argv[0]).
args = []

# Environment variables. FD_COUNT and FD_NAMES are set for you from [[files]].
[env]
# RUST_LOG = "info"

# Pre-opened file descriptors: the i-th entry is WASI fd i.
[[files]]
kind = "stdin"

[[files]]
kind = "stdout"

[[files]]
kind = "stderr"

# A listening socket, TLS terminated inside the Keep (prot = "tcp" is plaintext: the host sees it).
# [[files]]
# kind = "listen"
# name = "LISTEN"
# prot = "tls"
# addr = "::"
# port = 12345

# An outgoing connection made by the Keep before the workload starts.
# [[files]]
# kind = "connect"
# name = "CONNECT"
# prot = "tls"
# host = "example.com"
# port = 443
# trust = "system"          # or a PEM file of trust anchors

# Extension: a pre-opened host directory.
# [[files]]
# kind = "dir"
# host = "./data"           # directory on the host
# guest = "/data"           # path the workload sees
# readonly = true

# Extension: resource limits (defaults: no limit; command-line flags override).
# [limits]
# max_memory = "512M"       # linear memory beyond this fails to grow (malloc returns NULL)
# timeout = 60              # wall-clock seconds
# fuel = 1000000000         # instructions-ish budget; off when unset
"""
