"""Encrypted pre-opens (enarx.wasi.encfs): a real C guest makes the same WASI calls against a
plain pre-open and an encrypted one and must see the same answers (errnos, sizes, data,
directory listings); the host copy of the encrypted one holds no plaintext name or byte."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest

from enarx.encdir import EncDir
from enarx.wasi.abi import Errno, Filetype
from enarx.wasi.dirhandle import DirHandle
from enarx.wasi.encfs import EncDirHandle
from tests.wasi.wasirun import run_guest

ALL = "0x3fffffff"
RO = hex((1 << 1) | (1 << 2) | (1 << 5))  # fd_read | fd_seek | fd_tell
E = {e.name: str(int(e)) for e in Errno}
KEY = bytes(range(32))
MARK = "PLAINTEXTMARKER"


def _dirents(hexbuf: str) -> list[tuple[int, int, int, bytes]]:
    buf = bytes.fromhex(hexbuf)
    out = []
    while len(buf) >= 24:
        nxt, ino, namlen, typ = struct.unpack_from("<QQIB", buf)
        out.append((nxt, ino, typ, buf[24 : 24 + namlen]))
        buf = buf[24 + namlen :]
    return out


def _normal(cmds: Sequence[str], rows: list[list[str]]) -> list[object]:
    """What must match between plain and encrypted: times, inode and device numbers and
    directory order are the host's business; a directory's nlink too."""
    out: list[object] = []
    for cmd, row in zip(cmds, rows, strict=True):
        op = cmd.split("|", 1)[0]
        if op in ("stat", "fstat") and row[0] == "0":
            ftype = row[1]
            out.append([row[0], ftype, row[2] if ftype != str(int(Filetype.DIRECTORY)) else "-",
                        row[3] if ftype != str(int(Filetype.DIRECTORY)) else "-"])
        elif op == "readdir" and row[0] == "0" and int(cmd.split("|")[2]) >= 4096:
            out.append(sorted((e[3], e[2]) for e in _dirents(row[1])))
        else:
            out.append(row)
    return out


class Boxes:
    """A plain pre-open and an encrypted one, both "/sandbox" (fd 3), fresh per test."""

    def __init__(self, tmp: Path) -> None:
        self.plain = tmp / "plain"
        self.plain.mkdir()
        self.enc = tmp / "enc"
        EncDir.create(str(self.enc), KEY).close()

    def handle(self, *, readonly: bool = False, key: bytes = KEY) -> EncDirHandle:
        encdir = EncDir.open(str(self.enc), key, readonly=readonly)
        return EncDirHandle.preopen_encdir(encdir, "/sandbox", readonly=readonly)

    def run_enc(self, *cmds: str, readonly: bool = False) -> list[list[str]]:
        r = run_guest("wasi_ops.c", cmds, extra=[self.handle(readonly=readonly)])
        assert r.exit_code == 0, r.stderr
        return r.results()

    def run_plain(self, *cmds: str, readonly: bool = False) -> list[list[str]]:
        r = run_guest("wasi_ops.c", cmds, dirs=[(self.plain, "/sandbox", readonly)])
        assert r.exit_code == 0, r.stderr
        return r.results()

    def same(self, *cmds: str, readonly: bool = False) -> list[list[str]]:
        """Run ``cmds`` on both; assert the same answers; return the encrypted run's."""
        plain = self.run_plain(*cmds, readonly=readonly)
        enc = self.run_enc(*cmds, readonly=readonly)
        for cmd, p, e in zip(cmds, _normal(cmds, plain), _normal(cmds, enc), strict=True):
            assert e == p, f"{cmd}: encrypted {e} != plain {p}"
        return enc

    def host_bytes(self) -> bytes:
        """Every name and byte the host holds for the encrypted pre-open."""
        out = b""
        for root, dirs, files in os.walk(self.enc):
            for n in dirs + files:
                out += n.encode() + b"\n"
            for n in files:
                out += Path(root, n).read_bytes()
        return out


@pytest.fixture
def boxes(tmp_path: Path) -> Boxes:
    return Boxes(tmp_path)


def test_create_write_seek_read_tell(boxes: Boxes) -> None:
    res = boxes.same(
        f"open|3|{MARK}.txt|1|{ALL}|0|0",
        f"write|$|hello world {MARK}",
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
        f"open|3|{MARK}.txt|0|{RO}|0|0",
        "read|$|100",
        "seek|$|100000|0",
        "read|$|10",
        "seek|$|-1|0",
    )
    assert res[0] == ["0", "4"]
    assert res[4] == ["0", MARK[-5:].encode().hex()]
    assert res[13] == ["0", f"HELLO world {MARK}".encode().hex()]
    assert res[15] == ["0", ""] and res[16][0] == E["INVAL"]
    host = boxes.host_bytes()
    assert MARK.encode() not in host and b"HELLO" not in host


def test_large_file_across_blocks(boxes: Boxes) -> None:
    chunk = "0123456789abcdef" * 512  # 8 KiB per write: blocks of 4 KiB and their edges
    res = boxes.same(
        f"open|3|big|1|{ALL}|0|0",
        f"write|$|{chunk}",
        f"write|$|{chunk}",
        "pwrite|$|XYZ|4094",
        "pread|$|8|4092",
        "pwrite|$|tail|20000",
        "fstat|$",
        "pread|$|8|16380",
        "truncate|$|5000",
        "pread|$|10|4995",
        "truncate|$|9000",
        "pread|$|10|4996",
    )
    assert res[4] == ["0", b"cdXYZ123".hex()]
    assert res[6][2] == "20004"
    assert res[7] == ["0", (b"cdef" + b"\0" * 4).hex()]  # data, then the hole
    assert res[9] == ["0", b"34567".hex()]  # cut at 5000
    assert res[11] == ["0", (b"4567" + b"\0" * 6).hex()]  # grown again: zeros


def test_open_flags(boxes: Boxes) -> None:
    boxes.same(
        f"open|3|f|1|{ALL}|0|0", "write|$|0123456789", "close|$",
        f"open|3|f|5|{ALL}|0|0",  # CREAT|EXCL on existing
        f"open|3|f|8|{ALL}|0|0",  # TRUNC
        "fstat|$",
        f"open|3|f|0|{ALL}|1|0",  # APPEND
        "write|$|ab",
        "pwrite|$|cd|0",  # under APPEND: at the end
        "fdstat|$",
        f"open|3|f|2|{ALL}|0|0",  # DIRECTORY on a file
        f"open|3|missing|0|{ALL}|0|0",
        f"open|3|f|0|{RO}|0|0",
        "write|$|x",
        "truncate|$|0",
        "fdstat|$",
        "read|$|10",
        f"open|3|.|0|{ALL}|0|0",  # the directory with write rights: EISDIR
        f"open|3|.|1|{ALL}|0|0",
        f"open|3|new|3|{ALL}|0|0",  # CREAT|DIRECTORY
        "open|3|.|0|0|0|0",
        "fdstat|$",
    )  # fmt: skip


def test_directories_rename_unlink_rmdir(boxes: Boxes) -> None:
    boxes.same(
        "mkdir|3|d",
        "mkdir|3|d",
        f"open|3|d/x|1|{ALL}|0|0",
        "write|$|data",
        "close|$",
        "rmdir|3|d",
        "rename|3|d/x|3|y",
        "rename|3|d|3|e",
        "stat|3|e|0",
        "stat|3|y|0",
        "unlink|3|e",
        "mkdir|3|e/sub",
        "rename|3|e|3|e/sub/in",  # a directory into itself
        "rename|3|y|3|e/sub",  # file over a directory
        "rename|3|e/sub|3|y",  # directory over a file
        f"open|3|z|1|{ALL}|0|0",
        "close|$",
        "rename|3|y|3|z",  # replaces z
        "stat|3|z|0",
        "stat|3|y|0",
        "rmdir|3|e/sub",
        "unlink|3|z",
        "rmdir|3|e",
        "stat|3|e|0",
        "unlink|3|z",
        "rmdir|3|.",
        "unlink|3|.",
        "rename|3|.|3|q",
        "mkdir|3|.",
    )


def test_trailing_slashes_dots_and_escapes(boxes: Boxes) -> None:
    boxes.same(
        f"open|3|file|1|{ALL}|0|0", "close|$", "mkdir|3|dir",
        "open|3|file/|0|0|0|0",
        "open|3|dir/|0|0|0|0",
        "unlink|3|file/",
        "unlink|3|dir/",
        "rmdir|3|file/",
        "rename|3|file|3|new/",
        "stat|3|file/|0",
        "stat|3|dir/.|0",
        "stat|3|file/..|0",
        "stat|3|dir/../file|0",
        "stat|3|..|0",
        "stat|3|dir/../../x|0",
        "stat|3|/etc/passwd|0",
        "stat|3||0",
        "mkdir|3|sub/",
        "rmdir|3|sub/",
        f"open|3|dir/../../escape|1|{ALL}|0|0",
        "open|3|dir|0|0|0|0",
        "stat|$|..|0",  # above a directory fd opened beneath: refused too
        "stat|$|.|0",
    )  # fmt: skip


def test_truncate_set_times_stat(boxes: Boxes) -> None:
    ns = 1_234_567_890_123_456_789
    res = boxes.same(
        f"open|3|f|1|{ALL}|0|0",
        "write|$|" + "x" * 100,
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
        "sync|3",
    )
    enc = boxes.run_enc(f"open|3|f|0|{ALL}|0|0", "fsettimes|$|7|8|5", "fstat|$",
                        f"settimes|3|f|{ns}|{ns}|5|0", "stat|3|f|0")
    assert res[4][2] == "10" and res[10][2] == "50"
    assert enc[2][4:6] == ["7", "8"]  # atim, mtim as set
    assert enc[4][4:6] == [str(ns), str(ns)]


def test_readdir_cookies_dot_entries_and_truncation(boxes: Boxes) -> None:
    setup = [f"open|3|{n}|1|{ALL}|0|0" for n in ("a", "bb", "ccc")] + ["mkdir|3|sub"]
    boxes.same(*setup)
    res = boxes.run_enc("readdir|3|4096|0", "readdir|3|30|0", "readdir|3|4096|3",
                        "readdir|3|4096|99", "stat|3|a|0", "open|3|sub|0|0|0|0",
                        "readdir|$|4096|0", "stat|3|.|0")
    full = _dirents(res[0][1])
    names = [e[3] for e in full]
    assert sorted(names) == sorted([b".", b"..", b"a", b"bb", b"ccc", b"sub"])
    assert names[:2] == [b".", b".."]
    assert [e[0] for e in full] == list(range(1, 7))  # d_next is the cookie of the next
    by_name = {e[3]: e for e in full}
    assert by_name[b"sub"][2] == Filetype.DIRECTORY and by_name[b"a"][2] == Filetype.REGULAR_FILE
    assert by_name[b"a"][1] == int(res[4][6])  # d_ino is the file's inode
    assert len(bytes.fromhex(res[1][1])) == 30  # a cut record fills the buffer exactly
    assert [e[3] for e in _dirents(res[2][1])] == names[3:]
    assert res[3] == ["0", ""]
    sub = _dirents(res[6][1])
    assert [e[3] for e in sub] == [b".", b".."]
    assert sub[1][1] == int(res[7][6])  # ".." of sub is the root


def test_renumber_and_set_rights(boxes: Boxes) -> None:
    boxes.same(
        f"open|3|f|1|{ALL}|0|0", "write|$|abc", "close|$",
        f"open|3|f|0|{ALL}|0|0",  # fd 4
        f"open|3|f|0|{ALL}|0|0",  # fd 5
        "renumber|4|5",
        "read|5|3",
        "read|4|3",
        "setrights|5|2|0",
        "seek|5|0|0",
        "setrights|5|0x3fffffff|0",
        "read|5|3",
        "read|3|4", "write|3|x", "seek|3|0|0", "tell|3", "truncate|3|0", "allocate|3|0|1",
    )  # fmt: skip


def test_readonly_preopen_refuses_every_write(boxes: Boxes) -> None:
    boxes.same(f"open|3|f|1|{ALL}|0|0", "write|$|keep", "close|$", "mkdir|3|d")
    before = boxes.host_bytes()
    boxes.same(
        f"open|3|f|0|{RO}|0|0",
        "read|$|4",
        "close|$",
        "stat|3|f|0",
        f"open|3|f|0|{ALL}|0|0",  # write right requested
        f"open|3|new|1|{RO}|0|0",  # creat
        f"open|3|f|8|{RO}|0|0",  # trunc
        f"open|3|f|0|{RO}|1|0",  # append
        "mkdir|3|x",
        "unlink|3|f",
        "rmdir|3|d",
        "rename|3|f|3|g",
        "settimes|3|f|0|0|10|0",
        f"open|3|f|0|{RO}|0|0",
        "fsettimes|$|0|0|10",
        "truncate|$|0",
        "open|3|d|0|0|0|0",
        "mkdir|$|inner",
        readonly=True,
    )
    assert boxes.host_bytes() == before  # nothing changed on the host


def test_links_in_an_encrypted_tree_but_no_moves_or_links_out_of_it(tmp_path: Path,
                                                                    boxes: Boxes) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_bytes(b"x")
    plain = DirHandle.preopen(str(other), "/other")
    r = run_guest("wasi_ops.c", [
        f"open|3|f|1|{ALL}|0|0", "close|$",
        "symlink|f|3|l", "link|3|0|f|3|hard", "readlink|3|f|0",
        "rename|3|f|4|moved", "rename|4|x|3|f", "link|3|0|f|4|hard", "link|4|0|x|3|y",
        "stat|3|f|0",
    ], extra=[boxes.handle(), plain])  # fmt: skip
    assert r.exit_code == 0, r.stderr
    res = r.results()
    assert res[2] == ["0"] and res[3] == ["0"] and res[4][0] == E["INVAL"]
    # a plain pre-open as fd 4: moving or linking across is EXDEV, and nothing moved
    assert [row[0] for row in res[5:9]] == [E["XDEV"]] * 4
    assert res[9][0] == "0" and sorted(p.name for p in other.iterdir()) == ["x"]


def test_wrong_key_is_refused_when_opening(boxes: Boxes) -> None:
    from enarx.encdir.errors import EncDirKeyError

    with pytest.raises(EncDirKeyError):
        boxes.handle(key=bytes(32))


def test_authentication_failure_is_eio_never_wrong_data(boxes: Boxes) -> None:
    boxes.run_enc(f"open|3|f|1|{ALL}|0|0", "write|$|" + "A" * 150000)  # 3 blocks
    files = [Path(root, n) for root, _, names in os.walk(boxes.enc) for n in names
             if not n.startswith(".")]
    assert len(files) == 1
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 1  # a bit in the middle: some block's ciphertext
    files[0].write_bytes(bytes(data))
    res = boxes.run_enc(f"open|3|f|0|{RO}|0|0", *(f"pread|$|1000|{off}" for off in
                                                range(0, 150000, 10000)))
    assert res[0][0] == "0"  # the header is intact: the file opens
    good = ("A" * 1000).encode().hex()
    assert all(r in (["0", good], [E["IO"], ""]) for r in res[1:]), res  # data or EIO, never wrong
    assert [E["IO"], ""] in res[1:] and ["0", good] in res[1:]


def test_names_that_look_like_metadata_are_ordinary_files(boxes: Boxes) -> None:
    names = (".enarxdir", ".diriv", "x.j", ".x.tmp", "...", "a b\tc", "ünïcødé")
    cmds = [c for n in names for c in (f"open|3|{n}|1|{ALL}|0|0", f"write|$|{n}!", "close|$")]
    boxes.same(*cmds, "readdir|3|4096|0", *(f"stat|3|{n}|0" for n in names))
    res = boxes.run_enc(*(f"open|3|{n}|0|{RO}|0|0" for n in names),
                        *(f"read|{4 + i}|100" for i in range(len(names))))
    assert [r[1] for r in res[len(names):]] == [f"{n}!".encode().hex() for n in names]
    # the directory still opens with its key: its own metadata was not overwritten
    assert boxes.run_enc("stat|3|.enarxdir|0")[0][0] == "0"


def test_longest_name(boxes: Boxes) -> None:
    from enarx.encdir import MAX_NAME

    ok, long = "n" * MAX_NAME, "n" * (MAX_NAME + 1)
    res = boxes.run_enc(f"open|3|{ok}|1|{ALL}|0|0", f"open|3|{long}|1|{ALL}|0|0",
                        f"mkdir|3|{long}", f"stat|3|{long}|0", f"stat|3|{'n' * 300}|0")
    assert res[0][0] == "0"
    assert [r[0] for r in res[1:]] == [E["NAMETOOLONG"]] * 4


def test_links_answer_a_plain_preopens_errors(boxes: Boxes) -> None:
    """path_symlink/path_link fail as on a plain pre-open (EEXIST, ENOENT, ENOTDIR, EPERM),
    and then succeed as there."""
    setup = (f"open|3|file|1|{ALL}|0|0", "close|$", "mkdir|3|dir")
    checks = ("symlink|source|3|target/", "symlink|source|3|dir/", "symlink|source|3|dir",
              "symlink|source|3|file/", "symlink|source|3|file", "symlink|source|3|no/x",
              "symlink|source|3|file/x", "symlink|/etc/passwd|3|abs",
              "link|3|0|file|3|dir", "link|3|0|dir|3|new", "link|3|0|missing|3|new",
              "link|3|0|file/|3|new", "link|3|0|file|3|no/x",
              "open|3|dir|0|0|0|0", "symlink|source|$|x/y", "symlink|source|$|../up",
              "link|3|0|file|$|x/y")
    boxes.same(*setup, *checks)
    res = boxes.same("link|3|0|file|3|new", "stat|3|new|0", "open|3|dir|0|0|0|0",
                     "link|3|0|file|$|new", "symlink|source|3|new2", "readlink|3|new2|0",
                     "stat|3|file|0")
    assert [r[0] for r in res] == ["0"] * 7
    assert res[5][1] == "source"  # also from a directory fd beneath
    assert res[6][3] == "3"  # file, new and dir/new: one file, three names


def test_hard_links_behave_as_on_a_plain_preopen(boxes: Boxes) -> None:
    """One file, several names (in several directories): the same data through each, the
    same nlink, the same inode; unlink and rename of one name leave the others; a link to a
    symlink; and the host sees neither the names nor the data."""
    data = (MARK * 9000).encode()  # several blocks
    cmds = (f"open|3|a|1|{ALL}|0|0", f"write|$|{MARK * 9000}", "close|$", "mkdir|3|d",
            "link|3|0|a|3|d/b", "link|3|0|d/b|3|c", "stat|3|a|0", "stat|3|d/b|0",
            f"open|3|d/b|0|{ALL}|0|0", "pwrite|$|CHANGED|70000", "fstat|$",
            f"open|3|c|0|{RO}|0|0", "pread|$|7|70000", "fstat|$",
            "unlink|3|a", "stat|3|c|0", "stat|3|a|0", "rename|3|d/b|3|e", "stat|3|e|0",
            "rename|3|c|3|e", "stat|3|c|0", "readdir|3|4096|0", "unlink|3|c",
            "pread|5|7|70000", "stat|3|e|0",
            "symlink|e|3|l", "link|3|0|l|3|l2", "readlink|3|l2|0", "unlink|3|l", "stat|3|l2|0",
            "link|3|0|d|3|dl", "link|3|0|e|3|e", "link|3|0|e|3|d/", "rmdir|3|d",
            f"open|3|e|0|{RO}|0|0", f"read|$|{len(data)}")
    res = boxes.same(*cmds)
    assert res[12] == ["0", b"CHANGED".hex()]  # a write through one name, read via another
    assert res[23] == ["0", b"CHANGED".hex()]  # still open after its last name but one went
    assert [res[i][3] for i in (6, 7, 10, 15, 18, 20, 24)] == list("3332221")
    assert res[6][6] == res[7][6]  # one inode
    assert res[-1][1] == (data[:70000] + b"CHANGED" + data[70007:]).hex()
    host = boxes.host_bytes()
    assert MARK.encode() not in host and b"CHANGED" not in host


def test_symlinks_behave_as_on_a_plain_preopen(boxes: Boxes) -> None:
    """Creation, readlink, following (or not) in every path call, loops, dangling links,
    escapes (at creation and when followed from a directory fd beneath), rename, unlink:
    the same answers as a plain pre-open (whose links the kernel stores)."""
    res = boxes.same(
        f"open|3|file|1|{ALL}|0|0", "write|$|hello", "close|$", "mkdir|3|dir",
        f"open|3|dir/inner|1|{ALL}|0|0", "close|$",
        "symlink|file|3|lf", "symlink|dir|3|ld", "symlink|missing|3|dangling",
        "symlink|lf|3|chain", "symlink|loop1|3|loop2", "symlink|loop2|3|loop1",
        "symlink|../file|3|dir/up", "symlink|dir/|3|ldslash",
        "symlink|../escape|3|esc", "symlink|dir/../../x|3|esc2", "symlink|/etc|3|abs",
        "symlink|file|3|lf",
        "readlink|3|lf|0", "readlink|3|file|0", "readlink|3|ld/|0", "readlink|3|lf|2",
        "readlink|3|missing|0", "readlink|3|ld/inner|0",
        "stat|3|lf|0", "stat|3|lf|1", "stat|3|chain|1", "stat|3|chain|0",
        "stat|3|dangling|1", "stat|3|dangling|0", "stat|3|loop1|1", "stat|3|loop1|0",
        "stat|3|ld/inner|0", "stat|3|dir/up|1", "stat|3|ld/|0", "stat|3|ld|1", "stat|3|lf/|0",
        "stat|3|ldslash|1", "stat|3|loop1/x|0", "stat|3|ld/../file|0",
        f"open|3|lf|0|{RO}|0|1", "read|$|100", "close|$",
        f"open|3|lf|0|{RO}|0|0", "open|3|ld|2|0|0|0", "open|3|ld|2|0|0|1", "close|$",
        f"open|3|loop1|0|{RO}|0|1", f"open|3|chain|0|{ALL}|0|1", "write|$|HE", "close|$",
        f"open|3|lf|5|{ALL}|0|1", f"open|3|lf|5|{ALL}|0|0", f"open|3|lf|1|{ALL}|0|0",
        f"open|3|dangling|1|{ALL}|0|1", "write|$|made", "close|$", "stat|3|missing|0",
        "open|3|dir|0|0|0|0", "stat|$|up|1", "stat|$|up|0", "symlink|../file|$|x",
        "symlink|../dir/inner|$|x", "close|$",
        "readdir|3|4096|0",
        "rename|3|lf|3|lf2", "readlink|3|lf2|0", "stat|3|lf|0",
        "rename|3|lf2|3|dir/lf3", "readlink|3|dir/lf3|0", "stat|3|dir/lf3|1",
        "rename|3|ld|3|chain", "stat|3|chain/inner|0",
        "rmdir|3|chain", "unlink|3|chain/", "unlink|3|chain", "stat|3|chain|0",
        "stat|3|dir/inner|0", "unlink|3|dangling", "stat|3|missing|0",
        "settimes|3|loop1|0|0|10|0", "settimes|3|dangling|0|0|10|1",
        "readdir|3|4096|0",
    )
    ftype = {k: str(int(v)) for k, v in (("file", Filetype.REGULAR_FILE),
                                         ("link", Filetype.SYMBOLIC_LINK))}
    assert [r[0] for r in res[14:18]] == [E["PERM"]] * 3 + [E["EXIST"]]  # escapes, twice
    assert res[18] == ["0", "file"] and res[21] == ["0", "fi"]  # readlink, truncated
    assert res[24][1:3] == [ftype["link"], "4"] and res[25][1:3] == [ftype["file"], "5"]
    assert res[30][0] == E["LOOP"] and res[31][1] == ftype["link"]
    assert res[41] == ["0", b"hello".hex()]  # read through the link
    assert res[43][0] == E["LOOP"] and res[44][0] == E["NOTDIR"]  # nofollow
    assert [r[0] for r in (res[59], res[61], res[62])] == [E["PERM"]] * 3  # from dir/
    host = boxes.host_bytes()
    for secret in (b"../file", b"missing", b"loop1", b"dangling"):
        assert secret not in host  # targets and names are ciphertext on the host


def test_a_damaged_file_is_listed_and_removable_but_never_read(boxes: Boxes) -> None:
    boxes.run_enc(f"open|3|bad|1|{ALL}|0|0", "write|$|" + "B" * 100, "close|$",
                  f"open|3|good|1|{ALL}|0|0", "write|$|fine", "close|$")
    files = sorted((p for p in boxes.enc.iterdir() if not p.name.startswith(".")),
                   key=lambda p: p.stat().st_size)
    big = files[-1]  # "bad" holds 100 bytes, "good" 4
    big.write_bytes(big.read_bytes()[:-1] + bytes([big.read_bytes()[-1] ^ 1]))  # its trailer
    res = boxes.run_enc("readdir|3|4096|0", f"open|3|bad|0|{RO}|0|0", "stat|3|bad|0",
                        f"open|3|good|0|{RO}|0|0", "read|$|10", "unlink|3|bad",
                        "readdir|3|4096|0")
    assert res[0][0] == "0"
    assert sorted(e[3] for e in _dirents(res[0][1])) == [b".", b"..", b"bad", b"good"]
    assert res[1][0] == E["IO"] and res[2][0] == E["IO"]
    assert res[4] == ["0", b"fine".hex()] and res[5] == ["0"]
    assert sorted(e[3] for e in _dirents(res[6][1])) == [b".", b"..", b"good"]


def test_the_tree_closes_with_its_last_fd(boxes: Boxes) -> None:
    """Closing the pre-open while a file beneath is open keeps the tree usable; the end of
    the run (every fd closed) closes it: its lock is dropped and what was written is there,
    even while this process still holds the EncDir object."""
    encdir = EncDir.open(str(boxes.enc), KEY)
    h = EncDirHandle.preopen_encdir(encdir, "/sandbox", readonly=False)
    r = run_guest("wasi_ops.c", [f"open|3|f|1|{ALL}|0|0", "close|3", "write|4|still-open",
                                 "open|3|g|1|0|0|0"], extra=[h])
    assert r.results() == [["0", "4"], ["0"], ["0", "10"], [E["BADF"], "0"]]
    again = EncDir.open(str(boxes.enc), KEY)  # not refused: the writer's lock is gone
    with again.open_file(("f",)) as f:
        assert f.pread(100, 0) == b"still-open"
    again.close()
    assert encdir is not None
