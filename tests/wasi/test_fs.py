"""Files and directories inside a pre-open (fd 3 = tmp 'sandbox'), through a real guest."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from enarx.wasi.abi import Errno, Filetype
from enarx.wasi.dirhandle import DirHandle
from tests.wasi.rawguest import Guest

ALL = "0x3fffffff"
RO = hex((1 << 1) | (1 << 2) | (1 << 5))  # fd_read | fd_seek | fd_tell
E = {e.name: str(int(e)) for e in Errno}


def test_prestat_names_the_guest_path(ops) -> None:  # type: ignore[no-untyped-def]
    assert ops("prestat|3", "prestat|4") == [["0", "0", "/sandbox"], [E["BADF"]]]


def test_create_write_seek_read_tell(ops) -> None:  # type: ignore[no-untyped-def]
    res = ops(
        f"open|3|f.txt|1|{ALL}|0|0",
        "write|$|hello world",
        "tell|$",
        "seek|$|-5|1",
        "read|$|100",
        "seek|$|0|2",
        "pwrite|$|HELLO|0",
        "pread|$|5|6",
        "tell|$",
        "fstat|$",
        "close|$",
        "close|4",
    )
    assert res[0] == ["0", "4"]
    assert res[1] == ["0", "11"]
    assert res[2] == ["0", "11"]
    assert res[3] == ["0", "6"]
    assert res[4] == ["0", b"world".hex()]
    assert res[5] == ["0", "11"]
    assert res[6] == ["0", "5"]
    assert res[7] == ["0", b"world".hex()]
    assert res[8] == ["0", "11"]  # pread/pwrite leave the offset alone
    assert res[9][:3] == ["0", str(int(Filetype.REGULAR_FILE)), "11"]
    assert res[10] == ["0"] and res[11] == [E["BADF"]]
    assert (ops.box / "f.txt").read_bytes() == b"HELLO world"


def test_open_flags(ops) -> None:  # type: ignore[no-untyped-def]
    (ops.box / "f").write_bytes(b"0123456789")
    res = ops(
        f"open|3|f|5|{ALL}|0|0",  # CREAT|EXCL on existing
        f"open|3|f|8|{ALL}|0|0",  # TRUNC
        "fstat|$",
        f"open|3|f|0|{ALL}|1|0",  # APPEND
        "write|$|ab",
        "fdstat|$",
        f"open|3|f|2|{ALL}|0|0",  # DIRECTORY on a file
        f"open|3|missing|0|{ALL}|0|0",
        f"open|3|f|0|{RO}|0|0",
        "write|$|x",
        "fdstat|$",
    )
    assert res[0][0] == E["EXIST"]
    assert res[1][0] == "0" and res[2][2] == "0"
    assert res[3][0] == "0" and res[4] == ["0", "2"]
    assert res[5][:3] == ["0", str(int(Filetype.REGULAR_FILE)), "1"]  # fs_flags APPEND
    assert res[6][0] == E["NOTDIR"]
    assert res[7][0] == E["NOENT"]
    assert res[8][0] == "0"
    assert res[9][0] == E["NOTCAPABLE"]  # opened without fd_write
    assert int(res[10][3]) & (1 << 6) == 0
    assert (ops.box / "f").read_bytes() == b"ab"


def test_directories_rename_unlink_rmdir(ops) -> None:  # type: ignore[no-untyped-def]
    res = ops(
        "mkdir|3|d",
        "mkdir|3|d",
        f"open|3|d/x|1|{ALL}|0|0",
        "close|$",
        "rmdir|3|d",
        "rename|3|d/x|3|y",
        "rename|3|d|3|e",
        "stat|3|e|0",
        "stat|3|y|0",
        "unlink|3|e",
        "unlink|3|y",
        "rmdir|3|e",
        "stat|3|e|0",
        "unlink|3|y",
    )
    assert [r[0] for r in res] == [
        "0", E["EXIST"], "0", "0", E["NOTEMPTY"], "0", "0", "0", "0", E["ISDIR"], "0", "0",
        E["NOENT"], E["NOENT"],
    ]  # fmt: skip
    assert res[7][1] == str(int(Filetype.DIRECTORY))
    assert res[8][1] == str(int(Filetype.REGULAR_FILE))
    assert list(ops.box.iterdir()) == []


def test_trailing_slashes(ops) -> None:  # type: ignore[no-untyped-def]
    (ops.box / "file").write_bytes(b"")
    (ops.box / "dir").mkdir()
    res = ops(
        "open|3|file/|0|0|0|0",
        "open|3|dir/|0|0|0|0",
        "unlink|3|file/",
        "unlink|3|dir/",
        "rmdir|3|file/",
        "rename|3|file|3|new/",
        "symlink|source|3|target/",
        "stat|3|file/|0",
        "mkdir|3|sub/",
        "rmdir|3|sub/",
    )
    assert [r[0] for r in res] == [
        E["NOTDIR"], "0", E["NOTDIR"], E["ISDIR"], E["NOTDIR"], E["NOTDIR"], E["NOENT"],
        E["NOTDIR"], "0", "0",
    ]  # fmt: skip


def test_truncate_set_times_stat(ops) -> None:  # type: ignore[no-untyped-def]
    (ops.box / "f").write_bytes(b"x" * 100)
    ns = 1_234_567_890_123_456_789
    res = ops(
        f"open|3|f|0|{ALL}|0|0",
        "truncate|$|10",
        "fsettimes|$|1000000000|2000000000|5",
        "fstat|$",
        f"settimes|3|f|{ns}|{ns}|5|0",
        "stat|3|f|0",
        "settimes|3|f|0|0|3|0",  # ATIM and ATIM_NOW together: invalid
        "settimes|3|f|0|0|10|0",  # both NOW
        "allocate|$|0|50",
        "fstat|$",
        "advise|$|0|10|1",
        "advise|$|0|10|9",
        "sync|$",
    )
    assert res[1] == ["0"] and res[2] == ["0"]
    assert res[3][2] == "10" and res[3][4] == "1000000000" and res[3][5] == "2000000000"
    assert res[4] == ["0"] and res[5][4] == str(ns) and res[5][5] == str(ns)
    assert res[6] == [E["INVAL"]] and res[7] == ["0"]
    assert res[8] == ["0"] and res[9][2] == "50"
    assert res[10] == ["0"] and res[11] == [E["INVAL"]] and res[12] == ["0", "0"]
    assert (ops.box / "f").stat().st_size == 50


def test_symlink_readlink_link(ops) -> None:  # type: ignore[no-untyped-def]
    (ops.box / "f").write_bytes(b"data")
    res = ops(
        "symlink|f|3|l",
        "readlink|3|l|0",
        "readlink|3|l|2",
        "readlink|3|f|0",
        "stat|3|l|0",
        "stat|3|l|1",
        f"open|3|l|0|{ALL}|0|0",  # no follow: ELOOP
        f"open|3|l|0|{ALL}|0|1",
        "read|$|4",
        "link|3|0|f|3|hard",
        "link|3|0|f|3|hard",
        "stat|3|f|0",
        "symlink|/etc/passwd|3|abs",
    )
    assert res[0] == ["0"]
    assert res[1] == ["0", "f"]
    assert res[2] == ["0", "f"]  # truncated to the buffer (1 byte target fits)
    assert res[3][0] == E["INVAL"]
    assert res[4][1] == str(int(Filetype.SYMBOLIC_LINK))
    assert res[5][1] == str(int(Filetype.REGULAR_FILE))
    assert res[6][0] == E["LOOP"]
    assert res[7][0] == "0" and res[8] == ["0", b"data".hex()]
    assert res[9] == ["0"] and res[10] == [E["EXIST"]]
    assert res[11][3] == "2"  # nlink
    assert res[12] == [E["PERM"]]
    assert os.readlink(ops.box / "l") == "f"
    assert not (ops.box / "abs").exists() and not (ops.box / "abs").is_symlink()


def _dirents(hexbuf: str) -> list[tuple[int, int, int, bytes]]:
    buf = bytes.fromhex(hexbuf)
    out = []
    while len(buf) >= 24:
        nxt, ino, namlen, typ = struct.unpack_from("<QQIB", buf)
        out.append((nxt, ino, typ, buf[24 : 24 + namlen]))
        buf = buf[24 + namlen :]
    return out


def test_readdir_cookies_dot_entries_and_truncation(ops) -> None:  # type: ignore[no-untyped-def]
    for n in ("a", "bb", "ccc"):
        (ops.box / n).write_bytes(b"")
    (ops.box / "sub").mkdir()
    res = ops("readdir|3|4096|0", "readdir|3|30|0", "readdir|3|4096|3", "readdir|3|4096|99")
    full = _dirents(res[0][1])
    names = [e[3] for e in full]
    assert sorted(names) == sorted([b".", b"..", b"a", b"bb", b"ccc", b"sub"])
    assert names[:2] == [b".", b".."]
    assert [e[0] for e in full] == list(range(1, 7))  # d_next is the cookie of the next
    by_name = {e[3]: e for e in full}
    assert by_name[b"sub"][2] == Filetype.DIRECTORY and by_name[b"a"][2] == Filetype.REGULAR_FILE
    assert by_name[b"a"][1] == (ops.box / "a").stat().st_ino
    # 30 bytes: one full entry "." (25) then 5 bytes of the next header: bufused == buf_len
    assert len(bytes.fromhex(res[1][1])) == 30
    # resuming from cookie 3 gives exactly the entries after the third
    assert [e[3] for e in _dirents(res[2][1])] == names[3:]
    assert res[3] == ["0", ""]


def test_renumber_and_set_rights(ops) -> None:  # type: ignore[no-untyped-def]
    (ops.box / "f").write_bytes(b"abc")
    res = ops(
        f"open|3|f|0|{ALL}|0|0",  # fd 4
        f"open|3|f|0|{ALL}|0|0",  # fd 5
        "renumber|4|5",
        "read|5|3",
        "read|4|3",
        "renumber|5|77",
        "setrights|5|2|0",
        "seek|5|0|0",
        "setrights|5|0x3fffffff|0",
        "read|5|3",
    )
    assert res[0] == ["0", "4"] and res[1] == ["0", "5"]
    assert res[2] == ["0"] and res[3] == ["0", b"abc".hex()]
    assert res[4][0] == E["BADF"] and res[5] == [E["BADF"]]
    assert res[6] == ["0"] and res[7][0] == E["NOTCAPABLE"]
    assert res[8] == [E["NOTCAPABLE"]]  # rights cannot grow back
    assert res[9] == ["0", ""]  # fd_read still allowed, at EOF


def test_directory_fd_refuses_file_ops(ops) -> None:  # type: ignore[no-untyped-def]
    res = ops("read|3|4", "write|3|x", "seek|3|0|0", "tell|3", "truncate|3|0", "allocate|3|0|1")
    for row in res:
        assert row[0] in (E["BADF"], E["NOTCAPABLE"], E["ISDIR"])


def test_readonly_preopen_refuses_every_write(ops) -> None:  # type: ignore[no-untyped-def]
    box: Path = ops.box
    (box / "f").write_bytes(b"keep")
    (box / "d").mkdir()
    before = sorted(p.name for p in box.iterdir())
    res = ops(
        f"open|3|f|0|{RO}|0|0",  # read works
        "read|$|4",
        "close|$",
        "readdir|3|4096|0",
        "stat|3|f|0",
        f"open|3|f|0|{ALL}|0|0",  # write right requested
        f"open|3|new|1|{RO}|0|0",  # creat
        f"open|3|f|8|{RO}|0|0",  # trunc
        f"open|3|f|0|{RO}|1|0",  # append
        "mkdir|3|x",
        "unlink|3|f",
        "rmdir|3|d",
        "rename|3|f|3|g",
        "symlink|f|3|s",
        "link|3|0|f|3|h",
        "settimes|3|f|0|0|10|0",
        f"open|3|d|2|{ALL}|0|0",  # a directory beneath stays read-only
        f"open|$|inner|1|{RO}|0|0",
        f"open|3|f|0|{RO}|0|0",
        "truncate|$|0",
        "fsettimes|$|0|0|10",
        readonly=True,
    )
    assert res[0][0] == "0" and res[1] == ["0", b"keep".hex()]
    assert res[3][0] == "0" and res[4][0] == "0"
    for row in res[5:16]:
        assert row[0] == E["ROFS"], res
    assert res[16][0] == "0" and res[17][0] == E["ROFS"]
    assert res[18][0] == "0"
    assert res[19][0] in (E["NOTCAPABLE"], E["ROFS"])
    assert res[20][0] in (E["NOTCAPABLE"], E["ROFS"])
    assert sorted(p.name for p in box.iterdir()) == before
    assert (box / "f").read_bytes() == b"keep"


def test_libc_calls_on_read_only_and_append_fds_match_linux(tmp_path: Path) -> None:
    # What CPython's test_posix does: utime/fsync/fdatasync on a read-only fd succeed,
    # ftruncate on one is EINVAL, fsync of a directory EBADF (wasmtime), and pwrite on an
    # O_APPEND fd appends, as Linux and wasmtime.
    from tests.wasi.wasirun import run_guest

    box = tmp_path / "box"
    (box / "d").mkdir(parents=True)
    (box / "f").write_bytes(b"abc")
    r = run_guest("wasi_rights.c", dirs=[(box, "/sandbox", False)])
    assert r.exit_code == 0, r.stdout
    assert dict(line.split(" ") for line in r.lines) == {
        "futimens_ro": "0",
        "fsync_ro": "0",
        "fdatasync_ro": "0",
        "ftruncate_ro": "28",  # EINVAL
        "fsync_dir": "8",  # EBADF
        "pwrite_append": "0",
    }
    assert (box / "f").stat().st_atime == 1000000  # futimens took effect (mtime: the pwrite)
    assert (box / "f").read_bytes() == b"abcXY"


def test_hard_link_out_of_a_readonly_preopen_is_erofs(tmp_path: Path) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "secret").write_bytes(b"original")
    g = Guest(
        "path_link",
        handles=[
            DirHandle.preopen(str(ro), "/ro", readonly=True),
            DirHandle.preopen(str(rw), "/rw", readonly=False),
        ],
    )
    g.write(0, b"secret")
    g.write(16, b"copy")
    assert g(0, 0, 0, 6, 1, 16, 4) == Errno.ROFS
    assert not (rw / "copy").exists()
    assert (ro / "secret").stat().st_nlink == 1
    # Linking inside the writable pre-open still works.
    (rw / "mine").write_bytes(b"m")
    g.write(0, b"mine")
    assert g(1, 0, 0, 4, 1, 16, 4) == 0
    assert (rw / "copy").read_bytes() == b"m"
