"""read_key_file: exactly 32 raw bytes, everything else a clear error with a hint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enarx.encdir import EncDirKeyError
from enarx.encdir.keyfile import read_key_file


def test_reads_a_32_byte_key(tmp_path: Path) -> None:
    key = os.urandom(32)
    (tmp_path / "k").write_bytes(key)
    assert read_key_file(tmp_path / "k") == key


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p: p.write_bytes(b"x" * 31), "31 bytes, not 32"),
    (lambda p: p.write_bytes(b"x" * 33), "more than 32"),
    (lambda p: p.write_bytes(b""), "0 bytes"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "does not exist"),
])
def test_refuses_anything_else(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "k"
    setup(p)
    with pytest.raises(EncDirKeyError, match=message) as e:
        read_key_file(p)
    assert e.value.exit_code == 2 and e.value.hint


def test_key_bytes_are_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"TOPSECRETKEYMATERIAL" * 2)
    with pytest.raises(EncDirKeyError) as e:
        read_key_file(tmp_path / "k")
    assert "TOPSECRET" not in str(e.value) + str(e.value.hint)
