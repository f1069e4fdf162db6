"""The on-host format of hard links in an encrypted directory (pure: no I/O).

A file with one name is stored at that name (:mod:`enarx.encdir.fileformat`). When it gets
a second name, its host file moves into the *link store*, the metadata directory
``.links`` at the root, under the hex of its random file id (its trailer then names that,
and records the link count), and every guest name of it becomes an *entry*: a host regular
file ``magic ‖ nonce ‖ AES-256-GCM(links key, file id, ad)`` with the magic
``ENXEH\\x00\\x00\\x01`` and the associated data ``magic ‖ the parent directory's IV ‖ the
entry's encrypted host name``. So an entry moved, copied or swapped to another name or
directory, a file or symlink passed off as an entry (or the reverse) and a flipped bit all
fail authentication (EIO), and an entry names exactly one file, whose own trailer binds it
to its place in the store. The link count is authenticated with the file; it is raised
before a name is added and lowered after one is removed, so a crash in between leaves it
too high (the file is then kept when its last name goes), never too low.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.encdir.errors import EncDirCorrupt

__all__ = ["ENTRY_MAGIC", "ENTRY_SIZE", "STORE_NAME", "is_entry", "object_name", "open_entry",
           "seal_entry"]

ENTRY_MAGIC = b"ENXEH\x00\x00\x01"
#: the link store: a metadata directory at the root (its name has a "."; never listed)
STORE_NAME = ".links"
_NONCE = 12
_ID = 16
ENTRY_SIZE = len(ENTRY_MAGIC) + _NONCE + _ID + 16


def is_entry(head: bytes) -> bool:
    """Whether a host file starting with ``head`` claims to be a hard link's entry (a claim
    only: :func:`open_entry` authenticates it)."""
    return head[: len(ENTRY_MAGIC)] == ENTRY_MAGIC


def object_name(file_id: bytes) -> str:
    """The host name of the file ``file_id`` in the link store."""
    return file_id.hex()


def _aad(diriv: bytes, host_name: str) -> bytes:
    return ENTRY_MAGIC + diriv + host_name.encode("ascii")


def seal_entry(aead: AESGCM, diriv: bytes, host_name: str, file_id: bytes) -> bytes:
    """The host contents of an entry for the file ``file_id`` at ``host_name`` in the
    directory whose IV is ``diriv``."""
    nonce = os.urandom(_NONCE)
    return ENTRY_MAGIC + nonce + aead.encrypt(nonce, file_id, _aad(diriv, host_name))


def open_entry(aead: AESGCM, diriv: bytes, host_name: str, data: bytes) -> bytes:
    """The authenticated file id an entry names (raises :class:`EncDirCorrupt`)."""
    head = len(ENTRY_MAGIC) + _NONCE
    if len(data) != ENTRY_SIZE or not is_entry(data):
        raise EncDirCorrupt("a hard link's entry is cut or not an entry")
    try:
        return aead.decrypt(data[len(ENTRY_MAGIC): head], data[head:], _aad(diriv, host_name))
    except InvalidTag:
        raise EncDirCorrupt("a hard link's entry failed authentication (tampered, moved or "
                            "copied on the host)") from None
