"""The on-host file format: every change the host can make to a file is an error, never data.

Each case edits the host bytes the way an attacker with the disk would, then reads through
a freshly opened EncDir: the result must be EncDirCorrupt (EIO to the guest).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from enarx.encdir import EncDir, EncDirCorrupt
from enarx.encdir import fileformat as ff

KEY = bytes(range(1, 33))
BS = ff.BLOCK + ff.BLOCK_OVERHEAD


def make(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, dict[str, Path]]:
    root = tmp_path / "enc"
    d = EncDir.create(root, KEY)
    hosts: dict[str, Path] = {}
    for name, data in files.items():
        before = set(os.listdir(root))
        with d.open_file(name, create=True) as f:
            f.pwrite(data, 0)
        (new,) = set(os.listdir(root)) - before
        hosts[name] = root / new
    d.close()
    return root, hosts


def read_all(root: Path, name: str) -> bytes:
    d = EncDir.open(root, KEY)
    try:
        with d.open_file(name) as f:
            return f.pread(1 << 30, 0)
    finally:
        d.close()


def rewrite(root: Path, name: str, off: int, data: bytes) -> None:
    d = EncDir.open(root, KEY)
    try:
        with d.open_file(name) as f:
            f.pwrite(data, off)
    finally:
        d.close()


DATA = bytes(i % 251 for i in range(3 * ff.BLOCK + 100))


@pytest.fixture
def two(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    return make(tmp_path, {"a": DATA, "b": DATA[::-1]})


def corrupt(root: Path, name: str) -> None:
    with pytest.raises(EncDirCorrupt):
        read_all(root, name)


def test_untouched_reads_back(two: tuple[Path, dict[str, Path]]) -> None:
    root, _ = two
    assert read_all(root, "a") == DATA
    assert read_all(root, "b") == DATA[::-1]


@pytest.mark.parametrize("offset", [0, 8, ff.PREFIX_SIZE, ff.PREFIX_SIZE + 5,
                                    ff.PREFIX_SIZE + ff.NONCE, ff.PREFIX_SIZE + BS + 100,
                                    ff.PREFIX_SIZE + 3 * BS + 20, -1, -5, -40])
def test_any_flipped_byte_is_corrupt(two: tuple[Path, dict[str, Path]], offset: int) -> None:
    root, hosts = two
    raw = bytearray(hosts["a"].read_bytes())
    raw[offset] ^= 0x01
    hosts["a"].write_bytes(raw)
    corrupt(root, "a")
    assert read_all(root, "b") == DATA[::-1]


@pytest.mark.parametrize("cut", [1, 4, 30, BS, len(DATA)])
def test_cut_file_is_corrupt(two: tuple[Path, dict[str, Path]], cut: int) -> None:
    root, hosts = two
    raw = hosts["a"].read_bytes()
    hosts["a"].write_bytes(raw[:-cut])
    corrupt(root, "a")


def test_extended_file_is_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    with hosts["a"].open("ab") as f:
        f.write(b"\0" * 16)
    corrupt(root, "a")


def test_reordered_blocks_are_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    raw = bytearray(hosts["a"].read_bytes())
    b0 = raw[ff.PREFIX_SIZE: ff.PREFIX_SIZE + BS]
    raw[ff.PREFIX_SIZE: ff.PREFIX_SIZE + BS] = raw[ff.PREFIX_SIZE + BS: ff.PREFIX_SIZE + 2 * BS]
    raw[ff.PREFIX_SIZE + BS: ff.PREFIX_SIZE + 2 * BS] = b0
    hosts["a"].write_bytes(raw)
    corrupt(root, "a")


def test_block_swapped_from_another_file_is_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    a, b = bytearray(hosts["a"].read_bytes()), hosts["b"].read_bytes()
    a[ff.PREFIX_SIZE + BS: ff.PREFIX_SIZE + 2 * BS] = b[ff.PREFIX_SIZE + BS:
                                                        ff.PREFIX_SIZE + 2 * BS]
    hosts["a"].write_bytes(a)
    corrupt(root, "a")


def test_rolled_back_block_is_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    old = hosts["a"].read_bytes()
    rewrite(root, "a", ff.BLOCK, b"new data in block one")
    new = bytearray(hosts["a"].read_bytes())
    assert len(new) == len(old)
    new[ff.PREFIX_SIZE + BS: ff.PREFIX_SIZE + 2 * BS] = old[ff.PREFIX_SIZE + BS:
                                                            ff.PREFIX_SIZE + 2 * BS]
    hosts["a"].write_bytes(new)
    corrupt(root, "a")


def test_rolled_back_trailer_is_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    old = hosts["a"].read_bytes()
    tl = ff.trailer_len(len(DATA), (hosts["a"].name,))
    rewrite(root, "a", 0, b"changed")
    new = bytearray(hosts["a"].read_bytes())
    new[-tl:] = old[-tl:]
    hosts["a"].write_bytes(new)
    corrupt(root, "a")


def test_swapped_file_ids_are_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    a = bytearray(hosts["a"].read_bytes())
    a[8: ff.PREFIX_SIZE] = hosts["b"].read_bytes()[8: ff.PREFIX_SIZE]
    hosts["a"].write_bytes(a)
    corrupt(root, "a")


def test_grown_then_rolled_back_length_is_corrupt(tmp_path: Path) -> None:
    """An old, shorter copy of the whole trailer region after the file grew."""
    root, hosts = make(tmp_path, {"a": b"x" * 100})
    old = hosts["a"].read_bytes()
    rewrite(root, "a", 100, b"y" * 100)
    new = hosts["a"].read_bytes()
    hosts["a"].write_bytes(new[: len(old) - ff.trailer_len(100, (hosts["a"].name,))] + old[-ff.trailer_len(100, (hosts["a"].name,)):])
    corrupt(root, "a")


def test_name_moved_to_another_directory_is_corrupt(tmp_path: Path) -> None:
    root = tmp_path / "enc"
    d = EncDir.create(root, KEY)
    d.mkdir("sub")
    with d.open_file("f", create=True) as f:
        f.pwrite(b"x", 0)
    d.close()
    sub = next(p for p in root.iterdir() if p.is_dir())
    f = next(p for p in root.iterdir() if p.is_file() and "." not in p.name)
    shutil.move(f, sub / f.name)
    d = EncDir.open(root, KEY)
    try:
        with pytest.raises(EncDirCorrupt):
            d.listdir("sub")
        assert d.listdir("") == [(b"sub", "dir")]
    finally:
        d.close()


def test_zero_block_holes_are_authenticated(tmp_path: Path) -> None:
    """Blocks never written read as zeros (version 0 in the sealed trailer), whatever the host
    puts in the hole."""
    root, _ = make(tmp_path, {})
    d = EncDir.open(root, KEY)
    with d.open_file("sparse", create=True) as f:
        f.truncate(5 * ff.BLOCK)
        f.pwrite(b"end", 5 * ff.BLOCK - 3)
    d.close()
    assert read_all(root, "sparse") == bytes(5 * ff.BLOCK - 3) + b"end"
    host = next(p for p in root.iterdir() if "." not in p.name)
    raw = bytearray(host.read_bytes())
    raw[ff.PREFIX_SIZE: ff.PREFIX_SIZE + 10] = b"injected!!"
    host.write_bytes(raw)
    # version 0 means "zeros": the host's bytes there are never read, so no injection works
    assert read_all(root, "sparse") == bytes(5 * ff.BLOCK - 3) + b"end"


def test_files_swapped_on_the_host_are_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    """Whole files exchanged between two names: each name now holds an authentic file, but
    not its own (regression: this used to read back the other file's data)."""
    root, hosts = two
    a, b = hosts["a"].read_bytes(), hosts["b"].read_bytes()
    hosts["a"].write_bytes(b)
    hosts["b"].write_bytes(a)
    corrupt(root, "a")
    corrupt(root, "b")


def test_file_copied_over_another_name_is_corrupt(two: tuple[Path, dict[str, Path]]) -> None:
    root, hosts = two
    shutil.copyfile(hosts["a"], hosts["b"])
    corrupt(root, "b")
    assert read_all(root, "a") == DATA


def test_renamed_file_is_bound_to_its_new_name_only(tmp_path: Path) -> None:
    root, hosts = make(tmp_path, {"a": b"alpha", "b": b"beta"})
    old_a = hosts["a"].read_bytes()
    d = EncDir.open(root, KEY)
    d.rename("a", "c")
    d.close()
    assert read_all(root, "c") == b"alpha"
    (c_host,) = set(root.iterdir()) - set(hosts.values()) - {root / ".diriv",
                                                              root / ".enarxdir"}
    # the pre-rename copy of "a" put back under "a": its trailer names only "a", which the
    # guest removed; the current "c" put under "b" is refused
    shutil.copyfile(c_host, hosts["b"])
    corrupt(root, "b")
    hosts["a"].write_bytes(old_a)
    assert read_all(root, "a") == b"alpha"  # a deleted entry restored: documented limit


# --- format versions: version-1 directories (4 KiB blocks, no hard links) -----------------------

def _v1_file(root: Path, name: bytes, data: bytes) -> Path:
    """A version-1 file as the previous enarx wrote it (its layout in full: prefix with
    version byte 1, 4 KiB blocks, a trailer without block size and link count)."""
    import struct
    from array import array

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from enarx.encdir.keys import DirKeys
    from enarx.encdir.names import encrypt_name

    keys = DirKeys.derive(KEY)
    host = encrypt_name(keys.names, name, (root / ".diriv").read_bytes())
    fid, fkey = os.urandom(16), os.urandom(32)
    prefix = b"ENXEF\x00\x00\x01" + fid
    blocks = [data[i: i + 4096] for i in range(0, len(data), 4096)]
    body = b"".join(ff.seal_block(AESGCM(fkey), fid, i, 1, b) for i, b in enumerate(blocks))
    payload = (fkey + struct.pack("<QQH", len(data), 1, len(host)) + host.encode()
               + array("Q", [1] * len(blocks)).tobytes())
    nonce = os.urandom(12)
    trailer = nonce + keys.header.encrypt(nonce, payload, prefix)
    (root / host).write_bytes(prefix + body + trailer + struct.pack("<I", len(trailer) + 4))
    return root / host


def test_a_version_1_directory_is_read_and_upgraded_by_a_writer(tmp_path: Path) -> None:
    import json

    from enarx.encdir.keys import DirKeys

    root = tmp_path / "v1"
    EncDir.create(root, KEY).close()
    marker = json.loads((root / ".enarxdir").read_text())
    assert marker["version"] == 2  # what this enarx writes
    marker["version"] = 1
    (root / ".enarxdir").write_text(json.dumps(marker, sort_keys=True) + "\n")
    v1 = (root / ".enarxdir").read_bytes()
    old = os.urandom(3 * 4096 + 7)
    host = _v1_file(root, b"old", old)
    ro = EncDir.open(root, KEY, readonly=True)  # read-only: read, nothing changed
    with ro.open_file("old") as f:
        assert f.pread(1 << 20, 0) == old
    ro.close()
    assert (root / ".enarxdir").read_bytes() == v1
    d = EncDir.open(root, KEY)  # read-write: the directory says version 2 from now on
    assert json.loads((root / ".enarxdir").read_text())["version"] == 2
    with d.open_file("old") as f:
        assert f.pread(1 << 20, 0) == old
        f.pwrite(b"new", 5000)
    d.link("old", "again")  # the upgraded file (still 4 KiB blocks) takes a second name
    d.close()
    assert host.read_bytes()[:5] == b"ENXEH"  # a name (entry); the file is in the link store
    d = EncDir.open(root, KEY)
    with d.open_file("again") as f:
        assert f.pread(1 << 20, 0) == old[:5000] + b"new" + old[5003:]
    assert d.lookup("old").nlink == 2
    d.close()
    stored = next(p for p in (root / ".links").iterdir() if "." not in p.name)
    raw = stored.read_bytes()
    assert raw[7] == 2  # the file's own format version
    assert len(raw) == (ff.PREFIX_SIZE + ff.data_host_len(len(old), 4096)
                        + ff.trailer_len(len(old), (stored.name,), 4096))
    # a version this enarx does not know is refused, with a hint
    (root / ".enarxdir").write_text(json.dumps({**marker, "version": 3}, sort_keys=True))
    with pytest.raises(EncDirCorrupt, match="unsupported format version 3"):
        EncDir.open(root, KEY)
    assert DirKeys.derive(KEY)  # (the key itself was fine)


def test_a_file_s_format_version_cannot_be_changed_by_the_host(tmp_path: Path) -> None:
    """The version byte is authenticated (the trailer's associated data is the prefix): a
    version-2 file passed off as version 1 (or a version-1 file as version 2) is EIO."""
    root, hosts = make(tmp_path, {"new": b"n" * 5000})
    old = _v1_file(root, b"old", b"o" * 5000)
    for host, version in ((hosts["new"], 1), (old, 2)):
        raw = bytearray(host.read_bytes())
        assert raw[7] == 3 - version
        raw[7] = version
        host.write_bytes(bytes(raw))
    for name in ("new", "old"):
        with pytest.raises(EncDirCorrupt):
            read_all(root, name)
