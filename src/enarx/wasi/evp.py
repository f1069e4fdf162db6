"""The OpenSSL ``EVP`` functions the native encrypted read path (``_encread.c``) calls.

They are taken from the OpenSSL that ``cryptography`` itself runs on (linked statically into
its ``_rust`` extension), so C and the Python path use one AES-GCM implementation: on this
project's machines that build is 2x faster than the system's ``libcrypto`` (OpenSSL 3.0
without the VAES code path), which would make C slower than Python. The functions are not
exported, so their addresses come from the extension's ELF symbol table: the load address of
the module (from its one exported function, ``PyInit__rust``) plus each symbol's value.
Nothing is trusted on the file's word alone: every function's first bytes in memory must
equal the file's bytes at that symbol (so the file is the one loaded and the symbol is the
code it names), and :mod:`enarx.wasi.encnative` runs a decryption self-test before use.
Without a symbol table, or on any mismatch, there is no table and reads stay in Python.

Hand-written: the ELF64 reading is ~40 lines of :mod:`struct`; ``pyelftools`` would build a
Python object per symbol (tens of thousands here) for the seven wanted.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
from collections.abc import Sequence

__all__ = ["FUNCTIONS", "find", "functions"]

#: the order ``fastio_enc_new`` takes them in
FUNCTIONS = ("EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_aes_256_gcm",
             "EVP_DecryptInit_ex", "EVP_DecryptUpdate", "EVP_DecryptFinal_ex",
             "EVP_CIPHER_CTX_ctrl")
_ANCHOR = "PyInit__rust"
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_SYM = struct.Struct("<IBBHQQ")  # Elf64_Sym
_SHT_SYMTAB, _STT_FUNC, _CHECK = 2, 2, 32


@functools.cache
def functions() -> ctypes.Array[ctypes.c_void_p] | None:
    """The addresses of :data:`FUNCTIONS` in ``cryptography``'s OpenSSL, or None."""
    try:
        from cryptography.hazmat.bindings import _rust
    except ImportError:
        return None
    found = find(str(_rust.__file__), _ANCHOR, FUNCTIONS)
    return None if found is None else (ctypes.c_void_p * len(found))(*found)


def find(path: str, anchor: str, names: Sequence[str]) -> list[int] | None:
    """The in-memory addresses of the function symbols ``names`` of the loaded ELF shared
    object ``path``, located through its exported function ``anchor``; None unless each
    is there exactly once and its first bytes in memory are the file's."""
    try:
        where = ctypes.cast(getattr(ctypes.CDLL(path), anchor), ctypes.c_void_p).value
        with open(path, "rb") as f:
            found = _symbols(f.fileno(), {*names, anchor})
            if where is None or found is None:
                return None
            base = where - found[anchor][0]
            for value, file_offset in found.values():
                if os.pread(f.fileno(), _CHECK, file_offset) != ctypes.string_at(base + value,
                                                                                _CHECK):
                    return None
        return [base + found[n][0] for n in names]
    except (OSError, AttributeError, ValueError, struct.error):
        return None


def _symbols(fd: int, names: set[str]) -> dict[str, tuple[int, int]] | None:
    """name -> (value, file offset of its code) for the function symbols ``names`` in the
    ELF64 little-endian file ``fd``'s symbol table; None if it has none, or a name is
    missing or there twice."""
    head = os.pread(fd, 64, 0)
    if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", head, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", head, 0x3A)
    if shentsize != _SHDR.size:
        return None
    sections = [_SHDR.unpack(s) for s in _chunks(os.pread(fd, shentsize * shnum, shoff),
                                                  shentsize)]
    symtab = next((s for s in sections if s[1] == _SHT_SYMTAB), None)
    if symtab is None:
        return None
    strtab = sections[symtab[6]]
    strings = os.pread(fd, strtab[5], strtab[4])
    table = os.pread(fd, symtab[5], symtab[4])
    out: dict[str, tuple[int, int]] = {}
    for name in names:
        hits = [_SYM.unpack_from(table, at) for at in _entries(table, strings, name.encode())]
        funcs = [h for h in hits if h[1] & 0xF == _STT_FUNC and h[4] and 0 < h[3] < len(sections)]
        if len(funcs) != 1:
            return None  # missing, or two functions of one name: which is meant is unclear
        value, sec = funcs[0][4], sections[funcs[0][3]]
        out[name] = (value, value - sec[3] + sec[4])  # sh_addr, sh_offset
    return out


def _entries(table: bytes, strings: bytes, name: bytes) -> list[int]:
    """Offsets of the symbols named ``name``: every place the string table holds it (as a
    string or the tail of a longer one), then every symbol whose ``st_name`` points there
    (searched as bytes: a Python loop over every symbol costs ~10 ms)."""
    out = []
    at = strings.find(name + b"\0")
    while at >= 0:
        key = struct.pack("<I", at)
        pos = table.find(key)
        while pos >= 0:
            if pos % _SYM.size == 0:
                out.append(pos)
            pos = table.find(key, pos + 1)
        at = strings.find(name + b"\0", at + 1)
    return out


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i: i + size] for i in range(0, len(data) - size + 1, size)]
