"""Hard links in an encrypted directory (enarx.encdir.linkops / hardlinks): link counts, the
link store, names the host moves or swaps (EIO), and a crash at every step of a link."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from enarx.encdir import EncDir, EncDirCorrupt, EncDirFsError
from enarx.encdir.hardlinks import STORE_NAME

KEY = bytes(range(5, 37))
OLD = os.urandom(3 * 65536 + 99)


def hosts(root: Path) -> list[Path]:
    """The host files of guest entries (no metadata), the link store's files apart."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "." not in p.name
                  and STORE_NAME not in p.parts)


def store(root: Path) -> list[Path]:
    s = root / STORE_NAME
    return sorted(p for p in s.iterdir() if "." not in p.name) if s.is_dir() else []


def test_counts_store_and_last_name(tmp_path: Path) -> None:
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    with d.open_file("a", create=True) as f:
        f.pwrite(OLD, 0)
    d.mkdir("sub")
    assert store(root) == []  # a file with one name stays where it is
    d.link("a", "sub/b")
    d.link("sub/b", "c")
    assert [d.lookup(p).nlink for p in ("a", "sub/b", "c")] == [3, 3, 3]
    assert len({d.lookup(p).ino for p in ("a", "sub/b", "c")}) == 1
    assert len(store(root)) == 1 and len(hosts(root)) == 3  # one file, three entries
    with pytest.raises(EncDirFsError) as e:
        d.link("a", "c")
    assert e.value.errno_value == 17  # EEXIST
    with pytest.raises(EncDirFsError) as e:
        d.link("sub", "d2")
    assert e.value.errno_value == 1  # EPERM: no links to directories
    d.close()
    d = EncDir.open(root, KEY)  # the count is in the file's authenticated trailer
    assert d.lookup("c").nlink == 3
    f = d.open_file("c")
    d.unlink("a")
    d.rename("sub/b", "z")
    assert sorted(n for n, _ in d.listdir("")) == [b"c", b"sub", b"z"]
    assert d.lookup("z").nlink == 2
    d.unlink("z")
    d.unlink("c")
    assert store(root) == [] and hosts(root) == []  # the last name took the file along
    assert f.pread(len(OLD) + 1, 0) == OLD  # still open: it lives on, unlinked (POSIX)
    f.close()
    d.close()


def test_host_swapped_or_moved_names_are_eio(tmp_path: Path) -> None:
    root = tmp_path / "e"
    d = EncDir.create(root, KEY)
    for name in ("x", "y"):
        with d.open_file(name, create=True) as f:
            f.pwrite(name.encode() * 70000, 0)
        d.link(name, name + "2")
    d.close()
    entries = {p.read_bytes(): p for p in hosts(root)}
    assert len(entries) == 4 and all(len(k) < 100 for k in entries)
    e0, e1, e2 = sorted(hosts(root))[:3]  # three of the four entries (which is whose: secret)
    objs = store(root)
    assert len(objs) == 2

    def reads(*names: str) -> list[str]:
        e = EncDir.open(root, KEY)
        out = []
        for n in names:
            try:
                with e.open_file(n) as f:
                    out.append(f.pread(3, 0).decode())
            except EncDirCorrupt:
                out.append("EIO")
        e.close()
        return out

    assert reads("x", "x2", "y", "y2") == ["xxx", "xxx", "yyy", "yyy"]
    saved = {p: p.read_bytes() for p in (*hosts(root), *objs)}
    # an entry copied over another name does not open there
    e0.write_bytes(saved[e2])
    assert reads("x", "x2", "y", "y2").count("EIO") == 1
    e0.write_bytes(saved[e0])
    # the two files swapped in the store: each is bound to its place there
    objs[0].write_bytes(saved[objs[1]])
    objs[1].write_bytes(saved[objs[0]])
    assert reads("x", "x2", "y", "y2") == ["EIO"] * 4
    for p, data in saved.items():
        p.write_bytes(data)
    # a bit flipped in an entry
    raw = bytearray(saved[e1])
    raw[-1] ^= 1
    e1.write_bytes(bytes(raw))
    assert reads("x", "x2", "y", "y2").count("EIO") == 1
    e1.write_bytes(saved[e1])
    assert reads("x", "x2", "y", "y2") == ["xxx", "xxx", "yyy", "yyy"]


_CHILD = textwrap.dedent("""
    import os, sys
    from enarx.encdir import EncDir, encfile
    root, die_at = sys.argv[1], int(sys.argv[2])
    calls = 0
    def step():
        global calls
        calls += 1
        return calls == die_at
    real_pwrite, real_link, real_rename = encfile._pwrite_all, os.link, os.rename
    def pwrite(fd, data, off):
        if step():  # a torn write, then the process is gone (as kill -9)
            data = b"".join(data) if isinstance(data, list) else data
            os.pwrite(fd, data[: len(data) // 2], off)
            os._exit(9)
        real_pwrite(fd, data, off)
    def link(*a, **k):
        if step():
            os._exit(9)
        real_link(*a, **k)
    def rename(*a, **k):
        if step():
            os._exit(9)
        real_rename(*a, **k)
    encfile._pwrite_all, os.link, os.rename = pwrite, link, rename
    d = EncDir.open(root, bytes(range(5, 37)))
    d.link("f", "g")
    d.link("g", "h")
    os._exit(0)
""")


@pytest.mark.parametrize("die_at", range(1, 13))  # 11 steps, then done
def test_killed_during_link_leaves_every_name_readable(tmp_path: Path, die_at: int) -> None:
    """Each step of two links (commits, the move into the store, the entries) may be the
    last: afterwards every name the guest sees reads the whole file, the count is never
    below the names, and removing every name leaves nothing for the guest."""
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
        names = [n for n, _ in d.listdir("")]
        assert b"f" in names
        for n in names:
            with d.open_file(n) as f:
                assert f.pread(len(OLD) + 1, 0) == OLD
            assert d.lookup(n).nlink >= len(names)
        if die_at == 12:  # both links done
            assert names == [b"f", b"g", b"h"] and d.lookup("f").nlink == 3
        for n in names:
            d.unlink(n)
        assert d.listdir("") == []
    finally:
        d.close()
