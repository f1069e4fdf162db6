"""EncFile: block read-modify-write, resizing, commits, crash recovery and a model fuzz."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stg

from enarx.encdir import EncDir, EncDirCorrupt, encfile
from enarx.encdir import fileformat as ff
from enarx.encdir.keys import DirKeys

KEY = bytes(range(2, 34))
B = ff.BLOCK


def host_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and "." not in p.name)


def test_block_boundaries_and_resizing(tmp_path: Path) -> None:
    d = EncDir.create(tmp_path / "e", KEY)
    model = bytearray()
    with d.open_file("f", create=True) as f:
        for off, data in [(0, b"a" * (B - 1)), (B - 1, b"bc"), (3 * B + 7, b"far"),
                          (2 * B, b"z" * (2 * B)), (10, b"")]:
            f.pwrite(data, off)
            if off + len(data) > len(model):
                model.extend(bytes(off + len(data) - len(model)))
            model[off: off + len(data)] = data
            assert f.pread(len(model) + 5, 0) == bytes(model)
        for n in [4 * B + 1, 4 * B, B + 3, B + 3, 0, 2 * B + 5]:
            f.truncate(n)
            model = model[:n] + bytes(max(0, n - len(model)))
            assert f.size() == n
            assert f.pread(n + 1, 0) == bytes(model)
        assert f.pread(10, B - 5) == bytes(model[B - 5: B + 5])
        assert f.pread(10, 10 * B) == b""
    d.close()
    host = host_files(tmp_path / "e")[0]
    n = len(model)
    assert host.stat().st_size == ff.PREFIX_SIZE + ff.data_host_len(n) + ff.trailer_len(n, (host.name,))


def test_large_write_commits_in_batches_and_no_journal_remains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encfile, "DIRTY_LIMIT", 4)
    d = EncDir.create(tmp_path / "e", KEY)
    data = os.urandom(40 * B + 17)
    with d.open_file("f", create=True) as f:
        f.pwrite(data, 0)
        host = host_files(tmp_path / "e")[0]
        # pending writes are bounded: most of the file is already on the host
        assert host.stat().st_size > ff.data_host_len(30 * B)
    d.close()
    assert not [p for p in (tmp_path / "e").iterdir() if p.name.endswith(".j")]
    d = EncDir.open(tmp_path / "e", KEY, readonly=True)
    with d.open_file("f") as f:
        assert f.pread(len(data), 0) == data
    d.close()


def test_write_counter_never_goes_back_after_truncate(tmp_path: Path) -> None:
    """O_TRUNC keeps the counter: a block from before the truncate cannot be replayed."""
    d = EncDir.create(tmp_path / "e", KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(b"secret-old" * 500, 0)
    host = host_files(tmp_path / "e")[0]
    old = host.read_bytes()
    with d.open_file("f", trunc=True) as f:
        f.pwrite(b"N" * 5000, 0)
    d.close()
    new = bytearray(host.read_bytes())
    blk = ff.block_host_len(0, 5000)  # block 0 of both (one short block)
    new[ff.PREFIX_SIZE: ff.PREFIX_SIZE + blk] = old[ff.PREFIX_SIZE: ff.PREFIX_SIZE + blk]
    host.write_bytes(new)
    d = EncDir.open(tmp_path / "e", KEY)
    with pytest.raises(EncDirCorrupt), d.open_file("f") as f:
        f.pread(10, 0)
    d.close()


# --- crash safety: a real process dies in the middle of a commit ------------------------------

_CHILD = textwrap.dedent("""
    import os, sys
    from enarx.encdir import EncDir, encfile
    root, die_at = sys.argv[1], int(sys.argv[2])
    calls = 0
    real = encfile._pwrite_all
    def dying(fd, data, off):
        global calls
        calls += 1
        if calls == die_at:  # a torn write, then the process is gone (as kill -9)
            data = b"".join(data) if isinstance(data, list) else data
            os.pwrite(fd, data[: len(data) // 2], off)
            os._exit(9)
        real(fd, data, off)
    encfile._pwrite_all = dying
    d = EncDir.open(root, bytes(range(2, 34)))
    f = d.open_file("f")
    B = BLOCKSIZE
    for off, n in [(0, B), (3 * B, B), (6 * B, 2 * B + 100)]:
        f.pwrite(b"N" * n, off)  # three separate runs of blocks, the last one growing the file
    f.sync()
    os._exit(0)
""").replace("BLOCKSIZE", str(B))

OLD = b"O" * (6 * B + 10)
NEW = b"N" * B + b"O" * 2 * B + b"N" * B + b"O" * 2 * B + b"N" * (2 * B + 100)


# _pwrite_all call 1 writes the journal, 2..4 the three runs (the last with the trailer)
@pytest.mark.parametrize("die_at", [1, 2, 3, 4, 100])
def test_killed_during_commit_leaves_old_or_new_state(tmp_path: Path, die_at: int) -> None:
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(OLD, 0)
    d.close()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(die_at)],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode in (0, 9), proc.stderr.decode()
    d = EncDir.open(root, KEY)
    try:
        with d.open_file("f") as f:
            got = f.pread(1 << 20, 0)
    finally:
        d.close()
    # call 1 writes the journal: torn there, the file was never touched
    assert got == (OLD if die_at == 1 else NEW)
    assert not [p for p in root.iterdir() if p.name.endswith(".j")]


def test_journal_of_another_file_is_ignored(tmp_path: Path) -> None:
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    for name in ("a", "b"):
        with d.open_file(name, create=True) as f:
            f.pwrite(name.encode() * 100, 0)
    d.close()
    a, b = host_files(root)
    journal = ff.build_journal(DirKeys.derive(KEY).journal, a.read_bytes()[8:24], 24,
                               [(0, b"garbage")])
    Path(str(b) + ".j").write_bytes(journal)  # a's journal next to b: id mismatch
    d = EncDir.open(root, KEY)
    try:
        assert {d.lookup(n).size for n in ("a", "b")} == {100}
        with d.open_file("a") as fa, d.open_file("b") as fb:
            assert {fa.pread(1, 0), fb.pread(1, 0)} == {b"a", b"b"}
    finally:
        d.close()
    assert not Path(str(b) + ".j").exists()


def test_forged_journal_is_not_replayed(tmp_path: Path) -> None:
    """The host cannot write a journal: one without the right HMAC is discarded."""
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    with d.open_file("a", create=True) as f:
        f.pwrite(b"keep", 0)
    d.close()
    (a,) = host_files(root)
    forged = ff.build_journal(os.urandom(32), a.read_bytes()[8:24], 24, [(0, b"x" * 24)])
    Path(str(a) + ".j").write_bytes(forged)
    d = EncDir.open(root, KEY)
    try:
        with d.open_file("a") as f:
            assert f.pread(10, 0) == b"keep"
    finally:
        d.close()


# --- fuzz: random operation sequences against a bytearray model ----------------------------

_op = stg.one_of(
    stg.tuples(stg.just("write"), stg.integers(0, 5 * B), stg.binary(min_size=0, max_size=2 * B)),
    stg.tuples(stg.just("trunc"), stg.integers(0, 6 * B), stg.just(b"")),
    stg.tuples(stg.just("read"), stg.integers(0, 6 * B), stg.integers(0, 3 * B)),
    stg.tuples(stg.just("sync"), stg.just(0), stg.just(b"")),
    stg.tuples(stg.just("reopen"), stg.just(0), stg.just(b"")),
    stg.tuples(stg.just("fd2"), stg.integers(0, 5 * B), stg.binary(min_size=1, max_size=300)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=stg.lists(_op, max_size=25), limit=stg.sampled_from([1, 3, 256]))
def test_fuzz_against_a_model(ops: list[tuple[str, int, object]], limit: int) -> None:
    old_limit = encfile.DIRTY_LIMIT
    encfile.DIRTY_LIMIT = limit
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "e")
            d = EncDir.create(root, KEY)
            f = d.open_file("f", create=True)
            model = bytearray()

            def put(off: int, data: bytes) -> None:
                if off + len(data) > len(model):
                    model.extend(bytes(off + len(data) - len(model)))
                model[off: off + len(data)] = data

            for op, a, b in ops:
                if op == "write":
                    assert isinstance(b, bytes)
                    f.pwrite(b, a)
                    if b:
                        put(a, b)
                elif op == "fd2":
                    assert isinstance(b, bytes)
                    with d.open_file("f") as g:
                        g.pwrite(b, a)
                    put(a, b)
                elif op == "trunc":
                    f.truncate(a)
                    model = model[:a] + bytes(max(0, a - len(model)))
                elif op == "read":
                    assert isinstance(b, int)
                    assert f.pread(b, a) == bytes(model[a: a + b])
                    buf = bytearray(b"\xee" * (b + 3))  # into a buffer, as into guest memory
                    n = f.pread_into(memoryview(buf)[1: b + 1], a)
                    assert n == len(model[a: a + b])
                    assert buf[1: n + 1] == model[a: a + b] and buf[0] == 0xEE
                    assert buf[n + 1:] == b"\xee" * (b + 2 - n)
                elif op == "sync":
                    f.sync()
                else:
                    f.close()
                    d.close()
                    d = EncDir.open(root, KEY)
                    f = d.open_file("f")
                assert f.size() == len(model)
                assert d.lookup("f").size == len(model)
            f.close()
            d.close()
            d = EncDir.open(root, KEY, readonly=True)
            with d.open_file("f") as g:
                assert g.pread(len(model) + 1, 0) == bytes(model)
            d.close()
    finally:
        encfile.DIRTY_LIMIT = old_limit


_RENAME_CHILD = _CHILD[: _CHILD.index('f = d.open_file("f")')] + 'd.rename("f", "g")\nos._exit(0)\n'


# calls: 1 journal and 2 trailer of "bind to f and g"; host rename; 3 journal, 4 trailer of
# "bind to g only"
@pytest.mark.parametrize("die_at", [1, 2, 3, 4, 100])
def test_killed_during_rename_leaves_the_file_under_one_name(tmp_path: Path,
                                                              die_at: int) -> None:
    assert _RENAME_CHILD != _CHILD
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(OLD, 0)
    d.close()
    proc = subprocess.run([sys.executable, "-c", _RENAME_CHILD, str(root), str(die_at)],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode in (0, 9), proc.stderr.decode()
    d = EncDir.open(root, KEY)
    try:
        names = [n for n, _ in d.listdir("")]
        assert names == ([b"f"] if die_at <= 2 else [b"g"])
        with d.open_file(names[0]) as f:
            assert f.pread(1 << 20, 0) == OLD
        d.rename(names[0], "h")  # and it can move on from there
        assert [n for n, _ in d.listdir("")] == [b"h"]
    finally:
        d.close()
    assert not [p for p in root.iterdir() if p.name.endswith(".j")]


def test_read_only_open_sees_a_pending_journal_without_writing(tmp_path: Path) -> None:
    """Regression: read-only opens skipped recovery and saw the torn file as EIO."""
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(OLD, 0)
    d.close()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(root), "3"],
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 9, proc.stderr.decode()
    before = {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}
    assert any(n.endswith(".j") for n in before)
    ro = EncDir.open(root, KEY, readonly=True)
    try:
        assert ro.lookup("f").size == len(NEW)
        with ro.open_file("f") as f:
            assert f.pread(1 << 20, 0) == NEW
    finally:
        ro.close()
    assert {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()} == before


def test_a_file_cut_by_the_host_while_open_is_eio_on_every_read_path(tmp_path: Path) -> None:
    """Whole-block reads (the sequential hot path, decrypting into the caller's buffer) and
    partial ones: a block the host cut away after the open is EIO, never the buffer's old
    contents."""
    d = EncDir.create(tmp_path / "e", KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(os.urandom(3 * B), 0)
    f = d.open_file("f")
    os.truncate(host_files(tmp_path / "e")[0], 100)
    buf = bytearray(b"G" * B)
    for off, n in [(B, B), (0, B), (2 * B, 10), (5, B)]:
        with pytest.raises(EncDirCorrupt):
            f.pread_into(memoryview(buf)[:n], off)
    assert buf == b"G" * B
    f.close()
    d.close()


def test_a_tampered_block_leaves_no_unauthenticated_plaintext_in_the_buffer(
        tmp_path: Path) -> None:
    """AES-GCM decrypt_into writes the plaintext before it checks the tag: a block that
    fails is wiped from the caller's buffer (guest memory), not left there beside the EIO."""
    d = EncDir.create(tmp_path / "e", KEY)
    with d.open_file("f", create=True) as f:
        f.pwrite(b"P" * (2 * B), 0)
    d.close()
    host = host_files(tmp_path / "e")[0]
    raw = bytearray(host.read_bytes())
    raw[ff.block_offset(1) + ff.NONCE + 100] ^= 0x01  # a bit of block 1's ciphertext
    host.write_bytes(bytes(raw))
    d = EncDir.open(tmp_path / "e", KEY)
    with d.open_file("f") as f:
        for off, n in [(B, B), (0, 2 * B)]:  # the one-block fast path, and a run of two
            buf = bytearray(b"G" * n)
            with pytest.raises(EncDirCorrupt):
                f.pread_into(memoryview(buf), off)
            assert b"P" * 200 not in buf[n - B:]  # nothing of the failed block
    d.close()
