"""Native reads of encrypted pre-opens (enarx.wasi.encnative + _encread.c) against the Python
path: a real C guest reads through ``fd_read`` with the C callback (``native``) and without
it (``python``, ``ENARX_NATIVE=0``), and both must give the same, stated answer; the core
``pread`` of both paths is compared byte for byte on random files and ranges."""

from __future__ import annotations

import ctypes
import errno
import os
import random
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from enarx.encdir import EncDir
from enarx.encdir import fileformat as ff
from enarx.encdir.errors import EncDirCorrupt
from enarx.wasi import encnative, evp, native
from enarx.wasi.abi import Errno
from enarx.wasi.encfs import EncDirHandle
from enarx.wasi.host import WasiHost
from tests.wasi.wasirun import run_guest

KEY = bytes(range(32))
ALL = "0x3fffffff"
RO = hex((1 << 1) | (1 << 2) | (1 << 5))  # fd_read | fd_seek | fd_tell
B = ff.BLOCK
EIO = str(int(Errno.IO))


@pytest.fixture(params=["native", "python"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "native":
        if native.library() is None or evp.functions() is None:
            pytest.skip("no C compiler or no OpenSSL symbols: the native path is off here")
        monkeypatch.setenv("ENARX_NATIVE", "1")
    else:
        monkeypatch.setenv("ENARX_NATIVE", "0")
    yield request.param


class Box:
    """An encrypted directory ("/sandbox", fd 3) whose files are set up through the core."""

    def __init__(self, root: Path) -> None:
        self.root = root
        EncDir.create(str(root), KEY).close()

    def put(self, name: str, writes: list[tuple[int, bytes]], size: int | None = None) -> bytes:
        """Write ``writes`` (offset, data) into a new file; returns its plaintext."""
        plain = bytearray()
        with closing(EncDir.open(str(self.root), KEY)) as d, d.open_file(name.encode(), create=True) as f:
            for off, data in writes:
                f.pwrite(data, off)
                plain[len(plain):] = bytes(max(0, off + len(data) - len(plain)))
                plain[off: off + len(data)] = data
            if size is not None:
                f.truncate(size)
                plain[len(plain):] = bytes(max(0, size - len(plain)))
                del plain[size:]
        return bytes(plain)

    def host_file(self) -> Path:
        (path,) = [p for p in self.root.iterdir() if not p.name.startswith(".")]
        return path

    def run(self, *cmds: str) -> tuple[list[list[str]], WasiHost]:
        handle = EncDirHandle.preopen_encdir(EncDir.open(str(self.root), KEY, readonly=False),
                                             "/sandbox", readonly=False)
        r = run_guest("wasi_ops.c", cmds, extra=[handle])
        assert r.exit_code == 0, r.stderr
        return r.results(), r.host


@pytest.fixture
def box(tmp_path: Path) -> Box:
    return Box(tmp_path / "enc")


def _fallbacks(host: WasiHost) -> int:
    stats = host.native_stats()
    assert stats is not None
    return stats[1]


def _readv(plain: bytes, pos: int, lens: list[int]) -> str:
    """What wasi_ops' readv prints: the buffers as filled, each followed by an untouched 'x'."""
    out, data = b"", plain[pos:]
    for n in lens:
        got, data = data[:n], data[n:]
        out += got + b"x" * (n - len(got)) + b"x"
    return out.hex()


def test_reads_give_the_plaintext_on_both_paths(mode: str, box: Box) -> None:
    rnd = random.Random(7)
    body = bytes(rnd.getrandbits(8) for _ in range(B + 5000))
    # block 0 data, block 1 a hole (never written), blocks 2-3 data, the last block short
    plain = box.put("f", [(0, body[:B]), (2 * B, body)])
    size = len(plain)
    res, host = box.run(
        f"open|3|f|0|{RO}|0|0",
        "read|$|100",  # part of a block
        f"read|$|{B}",  # crossing into the hole
        f"seek|$|{B}|0", f"read|$|{B}",  # exactly the hole
        f"read|$|{B}",  # a whole block into one buffer
        f"seek|$|{2 * B - 100}|0",
        "readv|$|100,65535,1024",  # a whole block split between buffers (as libc's fread)
        f"seek|$|{size - 10}|0", f"read|$|{B}",  # the file's end
        f"read|$|{B}",  # EOF
        f"seek|$|{size + 5}|0", "read|$|10",  # beyond the end
        "readv|$|0,0",  # nothing asked
    )  # fmt: skip
    assert res[1] == ["0", plain[:100].hex()]
    assert res[2] == ["0", plain[100: 100 + B].hex()]
    assert res[4] == ["0", bytes(B).hex()]
    assert res[5] == ["0", plain[2 * B: 3 * B].hex()]
    assert res[7] == ["0", _readv(plain, 2 * B - 100, [100, 65535, 1024])]
    assert res[9] == ["0", plain[-10:].hex()]
    assert res[10] == ["0", ""] and res[12] == ["0", ""]
    assert res[13] == ["0", "7878"]
    if mode == "native":
        assert _fallbacks(host) == 0  # every read (and stdout) was served in C


def test_a_tampered_block_is_eio_and_the_offset_stays(mode: str, box: Box) -> None:
    plain = box.put("f", [(0, os.urandom(3 * B))])
    path = box.host_file()
    data = bytearray(path.read_bytes())
    data[ff.block_offset(1) + 100] ^= 1  # a bit of block 1's ciphertext
    path.write_bytes(bytes(data))
    res, host = box.run(
        f"open|3|f|0|{RO}|0|0",
        f"read|$|{B}", f"read|$|{B}", "tell|$", "read|$|10", "readv|$|1,70000",
        f"seek|$|{2 * B}|0", "read|$|10",
    )  # fmt: skip
    assert res[1] == ["0", plain[:B].hex()]
    assert res[2] == [EIO, ""] and res[3] == ["0", str(B)]  # nothing read, offset unchanged
    assert res[4] == [EIO, ""] and res[5] == [EIO, ""]
    assert res[7] == ["0", plain[2 * B: 2 * B + 10].hex()]
    if mode == "native":
        assert _fallbacks(host) == 0


def test_writes_and_truncation_through_another_fd_are_seen_at_once(mode: str, box: Box) -> None:
    plain = box.put("f", [(0, b"a" * (2 * B))])
    res, host = box.run(
        f"open|3|f|0|{ALL}|0|0",  # fd 4: the reader
        f"open|3|f|0|{ALL}|0|0",  # fd 5: the writer
        "read|4|4",
        "pwrite|5|NEW|1",  # pending in memory, not yet on the host
        "seek|4|0|0", "read|4|4",
        "sync|5",  # committed
        "seek|4|0|0", "read|4|4",
        "truncate|5|3",
        "seek|4|0|0", f"read|4|{B}",
        f"truncate|5|{B + 2}",  # grown again: zeros
        "sync|5", f"read|4|{B}",
        "close|5", "seek|4|0|0", "read|4|4",
    )  # fmt: skip
    assert res[2] == ["0", plain[:4].hex()]
    assert res[5] == ["0", b"aNEW".hex()]
    assert res[8] == ["0", b"aNEW".hex()]
    assert res[11] == ["0", b"aNE".hex()]
    assert res[14] == ["0", bytes(B - 1).hex()]
    assert res[17] == ["0", b"aNE\0".hex()]
    if mode == "native":
        # Python served the first read after each change (a write or cut pending, or just
        # committed: each such read refreshes C's copy); the others were served in C
        assert _fallbacks(host) == 4


def test_a_closed_fd_number_reused_reads_the_new_file(mode: str, box: Box) -> None:
    one = box.put("one", [(0, b"1" * 100)])
    two = box.put("two", [(0, b"2" * 100)])
    res, _ = box.run(
        f"open|3|one|0|{RO}|0|0", "read|$|10", "close|$",
        f"open|3|two|0|{RO}|0|0", "read|$|10",
        f"open|3|one|0|{RO}|0|0", "renumber|5|4", "read|4|10", "read|5|10",
    )  # fmt: skip
    assert res[0] == ["0", "4"] and res[3] == ["0", "4"]
    assert res[1] == ["0", one[:10].hex()]
    assert res[4] == ["0", two[:10].hex()]
    assert res[7] == ["0", one[:10].hex()]  # fd 4 is now the second open of "one"
    assert res[8][0] == str(int(Errno.BADF))


def test_without_the_openssl_functions_reads_stay_in_python(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    if native.library() is None:
        pytest.skip("no C compiler: the native path cannot be built here")
    monkeypatch.setenv("ENARX_NATIVE", "1")
    plain = box.put("f", [(0, os.urandom(B + 10))])
    monkeypatch.setattr(evp, "functions", lambda: None)
    res, host = box.run(f"open|3|f|0|{RO}|0|0", f"read|$|{B}", "read|$|100")
    assert res[1:] == [["0", plain[:B].hex()], ["0", plain[B:].hex()]]
    assert _fallbacks(host) == 2


# --- the two preads, byte for byte --------------------------------------------------------
@pytest.fixture
def lib() -> ctypes.CDLL:
    lib = native.library()
    if lib is None or evp.functions() is None or not encnative.ready(lib):
        pytest.skip("no C compiler or no OpenSSL symbols: the native path is off here")
    return lib


def _mirror(lib: ctypes.CDLL, f: object) -> encnative.EncMirror:
    state = f.shared()  # type: ignore[attr-defined]
    fns = evp.functions()
    assert fns is not None
    m = encnative.EncMirror(lib, fns, state)
    state.observer = m
    assert m.refresh()
    return m


def test_c_and_python_read_the_same_bytes_of_random_files(lib: ctypes.CDLL, box: Box) -> None:
    rnd = random.Random(12)
    for case in range(12):
        writes = [(rnd.randrange(0, 5 * B), rnd.randbytes(rnd.randrange(1, 2 * B)))
                  for _ in range(rnd.randrange(1, 4))]
        plain = box.put(f"f{case}", writes, size=rnd.choice([None, rnd.randrange(0, 6 * B)]))
        with closing(EncDir.open(str(box.root), KEY, readonly=True)) as d, \
                d.open_file(f"f{case}".encode()) as f:  # fmt: skip
            m = _mirror(lib, f)
            for _ in range(40):
                off = rnd.randrange(0, len(plain) + 10)
                n = rnd.choice([1, B, B + 1, rnd.randrange(0, 3 * B)])
                assert m.pread(n, off) == f.pread(n, off) == plain[off: off + n]


def test_c_stops_serving_before_a_change_and_resumes_after_the_commit(
    lib: ctypes.CDLL, box: Box
) -> None:
    box.put("f", [(0, b"a" * 100)])
    with closing(EncDir.open(str(box.root), KEY)) as d, d.open_file(b"f") as f:
        m = _mirror(lib, f)
        f.pwrite(b"b", 0)
        with pytest.raises(OSError) as e:
            m.pread(1, 0)  # pending in Python: C must not answer from the host
        assert e.value.errno == errno.ESTALE
        assert not m.refresh()
        f.sync()
        assert m.refresh() and m.pread(2, 0) == b"ba"
        f.truncate(1)  # the cut block is pending until the commit
        assert not m.refresh()
        f.sync()
        assert m.refresh() and m.pread(5, 0) == b"b"


def test_a_failed_block_is_wiped_and_a_cut_file_is_eio(lib: ctypes.CDLL, box: Box) -> None:
    plain = box.put("f", [(0, os.urandom(2 * B))])
    path = box.host_file()
    with closing(EncDir.open(str(box.root), KEY, readonly=True)) as d, d.open_file(b"f") as f:
        m = _mirror(lib, f)
        assert m.pread(2 * B, 0) == plain
        with open(path, "r+b") as h:  # the host flips a bit of block 1 while the file is open
            h.seek(ff.block_offset(1) + 50)
            b = h.read(1)
            h.seek(-1, os.SEEK_CUR)
            h.write(bytes([b[0] ^ 1]))
        buf = ctypes.create_string_buffer(b"x" * (2 * B), 2 * B)
        assert lib.fastio_enc_pread(m.ptr, buf, 2 * B, 0) == -errno.EIO
        assert buf.raw[:B] == plain[:B] and buf.raw[B:] == bytes(B)  # no unchecked byte left
        with pytest.raises(EncDirCorrupt):
            f.pread(10, B)  # Python agrees
        os.truncate(path, ff.block_offset(1) + 10)  # and cuts it
        with pytest.raises(OSError) as e:
            m.pread(10, B + 5)
        assert e.value.errno == errno.EIO
        assert m.pread(10, 0) == plain[:10]
