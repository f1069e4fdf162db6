"""Workload identity: the one value a Keep attests for "which program with which configuration".

The identity is ``"sha384:" + hex(SHA-384(M))`` over the exact bytes::

    M = b"enarx-workload-v1\\n" || SHA-384(module bytes) || SHA-384(JCS(effective config))

where JCS is RFC 8785 (JSON Canonicalization Scheme) and the *effective config* is what the
guest is actually given after the command line is merged into Enarx.toml (see
:func:`effective_config`; docs/steward.md lists every field). ``enarx identity`` and the Keep
both call :func:`identity_of`, so the value a user computes ahead of time is the value the
Keep binds into its evidence.

Pure: no I/O, no global state. Works on ``enarx.config.Config`` models and on the light
``enarx.flags`` specs alike (duck-typed), so ``enarx run`` without an Enarx.toml never
imports pydantic.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Any

import rfc8785

from enarx.errors import UsageError
from enarx.flags import DEFAULT_FILES, fd_environment, file_name

__all__ = [
    "DOMAIN",
    "HOST_DATA_SIZE",
    "MRCONFIGID_SIZE",
    "UNBOUND",
    "effective_config",
    "identity_matches",
    "identity_of",
    "launch_binding",
    "parse_identity",
    "workload_identity",
]

#: Domain-separation prefix of the hashed message (version 1 of the format).
DOMAIN = b"enarx-workload-v1\n"
#: What a certificate says when no workload was bound (upstream CSR path).
UNBOUND = "unbound"

_IDENTITY_RE = re.compile(r"sha384:[0-9a-f]{96}")


def effective_config(
    config: Any | None,
    *,
    extra_dirs: Sequence[Any] = (),
    extra_args: Sequence[str] = (),
    extra_env: Sequence[tuple[str, str]] = (),
    fd_env: bool = True,
) -> dict[str, Any]:
    """The JSON form of what the guest is given: ``{"args", "env", "files"}``.

    ``config`` is an ``enarx.config.Config`` (or None: stdin/stdout/stderr, as upstream);
    ``extra_dirs``/``extra_args``/``extra_env`` are ``--dir``/trailing arguments/``--env``
    exactly as ``enarx run`` merges them (keep/agent.py): files = config files + dirs,
    args = config args + extra args (argv[0], the module's file name, is left out), env =
    FD_COUNT/FD_NAMES (unless ``fd_env`` is false) + config env + ``--env`` (later wins).

    Left out on purpose: ``steward`` (where to attest, not what runs), ``[limits]`` (the
    host can always stop a Keep), host paths of ``dir`` entries (the host supplies their
    contents anyway; the guest path and read-only flag are kept).
    """
    files = [*(config.effective_files if config is not None else DEFAULT_FILES), *extra_dirs]
    env: dict[str, str] = {
        **(fd_environment(files) if fd_env else {}),
        **(dict(config.env) if config is not None else {}),
        **dict(extra_env),
    }
    args = [*(config.args if config is not None else ()), *extra_args]
    out: dict[str, Any] = {
        "args": [str(a) for a in args],
        "env": {str(k): str(v) for k, v in env.items()},
        "files": [_file(f) for f in files],
    }
    secrets = getattr(config, "secrets", None) if config is not None else None
    if secrets:  # [[secrets]] declarations (never their values); absent: no key, as before
        from enarx.secrets import secrets_identity

        out["secrets"] = secrets_identity(list(secrets))
    return out


def _file(f: Any) -> dict[str, Any]:
    kind = str(f.kind)
    out: dict[str, Any] = {"kind": kind, "name": file_name(f)}
    if kind == "listen":
        out.update(prot=f.prot, addr=f.addr, port=f.effective_port,
                   client_ca=getattr(f, "client_ca", None))
    elif kind == "connect":
        out.update(prot=f.prot, host=f.host, port=f.port, trust=getattr(f, "trust", "system"))
    elif kind == "dir":
        out.update(guest=f.guest_path, readonly=bool(f.readonly))
        # An encrypted directory: which key (a steward resource) or that it is a local key
        # file (its path is the host's). Absent for plain directories: identities unchanged.
        if getattr(f, "encryption_key", None):
            out["encryption_key"] = str(f.encryption_key)
        elif getattr(f, "encryption_key_file", None):
            out["encryption_key"] = "file"
    return out


def workload_identity(module: bytes, config: dict[str, Any]) -> str:
    """``"sha384:<hex>"`` of ``module`` run with the effective ``config`` (a JSON dict)."""
    try:
        canonical = rfc8785.dumps(config)
    except (rfc8785.CanonicalizationError, rfc8785.IntegerDomainError,
            rfc8785.FloatDomainError) as e:
        raise UsageError(
            f"the configuration cannot be canonicalized as JSON: {e}",
            hint="arguments, environment values and paths must be valid UTF-8 text",
        ) from None
    message = DOMAIN + hashlib.sha384(module).digest() + hashlib.sha384(canonical).digest()
    return "sha384:" + hashlib.sha384(message).hexdigest()


def identity_of(
    module: bytes,
    config: Any | None,
    *,
    extra_dirs: Sequence[Any] = (),
    extra_args: Sequence[str] = (),
    extra_env: Sequence[tuple[str, str]] = (),
    fd_env: bool = True,
) -> str:
    """:func:`workload_identity` of :func:`effective_config` (what ``enarx run`` would run)."""
    eff = effective_config(config, extra_dirs=extra_dirs, extra_args=extra_args,
                           extra_env=extra_env, fd_env=fd_env)
    return workload_identity(module, eff)


def parse_identity(value: str) -> bytes:
    """The 48 digest bytes of ``"sha384:<96 lowercase hex>"``; UsageError otherwise."""
    if not isinstance(value, str) or not _IDENTITY_RE.fullmatch(value):
        shown = value[:40] + "..." if isinstance(value, str) and len(value) > 40 else value
        raise UsageError(
            f"invalid workload identity {shown!r}",
            hint="a workload identity is 'sha384:' and 96 lowercase hex digits, as printed "
            "by `enarx identity MODULE`",
        )
    return bytes.fromhex(value[len("sha384:"):])


#: SEV-SNP HOST_DATA and TDX MRCONFIGID sizes: the launch fields a host sets and the
#: hardware reports, which a VM Keep fills with :func:`launch_binding` of its workload.
HOST_DATA_SIZE = 32
MRCONFIGID_SIZE = 48


def launch_binding(identity: str, size: int) -> bytes:
    """The workload identity as a ``size``-byte launch field.

    48 (TDX MRCONFIGID): the identity's 48 SHA-384 bytes themselves. 32 (SEV-SNP
    HOST_DATA): SHA-256 of those 48 bytes. By hand: ``echo -n <hex after "sha384:"> |
    xxd -r -p | sha256sum``.
    """
    raw = parse_identity(identity)
    if size == MRCONFIGID_SIZE:
        return raw
    if size == HOST_DATA_SIZE:
        return hashlib.sha256(raw).digest()
    raise UsageError(f"no launch binding of {size} bytes",
                     hint=f"use {HOST_DATA_SIZE} (SNP HOST_DATA) or {MRCONFIGID_SIZE} (TDX)")


def identity_matches(expected: str, actual: str | None) -> bool:
    """Constant-time comparison of two identities (``actual`` may be None or "unbound")."""
    if actual is None:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "replace"),
                               actual.encode("utf-8", "replace"))
