"""Reading a directory key from a local key file (``--dir HOST::GUEST:enc=KEYFILE``,
``encryption_key_file`` in Enarx.toml, ``enarx dir … --key``).

A key file holds exactly 32 raw bytes. Anything else is refused with a hint and never
echoed: the error names the file and its size, not its contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from enarx.encdir.errors import EncDirKeyError
from enarx.encdir.keys import KEY_SIZE

__all__ = ["KEY_HINT", "read_key_file"]

KEY_HINT = ("make one with `enarx dir keygen --out KEYFILE` "
            "(or `head -c 32 /dev/urandom > KEYFILE`)")


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte directory key in ``path``; :class:`EncDirKeyError` (exit 2) otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise EncDirKeyError(f"key file {path} is not a regular file", hint=KEY_HINT)
            data = f.read(KEY_SIZE + 1)
    except FileNotFoundError:
        raise EncDirKeyError(f"key file {path} does not exist", hint=KEY_HINT) from None
    except IsADirectoryError:
        raise EncDirKeyError(f"key file {path} is a directory", hint=KEY_HINT) from None
    except PermissionError:
        raise EncDirKeyError(f"cannot read key file {path}: permission denied",
                             hint="check the file's owner and mode (0600 is expected)") from None
    if len(data) != KEY_SIZE:
        what = "more than" if len(data) > KEY_SIZE else f"{len(data)} bytes, not"
        raise EncDirKeyError(f"key file {path} holds {what} {KEY_SIZE} bytes",
                             hint=f"a directory key is exactly {KEY_SIZE} raw bytes; {KEY_HINT}")
    return data
