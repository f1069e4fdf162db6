"""On-disk cache of compiled modules.

Entries are keyed by SHA-256(module) + wasmtime version + engine settings, written atomically
(temp file + rename) and carry a SHA-256 of their payload: a truncated or corrupted entry is
detected before wasmtime sees it and the module is simply recompiled.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import tempfile
from pathlib import Path

_MAGIC = b"ENXC1\n"


def default_dir() -> Path:
    env = os.environ.get("ENARX_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "enarx" / "modules"


class ModuleCache:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or default_dir()

    def path_for(self, key: str) -> Path:
        return self.dir / f"{key}.cwasm"

    def load(self, key: str) -> bytes | None:
        """The cached artifact for ``key``, or None if absent or damaged."""
        try:
            data = self.path_for(key).read_bytes()
        except OSError:
            return None
        head = len(_MAGIC) + 32
        if len(data) < head or not data.startswith(_MAGIC):
            return None
        digest, payload = data[len(_MAGIC) : head], data[head:]
        if not hmac.compare_digest(digest, hashlib.sha256(payload).digest()):
            return None
        return payload

    def store(self, key: str, payload: bytes) -> None:
        """Best effort: a read-only or full cache dir only costs a recompile next time."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
                os.replace(tmp, self.path_for(key))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass

    def discard(self, key: str) -> None:
        self.path_for(key).unlink(missing_ok=True)
