"""Enarx.toml: the workload's configuration (upstream Enarx v0.7 schema plus documented extensions).

Upstream keys, unchanged: ``steward``, ``args``, ``env`` and ``[[files]]`` with kinds ``null``,
``stdin``, ``stdout``, ``stderr``, ``listen`` and ``connect``. The i-th ``[[files]]`` entry is
WASI fd i. Unknown keys are rejected so typos do not pass silently.

Extensions (an upstream file stays valid; see docs/enarx-toml.md):
- ``[[files]] kind = "dir"`` pre-opens a host directory: ``host`` (host path), ``guest``
  (path the guest sees, default = ``host``), ``readonly`` (default false), ``name``;
  an encrypted directory (enarx.encdir) adds ``encryption_key`` (a steward resource holding
  its 32-byte key, released after attestation) or ``encryption_key_file`` (a local key file).
- ``steward_ca``: PEM file of the CA that signs the steward's TLS certificate (with ``steward``).
- ``[limits]``: ``max_memory`` ("64M", "1G" or bytes), ``timeout`` (seconds), ``fuel``.
- ``[[secrets]]``: steward resources released after attestation (``resource``, ``env``,
  ``file``; see enarx.secrets and docs/deploy.md).

Pure: parsing text into a model; reading the file is the caller's job.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import tomllib
from dataclasses import dataclass
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
    MAX_FUEL,
    MAX_TIMEOUT,
    RESERVED_ENV,
    SIZE_RE,
    check_env_key,
    fd_environment,
    file_name,
    parse_dir_spec,
    parse_env_flag,
    parse_size,
)
from enarx.secrets import SecretsDir, check_file_name, check_resource, check_secrets

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_TIMEOUT",
    "RESERVED_ENV",
    "SIZE_RE",
    "TEMPLATE",
    "Config",
    "ConnectFile",
    "DirFile",
    "File",
    "Limits",
    "ListenFile",
    "NullFile",
    "Secret",
    "Source",
    "StderrFile",
    "StdinFile",
    "StdoutFile",
    "check_env_key",
    "fd_environment",
    "file_name",
    "from_dict",
    "loads",
    "parse",
    "parse_dir_flag",
    "parse_env_flag",
    "parse_size",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_nul(value: str) -> str:
    # A NUL cannot be part of a path, argument or environment string on any host.
    if "\0" in value:
        raise ValueError("may not contain a NUL byte (\\u0000)")
    return value


#: A path, argument or environment value: any text but NUL.
Text = Annotated[str, AfterValidator(_no_nul)]


def _check_host(host: str) -> str:
    """An IP address or a DNS name whose labels are 1-63 bytes ("" is left to the caller)."""
    _no_nul(host)
    if not host:
        return host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    name = host.removesuffix(".")
    for label in name.split("."):
        if not label:
            raise ValueError(f"{host!r} has an empty DNS label (two dots in a row, or a "
                             "leading dot)")
        try:
            encoded = label.encode("ascii") if label.isascii() else label.encode("idna")
        except UnicodeError:
            raise ValueError(f"{host!r}: {label!r} is not a valid DNS label") from None
        if len(encoded) > 63:
            raise ValueError(f"{host!r}: the DNS label {label[:16]!r}... is {len(encoded)} "
                             "bytes long; a label has at most 63")
    if len(name) > 253:
        raise ValueError(f"the host name is {len(name)} characters long; at most 253")
    return host


HostName = Annotated[str, AfterValidator(_check_host)]


def _check_name(name: str) -> str:
    _no_nul(name)
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
    addr: HostName = "::"
    port: Port | None = None
    #: Extension: PEM bundle of CAs whose client certificates the TLS listener requires (mTLS).
    client_ca: Text | None = None

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.prot == "tls" else 80


class ConnectFile(_Strict):
    kind: Literal["connect"]
    host: HostName
    port: Port
    prot: Literal["tcp", "tls"] = "tls"
    name: Name | None = None
    #: Extension: "system" (default) or a PEM file of trust anchors for TLS connections.
    trust: Text = "system"

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
    host: Text
    guest: Text | None = None
    readonly: bool = False
    #: Encrypted directory: the steward resource (``repo/type/tag``) holding its key ...
    encryption_key: Annotated[str, AfterValidator(check_resource)] | None = None
    #: ... or a local file holding the 32-byte key (relative to Enarx.toml).
    encryption_key_file: Text | None = None

    @model_validator(mode="after")
    def _one_key(self) -> DirFile:
        if self.encryption_key is not None and self.encryption_key_file is not None:
            raise ValueError("set encryption_key (a steward resource) or encryption_key_file "
                             "(a local key file), not both")
        if self.encryption_key_file == "":
            raise ValueError("`encryption_key_file` may not be empty")
        return self

    @property
    def guest_path(self) -> str:
        return self.guest or self.host


File = Annotated[
    NullFile | StdinFile | StdoutFile | StderrFile | ListenFile | ConnectFile | DirFile,
    Field(discriminator="kind"),
]


class Limits(_Strict):
    max_memory: int = DEFAULT_MAX_MEMORY
    timeout: float | None = Field(
        default=DEFAULT_TIMEOUT, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False
    )
    fuel: int | None = Field(default=None, gt=0, le=MAX_FUEL)

    @field_validator("max_memory", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ValueError("max_memory must be a size such as 64M or a byte count")
        return parse_size(v)


EnvKey = Annotated[str, AfterValidator(check_env_key)]


class Secret(_Strict):
    """Extension: a steward resource released after attestation (enarx.secrets)."""

    resource: Annotated[str, AfterValidator(check_resource)]
    env: EnvKey | None = None
    file: Annotated[str, AfterValidator(check_file_name)] | None = None


class Config(_Strict):
    steward: str | None = None
    #: PEM file of the CA that signs the steward's TLS certificate (relative to Enarx.toml)
    steward_ca: str | None = None
    args: list[Text] = Field(default_factory=list)
    env: dict[EnvKey, Text] = Field(default_factory=dict)
    files: list[File] | None = None
    limits: Limits = Field(default_factory=Limits)
    secrets: list[Secret] = Field(default_factory=list)

    @model_validator(mode="after")
    def _secrets(self) -> Config:
        check_secrets(self.secrets, self.env)
        return self

    @field_validator("steward")
    @classmethod
    def _steward(cls, v: str | None) -> str | None:
        from urllib.parse import urlsplit

        if v is not None:
            try:
                parts = urlsplit(v)
                ok = parts.scheme == "https" and bool(parts.hostname)
                _ = parts.port  # ValueError for a port out of range
            except ValueError:
                ok = False
            if not ok:
                raise ValueError("must be an https:// URL, e.g. "
                                 '"https://steward.example.com:3000"')
        return v

    @property
    def effective_files(self) -> list[Any]:
        """With no ``files`` the guest gets stdin, stdout and stderr, as upstream."""
        if self.files is None:
            files: list[Any] = [StdinFile(kind="stdin"), StdoutFile(kind="stdout"),
                                StderrFile(kind="stderr")]
        else:
            files = list(self.files)
        if any(s.file is not None for s in self.secrets):
            files.append(SecretsDir())  # the in-memory /run/secrets pre-open
        return files

    def fd_environment(self) -> dict[str, str]:
        """FD_COUNT and FD_NAMES, set before the user's env (which may not override them)."""
        return fd_environment(self.effective_files)


_CONFIG = TypeAdapter(Config)


@dataclass(frozen=True)
class Source:
    """Enarx.toml parsed once: its text, its TOML data (``tomllib``'s view, for callers that
    rewrite the file; copy before changing it), the checked model and the path it came from."""

    text: str
    data: dict[str, Any]
    config: Config
    path: str | None = None


def loads(text: str, *, path: str | None = None) -> Config:
    """Parse Enarx.toml text. Errors name the file, the line and the key at fault."""
    return parse(text, path=path).config


def parse(text: str, *, path: str | None = None) -> Source:
    """:func:`loads`, keeping the text and the TOML data next to the model."""
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(
            f"arrays or tables nested too deeply (more than {_MAX_DEPTH} levels)",
            path=path,
            line=_deep_line(text),
            hint="Enarx.toml needs only a few levels of nesting: check for unbalanced brackets",
        ) from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else (text.count("\n") + 1 if "end of document" in str(e) else None)
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e)) or "invalid TOML"
        raise ConfigError(msg, path=path, line=line, hint="check the TOML syntax") from None
    return Source(text, data, from_dict(data, text=text, path=path), path)


_MAX_DEPTH = 100


def _deep_line(text: str) -> int | None:
    """Best-effort line where ``[``/``{`` nesting first passes ``_MAX_DEPTH`` (strings skipped)."""
    depth, line, i, n = 0, 1, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "#":
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        elif c in "\"'":
            quote = c * 3 if text.startswith(c * 3, i) else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                if j < n and text[j] == "\n":
                    line += 1
                j += 1
            i = j + len(quote)
            continue
        elif c in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return line
        elif c in "]}":
            depth -= 1
        i += 1
    return None


def from_dict(data: dict[str, Any], *, text: str = "", path: str | None = None) -> Config:
    try:
        return _CONFIG.validate_python(data)
    except RecursionError:
        raise ConfigError("values nested too deeply", path=path,
                          hint="Enarx.toml needs only a few levels of nesting") from None
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
    msg = str(err.get("msg", ""))
    if "NUL byte" in msg:
        return "remove the \\u0000 escape: paths, arguments, names and values cannot hold NUL"
    if "DNS label" in msg or "host name is" in msg:
        return ("use an IP address or a DNS name: labels of 1 to 63 bytes separated by "
                "single dots")
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
    """``--dir HOST[::GUEST][:ro][:enc=KEYFILE]`` (wasmtime's syntax plus a read-only suffix
    and an encrypted directory's key file)."""
    d = parse_dir_spec(value)
    return DirFile(kind="dir", host=d.host, guest=d.guest, readonly=d.readonly,
                   encryption_key_file=d.encryption_key_file)


TEMPLATE = """\
# Enarx.toml: configuration of an Enarx workload (upstream Enarx v0.7 schema).
# Documentation: docs/enarx-toml.md

# Steward: the attestation service that issues this Keep's certificate.
# steward = "https://steward.example.com"
# steward_ca = "steward-ca.pem"   # the steward's CA (`enarx steward ca`); required with steward

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
# encryption_key = "repo/dirkey/v1"   # encrypted directory: 32-byte key from the steward
# encryption_key_file = "data.key"    # ... or from a local file (testing)

# Extension: resource limits (defaults: no limit; command-line flags override).
# [limits]
# max_memory = "512M"       # linear memory beyond this fails to grow (malloc returns NULL)
# timeout = 60              # wall-clock seconds
# fuel = 1000000000         # instructions-ish budget; off when unset
"""
