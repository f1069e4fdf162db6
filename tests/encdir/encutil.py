"""Shared by the encrypted-directory tool tests: keys, host-side layout, the encdir_io guest.

The tests drive the real ``enarx`` CLI (``enarx dir encrypt`` to initialise a directory,
``enarx run --dir HOST::/data:enc=KEY`` with tests/guests/c/encdir_io.c) and look at the
host side the way an attacker with the disk would: any file, any byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cliutil import RunEnarx
from tests.guestbuild import ToolchainMissing, build_c

EIO = 29  # WASI's (and wasi-libc's) errno for an I/O error
BLOCK = 65536  # encdir_io's block: the format's (enarx.encdir.fileformat.BLOCK)


def guest() -> Path:
    try:
        return build_c("encdir_io.c")
    except ToolchainMissing as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"toolchain missing: {e}")


def new_key(path: Path) -> Path:
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


def record(tag: int, block: int, gen: int) -> bytes:
    """The 16-byte record encdir_io repeats through a block."""
    return b"%04x%04x%08x" % (tag, block, gen)


class EncBox:
    """An encrypted directory ``host`` (created empty with `enarx dir encrypt`) and its key."""

    def __init__(self, enarx: RunEnarx, tmp: Path) -> None:
        self.enarx = enarx
        self.key = new_key(tmp / "dir.key")
        self.host = tmp / "enc"
        empty = tmp / "empty"
        empty.mkdir()
        r = enarx("dir", "encrypt", empty, self.host, "--key", self.key)
        assert r.returncode == 0, r.stderr.decode()

    def run(self, *args: str | os.PathLike[str], key: Path | None = None,
            ro: bool = False) -> tuple[int, list[str], str]:
        spec = f"{self.host}::/data:enc={key or self.key}" + (":ro" if ro else "")
        r = self.enarx("run", "--backend", "nil", "--dir", spec, guest(), *args)
        return r.returncode, r.stdout.decode().splitlines(), r.stderr.decode()

    def ok(self, *args: str | os.PathLike[str]) -> list[str]:
        rc, out, err = self.run(*args)
        assert rc == 0, (out, err)
        return out

    def data_files(self) -> list[Path]:
        """Every host file that holds a guest file (not the .enarxdir/.diriv metadata)."""
        out = []
        for dirpath, dirs, files in os.walk(self.host):
            dirs[:] = [d for d in dirs if "." not in d]
            out += [Path(dirpath) / f for f in files if "." not in f]  # "." = metadata
        return sorted(out)
