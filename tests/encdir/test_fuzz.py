"""Fuzzing the parts the host controls: every byte of a file, names, journals.

The property: whatever the host does to the bytes, a read returns the exact plaintext or
raises EncDirCorrupt — never other data, never another exception.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stg

from enarx.encdir import MAX_FILE_SIZE, MAX_NAME, EncDir, EncDirCorrupt, EncDirFsError
from enarx.encdir import fileformat as ff
from enarx.encdir.keys import DirKeys
from enarx.encdir.names import decrypt_name, encrypt_name

KEY = bytes(range(5, 37))
DATA = os.urandom(2 * ff.BLOCK + 700)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def pristine() -> tuple[str, bytes]:
    """A directory holding one file "f" (DATA, written in two commits) and its host bytes."""
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "enc")
    d = EncDir.create(root, KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(DATA[:5000], 0)
        f.sync()
        f.pwrite(DATA[5000:], 5000)
    d.close()
    (name,) = [n for n in os.listdir(root) if "." not in n]
    with open(os.path.join(root, name), "rb") as fh:
        raw = fh.read()
    yield root, raw
    shutil.rmtree(tmp)


def _read_after(root: str, raw: bytes) -> bytes:
    tmp = tempfile.mkdtemp()
    try:
        copy = os.path.join(tmp, "enc")
        shutil.copytree(root, copy)
        (name,) = [n for n in os.listdir(copy) if "." not in n]
        with open(os.path.join(copy, name), "wb") as fh:
            fh.write(raw)
        d = EncDir.open(copy, KEY, readonly=True)
        try:
            with d.open_file("f") as f:
                assert d.lookup("f").size == f.size()
                return f.pread(1 << 20, 0)
        finally:
            d.close()
    finally:
        shutil.rmtree(tmp)


@_FUZZ
@given(pos=stg.integers(0, 10**9), mask=stg.integers(1, 255))
def test_any_flipped_byte_is_caught(pristine: tuple[str, bytes], pos: int, mask: int) -> None:
    root, raw = pristine
    edited = bytearray(raw)
    edited[pos % len(raw)] ^= mask
    with pytest.raises(EncDirCorrupt):
        _read_after(root, bytes(edited))


@_FUZZ
@given(cut=stg.integers(0, 10**9), tail=stg.binary(max_size=64))
def test_any_cut_or_extension_is_caught(pristine: tuple[str, bytes], cut: int,
                                        tail: bytes) -> None:
    root, raw = pristine
    edited = raw[: cut % len(raw)] + tail
    if edited == raw:
        return
    with pytest.raises(EncDirCorrupt):
        _read_after(root, edited)


@_FUZZ
@given(junk=stg.binary(max_size=300))
def test_junk_files_are_corrupt(pristine: tuple[str, bytes], junk: bytes) -> None:
    root, _ = pristine
    for raw in (junk, ff.MAGIC + junk):
        with pytest.raises(EncDirCorrupt):
            _read_after(root, raw)


def test_untouched_copy_reads_back(pristine: tuple[str, bytes]) -> None:
    root, raw = pristine
    assert _read_after(root, raw) == DATA


_keys = DirKeys.derive(KEY)


@_FUZZ
@given(name=stg.binary(min_size=1, max_size=MAX_NAME).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")),
    iv=stg.binary(min_size=16, max_size=16))
def test_names_round_trip_and_fit_the_host(name: bytes, iv: bytes) -> None:
    host = encrypt_name(_keys.names, name, iv)
    assert "." not in host and "/" not in host and len(host) + 2 <= 255
    assert decrypt_name(_keys.names, host, iv) == name
    with pytest.raises(EncDirCorrupt):
        decrypt_name(_keys.names, host, bytes(b ^ 1 for b in iv))


@_FUZZ
@given(host=stg.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
                     max_size=120))
def test_foreign_host_names_are_corrupt(host: str) -> None:
    with pytest.raises(EncDirCorrupt):
        decrypt_name(_keys.names, host, bytes(16))


@_FUZZ
@given(data=stg.binary(max_size=400))
def test_journal_parser_never_raises_on_junk(data: bytes) -> None:
    assert ff.parse_journal(_keys.journal, data) is None
    assert ff.parse_journal(_keys.journal, ff.JOURNAL_MAGIC + data) is None


@_FUZZ
@given(recs=stg.lists(stg.tuples(stg.integers(0, 2**40), stg.binary(max_size=50)), max_size=5),
       cut=stg.integers(1, 10**6))
def test_journal_round_trips_and_any_cut_is_refused(recs: list[tuple[int, bytes]],
                                                    cut: int) -> None:
    fid = os.urandom(16)
    j = ff.build_journal(_keys.journal, fid, 12345, recs)
    assert ff.parse_journal(_keys.journal, j) == (fid, 12345, recs)
    assert ff.parse_journal(_keys.journal, j[: -(cut % len(j)) or -1]) is None


def test_files_beyond_the_size_limit_are_efbig(tmp_path: Path) -> None:
    """A guest's pwrite at a huge offset is EFBIG, not a multi-GiB allocation."""
    d = EncDir.create(tmp_path / "e", KEY)
    with d.open_file("f", create=True) as f:
        for fn, args in [(f.pwrite, (b"x", MAX_FILE_SIZE)), (f.truncate, (MAX_FILE_SIZE + 1,)),
                         (f.pwrite, (b"x", 1 << 62))]:
            with pytest.raises(EncDirFsError) as e:
                fn(*args)
            assert e.value.errno == errno.EFBIG
        assert f.size() == 0
    d.close()


# --- differential: the same operations on a plain host directory and an encrypted one ------

_name = stg.sampled_from(["a", "b", "a/b", "b/a", "a/a", "a/b/c"])
_tree_op = stg.one_of(
    stg.tuples(stg.sampled_from(["mkdir", "rmdir", "unlink", "create", "excl", "trunc", "read",
                                 "list", "stat"]), _name, _name),
    stg.tuples(stg.just("rename"), _name, _name),
)


def _plain(root: str, op: str, p: str, q: str) -> object:
    path, other = os.path.join(root, p), os.path.join(root, q)
    if op == "mkdir":
        return os.mkdir(path)
    if op == "rmdir":
        return os.rmdir(path)
    if op == "unlink":
        return os.unlink(path)
    if op in ("create", "excl", "trunc"):
        flags = os.O_RDWR | (os.O_CREAT if op != "trunc" else os.O_TRUNC)
        fd = os.open(path, flags | (os.O_EXCL if op == "excl" else 0))
        try:
            os.pwrite(fd, p.encode() * 3000, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        return None
    if op == "read":
        fd = os.open(path, os.O_RDONLY)
        try:
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, "dir")
            return os.pread(fd, 1 << 20, 0)
        finally:
            os.close(fd)
    if op == "list":
        return sorted((n.encode(), "dir" if os.path.isdir(os.path.join(path, n)) else "file")
                      for n in os.listdir(path))
    if op == "stat":
        s = os.stat(path)
        return ("dir", 0) if os.path.isdir(path) else ("file", s.st_size)
    return os.rename(path, other)


def _enc(d: EncDir, op: str, p: str, q: str) -> object:
    if op == "mkdir":
        return d.mkdir(p)
    if op == "rmdir":
        return d.rmdir(p)
    if op == "unlink":
        return d.unlink(p)
    if op in ("create", "excl", "trunc"):
        with d.open_file(p, create=op != "trunc", excl=op == "excl", trunc=op == "trunc") as f:
            f.pwrite(p.encode() * 3000, f.size())
        return None
    if op == "read":
        with d.open_file(p) as f:
            return f.pread(1 << 20, 0)
    if op == "list":
        return d.listdir(p)
    if op == "stat":
        n = d.lookup(p)
        return (n.kind, n.size if n.kind == "file" else 0)
    return d.rename(p, q)


def _outcome(fn: object, *args: object) -> object:
    try:
        return ("ok", fn(*args))  # type: ignore[operator]
    except OSError as e:
        return ("err", e.errno)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=stg.lists(_tree_op, max_size=40))
def test_tree_operations_match_a_plain_directory(ops: list[tuple[str, str, str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "plain")
        os.mkdir(plain)
        d = EncDir.create(os.path.join(tmp, "enc"), KEY)
        try:
            for op, p, q in ops:
                want = _outcome(_plain, plain, op, p, q)
                got = _outcome(_enc, d, op, p, q)
                assert got == want, (op, p, q)
            assert _outcome(_enc, d, "list", "", "") == _outcome(_plain, plain, "list", "", "")
        finally:
            d.close()
