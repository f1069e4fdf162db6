"""`enarx keep image build`: the Keep image is reproducible, cached by input digest, checked
against its manifest, and holds what the agent needs (checked with busybox's own cpio)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from enarx.vm.cpio import CpioEntry, gzip_bytes, write_newc
from enarx.vm.image import ImageError, build_image, default_inputs, image_status

REPO = Path(__file__).resolve().parents[2]
ENARX = [sys.executable, "-m", "enarx.cli.main"]


def _enarx(args: list[str], cache: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ENARX_VM_IMAGE_CACHE=str(cache))
    return subprocess.run([*ENARX, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """One image built through the CLI into --out (the other tests reuse it)."""
    base = tmp_path_factory.mktemp("img-a")
    proc = _enarx(["keep", "image", "build", "--out", str(base / "out"), "--json"],
                  base / "cache", base)
    assert proc.returncode == 0, proc.stderr
    return base / "out", json.loads(proc.stdout)


def test_two_builds_in_different_directories_are_byte_identical(
        built: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out_a, data_a = built
    other = tmp_path / "elsewhere" / "deeper"
    other.mkdir(parents=True)
    proc = _enarx(["keep", "image", "build", "--force", "--out", "img"], other / "cache", other)
    assert proc.returncode == 0, proc.stderr
    assert "(built)" in proc.stdout
    for name in ("vmlinuz", "initramfs.img", "manifest.json"):
        assert (out_a / name).read_bytes() == (other / "img" / name).read_bytes(), name
    # The printed digests are the files' digests.
    initrd = (out_a / "initramfs.img").read_bytes()
    assert data_a["initrd"] == {"file": "initramfs.img", "size": len(initrd),  # type: ignore[index]
                                "sha256": hashlib.sha256(initrd).hexdigest(),
                                "sha384": hashlib.sha384(initrd).hexdigest()}
    assert hashlib.sha384(initrd).hexdigest() in proc.stdout
    assert len(initrd) <= 40 * 2**20  # goal: initramfs <= 40 MB compressed
    # No build path leaks into the image.
    raw = gzip.decompress(initrd)
    for path in (str(REPO), str(tmp_path), str(out_a.parent)):
        assert path.encode() not in raw


def test_archive_layout_read_by_busybox_cpio(built: tuple[Path, dict[str, object]],
                                             tmp_path: Path) -> None:
    out, data = built
    raw = gzip.decompress((out / "initramfs.img").read_bytes())
    listing = subprocess.run(["/bin/busybox", "cpio", "-t", "-v"], input=raw,
                             capture_output=True, check=True).stdout.decode()
    rows = {line.split()[-1] if "->" not in line else line.split()[-3]: line
            for line in listing.splitlines() if line.strip()}
    names = list(rows)
    assert names == sorted(names)  # sorted archive
    release = data["kernel_release"]
    for needed in ("init", "bin/busybox", "bin/sh", "usr/bin/python3.11",
                   "usr/lib/python3.11/os.py", "usr/lib/python3.11/lib-dynload",
                   "opt/enarx/site/enarx/cli/main.py", "opt/enarx/site/enarx/vm/agent.py",
                   "opt/enarx/site/click/__init__.py", "opt/enarx/site/certifi/cacert.pem",
                   "opt/enarx/site/wasmtime/linux-x86_64/_libwasmtime.so",
                   "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
                   f"lib/modules/{release}/kernel/drivers/char/virtio_console.ko",
                   "dev/console"):
        assert needed in rows, needed
    assert rows["init"].startswith("-rwxr-xr-x")
    assert rows["dev/console"].startswith("crw-------")
    assert not any("__pycache__" in n or n.startswith("usr/lib/python3.11/test/")
                   for n in names)
    # Fixed owners and mtimes: every entry is root:root at the epoch.
    for row in rows.values():
        assert row.split()[1] == "0/0" and row.split()[3:5] == ["1970-01-01", "00:00:00"], row
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["/bin/busybox", "cpio", "-i", "-d", "-m", "--quiet"], input=raw,
                   cwd=extract, capture_output=True, check=False)
    assert (extract / "init").stat().st_mtime == 0
    assert (extract / "usr/bin/python3.11").read_bytes() == Path("/usr/bin/python3.11").read_bytes()


def test_cache_reused_until_an_input_changes(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    shutil.copyfile(default_inputs().kernel, kernel)
    # A snapshot of enarx, so edits to the work tree during the test do not change the key.
    snapshot = tmp_path / "enarx"
    shutil.copytree(default_inputs().enarx, snapshot,
                    ignore=shutil.ignore_patterns("__pycache__"))
    inputs = replace(default_inputs(), kernel=kernel, enarx=snapshot)
    first = build_image(inputs, cache=tmp_path / "cache")
    again = build_image(inputs, cache=tmp_path / "cache")
    assert (first.cached, again.cached) == (False, True)
    assert again.key == first.key and again.initrd.sha256 == first.initrd.sha256
    with kernel.open("ab") as f:  # a different kernel is a different image
        f.write(b"\0")
    changed = build_image(inputs, cache=tmp_path / "cache")
    assert not changed.cached and changed.key != first.key
    assert changed.kernel.sha256 == hashlib.sha256(kernel.read_bytes()).hexdigest()


def test_corrupt_cache_entry_is_rebuilt_and_corrupt_out_dir_refused(
        built: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, _ = built
    cache = tmp_path / "cache"
    snapshot = tmp_path / "enarx"
    shutil.copytree(default_inputs().enarx, snapshot,
                    ignore=shutil.ignore_patterns("__pycache__"))
    inputs = replace(default_inputs(), enarx=snapshot)
    first = build_image(inputs, cache=cache)
    blob = bytearray(first.initrd.path.read_bytes())
    blob[100] ^= 0xFF
    first.initrd.path.write_bytes(bytes(blob))
    rebuilt = build_image(inputs, cache=cache)
    assert not rebuilt.cached
    assert rebuilt.initrd.sha256 == first.initrd.sha256
    # A modified image handed to `measure --image` is refused before anything is measured.
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    raw = bytearray((bad / "vmlinuz").read_bytes())
    raw[-1] ^= 1
    (bad / "vmlinuz").write_bytes(bytes(raw))
    proc = _enarx(["keep", "image", "measure", "--snp", "--ovmf", str(bad / "vmlinuz"),
                   "--image", str(bad)], cache, tmp_path)
    assert proc.returncode == 2
    assert "does not match its manifest" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    inputs = replace(default_inputs(), busybox=tmp_path / "no-busybox")
    with pytest.raises(ImageError) as info:
        build_image(inputs, cache=tmp_path / "cache")
    assert "no-busybox" in info.value.message and info.value.hint
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_newc_writer_is_deterministic_and_busybox_readable(tmp_path: Path) -> None:
    entries = [CpioEntry("b/file", stat.S_IFREG | 0o644, b"hello\n"),
               CpioEntry("a", stat.S_IFDIR | 0o755),
               CpioEntry("b", stat.S_IFDIR | 0o755),
               CpioEntry("b/link", stat.S_IFLNK | 0o777, b"file")]
    one = gzip_bytes(write_newc(entries))
    two = gzip_bytes(write_newc(list(reversed(entries))))
    assert one == two
    assert one[4:8] == b"\0\0\0\0"  # gzip mtime 0
    assert one[3] & 0x08 == 0  # no FNAME in the gzip header
    subprocess.run(["/bin/busybox", "cpio", "-i", "-d"], input=gzip.decompress(one),
                   cwd=tmp_path, capture_output=True, check=True)
    assert (tmp_path / "b/file").read_bytes() == b"hello\n"
    assert os.readlink(tmp_path / "b/link") == "file"
    with pytest.raises(ValueError):
        write_newc([CpioEntry("x", stat.S_IFREG | 0o644), CpioEntry("x", stat.S_IFREG | 0o644)])
    with pytest.raises(ValueError):
        CpioEntry("../escape", stat.S_IFREG | 0o644)


def test_image_status_for_platform_info(tmp_path: Path) -> None:
    snapshot = tmp_path / "enarx"
    shutil.copytree(default_inputs().enarx, snapshot,
                    ignore=shutil.ignore_patterns("__pycache__"))
    inputs = replace(default_inputs(), enarx=snapshot)
    missing = image_status(inputs, cache=tmp_path / "cache")
    assert missing["state"] == "not built"
    assert "enarx keep image build" in missing["hint"]
    image = build_image(inputs, cache=tmp_path / "cache")
    ready = image_status(inputs, cache=tmp_path / "cache")
    assert ready["state"] == "ready" and ready["key"] == missing["key"] == image.key
    assert ready["initrd_sha256"] == image.initrd.sha256
    broken = image_status(replace(inputs, python=tmp_path / "nope"), cache=tmp_path / "cache")
    assert broken["state"] == "inputs missing" and "nope" in broken["detail"]
