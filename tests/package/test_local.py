"""enarx.package.local: file:// packages and the atomic, verifying package writer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.local import load_files, read_package, write_package
from enarx.package.tree import Entry, Tree

WASM = b"\0asm\x01\0\0\0"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "data" / "deep").mkdir(parents=True)
    (root / "main.wasm").write_bytes(WASM)
    (root / "Enarx.toml").write_bytes(b"args = []\n")
    (root / "data" / "big.bin").write_bytes(os.urandom(3 << 20))  # several chunks
    (root / "data" / "deep" / "x.txt").write_bytes(b"x")
    return root


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_copy_roundtrip_is_verified_and_private(src: Path, tmp_path: Path) -> None:
    pkg = read_package(src)
    seen: list[int] = []
    out = tmp_path / "out" / "pkg"  # parents are created
    write_package(out, pkg.tree, pkg.chunks, progress=seen.append)
    assert read_package(out).tree.identity == pkg.tree.identity
    assert (out / "data" / "big.bin").read_bytes() == (src / "data" / "big.bin").read_bytes()
    assert sum(seen) == sum(e.length for e in pkg.tree.files.values())
    assert out.stat().st_mode & 0o777 == 0o700
    assert leftovers(out.parent) == []


def test_single_wasm_file_is_a_main_wasm_package(tmp_path: Path) -> None:
    f = tmp_path / "app.wasm"
    f.write_bytes(WASM)
    pkg = read_package(f)
    assert list(pkg.tree.files) == ["main.wasm"] and pkg.read("main.wasm") == WASM


def test_reading_a_file_changed_after_hashing_fails(src: Path) -> None:
    pkg = read_package(src)
    (src / "main.wasm").write_bytes(b"\0asm\x01\0\0\x01")  # the host swaps the bytes
    with pytest.raises(DigestMismatch, match=r"main\.wasm"):
        pkg.read("main.wasm")


def test_mismatch_leaves_nothing_behind(src: Path, tmp_path: Path) -> None:
    pkg = read_package(src)

    def tampered(path: str, entry: Entry) -> Iterator[bytes]:
        if path == "data/big.bin":  # same length, other bytes
            yield b"\0" * entry.length
        else:
            yield from pkg.chunks(path, entry)

    out = tmp_path / "out"
    with pytest.raises(DigestMismatch) as e:
        write_package(out, pkg.tree, tampered)
    assert e.value.path == "data/big.bin" and e.value.exit_code == 4
    assert not out.exists() and leftovers(tmp_path) == []

    def truncated(path: str, entry: Entry) -> Iterator[bytes]:
        data = b"".join(pkg.chunks(path, entry))
        yield data[: len(data) // 2]

    with pytest.raises(DigestMismatch, match="truncated"):
        write_package(out, pkg.tree, truncated)
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_destination_is_refused_or_swapped_whole(src: Path, tmp_path: Path) -> None:
    pkg = read_package(src)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_bytes(b"keep me")
    with pytest.raises(PackageError, match="already exists"):
        write_package(out, pkg.tree, pkg.chunks)
    assert (out / "old").read_bytes() == b"keep me"
    bad = Tree.from_files({**pkg.tree.files, "main.wasm": Entry(
        pkg.tree.files["main.wasm"].digest, 9, "application/wasm")})
    with pytest.raises(DigestMismatch):
        write_package(out, bad, pkg.chunks, replace=True)
    assert (out / "old").read_bytes() == b"keep me"  # old package intact on failure
    write_package(out, pkg.tree, pkg.chunks, replace=True)
    assert not (out / "old").exists() and read_package(out).tree == pkg.tree
    assert leftovers(tmp_path) == []


def test_file_size_limit_is_a_clean_error_without_partial_output(src: Path,
                                                                  tmp_path: Path) -> None:
    # A real write failure from the kernel: RLIMIT_FSIZE makes write(2) fail with EFBIG
    # (the same path as ENOSPC), in a child process so the limit stays there.
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        from enarx.errors import ResourceError
        from enarx.package.local import read_package, write_package
        pkg = read_package({str(src)!r})
        try:
            write_package({str(tmp_path / "out")!r}, pkg.tree, pkg.chunks)
        except ResourceError as e:
            print(type(e).__name__, e.message, "|", e.hint)
            sys.exit(7)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.startswith("ResourceError cannot write the package to")
    assert "disk space" in proc.stdout
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_bad_package_paths(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="cannot read the package"):
        read_package(tmp_path / "missing")
    (tmp_path / "nowasm").mkdir()
    (tmp_path / "nowasm" / "x.txt").write_bytes(b"")
    with pytest.raises(PackageError, match=r"main\.wasm"):
        read_package(tmp_path / "nowasm")


def test_a_file_swapped_for_a_symlink_or_fifo_after_hashing_is_refused(src: Path) -> None:
    pkg = read_package(src)
    (src / "Enarx.toml").unlink()
    (src / "Enarx.toml").symlink_to(src / "main.wasm")
    with pytest.raises(PackageError, match="cannot read"):
        pkg.read("Enarx.toml")
    (src / "main.wasm").unlink()
    os.mkfifo(src / "main.wasm")
    with pytest.raises(PackageError, match="no longer a regular file"):
        pkg.read("main.wasm")  # and does not block on the FIFO


def test_hand_built_trees_cannot_write_outside_the_destination(tmp_path: Path) -> None:
    from enarx.package.tree import Directory, hash_bytes

    e = hash_bytes(b"x", "text/plain")
    evil = Tree({"": Directory({"..": e})}, {"..": e})  # bypasses the constructors' checks
    with pytest.raises(PackageError, match="invalid"):
        write_package(tmp_path / "out", evil, lambda _p, _e: [b"x"])
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_kept_files_are_read_and_hashed_once_and_the_host_cannot_change_them(
        src: Path) -> None:
    # what `enarx deploy file://` does: the bytes hashed into the tree are the bytes served
    pkg = read_package(src, keep_max=64 << 20)
    before = {p: (src / p).read_bytes() for p in pkg.tree.files}
    assert dict(pkg.data) == before
    (src / "main.wasm").write_bytes(b"\0asm\x01\0\0\x01")  # the host swaps the bytes
    (src / "data" / "big.bin").unlink()
    assert pkg.read("main.wasm") == WASM and pkg.read("data/big.bin") == before["data/big.bin"]
    # an entry the caller names that is not this tree's is still verified
    other = Entry(dict(pkg.tree.files["main.wasm"].digest), 8, "text/plain")
    with pytest.raises(DigestMismatch):
        b"".join(pkg.chunks("data/deep/x.txt", other))


def test_files_beyond_the_keep_budget_are_read_again_and_verified(src: Path) -> None:
    pkg = read_package(src, keep_max=1 << 20)  # big.bin (3 MiB) does not fit
    assert "data/big.bin" not in pkg.data and "main.wasm" in pkg.data
    (src / "data" / "big.bin").write_bytes(os.urandom(3 << 20))
    with pytest.raises(DigestMismatch, match=r"big\.bin"):
        pkg.read("data/big.bin")
    f = src / "main.wasm"
    one = read_package(f, keep_max=1 << 20)
    f.write_bytes(b"changed")
    assert one.read("main.wasm") == WASM


def test_load_files_reads_every_file_once_with_the_package_checks(src: Path,
                                                                  tmp_path: Path) -> None:
    files = load_files(src, max_file=4 << 20)
    assert files == {p: (src / p).read_bytes() for p in Tree.build(src).files}
    with pytest.raises(PackageError, match="larger than 1048576 bytes"):
        load_files(src, max_file=1 << 20)
    (src / "data" / "deep" / "X.txt").write_bytes(b"x")
    with pytest.raises(PackageError, match="differ only in case"):
        load_files(src, max_file=4 << 20)
    (src / "data" / "deep" / "X.txt").unlink()
    (src / "data" / "deep" / "x.txt").unlink()
    os.symlink("../main.wasm", src / "data" / "deep" / "x.txt")
    with pytest.raises(PackageError, match="symbolic link"):
        load_files(src, max_file=4 << 20)
    (src / "data" / "deep" / "x.txt").unlink()
    os.mkfifo(src / "data" / "deep" / "x.txt")
    with pytest.raises(PackageError, match="not a regular file"):
        load_files(src, max_file=4 << 20)
