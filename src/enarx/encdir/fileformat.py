"""The on-host format of one encrypted file (pure: bytes in, bytes out; no I/O).

A host file is ``prefix ‖ block_0 ‖ … ‖ block_{n-1} ‖ trailer``:

* prefix (24 bytes): magic ``ENXEF\\x00\\x00`` ‖ format version (one byte, 1 or 2) and the
  file's random 16-byte id;
* block *i* (at ``24 + i * (B + 28)``, B the file's block size): 12-byte random nonce ‖
  AES-256-GCM(file key, up to B plaintext bytes) with associated data
  ``file id ‖ i ‖ version_i`` (each u64). Only the last block may be short. A block whose
  version is 0 has never been written: it reads as zeros and occupies no bytes (a hole);
* trailer: 12-byte nonce ‖ AES-256-GCM(header key, payload, ad = prefix) ‖ u32 trailer
  length. Version 2: payload = file key (32) ‖ plaintext length (u64) ‖ write counter (u64)
  ‖ block size (u32) ‖ link count (u32) ‖ u16 length ‖ the host names the file may live at,
  ``/``-separated ‖ version of every block (u64 each). Version 1 (read, and converted to
  version 2 by its next commit): no block size (always 4096) and no link count (1). Its
  position follows from the plaintext length, and the host file must end exactly there.

The prefix (with its version byte) is the trailer's associated data, so a version cannot be
changed by the host. The names bind the file to its directory entry (an encrypted name
already binds the guest name to its directory's IV; a hard-linked file lives in the link
store under its id's hex, :mod:`enarx.encdir.hardlinks`): a host that swaps two files, or
puts one under another name, is caught. A rename lists both names until the host rename is
done, then only the new one.

Every commit bumps the write counter and stamps each block it writes with the new value,
so an old copy of a block (a rollback), a block of another index (reorder) or of another
file (swap, other key and id) fails authentication, and a cut file has no valid trailer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from array import array
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enarx.encdir.errors import EncDirCorrupt

Buffer = bytes | bytearray | memoryview

__all__ = ["BLOCK", "BLOCK_OVERHEAD", "FORMAT_VERSION", "MAX_FILE_SIZE", "PREFIX_SIZE", "Trailer",
           "block_host_len", "block_offset", "build_journal", "build_prefix", "data_host_len",
           "journal_parts", "nblocks", "open_block", "open_run_into", "open_trailer",
           "parse_journal", "parse_prefix", "seal_block", "seal_run", "seal_trailer", "trailer_len"]

#: the format of the files this version writes (version 1 is read and upgraded on commit)
FORMAT_VERSION = 2
MAGIC_BASE = b"ENXEF\x00\x00"
MAGIC = MAGIC_BASE + bytes([FORMAT_VERSION])
JOURNAL_MAGIC = b"ENXEJ\x00\x00\x02"
_JOURNAL_MAGIC_V1 = b"ENXEJ\x00\x00\x01"
FILE_ID_SIZE = 16
PREFIX_SIZE = len(MAGIC) + FILE_ID_SIZE
#: the plaintext block size of new files (a file's own is in its trailer)
BLOCK = 65536
#: the block size of version-1 files
BLOCK_V1 = 4096
_BLOCK_SIZES = frozenset(1 << k for k in range(12, 21))  # 4 KiB .. 1 MiB
NONCE = 12
TAG = 16
BLOCK_OVERHEAD = NONCE + TAG
#: the largest plaintext file (EFBIG beyond): the trailer holds 8 bytes per block
MAX_FILE_SIZE = 16 << 30
_FIXED_V1 = 32 + 8 + 8
_FIXED_V2 = _FIXED_V1 + 4 + 4
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_V1 = struct.Struct("<QQ")
_V2 = struct.Struct("<QQII")
_AAD = struct.Struct("<16sQQ")


def nblocks(length: int, block: int = BLOCK) -> int:
    return (length + block - 1) // block


def block_offset(index: int, block: int = BLOCK) -> int:
    return PREFIX_SIZE + index * (block + BLOCK_OVERHEAD)


def block_host_len(index: int, length: int, block: int = BLOCK) -> int:
    """Bytes block ``index`` occupies on the host in a file of ``length`` plaintext bytes."""
    return min(block, length - index * block) + BLOCK_OVERHEAD


def data_host_len(length: int, block: int = BLOCK) -> int:
    full, rest = divmod(length, block)
    return full * (block + BLOCK_OVERHEAD) + (rest + BLOCK_OVERHEAD if rest else 0)


def trailer_len(length: int, names: tuple[str, ...], block: int = BLOCK) -> int:
    """The host length of a version-2 trailer."""
    return (NONCE + _FIXED_V2 + len(_names_blob(names)) + 8 * nblocks(length, block) + TAG
            + 4)


def _names_blob(names: tuple[str, ...]) -> bytes:
    return _U16.pack(len(blob := "/".join(names).encode())) + blob


def build_prefix(file_id: bytes, version: int = FORMAT_VERSION) -> bytes:
    return MAGIC_BASE + bytes([version]) + file_id


def parse_prefix(data: bytes) -> tuple[int, bytes]:
    """(format version, file id) of a file's first :data:`PREFIX_SIZE` bytes."""
    if len(data) < PREFIX_SIZE or data[: len(MAGIC_BASE)] != MAGIC_BASE:
        raise EncDirCorrupt("not an encrypted file (bad magic or cut header)")
    version = data[len(MAGIC_BASE)]
    if version not in (1, FORMAT_VERSION):
        raise EncDirCorrupt(f"encrypted file of unknown format version {version}")
    return version, bytes(data[len(MAGIC): PREFIX_SIZE])


def seal_block(aead: AESGCM, file_id: bytes, index: int, version: int,
               plain: bytes | bytearray) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + aead.encrypt(nonce, plain, _AAD.pack(file_id, index, version))


def seal_run(aead: AESGCM, file_id: bytes, first: int, version: int,
             blocks: list[bytes | bytearray]) -> bytearray:
    """The host bytes of consecutive blocks ``first…`` (each nonce ‖ ciphertext ‖ tag),
    sealed into one new buffer (no per-block allocation or concatenation)."""
    out = bytearray(sum(len(b) for b in blocks) + BLOCK_OVERHEAD * len(blocks))
    view = memoryview(out)
    pack = _AAD.pack
    pos = 0
    for k, plain in enumerate(blocks):
        nonce = os.urandom(NONCE)
        view[pos: pos + NONCE] = nonce
        end = pos + NONCE + len(plain) + TAG
        aead.encrypt_into(nonce, plain, pack(file_id, first + k, version),
                          view[pos + NONCE: end])
        pos = end
    return out


def open_block(aead: AESGCM, file_id: bytes, index: int, version: int,
               sealed: bytes | memoryview) -> bytes:
    try:
        return aead.decrypt(sealed[:NONCE], sealed[NONCE:], _AAD.pack(file_id, index, version))
    except (InvalidTag, ValueError) as e:
        raise EncDirCorrupt(f"block {index} failed authentication (tampered, moved, cut or "
                            "rolled back)") from e


def open_run_into(aead: AESGCM, file_id: bytes, first: int, versions: array[int],
                  length: int, sealed: memoryview, out: memoryview, block: int = BLOCK) -> None:
    """Open the consecutive blocks ``first…`` whose host bytes are ``sealed`` into ``out``
    (``block`` bytes per block, the file's last block shorter): the read hot path, one call
    per run of blocks rather than per block."""
    pack = _AAD.pack
    into = getattr(aead, "decrypt_into", None)
    stride = block + BLOCK_OVERHEAD
    for k in range(first, first + (len(sealed) + stride - 1) // stride):
        pos, o = (k - first) * stride, (k - first) * block
        n = min(block, length - k * block)
        blk = sealed[pos: pos + n + BLOCK_OVERHEAD]
        if len(blk) != n + BLOCK_OVERHEAD:
            raise EncDirCorrupt(f"block {k} is cut")
        try:
            if into is not None:
                into(blk[:NONCE], blk[NONCE:], pack(file_id, k, versions[k]), out[o: o + n])
            else:  # cryptography without decrypt_into
                out[o: o + n] = aead.decrypt(blk[:NONCE], blk[NONCE:],
                                             pack(file_id, k, versions[k]))
        except (InvalidTag, ValueError) as e:
            # decrypt_into has already written the unauthenticated plaintext: wipe it, so a
            # caller that ignores the error never sees data the host could have shaped
            out[o: o + n] = bytes(n)
            raise EncDirCorrupt(f"block {k} failed authentication (tampered, moved, cut or "
                                "rolled back)") from e


@dataclass
class Trailer:
    """The authenticated state of a file: its content key, length, counter, block versions,
    the host names it may be found at, its block size and its link count."""

    file_key: bytes
    length: int
    counter: int
    versions: array[int]
    names: tuple[str, ...]
    block: int = BLOCK
    nlink: int = 1


def seal_trailer(header: AESGCM, file_id: bytes, t: Trailer) -> bytes:
    """A version-2 trailer (the file's prefix must say version 2)."""
    if len(t.versions) != nblocks(t.length, t.block) or t.block not in _BLOCK_SIZES:
        raise ValueError("one version per block, and a supported block size")
    payload = (t.file_key + _V2.pack(t.length, t.counter, t.block, t.nlink)
               + _names_blob(t.names) + t.versions.tobytes())
    nonce = os.urandom(NONCE)
    body = nonce + header.encrypt(nonce, payload, build_prefix(file_id))
    return body + _U32.pack(len(body) + 4)


def open_trailer(header: AESGCM, file_id: bytes, data: bytes, version: int = FORMAT_VERSION
                 ) -> Trailer:
    """``data`` is the trailer as read from the end of the host file (its u32 included), of
    a file whose prefix says format ``version``."""
    fixed = _FIXED_V2 if version == 2 else _FIXED_V1
    if len(data) < NONCE + fixed + 2 + TAG + 4:
        raise EncDirCorrupt("file trailer is cut")
    try:
        payload = header.decrypt(data[:NONCE], data[NONCE:-4], build_prefix(file_id, version))
    except (InvalidTag, ValueError) as e:
        raise EncDirCorrupt("file trailer failed authentication") from e
    if version == 2:
        length, counter, block, nlink = _V2.unpack_from(payload, 32)
    else:
        (length, counter), block, nlink = _V1.unpack_from(payload, 32), BLOCK_V1, 1
    nlen = _U16.unpack_from(payload, fixed)[0]
    start = fixed + 2 + nlen
    names = tuple(payload[fixed + 2: start].decode("ascii", "replace").split("/"))
    rest = payload[start:]
    if block not in _BLOCK_SIZES or nlink < 1 or len(rest) != 8 * nblocks(length, block):
        raise EncDirCorrupt("file trailer is inconsistent")
    versions = array("Q")
    versions.frombytes(rest)
    if len(versions) and max(versions) > counter:
        raise EncDirCorrupt("file trailer is inconsistent")
    return Trailer(payload[:32], length, counter, versions, names, block, nlink)


def _gmac_key(key: bytes) -> bytes:
    """The AES key of version-2 journal tags, derived from the journal key (so the HMAC key
    of version-1 journals is never used as an AES key)."""
    return hmac.new(key, b"enarx-encdir journal gmac", hashlib.sha256).digest()


def journal_parts(key: bytes, file_id: bytes, final_size: int,
                  records: list[tuple[int, list[Buffer]]]) -> list[Buffer]:
    """A redo record of one commit — (host offset, bytes) writes, then the final host size —
    as pieces to write in order (no copy of the data); a 12-byte nonce and a GMAC tag under
    a key derived from ``key`` come last (AES-GCM with everything before as associated
    data: ~10x the speed of HMAC-SHA256), so a journal cut anywhere is refused."""
    parts: list[Buffer] = [JOURNAL_MAGIC, file_id, _U64.pack(final_size),
                           _U32.pack(len(records))]
    for off, chunks in records:
        parts.append(_U64.pack(off) + _U32.pack(sum(len(memoryview(c)) for c in chunks)))
        parts += chunks
    nonce = os.urandom(NONCE)
    parts.append(nonce + AESGCM(_gmac_key(key)).encrypt(nonce, b"", b"".join(parts)))
    return parts


def build_journal(key: bytes, file_id: bytes, final_size: int,
                  records: list[tuple[int, bytes]]) -> bytes:
    """:func:`journal_parts` joined into one byte string."""
    return b"".join(journal_parts(key, file_id, final_size, [(o, [d]) for o, d in records]))


def parse_journal(key: bytes, data: bytes) -> tuple[bytes, int, list[tuple[int, bytes]]] | None:
    """(file id, final size, records) of a complete, authentic journal; None otherwise (a
    journal cut by a crash is never complete, so the file it describes was not touched).
    Version-1 journals (HMAC-SHA256, left by an older enarx) are read too."""
    head = len(JOURNAL_MAGIC) + FILE_ID_SIZE + 12
    if data.startswith(JOURNAL_MAGIC):
        if len(data) < head + NONCE + TAG:
            return None
        body, nonce, tag = data[:-NONCE - TAG], data[-NONCE - TAG: -TAG], data[-TAG:]
        try:
            AESGCM(_gmac_key(key)).decrypt(nonce, tag, body)
        except InvalidTag:
            return None
    elif data.startswith(_JOURNAL_MAGIC_V1):
        if len(data) < head + 32:
            return None
        body, mac = data[:-32], data[-32:]
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            return None
    else:
        return None
    file_id = body[len(JOURNAL_MAGIC): len(JOURNAL_MAGIC) + FILE_ID_SIZE]
    final_size = _U64.unpack_from(body, head - 12)[0]
    count = _U32.unpack_from(body, head - 4)[0]
    pos, records = head, []
    for _ in range(count):
        if pos + 12 > len(body):
            return None
        off = _U64.unpack_from(body, pos)[0]
        n = _U32.unpack_from(body, pos + 8)[0]
        pos += 12
        records.append((off, body[pos: pos + n]))
        pos += n
    if pos != len(body):
        return None
    return file_id, final_size, records
