"""Where a registry client finds its bearer token.

In order, the first that yields a token wins:

1. ``ENARX_REGISTRY_TOKEN`` in the environment (CI, scripts);
2. a credential helper: ``--credential-helper CMD`` or ``ENARX_CREDENTIAL_HELPER``; the
   client runs ``CMD show ID`` (ID = the registry's ``host[:port]``) and reads the token
   from its stdout, as upstream enarx's helpers do (``CMD insert ID`` stores one);
3. the OS keyring (service ``enarx``, user ID) when the optional ``keyring`` package is
   installed.

No token is fine for anonymous reads of public repositories. A token is never logged, never
put in an error message, and never sent over plain HTTP to a non-loopback host (the SPEC
rules refuse that before a request is made).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping

from enarx.errors import UsageError

__all__ = ["CredentialError", "registry_token"]

TOKEN_ENV = "ENARX_REGISTRY_TOKEN"
HELPER_ENV = "ENARX_CREDENTIAL_HELPER"
_HELPER_TIMEOUT = 30.0
_MAX_TOKEN = 8192


class CredentialError(UsageError):
    """The credential helper failed or printed something that is not a token."""

    default_hint = (f"check --credential-helper / {HELPER_ENV}: `HELPER show ID` must print "
                    "the token on stdout and exit 0")


def _clean(token: str, source: str) -> str:
    token = token.strip()
    if not token or len(token) > _MAX_TOKEN or any(c.isspace() or not c.isprintable()
                                                   for c in token):
        raise CredentialError(f"{source} did not give a usable token")
    return token


def _from_helper(helper: str, ident: str) -> str | None:
    argv = [*shlex.split(helper), "show", ident]
    try:
        r = subprocess.run(argv, capture_output=True, timeout=_HELPER_TIMEOUT,
                           stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise CredentialError(f"credential helper {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise CredentialError(f"credential helper {argv[0]!r} did not answer in "
                              f"{_HELPER_TIMEOUT:.0f}s") from None
    if r.returncode != 0:
        # stderr may hold anything; do not echo it (it could contain a secret).
        raise CredentialError(f"credential helper {argv[0]!r} exited with {r.returncode}")
    try:
        out = r.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialError(f"credential helper {argv[0]!r} printed non-UTF-8") from None
    if not out.strip():
        return None
    return _clean(out, f"credential helper {argv[0]!r}")


def _from_keyring(ident: str) -> str | None:
    try:
        import keyring  # type: ignore[import-not-found]  # optional dependency
    except ImportError:
        return None
    try:
        value = keyring.get_password("enarx", ident)
    except Exception:  # any keyring backend failure means "no token there"
        return None
    return _clean(value, "the keyring") if isinstance(value, str) and value else None


def registry_token(ident: str, *, helper: str | None = None,
                   env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token for registry ``ident`` (``host[:port]``), or None (anonymous)."""
    environ = os.environ if env is None else env
    token = environ.get(TOKEN_ENV)
    if token:
        return _clean(token, TOKEN_ENV)
    helper = helper or environ.get(HELPER_ENV)
    if helper:
        found = _from_helper(helper, ident)
        if found:
            return found
    return _from_keyring(ident)
