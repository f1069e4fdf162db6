"""Encrypted names (pure): AES-SIV of the name bound to its parent directory's IV.

A guest name ``n`` (bytes) in a directory whose ``.diriv`` holds the 16 random bytes ``iv``
is stored on the host as ``b64url(AES-SIV(names_key, n, ad=[iv]))`` without padding. The
same name in the same directory always encrypts the same (lookup needs no listing); a name
moved to another host directory no longer decrypts (EIO). Host names that contain a ``.``
(not in the base64url alphabet) are metadata: ``.diriv``, ``.enarxdir``, journals, temps.

The host's 255-byte name limit allows guest names of at most :data:`MAX_NAME` bytes
(16 bytes of SIV tag plus the name, base64url, plus room for a 2-byte journal suffix).
"""

from __future__ import annotations

import base64
import binascii
import errno

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from enarx.encdir.errors import EncDirCorrupt, EncDirFsError

__all__ = ["DIRIV_NAME", "DIRIV_SIZE", "MAX_NAME", "decrypt_name", "encrypt_name",
           "is_metadata"]

DIRIV_NAME = ".diriv"
DIRIV_SIZE = 16
#: the longest guest name, in bytes: ceil((16 + 173) * 4 / 3) = 252, + ".j" = 254 <= 255
MAX_NAME = 173


def is_metadata(host_name: str) -> bool:
    return "." in host_name


def encrypt_name(siv: AESSIV, name: bytes, diriv: bytes) -> str:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise EncDirFsError(errno.EINVAL, f"invalid file name {name!r}")
    if len(name) > MAX_NAME:
        raise EncDirFsError(errno.ENAMETOOLONG,
                            f"names in an encrypted directory are at most {MAX_NAME} bytes")
    return base64.urlsafe_b64encode(siv.encrypt(name, [diriv])).rstrip(b"=").decode()


def decrypt_name(siv: AESSIV, host_name: str, diriv: bytes) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(host_name + "=" * (-len(host_name) % 4))
        return siv.decrypt(raw, [diriv])
    except (binascii.Error, ValueError, InvalidTag) as e:
        raise EncDirCorrupt(f"host entry {host_name!r} is not a name of this directory") from e
