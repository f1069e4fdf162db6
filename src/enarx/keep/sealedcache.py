"""A compiled-module cache the host can store but neither read nor forge: for encrypted packages.

A compiled module holds the module's code and data segments in the clear, so the plain
:class:`~enarx.runtime.cache.ModuleCache` would put a decrypted package's contents on the
host's disk. Here every entry is sealed with AES-256-GCM under a key derived from the
package's content key — which the steward releases only to an attested Keep::

    cache key = HKDF-SHA256(content key, salt = none,
                            info = "enarx sealed module cache v1" || 0x00 || identity)
    entry     = MAGIC || nonce (12 random bytes) || AES-256-GCM(cache key, nonce, artifact,
                                                                aad = MAGIC || binding)
    file name = hex(HMAC-SHA256(cache key, name))[:48] + ".cwasm"

``binding`` is the runtime cache's (module SHA-256, wasmtime version, engine settings), so
an entry opens only for exactly this module and engine; wasmtime sees an artifact only after
its tag verified. The file name is keyed too: the plain cache names entries by the module's
SHA-256, which would let the host confirm a guess of the plaintext module.

The host can delete entries (a recompile) or put back an older entry of the same package
and engine (the same code); it cannot read one, make one, or move one between packages.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enarx.runtime.cache import ModuleCache, Warn, _stderr_warning

__all__ = ["SealedModuleCache", "derive_cache_key"]

_MAGIC = b"ENXS1\n"
_NONCE = 12
_INFO = b"enarx sealed module cache v1\0"


def derive_cache_key(content_key: bytes, identity: str) -> bytes:
    """The 32-byte sealing key of one package's compiled modules."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=_INFO + identity.encode("ascii")).derive(content_key)


class SealedModuleCache(ModuleCache):
    """:class:`ModuleCache` whose entries are encrypted and authenticated with ``key``."""

    _ENTRY = "sealed cache entry"

    def __init__(self, directory: Path, key: bytes, *, warn: Warn = _stderr_warning) -> None:
        super().__init__(directory, key, warn=warn)
        self._aead = AESGCM(key)

    def path_for(self, name: str) -> Path:
        keyed = hmac.new(self._key, name.encode(), hashlib.sha256).hexdigest()[:48]
        return self.dir / f"{keyed}.cwasm"

    def load(self, name: str, binding: bytes) -> bytes | None:
        path = self.path_for(name)
        data = self._read(path)
        if data is None:
            return None
        head = len(_MAGIC) + _NONCE
        if len(data) > head and data.startswith(_MAGIC):
            try:
                return self._aead.decrypt(data[len(_MAGIC):head], data[head:], _MAGIC + binding)
            except InvalidTag:
                pass
        self._warn(f"{self._ENTRY} {path} failed authentication; recompiling")
        return None

    def store(self, name: str, binding: bytes, artifact: bytes) -> None:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, artifact, _MAGIC + binding)
        self._write(name, _MAGIC + nonce + sealed)
