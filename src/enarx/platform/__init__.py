"""Backends behind one interface (``base.Backend``); this module only names and selects them.

Backends import lazily so ``enarx run`` on nil loads no crypto or device code.
"""

from __future__ import annotations

import importlib

from enarx.errors import BackendUnavailable, UsageError
from enarx.platform.base import Backend, Check, Evidence

__all__ = ["BACKENDS", "DEFAULT_ORDER", "Backend", "Check", "Evidence", "get", "select"]

BACKENDS: dict[str, str] = {
    "nil": "enarx.platform.nil:NilBackend",
    "sim": "enarx.platform.sim:SimBackend",
    "kvm": "enarx.platform.kvm:KvmBackend",
    "sev-snp": "enarx.platform.snp:SnpBackend",
    "tdx": "enarx.platform.tdx:TdxBackend",
    "sgx": "enarx.platform.sgx:SgxBackend",
}

#: As upstream: the first available of these is the default.
DEFAULT_ORDER = ("sev-snp", "tdx", "sgx", "kvm", "nil")


def get(name: str) -> Backend:
    target = BACKENDS.get(name)
    if target is None:
        raise UsageError(
            f"unknown backend {name!r}", hint="choose one of: " + ", ".join(BACKENDS)
        )
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise BackendUnavailable(f"backend {name!r} is not available in this build: {e}") from None
    backend: Backend = cls()
    return backend


def select(name: str | None, *, firmware: str | None = None) -> Backend:
    """The named backend (which must be available), or the first available by default.

    ``firmware`` (``enarx run --firmware``) goes to sev-snp/tdx, for a launch on a host."""
    if name:
        backend = get(name)
        if firmware is not None:
            backend.use_firmware(firmware)
        failed = [c for c in backend.probe() if not c.passed]
        if failed:
            raise BackendUnavailable(
                f"backend {name!r} is not available here: {failed[0].name}: {failed[0].detail}",
                hint=failed[0].hint or None,
            )
        return backend
    for candidate in DEFAULT_ORDER:
        try:
            backend = get(candidate)
        except BackendUnavailable:
            continue
        if firmware is not None and candidate in ("sev-snp", "tdx"):
            backend.use_firmware(firmware)
        if backend.available():
            return backend
    if firmware is not None:
        raise UsageError("--firmware: no sev-snp or tdx host launch is possible here",
                         hint="see `enarx platform info`; drop --firmware")
    return get("nil")
