"""Encrypted data directories: plaintext inside the Keep, authenticated ciphertext on the host.

:class:`EncDir` opens (or creates) a host directory whose file contents and names are
encrypted under a 32-byte directory key; :class:`EncFile` is an open file in it. The format,
key hierarchy and crash-safety guarantee are described in :mod:`enarx.encdir.fileformat`,
:mod:`enarx.encdir.keys`, :mod:`enarx.encdir.encfile` and (links)
:mod:`enarx.encdir.symlinks` / :mod:`enarx.encdir.hardlinks`; docs/encrypted-dirs.md is the
user-facing account.
"""

from __future__ import annotations

from enarx.encdir.encdir import EncDir, GuestPath
from enarx.encdir.encfile import EncFile, Node
from enarx.encdir.errors import EncDirCorrupt, EncDirError, EncDirFsError, EncDirKeyError
from enarx.encdir.fileformat import MAX_FILE_SIZE
from enarx.encdir.keys import KEY_SIZE
from enarx.encdir.names import MAX_NAME
from enarx.encdir.tree import decrypt_tree, encrypt_tree

__all__ = ["KEY_SIZE", "MAX_FILE_SIZE", "MAX_NAME", "EncDir", "EncDirCorrupt", "EncDirError",
           "EncDirFsError", "EncDirKeyError", "EncFile", "GuestPath", "Node", "decrypt_tree",
           "encrypt_tree"]
