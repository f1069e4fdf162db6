"""Symlinks in an encrypted directory (enarx.encdir.symlinks and EncDir.symlink/readlink):
targets are ciphertext on the host, authenticated and bound to the link's name and
directory; the core never follows them (the WASI layer does, tests/wasi/test_encfs.py)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from enarx.encdir import EncDir, EncDirCorrupt, EncDirFsError, decrypt_tree

KEY = bytes(range(32))
SECRET = b"TARGETMARKER/../x"


@pytest.fixture
def d(tmp_path: Path) -> EncDir:
    enc = EncDir.create(tmp_path / "enc", KEY)
    yield enc
    enc.close()


def errno_of(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(EncDirFsError) as e:
        fn(*args)
    return e.value.errno


def host_entries(root: str) -> list[str]:
    """Host paths of every guest entry (metadata names hold a '.')."""
    return sorted(os.path.join(r, n) for r, ds, fs in os.walk(root) for n in ds + fs
                  if "." not in n)


def test_create_read_list_and_reopen(tmp_path: Path, d: EncDir) -> None:
    d.mkdir("sub")
    with d.open_file("f", create=True) as f:
        f.pwrite(b"data", 0)
    d.symlink(SECRET, "sub/link")
    d.symlink("f", "l2")
    assert d.readlink("sub/link") == SECRET
    node = d.lookup("sub/link")
    assert node.kind == "symlink" and node.size == len(SECRET) and node.nlink == 1
    assert d.listdir("") == [(b"f", "file"), (b"l2", "symlink"), (b"sub", "dir")]
    d.close()
    ro = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    try:
        assert ro.readlink(("sub", "link")) == SECRET
        assert errno_of(ro.symlink, "x", "new") == errno.EROFS
    finally:
        ro.close()
    for root, _, files in os.walk(tmp_path / "enc"):
        for n in files:
            assert b"TARGETMARKER" not in Path(root, n).read_bytes()
    # a host regular file, never a host symlink that host tools would follow
    assert not any(os.path.islink(p) for p in host_entries(str(tmp_path / "enc")))


def test_the_core_never_follows_a_link(d: EncDir) -> None:
    d.mkdir("dir")
    with d.open_file("dir/f", create=True):
        pass
    d.symlink("dir", "ld")
    d.symlink("dir/f", "lf")
    assert errno_of(d.lookup, "ld/f") == errno.ENOTDIR  # as a directory component
    assert errno_of(d.open_file, "lf") == errno.ELOOP  # as O_NOFOLLOW
    assert errno_of(d.open_file, "lf", True, True) == errno.EEXIST
    assert errno_of(d.rmdir, "ld") == errno.ENOTDIR
    assert errno_of(d.mkdir, "ld") == errno.EEXIST
    assert errno_of(d.readlink, "dir") == errno.EINVAL
    assert errno_of(d.readlink, "missing") == errno.ENOENT
    assert errno_of(d.symlink, "", "empty") == errno.ENOENT
    assert errno_of(d.symlink, "x" * 4097, "long") == errno.ENAMETOOLONG
    d.link("lf", "hard")  # a hard link to a symlink is a symlink to the same target
    assert d.readlink("hard") == b"dir/f" and d.lookup("hard").kind == "symlink"
    d.unlink("lf")  # removes the link, not its target
    assert d.lookup("dir/f").kind == "file"
    assert errno_of(d.lookup, "lf") == errno.ENOENT


def test_rename_rebinds_the_target_to_the_new_name(d: EncDir) -> None:
    d.mkdir("a")
    d.symlink(SECRET, "l")
    with d.open_file("victim", create=True) as f:
        f.pwrite(b"v", 0)
    d.rename("l", "a/moved")
    assert d.readlink("a/moved") == SECRET
    assert errno_of(d.lookup, "l") == errno.ENOENT
    d.rename("a/moved", "victim")  # replaces a file, as POSIX rename
    assert d.readlink("victim") == SECRET
    d.mkdir("b")
    assert errno_of(d.rename, "victim", "b") == errno.EISDIR
    assert errno_of(d.rename, "b", "victim") == errno.ENOTDIR
    assert sorted(n for n, _ in d.listdir("")) == [b"a", b"b", b"victim"]


def test_tampered_moved_or_swapped_links_are_corrupt(d: EncDir) -> None:
    d.mkdir("sub")
    d.symlink("one", "l1")
    d.symlink("two", "l2")
    d.symlink("three", "sub/l3")
    with d.open_file("f", create=True) as f:
        f.pwrite(b"x", 0)
    hosts = {d.readlink(n): d._locate(tuple(n.encode().split(b"/")))[1]
             for n in ("l1", "l2", "sub/l3")}
    one, two, three = hosts[b"one"], hosts[b"two"], hosts[b"three"]
    ffile = d._locate((b"f",))[1]
    # swapped between names: neither authenticates (never the other target)
    tmp = one + ".swap"
    os.rename(one, tmp)
    os.rename(two, one)
    os.rename(tmp, two)
    for name in ("l1", "l2"):
        with pytest.raises(EncDirCorrupt):
            d.readlink(name)
    # moved into another directory (under a name valid there), a link presented where a
    # file was, and a flipped byte
    shutil.copyfile(three, one)
    with pytest.raises(EncDirCorrupt):
        d.readlink("l1")
    shutil.copyfile(three, ffile)
    with pytest.raises(EncDirCorrupt):
        d.readlink("f")
    data = bytearray(Path(three).read_bytes())
    data[-1] ^= 1
    Path(three).write_bytes(bytes(data))
    with pytest.raises(EncDirCorrupt):
        d.readlink("sub/l3")
    with pytest.raises(EncDirCorrupt):
        d.lookup("sub/l3")


def test_files_and_links_passed_off_as_each_other_are_corrupt(d: EncDir) -> None:
    with d.open_file("f", create=True) as f:
        f.pwrite(b"content", 0)
    d.symlink("target", "l")
    d.symlink("target", "l2")
    f_host, l_host = d._locate((b"f",))[1], d._locate((b"l",))[1]
    shutil.copyfile(d._locate((b"l2",))[1], f_host)  # a (valid elsewhere) link as a file
    with pytest.raises(EncDirCorrupt):  # not ELOOP: the claim is authenticated first
        d.open_file("f")
    with pytest.raises(EncDirCorrupt):
        d.lookup("f")
    Path(l_host).write_bytes(Path(d._locate((b"l2",))[1]).read_bytes()[:8] + b"junk")
    with pytest.raises(EncDirCorrupt):
        d.open_file("l")


def test_decrypt_tree_writes_links_and_refuses_escapes(tmp_path: Path, d: EncDir) -> None:
    d.mkdir("sub")
    with d.open_file("sub/f", create=True) as f:
        f.pwrite(b"hi", 0)
    d.symlink("f", "sub/l")
    d.symlink("sub/../sub/f", "top")
    d.close()
    out = tmp_path / "out"
    seen: list[int] = []
    decrypt_tree(tmp_path / "enc", out, KEY, seen.append)
    assert os.readlink(out / "sub" / "l") == "f" and (out / "sub" / "l").read_bytes() == b"hi"
    assert (out / "top").read_bytes() == b"hi"
    assert sum(seen) == 2 + len(b"f") + len(b"sub/../sub/f")
    again = EncDir.open(tmp_path / "enc", KEY)
    again.symlink("../../etc/passwd", "sub/evil")  # the core stores what it is given
    again.close()
    with pytest.raises(EncDirFsError) as e:
        decrypt_tree(tmp_path / "enc", tmp_path / "out2", KEY)
    assert e.value.errno == errno.EPERM and e.value.hint
    assert not (tmp_path / "out2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
