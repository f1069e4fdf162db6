"""enarx.keep.sealedcache: an encrypted package's compiled module is cached sealed under a key
derived from its content key — no plaintext (code, data segments, the module's digest) on the
host's disk, and nothing the host writes is loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import wasmtime

from enarx.keep.sealedcache import SealedModuleCache, derive_cache_key
from enarx.runtime.cache import ModuleCache
from enarx.runtime.engine import compile_module
from enarx.runtime.run import RunLimits

MARKER = b"SEALED-CACHE-MARKER-93a1"
WASM = bytes(wasmtime.wat2wasm(
    '(module (memory (export "memory") 1) (data (i32.const 0) "' + MARKER.decode() + '")'
    ' (func (export "_start")))'))
ID_A = "sha384:" + "aa" * 48
ID_B = "sha384:" + "bb" * 48
SETTINGS = RunLimits(max_memory=1 << 20).settings


def _entries(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()]


def test_an_entry_is_sealed_keyed_and_reused(tmp_path: Path) -> None:
    cache = SealedModuleCache(tmp_path, derive_cache_key(b"k" * 32, ID_A))
    compile_module(WASM, SETTINGS, cache=cache)
    [entry] = _entries(tmp_path)
    data = entry.read_bytes()
    assert MARKER not in data  # the data segment is not in the clear
    assert hashlib.sha256(WASM).hexdigest()[:16] not in entry.name  # nor the module digest
    warnings: list[str] = []
    again = SealedModuleCache(tmp_path, derive_cache_key(b"k" * 32, ID_A),
                              warn=warnings.append)
    compile_module(WASM, SETTINGS, cache=again)
    assert not warnings and entry.read_bytes() == data  # loaded, not recompiled


def test_the_plain_cache_would_leak_what_the_sealed_one_hides(tmp_path: Path) -> None:
    """The scan above can fail: the ordinary cache holds the data segment in the clear."""
    compile_module(WASM, SETTINGS, cache=ModuleCache(tmp_path, b"p" * 32))
    assert any(MARKER in p.read_bytes() for p in _entries(tmp_path))


def test_another_package_key_or_a_tampered_entry_is_never_loaded(tmp_path: Path) -> None:
    key = derive_cache_key(b"k" * 32, ID_A)
    cache = SealedModuleCache(tmp_path, key)
    compile_module(WASM, SETTINGS, cache=cache)
    [entry] = _entries(tmp_path)
    name = "x"
    binding = b"b"
    cache.store(name, binding, b"artifact")
    assert cache.load(name, binding) == b"artifact"
    assert cache.load(name, b"other binding") is None  # bound to the module and engine
    # another package (other key; identity in the derivation): another file, and a copy of
    # this package's entry under its name does not open
    other = SealedModuleCache(tmp_path, derive_cache_key(b"k" * 32, ID_B))
    assert other.path_for(name) != cache.path_for(name)
    other.path_for(name).write_bytes(cache.path_for(name).read_bytes())
    warnings: list[str] = []
    other._warn = warnings.append
    assert other.load(name, binding) is None and "failed authentication" in warnings[0]
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 1
    entry.write_bytes(bytes(blob))
    warned: list[str] = []
    fresh = SealedModuleCache(tmp_path, key, warn=warned.append)
    compile_module(WASM, SETTINGS, cache=fresh)  # recompiles instead of loading
    assert warned and "failed authentication" in warned[0]


@pytest.mark.parametrize("content", [b"", b"ENXS1\n", b"ENXS1\n" + b"\0" * 40, b"garbage"])
def test_garbled_entries_cost_a_recompile(tmp_path: Path, content: bytes) -> None:
    warnings: list[str] = []
    cache = SealedModuleCache(tmp_path, derive_cache_key(b"k" * 32, ID_A),
                              warn=warnings.append)
    cache.path_for("n").parent.mkdir(parents=True, exist_ok=True)
    cache.path_for("n").write_bytes(content)
    assert cache.load("n", b"b") is None and warnings


def test_unreadable_entry_warns_once_and_a_failed_store_is_harmless(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = SealedModuleCache(tmp_path / "c", derive_cache_key(b"k" * 32, ID_A),
                              warn=warnings.append)
    cache.dir.mkdir()
    cache.path_for("m").mkdir()  # reading it fails (EISDIR), replacing it too
    assert cache.load("m", b"b") is None
    assert len(warnings) == 1 and warnings[0].startswith("cannot read sealed cache entry")
    cache.store("m", b"b", b"artifact")  # best effort: no exception, no stray temp file
    assert [p.name for p in cache.dir.iterdir()] == [cache.path_for("m").name]
    cache.path_for("m").rmdir()
    cache.store("m", b"b", b"artifact")
    assert cache.load("m", b"b") == b"artifact" and len(warnings) == 1
