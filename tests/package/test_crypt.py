"""Encrypted packages (enarx.package.crypt): the documented chunk format, every tampering
that must fail, whole-package encryption to a directory and in-memory decryption."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.package import crypt
from enarx.package.crypt import (
    CHUNK_SIZE,
    HEADER_SIZE,
    MANIFEST_NAME,
    TAG_SIZE,
    DecryptionError,
    decrypt_bytes,
    decrypt_package,
    decrypt_stream,
    encrypt_bytes,
    encrypt_package,
    encrypt_stream,
    read_manifest,
)
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.tree import Tree, hash_bytes, media_type

KEY = bytes(range(32))
IDENT = "sha384:" + "ab" * 48
OTHER = "sha384:" + "cd" * 48
CS = 4096  # the smallest chunk size: many chunks from small inputs
MARKER = b"PLAINTEXT-MARKER-7f3a9c"


def enc(data: bytes, *, path: str = "main.wasm", identity: str = IDENT, key: bytes = KEY,
        file_id: bytes | None = None) -> bytes:
    return encrypt_bytes(data, key, identity=identity, path=path, chunk_size=CS,
                         file_id=file_id)


def chunks_of(ct: bytes) -> list[bytes]:
    body = ct[HEADER_SIZE:]
    step = CS + TAG_SIZE
    return [body[i:i + step] for i in range(0, len(body), step)]


# --- the format, computed independently from the docstring ----------------------------------


def reference_decrypt(ct: bytes, key: bytes, identity: str, path: str) -> bytes:
    """A second implementation of the documented format (header, nonce, AAD) on raw AESGCM."""
    header = ct[:24]
    assert header[:8] == b"ENARXPKG" and header[8] == 1 and header[9:12] == b"\0\0\0"
    chunk_size = int.from_bytes(header[12:16], "big")
    file_id = header[16:24]
    body = ct[24:]
    step = chunk_size + 16
    pieces = [body[i:i + step] for i in range(0, len(body), step)]
    out = b""
    for i, piece in enumerate(pieces):
        final = i == len(pieces) - 1
        aad = (header + len(identity).to_bytes(2, "big") + identity.encode()
               + len(path.encode()).to_bytes(2, "big") + path.encode()
               + i.to_bytes(8, "big") + (b"\x01" if final else b"\x00"))
        out += AESGCM(key).decrypt(file_id + i.to_bytes(4, "big"), piece, aad)
    return out


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 3 * CS, 3 * CS + 17])
def test_round_trip_and_documented_format(size: int) -> None:
    data = os.urandom(size)
    ct = enc(data, file_id=b"F" * 8)
    assert len(ct) == crypt.ciphertext_size(size, CS)
    # Every chunk but the last is full; the last holds 1..CS bytes (an empty file: 0).
    assert len(chunks_of(ct)) == max(1, -(-size // CS))
    assert reference_decrypt(ct, KEY, IDENT, "main.wasm") == data
    assert decrypt_bytes(ct, KEY, identity=IDENT, path="main.wasm") == data
    # The streaming encoder writes the same bytes; the streaming decoder reads them back.
    out = io.BytesIO()
    assert encrypt_stream(io.BytesIO(data), out, KEY, identity=IDENT, path="main.wasm",
                          chunk_size=CS, file_id=b"F" * 8) == size
    assert out.getvalue() == ct
    back = io.BytesIO()
    assert decrypt_stream(io.BytesIO(ct), back, KEY, identity=IDENT, path="main.wasm") == size
    assert back.getvalue() == data


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5 * CS), st.sampled_from([CS, CS + 1, 3 * CS + 7]),
       st.text(alphabet="abc/", min_size=1, max_size=12).filter(
           lambda p: "" not in p.split("/")))
def test_round_trip_property(data: bytes, chunk_size: int, path: str) -> None:
    ct = encrypt_bytes(data, KEY, identity=IDENT, path=path, chunk_size=chunk_size)
    assert reference_decrypt(ct, KEY, IDENT, path) == data
    back = io.BytesIO()
    decrypt_stream(io.BytesIO(ct), back, KEY, identity=IDENT, path=path)
    assert back.getvalue() == data == decrypt_bytes(ct, KEY, identity=IDENT, path=path)


def test_each_file_gets_a_fresh_random_nonce_prefix() -> None:
    a, b = enc(b"x" * 100), enc(b"x" * 100)
    assert a[16:24] != b[16:24] and a[HEADER_SIZE:] != b[HEADER_SIZE:]


class ShortReads(io.RawIOBase):
    """A pipe-like stream that returns at most 1000 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self.buf.read(min(n, 1000) if n >= 0 else 1000)


def test_streams_that_return_short_reads() -> None:
    data = os.urandom(3 * CS + 5)
    ct = io.BytesIO()
    encrypt_stream(ShortReads(data), ct, KEY, identity=IDENT, path="a", chunk_size=CS)  # type: ignore[arg-type]
    out = io.BytesIO()
    seen: list[int] = []
    decrypt_stream(ShortReads(ct.getvalue()), out, KEY, identity=IDENT, path="a",  # type: ignore[arg-type]
                   progress=seen.append)
    assert out.getvalue() == data and sum(seen) == len(data) and len(seen) == 4


# --- everything an attacker can do to ciphertext fails --------------------------------------


def both_fail(ct: bytes, *, path: str = "main.wasm", identity: str = IDENT,
              key: bytes = KEY) -> DecryptionError:
    with pytest.raises(DecryptionError) as e1:
        decrypt_bytes(ct, key, identity=identity, path=path)
    with pytest.raises(DecryptionError):
        decrypt_stream(io.BytesIO(ct), io.BytesIO(), key, identity=identity, path=path)
    assert e1.value.exit_code == 4 and isinstance(e1.value, DigestMismatch)
    return e1.value


DATA = bytes(range(256)) * 64  # 16 KiB: 4 full chunks of CS


def test_a_flipped_bit_anywhere_fails() -> None:
    ct = enc(DATA)
    for pos in (HEADER_SIZE, HEADER_SIZE + CS + 20, len(ct) - 1):
        bad = bytearray(ct)
        bad[pos] ^= 1
        both_fail(bytes(bad))


def test_reordered_chunks_fail() -> None:
    ct = enc(DATA)
    c = chunks_of(ct)
    both_fail(ct[:HEADER_SIZE] + c[1] + c[0] + b"".join(c[2:]))


def test_truncation_at_a_chunk_boundary_fails() -> None:
    ct = enc(DATA)
    c = chunks_of(ct)
    err = both_fail(ct[:HEADER_SIZE] + b"".join(c[:2]))
    assert "chunk 1" in err.message
    both_fail(ct[:HEADER_SIZE])              # no chunk at all
    both_fail(ct[:HEADER_SIZE + 10])         # less than a tag
    both_fail(ct[:-1])                       # inside the last chunk


def test_appended_chunk_fails() -> None:
    ct = enc(DATA)
    both_fail(ct + chunks_of(ct)[-1])
    # A final chunk taken from another encryption of a longer file under the same key.
    longer = enc(DATA + b"tail", file_id=ct[16:24])
    both_fail(ct + chunks_of(longer)[-1])


def test_moving_a_file_to_another_path_or_package_fails() -> None:
    ct = enc(DATA, path="main.wasm")
    both_fail(ct, path="data/main.wasm")
    both_fail(ct, identity=OTHER)
    both_fail(ct, key=bytes(32))


def test_header_fields_are_authenticated_and_checked() -> None:
    ct = enc(DATA)
    other_cs = ct[:12] + struct.pack(">I", 8192) + ct[16:]
    both_fail(other_cs)
    other_id = ct[:16] + b"\0" * 8 + ct[24:]
    both_fail(other_id)
    assert "magic" in both_fail(b"XXXXXXXX" + ct[8:]).message
    assert "version" in both_fail(ct[:8] + b"\x02" + ct[9:]).message
    assert "chunk size" in both_fail(ct[:12] + struct.pack(">I", 1 << 30) + ct[16:]).message


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(PackageError, match="32 bytes"):
        enc(b"x", key=b"short")
    for identity in ("sha256:00", IDENT + "\n"):
        with pytest.raises(PackageError, match="identity"):
            enc(b"x", identity=identity)
    for path in ("", "/abs", "a/../b", "a//b", "a\0b"):
        with pytest.raises(PackageError, match="path"):
            enc(b"x", path=path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3 * (CS + TAG_SIZE) + HEADER_SIZE))
def test_fuzz_decrypt_never_crashes(data: bytes) -> None:
    valid = enc(b"hello")
    for blob in (data, valid[:HEADER_SIZE] + data):
        with pytest.raises(DecryptionError):
            decrypt_bytes(blob, KEY, identity=IDENT, path="main.wasm")


# --- the manifest ----------------------------------------------------------------------------


def manifest_doc(**over: object) -> bytes:
    doc: dict[str, object] = {"version": 1, "scheme": crypt.MANIFEST_SCHEME, "identity": IDENT,
                              "key": {"resource": "enarx-package/key/abc"}}
    doc.update(over)
    return json.dumps(doc).encode()


def test_manifest_round_trip_and_canonical_bytes() -> None:
    m = read_manifest(manifest_doc())
    assert (m.identity, m.resource) == (IDENT, "enarx-package/key/abc")
    assert m.to_bytes() == json.dumps(json.loads(manifest_doc()), sort_keys=True,
                                      separators=(",", ":")).encode()
    assert read_manifest(m.to_bytes()) == m
    assert crypt.default_key_resource(IDENT) == "enarx-package/key/" + "ab" * 48


@pytest.mark.parametrize("raw", [
    b"", b"[]", b"{", manifest_doc(version=2), manifest_doc(version=True),
    manifest_doc(scheme="aes-cbc"), manifest_doc(identity="sha256:00"),
    manifest_doc(key={"resource": "a/b"}), manifest_doc(key={"resource": "a/b/../c"}),
    manifest_doc(key={"resource": "a/b/c", "x": 1}), manifest_doc(extra=1),
    b" " * (crypt.MAX_MANIFEST + 1),
    # "$" in a regex accepts a trailing newline; fullmatch does not.
    manifest_doc(identity=IDENT + "\n"), manifest_doc(key={"resource": "a/b/c\n"}),
    manifest_doc(version=1.0),
    # Two parsers must not read two different identities from one manifest.
    manifest_doc()[:-1] + b', "identity": "' + OTHER.encode() + b'"}',
])
def test_bad_manifests_are_refused(raw: bytes) -> None:
    with pytest.raises(PackageError) as e:
        read_manifest(raw)
    assert e.value.exit_code == 2 and e.value.hint


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                        c, max_size=5),
                    max_leaves=20))
def test_fuzz_manifest_only_typed_errors(doc: object) -> None:
    with contextlib.suppress(PackageError):
        read_manifest(json.dumps(doc).encode())


# --- whole packages ----------------------------------------------------------------------------


@pytest.fixture
def package(tmp_path: Path) -> Path:
    src = tmp_path / "pkg"
    (src / "data").mkdir(parents=True)
    (src / "main.wasm").write_bytes(b"\0asm\1\0\0\0" + MARKER + os.urandom(3 * CHUNK_SIZE))
    (src / "Enarx.toml").write_bytes(b'args = ["' + MARKER + b'"]\n')
    (src / "data" / "big.bin").write_bytes(MARKER * 10_000)
    return src


def read_tree(root: Path, tree: Tree) -> dict[str, bytes]:
    return {p: root.joinpath(*p.split("/")).read_bytes() for p in tree.files}


def test_encrypt_package_then_decrypt_in_memory(package: Path, tmp_path: Path) -> None:
    out = tmp_path / "enc"
    seen: list[int] = []
    ep = encrypt_package(package, out, progress=seen.append)
    plain_tree = Tree.build(package)
    assert ep.identity == plain_tree.identity == ep.manifest.identity
    assert ep.resource == crypt.default_key_resource(ep.identity) and len(ep.key) == 32
    assert sum(seen) == sum(e.length for e in plain_tree.files.values())
    # The encrypted directory: same paths + the manifest; no plaintext anywhere.
    assert sorted(ep.tree.files) == sorted([*plain_tree.files, MANIFEST_NAME])
    assert ep.tree == crypt.encrypted_tree(out) and crypt.is_encrypted(ep.tree)
    assert ep.tree.files["main.wasm"].type == crypt.ENCRYPTED_MEDIA_TYPE
    files = read_tree(out, ep.tree)
    for path, data in files.items():
        assert MARKER not in data, path
    assert read_manifest(files[MANIFEST_NAME]) == ep.manifest
    # The key never shows in a repr (logs).
    assert ep.key.hex() not in repr(ep) and repr(ep.key) not in repr(ep)
    plain = decrypt_package(files, ep.key, files[MANIFEST_NAME])
    assert plain == read_tree(package, plain_tree)


def test_dropped_or_swapped_files_and_a_lying_manifest_fail(package: Path,
                                                            tmp_path: Path) -> None:
    ep = encrypt_package(package, tmp_path / "enc")
    files = read_tree(tmp_path / "enc", ep.tree)
    dropped = {p: b for p, b in files.items() if p != "data/big.bin"}
    with pytest.raises(DecryptionError, match="do not form the package"):
        decrypt_package(dropped, ep.key, ep.manifest)
    swapped = dict(files)
    swapped["Enarx.toml"], swapped["data/big.bin"] = files["data/big.bin"], files["Enarx.toml"]
    with pytest.raises(DecryptionError, match="authentication"):
        decrypt_package(swapped, ep.key, ep.manifest)
    lying = crypt.Manifest(identity=OTHER, resource=ep.resource)
    with pytest.raises(DecryptionError):
        decrypt_package(files, ep.key, lying)
    with pytest.raises(DecryptionError):
        decrypt_package(files, os.urandom(32), ep.manifest)
    with pytest.raises(DecryptionError, match="no files"):
        decrypt_package({MANIFEST_NAME: files[MANIFEST_NAME]}, ep.key, ep.manifest)


def test_encrypt_package_refusals(package: Path, tmp_path: Path) -> None:
    out = tmp_path / "enc"
    out.mkdir()
    with pytest.raises(PackageError, match="already exists"):
        encrypt_package(package, out)
    (package / MANIFEST_NAME).write_bytes(b"{}")
    with pytest.raises(PackageError, match="reserved"):
        encrypt_package(package, tmp_path / "enc2")
    (package / MANIFEST_NAME).unlink()
    with pytest.raises(PackageError, match="steward path"):
        encrypt_package(package, tmp_path / "enc4", resource="not a path")
    (package / "main.wasm").unlink()
    with pytest.raises(PackageError, match=r"main\.wasm"):
        encrypt_package(package, tmp_path / "enc3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "pkg"]


def test_a_full_disk_midway_leaves_no_output_directory(package: Path, tmp_path: Path) -> None:
    # A real write failure: the file-size limit makes write(2) fail with EFBIG mid-package.
    code = f"""
import resource, signal, sys
from pathlib import Path
from enarx.errors import EnarxError
from enarx.package.crypt import encrypt_package
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({2 * CHUNK_SIZE}, {2 * CHUNK_SIZE}))
try:
    encrypt_package(Path({str(package)!r}), Path({str(tmp_path / "enc")!r}))
except EnarxError as e:
    print(type(e).__name__, e.exit_code, e.message, e.hint, sep="|")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    kind, exit_code, message, hint = proc.stdout.decode().strip().split("|")
    assert (kind, exit_code) == ("ResourceError", "2") and "File too large" in message
    assert "disk space" in hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_a_file_changed_while_encrypting_is_refused(package: Path, tmp_path: Path) -> None:
    main = package / "main.wasm"
    size = main.stat().st_size

    def tamper(n: int) -> None:  # same size, different last bytes, after hashing
        with open(main, "r+b") as f:
            f.seek(size - 4)
            f.write(b"EVIL")

    with pytest.raises(PackageError, match="changed while it was being encrypted"):
        encrypt_package(package, tmp_path / "enc", progress=tamper)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_decrypted_package_must_be_runnable() -> None:
    # A correctly encrypted tree without main.wasm decrypts, but is not a package.
    files = {"data.bin": b"just data"}
    identity = Tree.from_files({p: hash_bytes(b, media_type(p)) for p, b in files.items()}).identity
    manifest = crypt.Manifest(identity=identity, resource=crypt.default_key_resource(identity))
    ct = {p: encrypt_bytes(b, KEY, identity=identity, path=p) for p, b in files.items()}
    with pytest.raises(PackageError, match=r"main\.wasm"):
        decrypt_package(ct, KEY, manifest)


def test_large_files_decrypt_without_an_extra_copy() -> None:
    # From 1 MiB on, plaintext is written straight into the returned bytes object: peak
    # memory is one plaintext, not two (the copy made decryption ~2x slower than raw AES-GCM).
    size = 8 << 20
    data = os.urandom(size)
    ct = encrypt_bytes(data, KEY, identity=IDENT, path="main.wasm")
    assert type(ct) is bytes and len(ct) == crypt.ciphertext_size(size)
    tracemalloc.start()
    try:
        plain = decrypt_bytes(ct, KEY, identity=IDENT, path="main.wasm")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(plain) is bytes and plain == data and hash(plain) == hash(data)
    assert peak < size * 1.2, peak
    assert decrypt_bytes(ct, KEY, identity=IDENT, path="main.wasm") is not plain
    # The direct path authenticates exactly like the small one.
    c = [ct[HEADER_SIZE + i * (CHUNK_SIZE + TAG_SIZE):HEADER_SIZE + (i + 1) * (CHUNK_SIZE + TAG_SIZE)]
         for i in range(size // CHUNK_SIZE)]
    for bad in (ct[:-1] + bytes([ct[-1] ^ 1]), ct[:HEADER_SIZE] + c[1] + c[0] + b"".join(c[2:]),
                ct[:HEADER_SIZE] + b"".join(c[:-1])):
        with pytest.raises(DecryptionError):
            decrypt_bytes(bad, KEY, identity=IDENT, path="main.wasm")
