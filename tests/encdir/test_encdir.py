"""EncDir: the plaintext tree a guest sees over an encrypted host directory."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from enarx.encdir import (
    MAX_NAME,
    EncDir,
    EncDirCorrupt,
    EncDirError,
    EncDirFsError,
    EncDirKeyError,
    encfile,
)

KEY = bytes(range(32))


@pytest.fixture
def d(tmp_path: Path) -> EncDir:
    enc = EncDir.create(tmp_path / "enc", KEY)
    yield enc
    enc.close()


def write(d: EncDir, path: str, data: bytes) -> None:
    with d.open_file(path, create=True) as f:
        f.pwrite(data, 0)


def read(d: EncDir, path: str) -> bytes:
    with d.open_file(path) as f:
        return f.pread(f.size() + 1, 0)


def errno_of(fn, *args, **kw) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(EncDirFsError) as e:
        fn(*args, **kw)
    assert isinstance(e.value, OSError)  # the WASI layer maps it like a host error
    return e.value.errno


def test_round_trip_across_reopen(tmp_path: Path, d: EncDir) -> None:
    d.mkdir("a")
    d.mkdir("a/b")
    data = os.urandom(3 * 4096 + 123)
    write(d, "a/b/file.bin", data)
    write(d, "top.txt", b"hello")
    d.close()
    again = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    try:
        assert read(again, "a/b/file.bin") == data
        assert read(again, "top.txt") == b"hello"
        assert again.listdir("") == [(b"a", "dir"), (b"top.txt", "file")]
        assert again.listdir(("a",)) == [(b"b", "dir")]
        assert again.lookup("a/b/file.bin").size == len(data)
        assert again.lookup("a").kind == "dir"
        assert again.lookup("").kind == "dir"
    finally:
        again.close()


def test_host_sees_no_plaintext_names_or_contents(tmp_path: Path, d: EncDir) -> None:
    marker = b"PLAINTEXT-MARKER-7f3a"
    d.mkdir(marker.decode())
    write(d, marker.decode() + "/" + marker.decode(), marker * 2000)
    d.close()
    for root, dirs, files in os.walk(tmp_path / "enc"):
        for name in dirs + files:
            assert marker.decode() not in name
            assert b"PLAINTEXT" not in name.encode()
        for name in files:
            assert marker not in Path(root, name).read_bytes()


def test_wrong_or_malformed_key_is_refused(tmp_path: Path, d: EncDir) -> None:
    d.close()
    with pytest.raises(EncDirKeyError) as e:
        EncDir.open(tmp_path / "enc", os.urandom(32))
    assert e.value.hint and "32-byte" in e.value.hint
    with pytest.raises(EncDirKeyError, match="exactly 32 bytes"):
        EncDir.open(tmp_path / "enc", KEY[:31])
    with pytest.raises(EncDirKeyError):
        EncDir.create(tmp_path / "other", KEY + b"x")


def test_open_refuses_a_plain_directory(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("x")
    with pytest.raises(EncDirError, match="not an encrypted directory") as e:
        EncDir.open(tmp_path / "plain", KEY)
    assert e.value.hint
    assert errno_of(EncDir.create, tmp_path / "plain", KEY) == errno.EEXIST


def test_open_or_create(tmp_path: Path) -> None:
    d = EncDir.open_or_create(tmp_path / "new", KEY)
    write(d, "x", b"1")
    d.close()
    d = EncDir.open_or_create(tmp_path / "new", KEY)
    assert read(d, "x") == b"1"
    d.close()
    (tmp_path / "empty").mkdir()
    EncDir.open_or_create(tmp_path / "empty", KEY).close()
    assert (tmp_path / "empty" / ".enarxdir").exists()


def test_errnos_match_posix(d: EncDir) -> None:
    write(d, "f", b"x")
    d.mkdir("dir")
    write(d, "dir/inner", b"y")
    assert errno_of(d.lookup, "missing") == errno.ENOENT
    assert errno_of(d.open_file, "missing") == errno.ENOENT
    assert errno_of(d.open_file, "f", create=True, excl=True) == errno.EEXIST
    assert errno_of(d.open_file, "dir") == errno.EISDIR
    assert errno_of(d.lookup, "f/x") == errno.ENOTDIR
    assert errno_of(d.mkdir, "f") == errno.EEXIST
    assert errno_of(d.mkdir, "dir") == errno.EEXIST
    assert errno_of(d.mkdir, "nope/sub") == errno.ENOENT
    assert errno_of(d.rmdir, "dir") == errno.ENOTEMPTY
    assert errno_of(d.rmdir, "f") == errno.ENOTDIR
    assert errno_of(d.rmdir, "") == errno.EBUSY
    assert errno_of(d.unlink, "dir") == errno.EISDIR
    assert errno_of(d.unlink, "missing") == errno.ENOENT
    assert errno_of(d.rename, "missing", "z") == errno.ENOENT
    assert errno_of(d.rename, "f", "dir") == errno.EISDIR
    assert errno_of(d.rename, "dir", "f") == errno.ENOTDIR
    assert errno_of(d.rename, "dir", "dir/inner2") == errno.EINVAL
    assert errno_of(d.lookup, "../x") == errno.EPERM
    assert errno_of(d.symlink, "x", "f") == errno.EEXIST
    assert errno_of(d.readlink, "f") == errno.EINVAL
    assert errno_of(d.link, "f", "dir") == errno.EEXIST
    assert errno_of(d.link, "dir", "l") == errno.EPERM
    assert errno_of(d.link, "missing", "l") == errno.ENOENT
    assert errno_of(d.link, "f", "nope/l") == errno.ENOENT
    assert errno_of(d.lookup, ("a/b",)) == errno.EINVAL


def test_name_length_limit(d: EncDir) -> None:
    long_ok = "n" * MAX_NAME
    write(d, long_ok, b"ok")
    assert read(d, long_ok) == b"ok"
    d.mkdir("é" * (MAX_NAME // 2))
    assert errno_of(d.open_file, "n" * (MAX_NAME + 1), create=True) == errno.ENAMETOOLONG
    assert errno_of(d.mkdir, "n" * (MAX_NAME + 1)) == errno.ENAMETOOLONG
    assert all(len(n) <= 255 for n in os.listdir(d.root))


def test_unlink_rmdir_and_rename(d: EncDir) -> None:
    d.mkdir("a")
    write(d, "a/f", b"one")
    write(d, "g", b"two")
    d.rename("a/f", "g")  # replaces a file
    assert read(d, "g") == b"one"
    assert d.listdir("a") == []
    d.mkdir("b")
    d.rename("a", "b")  # replaces an empty directory
    assert [n for n, _ in d.listdir("")] == [b"b", b"g"]
    d.mkdir("b/c")
    write(d, "b/c/deep", b"deep")
    d.rename("b", "moved")  # a subtree: names inside stay readable
    assert read(d, "moved/c/deep") == b"deep"
    d.rename("g", "g")  # onto itself: nothing happens
    assert read(d, "g") == b"one"
    d.unlink("moved/c/deep")
    d.rmdir("moved/c")
    d.rmdir("moved")
    d.unlink("g")
    assert d.listdir("") == []
    assert sorted(os.listdir(d.root)) == [".diriv", ".enarxdir"]


def test_open_handles_share_state_and_survive_rename_and_unlink(d: EncDir) -> None:
    f1 = d.open_file("f", create=True)
    f2 = d.open_file("f")
    f1.pwrite(b"abc", 0)
    assert f2.pread(10, 0) == b"abc"  # seen through another fd before any commit
    assert d.lookup("f").size == 3
    d.mkdir("sub")
    d.rename("f", "sub/f")
    f2.pwrite(b"Z" * 5000, 1)
    f1.close()
    f2.close()
    assert read(d, "sub/f") == b"a" + b"Z" * 5000
    f3 = d.open_file("sub/f")
    d.unlink("sub/f")
    assert f3.pread(2, 0) == b"aZ"  # an unlinked file stays readable while open
    f3.pwrite(b"q", 0)
    f3.close()
    assert d.listdir("sub") == []


def test_trunc_and_set_times(d: EncDir) -> None:
    write(d, "f", b"x" * 10000)
    with d.open_file("f", trunc=True) as f:
        assert f.size() == 0
    assert d.lookup("f").size == 0
    d.set_times("f", atime_ns=1_000_000_000, mtime_ns=2_000_000_000)
    n = d.lookup("f")
    assert (n.atime_ns, n.mtime_ns) == (1_000_000_000, 2_000_000_000)
    with d.open_file("f") as f:
        f.pwrite(b"later", 0)
        f.set_times(None, 5_000_000_000)  # after pending writes: the time wins
        assert f.stat().mtime_ns == 5_000_000_000
    assert d.lookup("f").mtime_ns == 5_000_000_000
    d.set_times("", mtime_ns=7_000_000_000)
    assert d.lookup("").mtime_ns == 7_000_000_000


def test_readonly_refuses_every_change(tmp_path: Path, d: EncDir) -> None:
    write(d, "f", b"data")
    d.close()
    ro = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    try:
        for fn, args in [(ro.mkdir, ("x",)), (ro.unlink, ("f",)), (ro.rename, ("f", "g")),
                         (ro.set_times, ("f", 1, 1))]:
            assert errno_of(fn, *args) == errno.EROFS
        assert errno_of(ro.open_file, "new", create=True) == errno.EROFS
        assert errno_of(ro.open_file, "f", trunc=True) == errno.EROFS
        with ro.open_file("f") as f:
            assert errno_of(f.pwrite, b"x", 0) == errno.EROFS
            assert errno_of(f.truncate, 0) == errno.EROFS
            assert f.pread(4, 0) == b"data"
    finally:
        ro.close()


def test_closed_file_is_ebadf(d: EncDir) -> None:
    f = d.open_file("f", create=True)
    f.close()
    f.close()
    assert errno_of(f.pread, 1, 0) == errno.EBADF


def test_host_symlink_is_never_followed(tmp_path: Path, d: EncDir) -> None:
    write(d, "f", b"x")
    host = os.path.join(d.root, next(n for n in os.listdir(d.root) if "." not in n))
    os.unlink(host)
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    os.symlink(outside, host)
    with pytest.raises(EncDirCorrupt):
        d.lookup("f")
    with pytest.raises(EncDirCorrupt):
        d.listdir("")
    with pytest.raises(EncDirCorrupt):
        d.open_file("f")


def test_writes_to_an_unlinked_file_leave_no_journal_anywhere(
        tmp_path: Path, d: EncDir, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a commit of an unlinked-but-open file wrote ``.j`` in the CWD."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    seen: list[str] = []
    real = encfile._pwrite_all

    def spy(fd: int, data: object, off: int) -> None:  # what exists while a commit writes
        seen.extend(os.listdir(cwd))
        real(fd, data, off)

    monkeypatch.setattr(encfile, "_pwrite_all", spy)
    f = d.open_file("f", create=True)
    d.unlink("f")
    f.pwrite(b"x" * 10000, 0)
    f.sync()
    assert f.pread(3, 9997) == b"xxx"
    f.close()
    assert seen == []
    assert list(cwd.iterdir()) == []
    assert sorted(os.listdir(d.root)) == [".diriv", ".enarxdir"]


def test_one_writer_or_many_readers(tmp_path: Path, d: EncDir) -> None:
    with pytest.raises(EncDirError, match="in use") as e:
        EncDir.open(tmp_path / "enc", KEY)
    assert e.value.hint
    with pytest.raises(EncDirError, match="in use"):
        EncDir.open(tmp_path / "enc", KEY, readonly=True)
    d.close()
    r1 = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    r2 = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    with pytest.raises(EncDirError, match="in use"):
        EncDir.open(tmp_path / "enc", KEY)
    r1.close()
    r2.close()
    EncDir.open(tmp_path / "enc", KEY).close()


def test_dropped_without_close_commits_and_unlocks(tmp_path: Path) -> None:
    d = EncDir.create(tmp_path / "enc", KEY)
    f = d.open_file("f", create=True)
    f.pwrite(b"pending", 0)
    del f, d  # the last references: nothing was closed
    again = EncDir.open(tmp_path / "enc", KEY)
    try:
        with again.open_file("f") as g:
            assert g.pread(10, 0) == b"pending"
    finally:
        again.close()


def test_pending_writes_move_mtime_like_a_plain_file(d: EncDir) -> None:
    """Regression: stat showed the time of the last commit, not of the last write."""
    with d.open_file("f", create=True) as f:
        f.pwrite(b"a", 0)
    d.set_times("f", atime_ns=10**9, mtime_ns=10**9)
    with d.open_file("f") as f:
        assert f.stat().mtime_ns == 10**9
        f.pwrite(b"b", 1)  # pending, not committed yet
        assert f.stat().mtime_ns > 10**9
        assert d.lookup("f").mtime_ns > 10**9
        f.set_times(None, 2 * 10**9)
        assert d.lookup("f").mtime_ns == 2 * 10**9


def test_closed_directory_is_ebadf(d: EncDir) -> None:
    write(d, "f", b"x")
    d.close()
    for fn, args in [(d.lookup, ("f",)), (d.lookup, ("",)), (d.listdir, ("",)),
                     (d.open_file, ("f",)), (d.mkdir, ("x",)), (d.unlink, ("f",))]:
        assert errno_of(fn, *args) == errno.EBADF
    d.close()  # twice is fine


def test_a_new_file_is_open_by_its_final_host_name(tmp_path: Path, d: EncDir) -> None:
    """A virtio-9p share (VM Keeps) resolves truncate by the name an fd was opened with: a
    new file's fd must not be the one that wrote it aside under a name now removed."""
    with d.open_file("new.txt", create=True) as f:
        f.pwrite(b"x" * 10, 0)
        opened = os.readlink(f"/proc/self/fd/{f._st().fd}")
        assert not opened.endswith(" (deleted)")
        assert Path(opened).parent == tmp_path / "enc" and not Path(opened).name.startswith(".")
        f.truncate(3)
    assert read(d, "new.txt") == b"xxx"
