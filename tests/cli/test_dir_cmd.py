"""`enarx dir keygen|encrypt|decrypt`, through the real CLI: round trips, atomic output,
clear errors (exit 2 / hint, never a traceback) and no plaintext on the encrypted side."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.cliutil import RunEnarx

MARKER = b"CLEARTEXT-MARKER-9d41"


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    (root / "sub" / "deeper" / "notes-CLEARTEXT-MARKER.txt").write_bytes(MARKER * 3)
    (root / "big.bin").write_bytes(os.urandom(3 << 20) + MARKER)  # > the 1 MiB stream piece
    (root / "empty").write_bytes(b"")
    (root / "sub" / "h\u00e9llo w\u00f6rld").write_bytes(MARKER)
    return root


def _snapshot(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirs:
            out[os.path.join(rel, d)] = None
        for f in files:
            out[os.path.join(rel, f)] = (Path(dirpath) / f).read_bytes()
    return out


def _err_ok(r: object) -> str:
    err = r.stderr.decode()  # type: ignore[attr-defined]
    assert "error:" in err and "hint:" in err and "Traceback" not in err, err
    return err


@pytest.fixture
def key(enarx: RunEnarx, tmp_path: Path) -> Path:
    r = enarx("dir", "keygen", "--out", tmp_path / "dir.key")
    assert r.returncode == 0, r.stderr
    return tmp_path / "dir.key"


def test_keygen_writes_32_private_bytes_and_never_overwrites(enarx: RunEnarx,
                                                             key: Path) -> None:
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    r = enarx("dir", "keygen", "--out", key)
    assert r.returncode == 2 and "already exists" in _err_ok(r)
    assert key.read_bytes() == before


def test_encrypt_decrypt_round_trip_with_no_plaintext_on_the_host(
        enarx: RunEnarx, tmp_path: Path, key: Path) -> None:
    src = _tree(tmp_path / "src")
    r = enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key)
    assert r.returncode == 0, r.stderr
    assert b"encrypted" in r.stderr and b"MB" in r.stderr  # the summary line (no terminal)
    for dirpath, dirs, files in os.walk(tmp_path / "enc"):
        for name in dirs + files:
            assert "MARKER" not in name and "llo" not in name and "deeper" not in name, name
        for f in files:
            assert MARKER not in (Path(dirpath) / f).read_bytes(), f
    r = enarx("dir", "decrypt", tmp_path / "enc", tmp_path / "out", "--key", key)
    assert r.returncode == 0, r.stderr
    assert _snapshot(tmp_path / "out") == _snapshot(src)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_file_of_the_wrong_size_is_refused(enarx: RunEnarx, tmp_path: Path,
                                                 size: int) -> None:
    bad = tmp_path / "bad.key"
    bad.write_bytes(os.urandom(size))
    (tmp_path / "src").mkdir()
    r = enarx("dir", "encrypt", tmp_path / "src", tmp_path / "enc", "--key", bad)
    assert r.returncode == 2 and "32 bytes" in _err_ok(r)
    assert not (tmp_path / "enc").exists()


def test_a_missing_key_file_is_refused(enarx: RunEnarx, tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    r = enarx("dir", "encrypt", tmp_path / "src", tmp_path / "enc", "--key", tmp_path / "nope")
    assert r.returncode == 2 and "does not exist" in _err_ok(r)


def test_a_wrong_key_is_refused_and_nothing_is_written(enarx: RunEnarx, tmp_path: Path,
                                                       key: Path) -> None:
    src = _tree(tmp_path / "src")
    assert enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key).returncode == 0
    other = tmp_path / "other.key"
    assert enarx("dir", "keygen", "--out", other).returncode == 0
    r = enarx("dir", "decrypt", tmp_path / "enc", tmp_path / "out", "--key", other)
    assert r.returncode == 2 and "key" in _err_ok(r)
    assert not (tmp_path / "out").exists()


def test_a_tampered_file_fails_decrypt_and_leaves_no_output(enarx: RunEnarx, tmp_path: Path,
                                                            key: Path) -> None:
    src = _tree(tmp_path / "src")
    assert enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key).returncode == 0
    biggest = max((p for p in (tmp_path / "enc").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 1
    biggest.write_bytes(bytes(data))
    r = enarx("dir", "decrypt", tmp_path / "enc", tmp_path / "out", "--key", key)
    assert r.returncode == 4 and "authentication" in _err_ok(r)  # as failed evidence
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_an_existing_destination_is_never_touched(enarx: RunEnarx, tmp_path: Path,
                                                  key: Path) -> None:
    src = _tree(tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep-me").write_bytes(b"x")
    for cmd in ("encrypt", "decrypt"):
        r = enarx("dir", cmd, src, dst, "--key", key)
        assert r.returncode == 2 and "already exists" in _err_ok(r)
    assert _snapshot(dst) == {"./keep-me": b"x"}


def test_symlinks_in_the_source_are_refused(enarx: RunEnarx, tmp_path: Path,
                                            key: Path) -> None:
    src = _tree(tmp_path / "src")
    (src / "link").symlink_to("/etc/passwd")
    r = enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key)
    assert r.returncode == 2 and "symlink" in _err_ok(r)
    assert not (tmp_path / "enc").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_destination_inside_the_source_is_refused(enarx: RunEnarx, tmp_path: Path,
                                                  key: Path) -> None:
    src = _tree(tmp_path / "src")
    r = enarx("dir", "encrypt", src, src / "enc", "--key", key)
    assert r.returncode == 2 and "inside" in _err_ok(r)
    assert not (src / "enc").exists()


def test_a_name_too_long_for_an_encrypted_directory_is_refused(
        enarx: RunEnarx, tmp_path: Path, key: Path) -> None:
    from enarx.encdir import MAX_NAME

    src = tmp_path / "src"
    src.mkdir()
    (src / ("n" * (MAX_NAME + 1))).write_bytes(b"x")
    r = enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key)
    assert r.returncode == 2 and f"up to {MAX_NAME} bytes" in _err_ok(r)
    assert not (tmp_path / "enc").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    (src / ("n" * (MAX_NAME + 1))).rename(src / ("n" * MAX_NAME))  # the longest name works
    assert enarx("dir", "encrypt", src, tmp_path / "enc", "--key", key).returncode == 0
