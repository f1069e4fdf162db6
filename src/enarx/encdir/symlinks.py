"""The on-host format of a symlink in an encrypted directory (pure: no I/O).

A guest symlink is a host *regular file* (never a host symlink, which host tools would
follow) holding ``magic ‖ nonce ‖ AES-256-GCM(links key, target, ad)``, where the magic is
``ENXEL\\x00\\x00\\x01`` (a file's is ``ENXEF…``), the nonce is 12 random bytes and the
associated data is ``magic ‖ the parent directory's IV ‖ the link's encrypted host name``.
So the target is as secret as a name, and a link moved or copied to another name or
directory, a file presented as a link (or the reverse), or a flipped byte all fail
authentication (:class:`EncDirCorrupt`, EIO to the guest), never a wrong target.

The target is opaque bytes here: confinement (no absolute targets, nothing climbing out of
the pre-open) is checked by the WASI layer when a link is created and again when it is
followed. Targets are at most :data:`MAX_TARGET` bytes (``ENAMETOOLONG`` beyond).
"""

from __future__ import annotations

import errno
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.encdir.errors import EncDirCorrupt, EncDirFsError

__all__ = ["LINK_MAGIC", "MAX_TARGET", "is_link", "open_link", "seal_link"]

LINK_MAGIC = b"ENXEL\x00\x00\x01"
#: the longest symlink target, in bytes (Linux PATH_MAX)
MAX_TARGET = 4096
_NONCE = 12


def is_link(head: bytes) -> bool:
    """Whether a host file starting with ``head`` claims to be a symlink (a claim only:
    :func:`open_link` authenticates it)."""
    return head[: len(LINK_MAGIC)] == LINK_MAGIC


def _aad(diriv: bytes, host_name: str) -> bytes:
    return LINK_MAGIC + diriv + host_name.encode("ascii")


def seal_link(aead: AESGCM, diriv: bytes, host_name: str, target: bytes) -> bytes:
    """The host file contents of a symlink to ``target`` at ``host_name`` in a directory
    whose IV is ``diriv``."""
    if not target or b"\0" in target:
        raise EncDirFsError(errno.ENOENT if not target else errno.EINVAL,
                            "a symlink target is non-empty and has no NUL byte")
    if len(target) > MAX_TARGET:
        raise EncDirFsError(errno.ENAMETOOLONG,
                            f"symlink targets are at most {MAX_TARGET} bytes")
    nonce = os.urandom(_NONCE)
    return LINK_MAGIC + nonce + aead.encrypt(nonce, target, _aad(diriv, host_name))


def open_link(aead: AESGCM, diriv: bytes, host_name: str, data: bytes) -> bytes:
    """The authenticated target stored in ``data`` (raises :class:`EncDirCorrupt`)."""
    head = len(LINK_MAGIC) + _NONCE
    if len(data) < head + 16 or not is_link(data):
        raise EncDirCorrupt("a symlink is truncated or not a symlink")
    try:
        target = aead.decrypt(data[len(LINK_MAGIC): head], data[head:],
                              _aad(diriv, host_name))
    except InvalidTag:
        raise EncDirCorrupt("a symlink failed authentication (tampered, moved or "
                            "copied on the host)") from None
    if not target or len(target) > MAX_TARGET:
        raise EncDirCorrupt("a symlink target has an impossible length")
    return target
