"""enarx.wasi.evp: functions a shared object does not export are found through its symbol
table, and only when the table names each exactly once and the loaded code is the file's."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from enarx.wasi import evp, native

ONE = """
__attribute__((used)) static int secret(int x) { return x * 7 + 1; }
__attribute__((used)) static int twice(int x) { return x + 100; }
int anchor(void) { return 0; }
"""
TWO = """
__attribute__((used)) static int twice(int x) { return x + 200; }
"""


@pytest.fixture
def shared_object(tmp_path: Path) -> Path:
    found = native._compiler()  # the one the native library is built with
    if found is None:
        pytest.skip("no C compiler")
    (tmp_path / "one.c").write_text(ONE)
    (tmp_path / "two.c").write_text(TWO)
    out = tmp_path / "libsyms.so"
    subprocess.run([*found[0], "-O1", "-shared", "-fPIC", "-o", str(out), str(tmp_path / "one.c"),
                    str(tmp_path / "two.c")], check=True, capture_output=True)
    return out


def test_a_local_function_is_found_and_callable(shared_object: Path) -> None:
    found = evp.find(str(shared_object), "anchor", ["secret"])
    assert found is not None
    secret = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(found[0])
    assert secret(5) == 36  # the very function the symbol names


def test_missing_twice_named_or_stripped_symbols_give_nothing(shared_object: Path,
                                                              tmp_path: Path) -> None:
    assert evp.find(str(shared_object), "anchor", ["no_such_function"]) is None
    assert evp.find(str(shared_object), "anchor", ["twice"]) is None  # two static `twice`
    assert evp.find(str(shared_object), "no_anchor", ["secret"]) is None
    strip = shutil.which("strip")
    if strip is None:
        pytest.skip("no strip")
    stripped = tmp_path / "libstripped.so"
    subprocess.run([strip, "--strip-all", "-o", str(stripped), str(shared_object)], check=True)
    assert evp.find(str(stripped), "anchor", ["secret"]) is None
    assert evp.find(str(tmp_path / "one.c"), "anchor", ["secret"]) is None  # not an ELF


def test_the_openssl_of_cryptography_is_found() -> None:
    if native.library() is None:
        pytest.skip("no C compiler: the native path is off here")
    fns = evp.functions()
    assert fns is not None and len(fns) == len(evp.FUNCTIONS) and all(fns)
