"""The key hierarchy of an encrypted directory (pure: no I/O, no global state).

The owner holds one 32-byte *directory key*. Everything else is derived from it with
HKDF-SHA256 under distinct labels, so no derived key can be turned into another:

* ``check``: HMAC key of the key check value stored in ``.enarxdir`` (a wrong key is
  refused before the workload starts; the value reveals nothing about the key);
* ``names``: the 512-bit AES-SIV key that encrypts file and directory names;
* ``header``: the AES-256-GCM key that seals every file's trailer (which wraps the file's
  random content key and authenticates its length, write counter and block versions);
* ``journal``: the HMAC key that authenticates crash-recovery journals;
* ``links``: the AES-256-GCM key that seals symlink targets (:mod:`enarx.encdir.symlinks`).

Each file's contents are sealed under its own random 32-byte key, so no two files share a
(key, nonce) space and blocks cannot be moved between files.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from enarx.encdir.errors import EncDirCorrupt, EncDirKeyError

__all__ = ["FORMAT_VERSION", "KEY_SIZE", "MARKER_NAME", "DirKeys", "build_marker",
           "check_marker", "upgrade_patch"]

KEY_SIZE = 32
#: the file at the root of the host directory that says "this is an encrypted directory"
MARKER_NAME = ".enarxdir"
_MAGIC = "enarx-encdir"
#: the directory format this version writes; version 1 (no hard links, 4 KiB blocks) is read
#: too, and upgraded by the first read-write open (see :func:`upgrade_patch`)
FORMAT_VERSION = 2
_VERSION = FORMAT_VERSION
_READS = (1, FORMAT_VERSION)
_CHECK_MESSAGE = b"enarx encdir key check v1"


def _derive(key: bytes, label: str, length: int) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=None,
                info=b"enarx-encdir/v1/" + label.encode())
    return hkdf.derive(key)


@dataclass(frozen=True, repr=False)
class DirKeys:
    """The keys derived from one directory key (``repr`` never shows them)."""

    check: bytes
    names: AESSIV
    header: AESGCM
    journal: bytes
    links: AESGCM

    @classmethod
    def derive(cls, key: bytes) -> DirKeys:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
            n = len(key) if isinstance(key, bytes | bytearray) else 0
            raise EncDirKeyError(f"an encrypted-directory key is exactly {KEY_SIZE} bytes, "
                                 f"this one has {n}")
        key = bytes(key)
        return cls(check=_derive(key, "check", 32), names=AESSIV(_derive(key, "names", 64)),
                   header=AESGCM(_derive(key, "header", 32)),
                   journal=_derive(key, "journal", 32),
                   links=AESGCM(_derive(key, "links", 32)))

    def check_value(self) -> bytes:
        return hmac.new(self.check, _CHECK_MESSAGE, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "DirKeys(<redacted>)"


def build_marker(keys: DirKeys) -> bytes:
    """The contents of ``.enarxdir``: format name, version and the key check value."""
    doc = {"magic": _MAGIC, "version": _VERSION, "kcv": keys.check_value().hex()}
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def check_marker(data: bytes, keys: DirKeys) -> int:
    """Refuse a marker that is not ours, of an unknown version, or made with another key;
    return its format version."""
    try:
        doc = json.loads(data)
        magic, version, kcv = doc["magic"], doc["version"], bytes.fromhex(doc["kcv"])
    except (ValueError, KeyError, TypeError) as e:
        raise EncDirCorrupt(f"{MARKER_NAME} is not an encrypted-directory marker") from e
    if magic != _MAGIC:
        raise EncDirCorrupt(f"{MARKER_NAME} is not an encrypted-directory marker")
    if version not in _READS or isinstance(version, bool):
        raise EncDirCorrupt(f"{MARKER_NAME}: unsupported format version {version!r}",
                            hint=f"this enarx reads versions {_READS[0]} to {_VERSION}; a "
                                 "newer enarx wrote this directory")
    if not hmac.compare_digest(kcv, keys.check_value()):
        raise EncDirKeyError("the key does not open this encrypted directory (key check "
                             "value mismatch)")
    return int(version)


def upgrade_patch(data: bytes) -> tuple[int, bytes]:
    """(offset, bytes) that turn a checked version-1 marker into a version-2 one: a one-byte
    write in place (the marker is also the directory's lock file, so it is not replaced).
    An older enarx then refuses the directory with "unsupported format version 2" rather
    than failing on its new files."""
    at = data.find(b'"version": 1')
    if at < 0 or data.count(b'"version"') != 1:
        raise EncDirCorrupt(f"{MARKER_NAME} cannot be upgraded (unexpected layout)")
    return at + len(b'"version": '), b"2"
