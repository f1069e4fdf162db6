"""The sandbox boundary, attacked: nothing outside a pre-open may be read, created or changed.

Layout per test: tmp/outside/secret (must stay untouched and unread) and tmp/sandbox
(pre-opened as fd 3), with hostile symlinks planted from the host side.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import pytest

from enarx.wasi.abi import Errno, WasiError
from enarx.wasi.fdtable import StdioHandle
from enarx.wasi.resolve import resolve
from tests.wasi.wasirun import run_guest

ALL = "0x3fffffff"
E = {e.name: str(int(e)) for e in Errno}
SECRET = b"TOP-SECRET-OUTSIDE"


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_bytes(SECRET)
    box = tmp_path / "sandbox"
    box.mkdir()
    (box / "sub").mkdir()
    (box / "inside").write_bytes(b"in")
    os.symlink(str(out), box / "abs_dir")  # absolute target
    os.symlink(str(out / "secret"), box / "abs_file")
    os.symlink("../outside/secret", box / "rel_file")  # relative, leaves the dir
    os.symlink("../../outside", box / "sub" / "rel_dir")
    os.symlink("chain2", box / "chain1")  # chain ending outside
    os.symlink("sub/../../outside/secret", box / "chain2")
    os.symlink("loop_b", box / "loop_a")
    os.symlink("loop_a", box / "loop_b")
    os.symlink("self", box / "self")
    os.symlink("sub/..", box / "ok_dir")  # stays inside: allowed
    os.symlink("../inside", box / "sub" / "ok_up")
    return box, out


def _snapshot(p: Path) -> dict[str, bytes | str]:
    snap: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(p):
        for n in dirs + files:
            q = Path(root) / n
            snap[str(q)] = q.read_bytes() if q.is_file() else "dir"
    return snap


def _ops(box: Path, *cmds: str) -> list[list[str]]:
    return run_guest("wasi_ops.c", cmds, dirs=[(box, "/sandbox", False)]).results()


ESCAPES = [
    "../outside/secret",
    "../../../../../../etc/passwd",
    "sub/../../outside/secret",
    "/etc/passwd",
    "/sandbox/inside",
    "abs_dir/secret",
    "abs_file",
    "rel_file",
    "sub/rel_dir/secret",
    "chain1",
    "ok_dir/../outside/secret",
]


def test_escapes_by_open_are_refused(world: tuple[Path, Path]) -> None:
    box, out = world
    before = _snapshot(out.parent)
    cmds = []
    for p in ESCAPES:
        cmds += [f"open|3|{p}|0|{ALL}|0|1", "read|$|64", f"open|3|{p}|1|{ALL}|0|1"]
    res = _ops(box, *cmds)
    for i, p in enumerate(ESCAPES):
        opened, _read, created = res[3 * i : 3 * i + 3]
        assert opened[0] == E["PERM"], (p, opened)
        assert created[0] == E["PERM"], (p, created)
    assert SECRET.hex() not in str(res)
    assert _snapshot(out.parent) == before


def test_escapes_by_every_path_call_are_refused(world: tuple[Path, Path]) -> None:
    box, out = world
    before = _snapshot(out.parent)
    targets = ["../outside/x", "abs_dir/x", "sub/rel_dir/x", "/x", "../outside/secret",
               "sub/rel_dir/secret"]  # fmt: skip
    cmds = []
    for t in targets:
        cmds += [
            f"mkdir|3|{t}",
            f"rmdir|3|{t}",
            f"unlink|3|{t}",
            f"rename|3|inside|3|{t}",
            f"rename|3|{t}|3|stolen",
            f"symlink|inside|3|{t}",
            f"link|3|0|inside|3|{t}",
            f"link|3|1|{t}|3|stolen",
            f"stat|3|{t}|1",
            f"settimes|3|{t}|0|0|10|1",
            f"readlink|3|{t}|0",
        ]
    res = _ops(box, *cmds)
    for cmd, row in zip(cmds, res, strict=True):
        assert row[0] == E["PERM"], (cmd, row)
    assert _snapshot(out.parent) == before
    assert not (box / "stolen").exists()


def test_symlink_following_is_confined_but_works_inside(world: tuple[Path, Path]) -> None:
    box, _ = world
    res = _ops(
        box,
        "stat|3|abs_file|1",  # following an absolute link: escape
        "stat|3|abs_file|0",  # the link itself is fine to look at
        "stat|3|rel_file|1",
        "stat|3|loop_a|1",
        "stat|3|self|1",
        f"open|3|loop_a|0|{ALL}|0|1",
        f"open|3|ok_dir/inside|0|{ALL}|0|1",
        "read|$|2",
        f"open|3|sub/ok_up|0|{ALL}|0|1",
        "read|$|2",
        "readlink|3|abs_dir|0",
    )
    assert res[0][0] == E["PERM"]
    assert res[1][0] == "0" and res[1][1] == "7"
    assert res[2][0] == E["PERM"]
    assert res[3][0] == E["LOOP"] and res[4][0] == E["LOOP"] and res[5][0] == E["LOOP"]
    assert res[6][0] == "0" and res[7] == ["0", b"in".hex()]
    assert res[8][0] == "0" and res[9] == ["0", b"in".hex()]
    assert res[10][0] == "0"  # readlink reveals only the string the host planted


def test_guest_made_symlinks_cannot_be_followed_out(world: tuple[Path, Path]) -> None:
    box, out = world
    before = _snapshot(out)
    res = _ops(
        box,
        "symlink|../outside|3|esc",
        "symlink|sub/../..|3|esc2",
        f"open|3|esc/secret|0|{ALL}|0|1",
        f"open|3|esc2/outside/secret|0|{ALL}|0|1",
        "mkdir|3|esc/new",
        f"open|3|esc|2|{ALL}|0|1",
    )
    # Creating them is refused: host tools would follow them out of the pre-open.
    assert res[0] == [E["PERM"]] and res[1] == [E["PERM"]]
    assert not (box / "esc").is_symlink() and not (box / "esc2").is_symlink()
    assert [r[0] for r in res[2:]] == [E["NOENT"]] * 4
    assert _snapshot(out) == before


def test_forged_and_non_directory_fds(world: tuple[Path, Path]) -> None:
    box, _ = world
    cmds = [f"open|{fd}|inside|0|{ALL}|0|0" for fd in range(4, 1001)]
    cmds += [f"open|{fd}|inside|0|{ALL}|0|0" for fd in (0, 1, 2, 0xFFFFFFFF)]
    cmds += [f"mkdir|{fd}|x" for fd in (0, 1, 2, 4, 999)]
    cmds += [
        f"open|3|inside|0|{ALL}|0|0",  # fd 4: a file as the dir fd
        "open|4|x|1|0|0|0",
        "renumber|2|3",  # stderr now sits at the pre-open's number
        f"open|3|inside|0|{ALL}|0|0",
        "prestat|3",
    ]
    res = _ops(box, *cmds)
    for row in res[:997]:
        assert row[0] == E["BADF"], row
    assert [r[0] for r in res[997:1001]] == [E["NOTDIR"]] * 3 + [E["BADF"]]
    assert [r[0] for r in res[1001:1006]] == [E["NOTDIR"]] * 3 + [E["BADF"]] * 2
    assert res[1006][0] == "0"
    assert res[1007][0] == E["NOTDIR"]
    assert res[1009][0] == E["NOTDIR"] and res[1010] == [E["BADF"]]
    planted = "sub inside abs_dir abs_file rel_file chain1 chain2 loop_a loop_b self ok_dir"
    assert sorted(p.name for p in box.iterdir()) == sorted(planted.split())


def test_libc_paths_with_root_preopen(tmp_path: Path) -> None:
    """With the pre-open mapped at "/", libc turns absolute paths into ones relative to
    it; '..' still cannot climb out, and nothing is created outside."""
    box = tmp_path / "box"
    box.mkdir()
    (box / "etc").mkdir()
    (box / "etc" / "passwd").write_bytes(b"sandboxed passwd")
    (tmp_path / "real").write_bytes(SECRET)
    r = run_guest(
        "wasi_escape.c",
        ["/etc/passwd", "/../real", "../real", "/etc/../../real", "/proc/self/environ"],
        dirs=[(box, "/", False)],
    )
    lines = r.lines
    assert lines[0] == "/etc/passwd ok 16 sandboxed passwd"
    for line in lines[1:5]:
        assert " err " in line, line
    assert SECRET.decode() not in r.stdout.decode()
    assert lines[5].startswith("create ") and lines[5] != "create ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "real"]


def test_directory_swapped_for_symlink_race_never_escapes(world: tuple[Path, Path]) -> None:
    """A host thread keeps swapping sandbox/d between a real directory and a symlink to
    the outside while we resolve and open d/secret: only the inside copy may ever be read."""
    box, out = world
    (box / "d").mkdir()
    (box / "d" / "secret").write_bytes(b"inside copy")
    os.symlink(str(out), box / "d_link")
    stop = threading.Event()

    def swapper() -> None:
        while not stop.is_set():
            os.rename(box / "d", box / "d_dir")
            os.rename(box / "d_link", box / "d")
            os.rename(box / "d", box / "d_link")
            os.rename(box / "d_dir", box / "d")

    root = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    t = threading.Thread(target=swapper)
    t.start()
    seen: set[bytes] = set()
    try:
        for i in range(3000):
            try:
                with resolve(root, b"d/secret", follow=bool(i & 1)) as r:
                    fd = os.open(r.name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=r.dirfd)
                    try:
                        seen.add(os.read(fd, 64))
                    finally:
                        os.close(fd)
            except (WasiError, FileNotFoundError):
                seen.add(b"<refused>")
    finally:
        stop.set()
        t.join()
        os.close(root)
    assert SECRET not in seen
    assert seen <= {b"inside copy", b"<refused>"}


def test_stdio_handle_is_never_a_directory(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        # Even a StdioHandle that wraps a host *directory* fd grants no path access.
        r = run_guest("wasi_ops.c", [f"open|3|x|1|{ALL}|0|0", "mkdir|3|y"],
                      extra=[StdioHandle(fd)])  # fmt: skip
    finally:
        os.close(fd)
    assert r.results() == [[E["NOTDIR"], "0"], [E["NOTDIR"]]]
    assert list(tmp_path.iterdir()) == []


def test_symlinks_that_climb_out_of_the_preopen_are_not_created(
    world: tuple[Path, Path],
) -> None:
    box, _ = world
    res = _ops(
        box,
        "symlink|../../../../etc/passwd|3|planted",
        "symlink|../inside|3|sub/up_out",  # sub/.. is the root; root/.. is outside
        "symlink|sub/../../outside|3|dotdot",
        "symlink|../inside|3|sub/ok",  # sub/../inside stays inside: allowed
        "symlink|sub/./../inside|3|ok2",
        "symlink|x/y/../../../outside|3|deep",
    )
    assert [r[0] for r in res] == [E["PERM"], "0", E["PERM"], "0", "0", E["PERM"]]
    assert not (box / "planted").is_symlink() and not (box / "dotdot").is_symlink()
    assert not (box / "deep").is_symlink()
    assert (box / "sub" / "ok").read_bytes() == b"in" and (box / "ok2").read_bytes() == b"in"
    assert (box / "sub" / "up_out").read_bytes() == b"in"


def test_dotdot_of_a_directory_opened_as_dot_hides_the_host_parent(
    world: tuple[Path, Path],
) -> None:
    box, _ = world
    rights = hex((1 << 13) | (1 << 14))  # path_open | fd_readdir
    res = _ops(box, f"open|3|.|2|{rights}|0|0", "readdir|$|4096|0",
               f"open|3|sub|2|{rights}|0|0", "readdir|$|4096|0")  # fmt: skip
    assert res[0][0] == "0" and res[2][0] == "0", res
    root = _dirents(res[1][1])
    assert root[0][3] == b"." and root[1][3] == b".."
    assert root[1][1] == root[0][1] == box.stat().st_ino  # not the host parent's inode
    assert root[1][1] != box.parent.stat().st_ino
    sub = _dirents(res[3][1])
    assert sub[1][3] == b".." and sub[1][1] == box.stat().st_ino  # inside: the real parent


def _dirents(hexbuf: str) -> list[tuple[int, int, int, bytes]]:
    buf = bytes.fromhex(hexbuf)
    out = []
    while len(buf) >= 24:
        nxt, ino, namlen, typ = struct.unpack_from("<QQIB", buf)
        out.append((nxt, ino, typ, buf[24 : 24 + namlen]))
        buf = buf[24 + namlen :]
    return out


def test_a_symlink_cannot_be_moved_to_where_it_would_climb_out(
    world: tuple[Path, Path],
) -> None:
    box, _ = world
    (box / "sub" / "deeper").mkdir()
    res = _ops(
        box,
        "symlink|../../inside|3|sub/deeper/l",  # from sub/deeper: the root's "inside"
        "rename|3|sub/deeper/l|3|moved",  # from the root it would name tmp/inside
        "link|3|0|sub/deeper/l|3|hard",
        "rename|3|sub/deeper/l|3|sub/deeper/same",  # same depth: fine
    )
    assert [r[0] for r in res] == ["0", E["PERM"], E["PERM"], "0"]
    assert not (box / "moved").is_symlink() and not (box / "hard").is_symlink()
    assert (box / "sub" / "deeper" / "same").read_bytes() == b"in"
