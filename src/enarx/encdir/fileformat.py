"""The on-host format of one encrypted file (pure: bytes in, bytes out; no I/O).

A host file is ``prefix ‖ block_0 ‖ … ‖ block_{n-1} ‖ trailer``:

* prefix (24 bytes): magic ``ENXEF\\x00\\x00\\x01`` and the file's random 16-byte id;
* block *i* (at ``24 + i * 4124``): 12-byte random nonce ‖ AES-256-GCM(file key, up to
  4096 plaintext bytes) with associated data ``file id ‖ i ‖ version_i`` (each u64). Only
  the last block may be short. A block whose version is 0 has never been written: it reads
  as zeros and occupies no bytes (a hole on the host);
* trailer: 12-byte nonce ‖ AES-256-GCM(header key, payload, ad = prefix) ‖ u32 trailer
  length, where payload = file key (32) ‖ plaintext length (u64) ‖ write counter (u64) ‖
  u16 length ‖ the host names the file may live at, ``/``-separated ‖ version of every block
  (u64 each). Its position follows from the plaintext length, and the host file must end
  exactly where it ends.

The names bind the file to its directory entry (an encrypted name already binds the guest
name to its directory's IV): a host that swaps two files, or puts one under another name,
is caught. A rename lists both names until the host rename is done, then only the new one.

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

__all__ = ["BLOCK", "BLOCK_OVERHEAD", "MAX_FILE_SIZE", "PREFIX_SIZE", "Trailer",
           "block_host_len", "block_offset", "build_journal", "build_prefix", "data_host_len",
           "journal_parts", "nblocks", "open_block", "open_run_into", "open_trailer", "parse_journal",
           "parse_prefix", "seal_block", "seal_trailer", "trailer_len"]

MAGIC = b"ENXEF\x00\x00\x01"
JOURNAL_MAGIC = b"ENXEJ\x00\x00\x01"
FILE_ID_SIZE = 16
PREFIX_SIZE = len(MAGIC) + FILE_ID_SIZE
BLOCK = 4096
NONCE = 12
TAG = 16
BLOCK_OVERHEAD = NONCE + TAG
#: the largest plaintext file (EFBIG beyond): the trailer holds 8 bytes per block, 32 MiB here
MAX_FILE_SIZE = 16 << 30
_TRAILER_FIXED = 32 + 8 + 8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_AAD = struct.Struct("<16sQQ")


def nblocks(length: int) -> int:
    return (length + BLOCK - 1) // BLOCK


def block_offset(index: int) -> int:
    return PREFIX_SIZE + index * (BLOCK + BLOCK_OVERHEAD)


def block_host_len(index: int, length: int) -> int:
    """Bytes block ``index`` occupies on the host in a file of ``length`` plaintext bytes."""
    return min(BLOCK, length - index * BLOCK) + BLOCK_OVERHEAD


def data_host_len(length: int) -> int:
    full, rest = divmod(length, BLOCK)
    return full * (BLOCK + BLOCK_OVERHEAD) + (rest + BLOCK_OVERHEAD if rest else 0)


def trailer_len(length: int, names: tuple[str, ...]) -> int:
    return NONCE + _TRAILER_FIXED + len(_names_blob(names)) + 8 * nblocks(length) + TAG + 4


def _names_blob(names: tuple[str, ...]) -> bytes:
    return _U16.pack(len(blob := "/".join(names).encode())) + blob


def build_prefix(file_id: bytes) -> bytes:
    return MAGIC + file_id


def parse_prefix(data: bytes) -> bytes:
    if len(data) < PREFIX_SIZE or data[: len(MAGIC)] != MAGIC:
        raise EncDirCorrupt("not an encrypted file (bad magic or cut header)")
    return data[len(MAGIC): PREFIX_SIZE]


def seal_block(aead: AESGCM, file_id: bytes, index: int, version: int, plain: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + aead.encrypt(nonce, plain, _AAD.pack(file_id, index, version))


def open_block(aead: AESGCM, file_id: bytes, index: int, version: int,
               sealed: bytes | memoryview) -> bytes:
    try:
        return aead.decrypt(sealed[:NONCE], sealed[NONCE:], _AAD.pack(file_id, index, version))
    except (InvalidTag, ValueError) as e:
        raise EncDirCorrupt(f"block {index} failed authentication (tampered, moved, cut or "
                            "rolled back)") from e


def open_run_into(aead: AESGCM, file_id: bytes, first: int, versions: array[int],
                  length: int, sealed: memoryview, out: memoryview) -> None:
    """Open the consecutive blocks ``first…`` whose host bytes are ``sealed`` into ``out``
    (BLOCK bytes per block, the file's last block shorter): the read hot path, one call per
    run of blocks rather than per block."""
    pack = _AAD.pack
    into = getattr(aead, "decrypt_into", None)
    stride = BLOCK + BLOCK_OVERHEAD
    for k in range(first, first + (len(sealed) + stride - 1) // stride):
        pos, o = (k - first) * stride, (k - first) * BLOCK
        n = min(BLOCK, length - k * BLOCK)
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
            raise EncDirCorrupt(f"block {k} failed authentication (tampered, moved, cut or "
                                "rolled back)") from e


@dataclass
class Trailer:
    """The authenticated state of a file: its content key, length, counter, block versions,
    and the host names it may be found at."""

    file_key: bytes
    length: int
    counter: int
    versions: array[int]
    names: tuple[str, ...]


def seal_trailer(header: AESGCM, file_id: bytes, t: Trailer) -> bytes:
    if len(t.versions) != nblocks(t.length):
        raise ValueError("one version per block")
    payload = (t.file_key + _U64.pack(t.length) + _U64.pack(t.counter) + _names_blob(t.names)
               + t.versions.tobytes())
    nonce = os.urandom(NONCE)
    body = nonce + header.encrypt(nonce, payload, build_prefix(file_id))
    return body + _U32.pack(len(body) + 4)


def open_trailer(header: AESGCM, file_id: bytes, data: bytes) -> Trailer:
    """``data`` is the trailer as read from the end of the host file (its u32 included)."""
    if len(data) < NONCE + _TRAILER_FIXED + 2 + TAG + 4:
        raise EncDirCorrupt("file trailer is cut")
    try:
        payload = header.decrypt(data[:NONCE], data[NONCE:-4], build_prefix(file_id))
    except (InvalidTag, ValueError) as e:
        raise EncDirCorrupt("file trailer failed authentication") from e
    length = _U64.unpack_from(payload, 32)[0]
    counter = _U64.unpack_from(payload, 40)[0]
    nlen = _U16.unpack_from(payload, _TRAILER_FIXED)[0]
    start = _TRAILER_FIXED + 2 + nlen
    names = tuple(payload[_TRAILER_FIXED + 2: start].decode("ascii", "replace").split("/"))
    rest = payload[start:]
    if len(rest) != 8 * nblocks(length):
        raise EncDirCorrupt("file trailer is inconsistent")
    versions = array("Q")
    versions.frombytes(rest)
    if len(versions) and max(versions) > counter:
        raise EncDirCorrupt("file trailer is inconsistent")
    return Trailer(payload[:32], length, counter, versions, names)


def _journal_mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def journal_parts(key: bytes, file_id: bytes, final_size: int,
                  records: list[tuple[int, list[bytes]]]) -> list[bytes]:
    """A redo record of one commit — (host offset, bytes) writes, then the final host size —
    as pieces to write in order (no copy of the data); the HMAC comes last, so a journal cut
    anywhere is refused."""
    head = [JOURNAL_MAGIC, file_id, _U64.pack(final_size), _U32.pack(len(records))]
    parts = list(head)
    for off, chunks in records:
        parts.append(_U64.pack(off) + _U32.pack(sum(len(c) for c in chunks)))
        parts += chunks
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    parts.append(mac.digest())
    return parts


def build_journal(key: bytes, file_id: bytes, final_size: int,
                  records: list[tuple[int, bytes]]) -> bytes:
    """:func:`journal_parts` joined into one byte string."""
    return b"".join(journal_parts(key, file_id, final_size, [(o, [d]) for o, d in records]))


def parse_journal(key: bytes, data: bytes) -> tuple[bytes, int, list[tuple[int, bytes]]] | None:
    """(file id, final size, records) of a complete, authentic journal; None otherwise (a
    journal cut by a crash is never complete, so the file it describes was not touched)."""
    head = len(JOURNAL_MAGIC) + FILE_ID_SIZE + 12
    if len(data) < head + 32 or not data.startswith(JOURNAL_MAGIC):
        return None
    body, mac = data[:-32], data[-32:]
    if not hmac.compare_digest(mac, _journal_mac(key, body)):
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
