"""Encrypted packages: every file AES-256-GCM encrypted in fixed-size chunks with one content key.

The host and the registry only ever hold ciphertext; the content key is a steward resource
released to an attested Keep (docs/packages.md, "Encryption"). Format of one encrypted file,
byte for byte::

    header  = "ENARXPKG" || version u8 (1) || 3 zero bytes || chunk_size u32 BE
              || file_id (8 random bytes)                                   (24 bytes)
    body    = chunk_0 || chunk_1 || ... || chunk_{n-1}
    chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, aad_i) = ciphertext_i || tag_i (16 bytes)
    nonce_i = file_id || i as u32 BE                                        (96 bits)
    aad_i   = header || u16 BE len(identity) || identity (ASCII "sha384:<hex>")
              || u16 BE len(path) || path (UTF-8) || i as u64 BE || final_i u8 (1 on the last)

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last holds 1 to
``chunk_size`` (0 only for an empty file, which is one empty final chunk). Binding the
plaintext tree's identity, the file's path, the chunk index and the final flag into every tag
makes reordering, dropping, truncating, appending, or moving chunks or whole files between
paths or packages fail authentication.

An encrypted package directory has the plaintext package's relative paths, each holding that
file's ciphertext, plus a root ``enarx-package.json`` manifest (:class:`Manifest`): the
plaintext identity (the workload identity the Keep attests), the scheme and the steward
resource path of the key. Registries verify the ciphertext tree; the Keep decrypts in memory
and recomputes the plaintext identity (:func:`decrypt_package`).

The manifest is untrusted (the host can rewrite it): a wrong identity makes the Keep attest
as a workload the steward will not give the key to, or fails the recomputed-identity check.
"""

from __future__ import annotations

import errno
import functools
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.errors import ResourceError
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.tree import DigestVerifier, Entry, Tree, hash_bytes, media_type, scan

__all__ = [
    "CHUNK_SIZE",
    "ENCRYPTED_MEDIA_TYPE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "MANIFEST_MEDIA_TYPE",
    "MANIFEST_NAME",
    "MANIFEST_SCHEME",
    "TAG_SIZE",
    "DecryptionError",
    "EncryptedPackage",
    "Manifest",
    "ciphertext_size",
    "decrypt_bytes",
    "decrypt_package",
    "decrypt_stream",
    "default_key_resource",
    "encrypt_bytes",
    "encrypt_package",
    "encrypt_stream",
    "encrypted_tree",
    "is_encrypted",
    "new_key",
    "read_manifest",
]

MAGIC = b"ENARXPKG"
VERSION = 1
#: 256 KiB: few enough AES-GCM calls that decryption runs near raw AES-GCM speed
#: (bench/deploy.py), small enough to stream a 100 MB module in little memory.
CHUNK_SIZE = 256 * 1024
KEY_SIZE = 32
TAG_SIZE = 16
_HEADER = struct.Struct(">8sB3xI8s")
HEADER_SIZE = _HEADER.size
#: Chunk sizes a reader accepts (bounds what a forged header can make it allocate).
MIN_CHUNK, MAX_CHUNK = 4 * 1024, 16 * 1024 * 1024
MAX_CHUNKS = 1 << 32  # the nonce's counter is 32 bits
MANIFEST_NAME = "enarx-package.json"
MANIFEST_SCHEME = "enarx-a256gcm-chunked-v1"
MANIFEST_MEDIA_TYPE = "application/vnd.enarx.package.manifest.v1+json"
ENCRYPTED_MEDIA_TYPE = "application/vnd.enarx.package.encrypted.v1"
MAX_MANIFEST = 64 * 1024
KEY_RESOURCE_PREFIX = "enarx-package/key/"

_IDENTITY_RE = re.compile(r"sha384:[0-9a-f]{96}")  # always fullmatch: "$" accepts a "\n"
_RESOURCE_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")

Progress = Callable[[int], None]


class DecryptionError(DigestMismatch):
    """Ciphertext fails authentication: tampered, reordered, truncated, moved between files
    or packages, or the content key is not this package's."""

    default_hint = ("the ciphertext was altered after it was published, or the key is not this "
                    "package's; fetch it again, and if it persists do not trust the source")


# --- one file --------------------------------------------------------------------------------


def new_key() -> bytes:
    """A fresh 32-byte content key (one per package)."""
    return secrets.token_bytes(KEY_SIZE)


def ciphertext_size(plain_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Bytes of the encrypted form of a ``plain_size``-byte file."""
    chunks = max(1, -(-plain_size // chunk_size))
    return HEADER_SIZE + plain_size + chunks * TAG_SIZE


class _Sealer:
    """The per-file AEAD state: header, AAD prefix, key schedule."""

    def __init__(self, key: bytes, identity: str, path: str, header: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise PackageError(f"content key must be {KEY_SIZE} bytes, got {len(key)}",
                               hint="the steward resource is not an enarx package key")
        _check_identity(identity)
        _check_path(path)
        ident = identity.encode("ascii")
        name = path.encode("utf-8")
        self.aead = AESGCM(key)
        self.file_id = header[-8:]
        self.prefix = (header + struct.pack(">H", len(ident)) + ident
                       + struct.pack(">H", len(name)) + name)
        self.path = path

    def nonce(self, index: int) -> bytes:
        if index >= MAX_CHUNKS:
            raise PackageError("file too large to encrypt (more than 2^32 chunks)", path=self.path)
        return self.file_id + struct.pack(">I", index)

    def aad(self, index: int, final: bool) -> bytes:
        return self.prefix + struct.pack(">QB", index, 1 if final else 0)


def _check_identity(identity: str) -> None:
    if not isinstance(identity, str) or not _IDENTITY_RE.fullmatch(identity):
        raise PackageError(f"not a package identity: {identity!r}",
                           hint='an identity is "sha384:" followed by 96 lowercase hex digits')


def _check_path(path: str) -> None:
    parts = path.split("/") if isinstance(path, str) else [""]
    if (not path or any(p in ("", ".", "..") for p in parts) or "\0" in path
            or len(path.encode("utf-8", "surrogatepass")) > 0xFFFF):
        raise PackageError(f"not a relative package path: {path!r}")


def _header(chunk_size: int, file_id: bytes | None = None) -> bytes:
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise PackageError(f"chunk size {chunk_size} outside {MIN_CHUNK}..{MAX_CHUNK}")
    fid = file_id if file_id is not None else secrets.token_bytes(8)
    if len(fid) != 8:
        raise PackageError("file id must be 8 bytes")
    return _HEADER.pack(MAGIC, VERSION, chunk_size, fid)


def _parse_header(raw: bytes, path: str) -> int:
    """Check a header's shape and return its chunk size (the tag check authenticates it)."""
    if len(raw) < HEADER_SIZE:
        raise DecryptionError("encrypted file is shorter than its header", path=path)
    magic, version, chunk_size, _ = _HEADER.unpack(raw[:HEADER_SIZE])
    if magic != MAGIC:
        raise DecryptionError("not an encrypted enarx package file (bad magic)", path=path)
    if version != VERSION or raw[9:12] != b"\0\0\0":
        raise DecryptionError(f"unsupported encrypted file version {version}", path=path,
                              hint="upgrade enarx to read this package")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise DecryptionError(f"chunk size {chunk_size} outside {MIN_CHUNK}..{MAX_CHUNK}",
                              path=path)
    return int(chunk_size)


def _read_full(src: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at end of stream (pipes and sockets return short reads)."""
    buf = src.read(n) or b""  # a non-blocking raw stream may return None
    if len(buf) == n or not buf:
        return bytes(buf)
    parts = [bytes(buf)]
    got = len(buf)
    while got < n:
        more = src.read(n - got)
        if not more:
            break
        parts.append(bytes(more))
        got += len(more)
    return b"".join(parts)


def encrypt_stream(src: IO[bytes], dst: IO[bytes], key: bytes, *, identity: str, path: str,
                   chunk_size: int = CHUNK_SIZE, progress: Progress | None = None,
                   file_id: bytes | None = None) -> int:
    """Encrypt ``src`` to ``dst`` (header then chunks); return the plaintext byte count.

    ``identity`` is the PLAINTEXT package's identity and ``path`` the file's path inside the
    package; both are authenticated. ``progress(n)`` is called with each chunk's plaintext size.
    ``file_id`` is for test vectors only: leave it None (random).
    """
    header = _header(chunk_size, file_id)
    sealer = _Sealer(key, identity, path, header)
    dst.write(header)
    total = 0
    index = 0
    cur = _read_full(src, chunk_size)
    while True:
        nxt = _read_full(src, chunk_size) if len(cur) == chunk_size else b""
        final = not nxt
        dst.write(sealer.aead.encrypt(sealer.nonce(index), cur, sealer.aad(index, final)))
        total += len(cur)
        if progress is not None and cur:
            progress(len(cur))
        if final:
            return total
        cur = nxt
        index += 1


def decrypt_stream(src: IO[bytes], dst: IO[bytes], key: bytes, *, identity: str, path: str,
                   progress: Progress | None = None) -> int:
    """Decrypt ``src`` into ``dst`` chunk by chunk; return the plaintext byte count.

    Every chunk written has passed its tag check, but truncation shows only at the end: on
    :class:`DecryptionError` the caller must discard what was written (write to a temporary
    file or to memory, and publish it only when this returns).
    """
    header = _read_full(src, HEADER_SIZE)
    chunk_size = _parse_header(header, path)
    sealer = _Sealer(key, identity, path, header)
    step = chunk_size + TAG_SIZE
    total = 0
    index = 0
    cur = _read_full(src, step)
    while True:
        nxt = _read_full(src, step) if len(cur) == step else b""
        final = not nxt
        plain = _open(sealer, cur, index, final)
        dst.write(plain)
        total += len(plain)
        if progress is not None and plain:
            progress(len(plain))
        if final:
            return total
        cur = nxt
        index += 1


def _open(sealer: _Sealer, chunk: bytes | memoryview, index: int, final: bool) -> bytes:
    if len(chunk) < TAG_SIZE:
        raise DecryptionError(f"ciphertext truncated in chunk {index}", path=sealer.path)
    try:
        return sealer.aead.decrypt(sealer.nonce(index), chunk, sealer.aad(index, final))
    except InvalidTag:
        raise DecryptionError(f"chunk {index} fails authentication", path=sealer.path) from None


def encrypt_bytes(data: bytes | bytearray | memoryview, key: bytes, *, identity: str, path: str,
                  chunk_size: int = CHUNK_SIZE, file_id: bytes | None = None) -> bytes:
    """The encrypted form of ``data`` (same bytes :func:`encrypt_stream` writes)."""
    header = _header(chunk_size, file_id)
    sealer = _Sealer(key, identity, path, header)
    view = memoryview(data)
    n = len(view)
    chunks = max(1, -(-n // chunk_size))
    out, ov = _output_buffer(HEADER_SIZE + n + chunks * TAG_SIZE)
    try:
        ov[:HEADER_SIZE] = header
        pos = HEADER_SIZE
        for i in range(chunks):
            piece = view[i * chunk_size:(i + 1) * chunk_size]
            end = pos + len(piece) + TAG_SIZE
            sealer.aead.encrypt_into(sealer.nonce(i), piece, sealer.aad(i, i == chunks - 1),
                                     ov[pos:end])
            pos = end
    finally:
        ov.release()
    return out if isinstance(out, bytes) else bytes(out)


def decrypt_bytes(data: bytes | bytearray | memoryview, key: bytes, *, identity: str, path: str) -> bytes:
    """Decrypt a whole encrypted file held in memory (the Keep's path: no plaintext on disk)."""
    view = memoryview(data)
    chunk_size = _parse_header(bytes(view[:HEADER_SIZE]), path)
    sealer = _Sealer(key, identity, path, bytes(view[:HEADER_SIZE]))
    body = view[HEADER_SIZE:]
    step = chunk_size + TAG_SIZE
    if len(body) == 0:
        raise DecryptionError("ciphertext has no chunks (truncated)", path=path)
    chunks = -(-len(body) // step)
    if len(body) - (chunks - 1) * step < TAG_SIZE:
        raise DecryptionError(f"ciphertext truncated in chunk {chunks - 1}", path=path)
    out, ov = _output_buffer(len(body) - chunks * TAG_SIZE)
    try:
        pos = 0
        for i in range(chunks):
            piece = body[i * step:(i + 1) * step]
            end = pos + len(piece) - TAG_SIZE
            try:
                sealer.aead.decrypt_into(sealer.nonce(i), piece,
                                         sealer.aad(i, i == chunks - 1), ov[pos:end])
            except InvalidTag:
                raise DecryptionError(f"chunk {i} fails authentication", path=path) from None
            pos = end
    finally:
        ov.release()
    return out if isinstance(out, bytes) else bytes(out)


#: From this size on, :func:`decrypt_bytes` decrypts straight into a new ``bytes`` object.
_DIRECT_MIN = 1 << 20


def _output_buffer(size: int) -> tuple[bytes | bytearray, memoryview]:
    """A buffer for ``size`` plaintext bytes and a writable view of it.

    Large outputs: a new, not yet shared ``bytes`` object of exactly ``size`` bytes, filled
    through a view of its own storage before anyone else sees it. This is what C extensions
    do (``PyBytes_FromStringAndSize(NULL, n)`` then write ``PyBytes_AS_STRING``) and what
    ``AESGCM.decrypt`` itself does; it saves the full extra copy (and page faults) of
    ``bytes(bytearray)``, which made decryption of a 100 MB module half as fast as one raw
    AES-GCM call (bench/package_crypt.py). The view has exactly ``size`` bytes, so every
    write is bounds-checked. Small outputs, or another Python implementation: a bytearray.
    """
    if size >= _DIRECT_MIN and sys.implementation.name == "cpython":
        import ctypes

        new, data = _bytes_api()
        out: bytes = new(None, size)
        storage = (ctypes.c_char * size).from_address(data(out))
        return out, memoryview(storage).cast("B")
    buf = bytearray(size)
    return buf, memoryview(buf)


@functools.cache
def _bytes_api() -> tuple[Any, Any]:
    """Private prototypes of two CPython C-API calls (never the shared ``ctypes.pythonapi``
    attributes, whose argtypes other code may set)."""
    import ctypes

    new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)(
        ("PyBytes_FromStringAndSize", ctypes.pythonapi))
    data = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object)(
        ("PyBytes_AsString", ctypes.pythonapi))
    return new, data


# --- the manifest -----------------------------------------------------------------------------


def default_key_resource(identity: str) -> str:
    """The steward resource path (``repo/type/tag``) a package's content key is stored at."""
    _check_identity(identity)
    return KEY_RESOURCE_PREFIX + identity.removeprefix("sha384:")


@dataclass(frozen=True)
class Manifest:
    """``enarx-package.json``: what a Keep needs to ask for the key and check the result."""

    identity: str  # "sha384:<hex>" of the PLAINTEXT tree: the workload identity
    resource: str  # steward resource path "repo/type/tag" holding the 32-byte content key
    scheme: str = MANIFEST_SCHEME
    version: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "scheme": self.scheme, "identity": self.identity,
                "key": {"resource": self.resource}}

    def to_bytes(self) -> bytes:
        """Canonical bytes (RFC 8785), so re-encrypting gives the same manifest digest."""
        import rfc8785

        return rfc8785.dumps(self.to_json())


def read_manifest(data: bytes) -> Manifest:
    """Parse ``enarx-package.json`` strictly (unknown members, versions or schemes refused)."""
    def bad(msg: str) -> PackageError:
        return PackageError(msg, path=MANIFEST_NAME,
                            hint="the package was not made by `enarx package publish --encrypt`")

    if len(data) > MAX_MANIFEST:
        raise bad(f"manifest larger than {MAX_MANIFEST} bytes")
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(pairs)
        if len(out) != len(pairs):
            raise ValueError("a member is repeated")
        return out

    try:
        doc = json.loads(data, object_pairs_hook=unique)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise bad(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or set(doc) != {"version", "scheme", "identity", "key"}:
        raise bad('expected exactly the members "version", "scheme", "identity", "key"')
    if type(doc["version"]) is not int or doc["version"] != 1:
        raise bad(f"unsupported manifest version {doc['version']!r}")
    if doc["scheme"] != MANIFEST_SCHEME:
        raise bad(f"unsupported encryption scheme {doc['scheme']!r}")
    identity = doc["identity"]
    if not isinstance(identity, str) or not _IDENTITY_RE.fullmatch(identity):
        raise bad(f"identity is not sha384:<96 hex>: {identity!r}")
    key = doc["key"]
    if not isinstance(key, dict) or set(key) != {"resource"} or not isinstance(
            key["resource"], str):
        raise bad('"key" must be {"resource": "repo/type/tag"}')
    parts = key["resource"].split("/")
    if len(parts) != 3 or not all(_RESOURCE_SEGMENT.fullmatch(p) for p in parts):
        raise bad(f"key resource is not a steward path repo/type/tag: {key['resource']!r}")
    return Manifest(identity=identity, resource=key["resource"])


# --- whole packages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EncryptedPackage:
    """What :func:`encrypt_package` made: the content key (never printed: ``repr=False``),
    the plaintext identity, the steward resource path and the manifest written."""

    key: bytes = field(repr=False)
    identity: str
    resource: str
    manifest: Manifest
    tree: Tree = field(repr=False)  # the ciphertext tree (what a registry stores, verifies)


def is_encrypted(tree: Tree) -> bool:
    """Whether ``tree`` is an encrypted package (it has the root manifest)."""
    return MANIFEST_NAME in tree.root.entries


def encrypted_tree(path: Path) -> Tree:
    """The ciphertext tree of an encrypted package directory: every file typed
    :data:`ENCRYPTED_MEDIA_TYPE` (it is not what its name says), the manifest
    ``application/vnd.enarx.package.manifest.v1+json``."""
    files = {p: replace(e, type=MANIFEST_MEDIA_TYPE if p == MANIFEST_NAME
                        else ENCRYPTED_MEDIA_TYPE)
             for p, e in scan(Path(path))}
    if MANIFEST_NAME not in files:
        raise PackageError(f"no {MANIFEST_NAME} at the root: not an encrypted package",
                           path=str(path))
    return Tree.from_files(files)


def encrypt_package(src: Path, out: Path, *, key: bytes | None = None,
                    resource: str | None = None, chunk_size: int = CHUNK_SIZE,
                    progress: Progress | None = None) -> EncryptedPackage:
    """Encrypt the package directory ``src`` into the new directory ``out``.

    ``out`` appears whole or not at all (built in a temporary sibling and renamed; a full
    disk is :class:`~enarx.errors.ResourceError` and leaves nothing behind); it must not
    exist. ``key`` defaults to a fresh random key, ``resource`` to
    :func:`default_key_resource` of the plaintext identity. ``progress(n)`` gets plaintext
    bytes as they are encrypted (after a first pass that hashes the plaintext tree).
    """
    src, out = Path(src), Path(out)
    if os.path.lexists(out):
        raise PackageError(f"{out} already exists", hint="choose a new output directory")
    plain = Tree.build(src).check_package()
    if MANIFEST_NAME in plain.root.entries:
        raise PackageError(f"{MANIFEST_NAME} is reserved for encrypted packages",
                           path=MANIFEST_NAME, hint="rename that file")
    identity = plain.identity
    key = new_key() if key is None else key
    resource = default_key_resource(identity) if resource is None else resource
    manifest = Manifest(identity=identity, resource=resource)
    read_manifest(manifest.to_bytes())  # the same checks a reader applies (resource path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as e:
        raise _write_error(out, e) from None
    try:
        for rel, entry in plain.files.items():
            _encrypt_file(src, tmp, rel, entry, key, identity, chunk_size, progress)
        (tmp / MANIFEST_NAME).write_bytes(manifest.to_bytes())
        tree = encrypted_tree(tmp)
        os.rename(tmp, out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return EncryptedPackage(key=key, identity=identity, resource=resource, manifest=manifest,
                            tree=tree)


class _Checked:
    """A reader that feeds what it reads to the entry's digest verifier."""

    def __init__(self, f: IO[bytes], verifier: DigestVerifier) -> None:
        self.f, self.verifier = f, verifier

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.verifier.update(data)
        return data


def _encrypt_file(src: Path, tmp: Path, rel: str, entry: Entry, key: bytes, identity: str,
                  chunk_size: int, progress: Progress | None) -> None:
    """Encrypt one file, re-checking the plaintext against the entry hashed before: a file the
    owner changes meanwhile would otherwise be published under the wrong identity."""
    target = tmp.joinpath(*rel.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(src.joinpath(*rel.split("/")), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise PackageError(f"cannot read it: {e.strerror or e}", path=rel) from None
    with os.fdopen(fd, "rb") as f_in, open(target, "wb") as f_out:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PackageError("is no longer a regular file", path=rel)
        checked = _Checked(f_in, entry.verifier(path=rel))
        try:
            encrypt_stream(checked, f_out, key, identity=identity,  # type: ignore[arg-type]
                           path=rel, chunk_size=chunk_size, progress=progress)
            checked.verifier.finish()
        except DigestMismatch:
            raise PackageError("changed while it was being encrypted", path=rel,
                               hint="retry when nothing writes to the package") from None


def _write_error(out: Path, e: OSError) -> ResourceError:
    hint = None
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = "free some disk space (or write the package to another file system) and retry"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT):
        hint = "choose an output directory you can write to"
    return ResourceError(f"cannot write the encrypted package to {out}: {e.strerror or e}",
                         hint=hint)


def decrypt_package(files: Mapping[str, bytes | bytearray | memoryview], key: bytes,
                    manifest: Manifest | bytes) -> dict[str, bytes]:
    """Decrypt an encrypted package held in memory; return path -> plaintext.

    ``files`` maps every path of the ciphertext tree to its (already digest-checked) bytes;
    the manifest entry may be included or not. Every chunk is authenticated against
    ``manifest.identity`` and the recomputed plaintext identity must equal it, so a dropped,
    added or swapped file fails too (:class:`DecryptionError`), and the result must be a
    runnable package (``Tree.check_package``: callers need not hash it again). Nothing touches
    the disk.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(bytes(manifest))
    plain: dict[str, bytes] = {}
    entries: dict[str, Entry] = {}
    for path, data in files.items():
        if path == MANIFEST_NAME:
            continue
        plain[path] = decrypt_bytes(data, key, identity=manifest.identity, path=path)
        # hashed while its bytes are still in the CPU cache
        entries[path] = hash_bytes(plain[path], media_type(path.rpartition("/")[2]))
    if not plain:
        raise DecryptionError("the encrypted package has no files")
    tree = Tree.from_files(entries)
    actual = tree.identity
    if not hmac.compare_digest(actual, manifest.identity):
        raise DecryptionError("the decrypted files do not form the package that was attested",
                              expected=manifest.identity, actual=actual)
    tree.check_package()  # main.wasm present, Enarx.toml within limits
    return plain
