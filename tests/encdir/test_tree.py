"""encrypt_tree / decrypt_tree: whole trees in and out, streaming, atomic output."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from enarx.encdir import EncDir, EncDirCorrupt, EncDirError, EncDirFsError, EncDirKeyError
from enarx.encdir import fileformat as ff
from enarx.encdir.tree import decrypt_tree, encrypt_tree

KEY = bytes(range(3, 35))


def plain_tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha", "sub/b.bin": os.urandom(3 * ff.BLOCK + 5),
             "sub/deeper/c": b"", "big": os.urandom((1 << 20) + 4097), "ünï": b"name"}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "emptydir").mkdir()
    os.utime(root / "a.txt", ns=(1_500_000_000_000_000_000, 1_600_000_000_000_000_000))
    return files


def snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(dirpath, n), root)] = None
        for n in files:
            out[os.path.relpath(os.path.join(dirpath, n), root)] = Path(dirpath, n).read_bytes()
    return out


def test_round_trip_with_progress(tmp_path: Path) -> None:
    src = tmp_path / "src"
    plain_tree(src)
    seen: list[int] = []
    (tmp_path / "enc").mkdir()  # an empty directory may be the destination
    encrypt_tree(src, tmp_path / "enc", KEY, seen.append)
    total = sum(len(v or b"") for v in snapshot(src).values())
    assert sum(seen) == total and max(seen) <= 1 << 20  # streamed in pieces
    d = EncDir.open(tmp_path / "enc", KEY, readonly=True)
    try:
        assert d.lookup("big").size == (1 << 20) + 4097
        assert d.lookup("a.txt").mtime_ns == 1_600_000_000_000_000_000
        assert (b"emptydir", "dir") in d.listdir("")
    finally:
        d.close()
    seen.clear()
    decrypt_tree(tmp_path / "enc", tmp_path / "out", KEY, seen.append)
    assert sum(seen) == total
    assert snapshot(tmp_path / "out") == snapshot(src)
    assert (tmp_path / "out" / "a.txt").stat().st_mtime_ns == 1_600_000_000_000_000_000
    assert (tmp_path / "out" / "sub" / "b.bin").stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "x").write_bytes(b"")
    with pytest.raises(EncDirFsError) as e:
        encrypt_tree(tmp_path / "src", tmp_path / "dst", KEY)
    assert e.value.errno == errno.EEXIST and e.value.hint


def test_symlink_in_source_is_refused_and_nothing_is_left(tmp_path: Path) -> None:
    src = tmp_path / "src"
    plain_tree(src)
    os.symlink("/etc/passwd", src / "link")
    with pytest.raises(EncDirFsError) as e:
        encrypt_tree(src, tmp_path / "enc", KEY)
    assert e.value.errno == errno.ENOTSUP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_decrypt_of_tampered_tree_fails_and_leaves_no_output(tmp_path: Path) -> None:
    src = tmp_path / "src"
    plain_tree(src)
    encrypt_tree(src, tmp_path / "enc", KEY)
    victim = max((p for p in (tmp_path / "enc").iterdir() if p.is_file() and "." not in p.name),
                 key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[ff.PREFIX_SIZE + 100] ^= 0xFF
    victim.write_bytes(raw)
    with pytest.raises(EncDirCorrupt):
        decrypt_tree(tmp_path / "enc", tmp_path / "out", KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "src"]
    with pytest.raises(EncDirKeyError):
        decrypt_tree(tmp_path / "enc", tmp_path / "out", os.urandom(32))


def test_unreadable_source_is_a_typed_error(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    src = tmp_path / "src"
    plain_tree(src)
    (src / "a.txt").chmod(0)
    with pytest.raises(EncDirFsError) as e:
        encrypt_tree(src, tmp_path / "enc", KEY)
    assert e.value.errno == errno.EACCES and "a.txt" in e.value.message and e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_missing_source_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(EncDirFsError) as e:
        encrypt_tree(tmp_path / "nope", tmp_path / "enc", KEY)
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(EncDirError):
        decrypt_tree(tmp_path / "nope", tmp_path / "out", KEY)
    assert list(tmp_path.iterdir()) == []


def test_host_read_error_is_typed_and_leaves_nothing(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection (works as root too): the source disk fails mid-tree."""
    import enarx.encdir.tree as tree

    src = tmp_path / "src"
    plain_tree(src)

    def failing_open(path: str, mode: str = "r") -> object:
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(tree, "open", failing_open, raising=False)
    with pytest.raises(EncDirFsError) as e:
        encrypt_tree(src, tmp_path / "enc", KEY)
    assert e.value.errno == errno.EIO and str(src) in e.value.message and e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_hard_links_survive_encrypt_and_decrypt(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"shared data" * 1000)
    os.link(src / "a", src / "sub" / "b")
    (src / "c").write_bytes(b"alone")
    seen: list[int] = []
    encrypt_tree(src, tmp_path / "enc", KEY, seen.append)
    assert sum(seen) == 11000 + 5  # the shared file's bytes counted once
    d = EncDir.open(tmp_path / "enc", KEY)
    try:
        assert d.lookup("a").nlink == 2 and d.lookup("a").ino == d.lookup("sub/b").ino
        assert d.lookup("c").nlink == 1
    finally:
        d.close()
    decrypt_tree(tmp_path / "enc", tmp_path / "out", KEY)
    a, b = (tmp_path / "out" / "a").stat(), (tmp_path / "out" / "sub" / "b").stat()
    assert a.st_ino == b.st_ino and a.st_nlink == 2
    assert (tmp_path / "out" / "sub" / "b").read_bytes() == b"shared data" * 1000
