"""The host tampers with an encrypted directory's files; the guest gets EIO, never wrong data.

Every case of issue 12 point 2 (a tampered, truncated, reordered, swapped-between-files or
rolled-back block, and tampered file metadata), names moved or altered, forged journals,
each checked through `enarx run` with the encdir_io guest; plus the host-side scan (no
plaintext in any file or name) and the key checks that happen before the workload starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enarx.encdir import fileformat
from tests.cliutil import RunEnarx
from tests.encdir.encutil import BLOCK, EIO, EncBox, new_key, record


@pytest.fixture
def box(enarx: RunEnarx, tmp_path: Path) -> EncBox:
    return EncBox(enarx, tmp_path)


class Two:
    """/data/a: 4 blocks of tag 1 (gen 1); /data/b: 2 blocks of tag 2; their host files.

    Where a block lies comes from the format module (docs/encrypted-dirs.md, "Format")."""

    def __init__(self, box: EncBox) -> None:
        assert box.ok("fill", "/data/a", "1", "4", "1") == ["ok"]
        assert box.ok("fill", "/data/b", "2", "2", "1") == ["ok"]
        files = box.data_files()
        assert len(files) == 2
        self.a, self.b = sorted(files, key=lambda p: -p.stat().st_size)
        self.box = box

    def block(self, i: int) -> tuple[int, int]:
        """(offset, length) of sealed block i in a host file."""
        return fileformat.block_offset(i), fileformat.BLOCK + fileformat.BLOCK_OVERHEAD

    def metadata(self) -> list[int]:
        """Offsets of a's bytes outside its blocks: the prefix (magic, file id) and the
        trailer (wrapped key, length, counter, block versions)."""
        end = self.block(4)[0]
        assert self.a.stat().st_size > end  # the trailer
        return [*range(fileformat.PREFIX_SIZE), *range(end, self.a.stat().st_size)]

    def check_a(self) -> list[str]:
        return self.box.ok("check", "/data/a")


@pytest.fixture
def two(box: EncBox) -> Two:
    return Two(box)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _blocks(lines: list[str]) -> dict[int, list[str]]:
    assert lines[0].startswith("open 0 "), lines
    return {int(line.split()[0][1:]): line.split()[1:] for line in lines[1:]}


def test_untouched_files_read_back(two: Two) -> None:
    assert two.check_a() == [f"open 0 {4 * BLOCK}"] + [f"b{i} 0 1 {i} 1" for i in range(4)]
    assert two.box.ok("check", "/data/b") == [f"open 0 {2 * BLOCK}", "b0 0 2 0 1", "b1 0 2 1 1"]


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_bit_in_a_block_is_eio(two: Two, where: str) -> None:
    off, n = two.block(2)
    _flip(two.a, off + {"start": 0, "middle": n // 2, "end": n - 1}[where])
    blocks = _blocks(two.check_a())
    assert blocks[2] == [str(EIO)]
    assert blocks[1] == ["0", "1", "1", "1"]  # other blocks are unaffected


def test_flipped_bit_in_the_metadata_is_eio(two: Two) -> None:
    offsets = two.metadata()
    saved = two.a.read_bytes()
    for off in [*offsets[::max(1, len(offsets) // 12)], offsets[-1]]:
        _flip(two.a, off)
        lines = two.check_a()
        # refused at open, or every block refused: never data
        assert lines == [f"open {EIO}"] or all(
            v == [str(EIO)] for v in _blocks(lines).values()), (off, lines)
        two.a.write_bytes(saved)
    assert two.check_a()[1] == "b0 0 1 0 1"


@pytest.mark.parametrize(
    "cut", ["last block", "mid block", "into the prefix", "empty", "the trailer's end"])
def test_truncated_file_is_eio(two: Two, cut: str) -> None:
    size = {"last block": two.block(3)[0], "mid block": two.block(3)[0] + 2000,
            "into the prefix": fileformat.PREFIX_SIZE // 2, "empty": 0,
            "the trailer's end": two.a.stat().st_size - 1}[cut]
    os.truncate(two.a, size)
    lines = two.check_a()
    if lines == [f"open {EIO}"]:
        return
    blocks = _blocks(lines)
    assert blocks.get(3) == [str(EIO)], lines  # the guest's size still says 4 blocks
    assert all(v == [str(EIO)] or v == ["0", "1", str(i), "1"] for i, v in blocks.items())


def test_reordered_blocks_are_eio(two: Two) -> None:
    data = bytearray(two.a.read_bytes())
    (o1, n), (o2, _) = two.block(1), two.block(2)
    data[o1:o1 + n], data[o2:o2 + n] = data[o2:o2 + n], data[o1:o1 + n]
    two.a.write_bytes(bytes(data))
    blocks = _blocks(two.check_a())
    assert blocks[1] == [str(EIO)] and blocks[2] == [str(EIO)]
    assert blocks[0] == ["0", "1", "0", "1"]


def test_block_swapped_in_from_another_file_is_eio(two: Two) -> None:
    off, n = two.block(1)
    data = bytearray(two.a.read_bytes())
    data[off:off + n] = two.b.read_bytes()[off:off + n]  # b's block 1, same index
    two.a.write_bytes(bytes(data))
    blocks = _blocks(two.check_a())
    assert blocks[1] == [str(EIO)]


def test_rolled_back_block_is_eio(two: Two) -> None:
    old = two.a.read_bytes()
    assert two.box.ok("pwrite", "/data/a", "1", "1", "2") == ["ok"]
    assert _blocks(two.check_a())[1] == ["0", "1", "1", "2"]
    off, n = two.block(1)
    assert two.a.stat().st_size == len(old)
    data = bytearray(two.a.read_bytes())
    assert data[off:off + n] != old[off:off + n]  # the write really re-sealed block 1
    data[off:off + n] = old[off:off + n]  # ...and the host puts the old one back
    two.a.write_bytes(bytes(data))
    blocks = _blocks(two.check_a())
    assert blocks[1] == [str(EIO)]


def test_host_sees_no_plaintext_in_any_file_or_name(box: EncBox) -> None:
    marker = "PlainMarker"
    assert box.ok("mkdir", f"/data/{marker}-dir") == ["mkdir 0"]
    assert box.ok("fill", f"/data/{marker}-dir/{marker}-file", "3", "3", "7") == ["ok"]
    assert box.ok("fill", f"/data/{marker}-top", "4", "1", "7") == ["ok"]
    # the files are there for the guest
    assert box.ok("check", f"/data/{marker}-dir/{marker}-file")[0] == f"open 0 {3 * BLOCK}"
    needles = [marker.encode(), marker.lower().encode(), record(3, 0, 7), record(4, 0, 7),
               record(3, 0, 7)[:8]]
    seen = 0
    for dirpath, dirs, files in os.walk(box.host):
        for name in dirs + files:
            assert marker.lower() not in name.lower(), name
            assert "-dir" not in name and "-file" not in name and "-top" not in name, name
        for f in files:
            data = (Path(dirpath) / f).read_bytes()
            seen += len(data)
            for needle in needles:
                assert needle not in data, (f, needle)
    assert seen > 4 * BLOCK  # the ciphertext is on the host


def test_wrong_key_is_refused_before_the_workload_starts(box: EncBox, tmp_path: Path) -> None:
    assert box.ok("fill", "/data/a", "1", "1", "1") == ["ok"]
    before = {p: p.read_bytes() for p in box.data_files()}
    rc, out, err = box.run("fill", "/data/a", "9", "1", "9", key=new_key(tmp_path / "other"))
    assert rc == 2, err
    assert out == []  # the guest never ran
    assert "error:" in err and "hint:" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in box.data_files()} == before


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_key_file_of_the_wrong_size_is_refused(box: EncBox, tmp_path: Path, size: int) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(os.urandom(size))
    rc, out, err = box.run("check", "/data/a", key=bad)
    assert rc == 2 and out == [] and "32" in err and "hint:" in err, err


def test_tampered_key_check_is_refused_before_the_workload_starts(box: EncBox) -> None:
    meta = box.host / ".enarxdir"
    assert meta.is_file()
    data = meta.read_bytes()
    for off in sorted({0, len(data) // 3, len(data) // 2, len(data) - 2}):
        _flip(meta, off)
        rc, out, err = box.run("check", "/data/a")
        assert rc != 0 and out == [] and "error:" in err and "Traceback" not in err, (off, err)
        meta.write_bytes(data)
    assert box.ok("check", "/data/a") == ["open 44"]  # ENOENT: the directory opens again


def _host_entry(box: EncBox, parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if "." not in p.name)


def test_names_moved_or_altered_by_the_host_are_eio(box: EncBox) -> None:
    for d in ("d1", "d2"):
        assert box.ok("mkdir", f"/data/{d}") == ["mkdir 0"]
    assert box.ok("fill", "/data/d1/x", "1", "1", "1") == ["ok"]
    assert box.ok("fill", "/data/d1/y", "1", "1", "1") == ["ok"]
    assert box.ok("ls", "/data/d1") in (["ls 0", "x", "y"], ["ls 0", "y", "x"])
    dirs = _host_entry(box, box.host)
    assert len(dirs) == 2 and all(p.is_dir() for p in dirs)
    h1 = next(p for p in dirs if len(_host_entry(box, p)) == 2)
    h2 = next(p for p in dirs if p != h1)
    # move one file's host entry into the other directory: its name does not decrypt there
    moved = _host_entry(box, h1)[0]
    moved.rename(h2 / moved.name)
    assert box.ok("ls", "/data/d2") == [f"ls {EIO}"]
    assert box.ok("ls", "/data/d1")[0] == "ls 0"  # the rest is intact
    (h2 / moved.name).rename(moved)
    # alter a name: the entry is no longer one of this directory's names
    name = moved.name
    flipped = ("A" if name[0] != "A" else "B") + name[1:]  # the first character: all 6 bits count
    moved.rename(moved.with_name(flipped))
    assert box.ok("ls", "/data/d1") == [f"ls {EIO}"]


@pytest.mark.parametrize("journal", ["garbage", "cut", "other key"])
def test_a_journal_the_host_forges_is_ignored(two: Two, journal: str) -> None:
    from enarx.encdir.keys import DirKeys

    data = two.a.read_bytes()
    start = fileformat.PREFIX_SIZE
    evil = data[:start] + bytes(len(data) - start)  # "replay" zeros over every block
    key = os.urandom(32) if journal == "other key" else two.box.key.read_bytes()
    forged = fileformat.build_journal(DirKeys.derive(key).journal, data[8:start], len(evil),
                                      [(start, evil[start:])])
    if journal == "cut":
        forged = forged[:-1]  # a journal a crash cut short: its MAC does not check
    elif journal == "garbage":
        forged = os.urandom(len(forged))
    jpath = two.a.with_name(two.a.name + ".j")
    jpath.write_bytes(forged)
    assert two.check_a() == [f"open 0 {4 * BLOCK}"] + [f"b{i} 0 1 {i} 1" for i in range(4)]
    assert not jpath.exists()  # dropped by the read-write open
    assert two.a.read_bytes() == data
