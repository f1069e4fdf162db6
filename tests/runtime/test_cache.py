"""The compiled-module cache: entries the cache directory's writer could forge are never loaded.

End to end through the real `enarx` CLI (a swapped entry must not change what a module does),
plus the key file's life cycle through the module's own API.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from enarx.runtime.cache import KEY_SIZE, ModuleCache, load_or_create_key
from enarx.runtime.engine import EngineSettings, cache_binding, cache_key, compile_module
from tests.cliutil import RunEnarx
from tests.guestbuild import build_c

NIL = ("--backend", "nil")
AUTH_FAILED = b"failed authentication; recompiling"


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    """A private cache dir and key location (XDG_STATE_HOME) for one test."""
    return {"ENARX_CACHE_DIR": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}


def _entry(env: dict[str, str], before: set[Path]) -> Path:
    new = set(Path(env["ENARX_CACHE_DIR"]).glob("*.cwasm")) - before
    assert len(new) == 1, new
    return new.pop()


def test_swapped_entry_does_not_run_the_other_modules_code(
    enarx: RunEnarx, dirs: dict[str, str]
) -> None:
    hello, victim = build_c("hello.c"), build_c("cli_env.c")
    assert enarx("run", *NIL, hello, env=dirs).returncode == 0
    hello_entry = _entry(dirs, set())
    first = enarx("run", *NIL, victim, "own-arg", env=dirs)
    assert first.returncode == 0 and b"arg[1]=own-arg" in first.stdout
    victim_entry = _entry(dirs, {hello_entry})
    # Whoever can write the cache copies hello's compiled code over the victim's entry.
    shutil.copyfile(hello_entry, victim_entry)
    r = enarx("run", *NIL, victim, "own-arg", env=dirs)
    assert r.returncode == 0, r.stderr
    assert b"Hello, world!" not in r.stdout
    assert b"arg[1]=own-arg" in r.stdout
    assert r.stderr.count(AUTH_FAILED) == 1
    # Recompiled and rewritten: the next run loads it silently.
    again = enarx("run", *NIL, victim, "own-arg", env=dirs)
    assert again.returncode == 0 and AUTH_FAILED not in again.stderr


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_damaged_entry_is_recompiled_with_one_warning(
    enarx: RunEnarx, dirs: dict[str, str], damage: str
) -> None:
    module = build_c("hello.c")
    assert enarx("run", *NIL, module, env=dirs).returncode == 0
    entry = _entry(dirs, set())
    blob = bytearray(entry.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip":
        blob[len(blob) * 3 // 4] ^= 0x01
    else:
        blob = bytearray()
    entry.write_bytes(bytes(blob))
    r = enarx("run", *NIL, module, env=dirs)
    assert r.returncode == 0 and r.stdout == b"Hello, world!\n"
    warnings = [ln for ln in r.stderr.decode().splitlines() if "cache entry" in ln]
    assert len(warnings) == 1 and warnings[0].startswith("warning: compiled-module cache entry")


def test_entry_made_with_another_users_key_is_not_loaded(
    enarx: RunEnarx, dirs: dict[str, str], tmp_path: Path
) -> None:
    module = build_c("hello.c")
    other = {**dirs, "XDG_STATE_HOME": str(tmp_path / "other-user-state")}
    assert enarx("run", *NIL, module, env=other).returncode == 0  # written under a foreign key
    r = enarx("run", *NIL, module, env=dirs)
    assert r.returncode == 0 and r.stdout == b"Hello, world!\n"
    assert r.stderr.count(AUTH_FAILED) == 1


def test_key_file_is_created_private_outside_the_cache(
    enarx: RunEnarx, dirs: dict[str, str]
) -> None:
    assert enarx("run", *NIL, build_c("hello.c"), env=dirs).returncode == 0
    key = Path(dirs["XDG_STATE_HOME"]) / "enarx" / "module-cache" / "key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert key.stat().st_size == KEY_SIZE
    cache = Path(dirs["ENARX_CACHE_DIR"])
    assert not any(p.read_bytes() == key.read_bytes() for p in cache.iterdir())
    # The entry does not hold the key either.
    assert key.read_bytes() not in next(cache.glob("*.cwasm")).read_bytes()


def test_key_readable_by_others_is_replaced_and_old_entries_rejected(
    enarx: RunEnarx, dirs: dict[str, str]
) -> None:
    module = build_c("hello.c")
    assert enarx("run", *NIL, module, env=dirs).returncode == 0
    key = Path(dirs["XDG_STATE_HOME"]) / "enarx" / "module-cache" / "key"
    old = key.read_bytes()
    key.chmod(0o644)  # anyone could have read it: entries made with it prove nothing
    r = enarx("run", *NIL, module, env=dirs)
    assert r.returncode == 0 and r.stdout == b"Hello, world!\n"
    assert b"readable or writable by others (mode 0644)" in r.stderr
    assert r.stderr.count(AUTH_FAILED) == 1
    assert key.read_bytes() != old and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_key_inside_the_cache_dir_disables_the_cache(enarx: RunEnarx, tmp_path: Path) -> None:
    env = {"ENARX_CACHE_DIR": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    r = enarx("run", *NIL, build_c("hello.c"), env=env)
    assert r.returncode == 0 and r.stdout == b"Hello, world!\n"
    assert b"inside the cache directory" in r.stderr
    assert not list(tmp_path.glob("*.cwasm"))


def test_symlinked_or_short_key_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "enarx" / "module-cache" / "key"
    path.parent.mkdir(mode=0o700, parents=True)
    target = tmp_path / "attacker-chosen"
    target.write_bytes(b"k" * KEY_SIZE)
    target.chmod(0o600)
    path.symlink_to(target)
    said: list[str] = []
    key = load_or_create_key(path, warn=said.append)
    assert key != b"k" * KEY_SIZE and len(said) == 1
    assert not path.is_symlink() and path.read_bytes() == key
    path.write_bytes(b"short")
    assert len(load_or_create_key(path, warn=said.append)) == KEY_SIZE and len(said) == 2
    assert load_or_create_key(path, warn=said.append) == path.read_bytes() and len(said) == 2


def test_entry_is_bound_to_module_and_settings(tmp_path: Path) -> None:
    said: list[str] = []
    cache = ModuleCache(tmp_path, os.urandom(KEY_SIZE), warn=said.append)
    wasm = build_c("hello.c").read_bytes()
    settings = EngineSettings()
    compile_module(wasm, settings, cache=cache)
    name = cache_key(wasm, settings)
    assert cache.load(name, cache_binding(wasm, settings)) is not None and said == []
    # The same bytes presented for another module or other engine settings are refused.
    assert cache.load(name, cache_binding(wasm + b"\0", settings)) is None
    assert cache.load(name, cache_binding(wasm, EngineSettings(fuel=True))) is None
    assert len(said) == 2


def test_entry_of_an_older_release_is_replaced_quietly(tmp_path: Path) -> None:
    said: list[str] = []
    cache = ModuleCache(tmp_path, os.urandom(KEY_SIZE), warn=said.append)
    wasm = build_c("hello.c").read_bytes()
    settings = EngineSettings()
    name, binding = cache_key(wasm, settings), cache_binding(wasm, settings)
    module = compile_module(wasm, settings)
    # The unkeyed format: magic, SHA-256 of the payload, payload. Never loaded, no warning.
    artifact = bytes(module.serialize())
    cache.path_for(name).write_bytes(b"ENXC1\n" + hashlib.sha256(artifact).digest() + artifact)
    assert cache.load(name, binding) is None and said == []
    compile_module(wasm, settings, cache=cache)
    assert cache.load(name, binding) is not None and said == []


def test_unreadable_entry_warns_once_and_a_failed_store_is_harmless(tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = ModuleCache(tmp_path / "cache", b"k" * KEY_SIZE, warn=warnings.append)
    cache.path_for("m").parent.mkdir()
    cache.path_for("m").mkdir()  # reading it fails (EISDIR), replacing it too
    assert cache.load("m", b"b") is None
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot read compiled-module cache entry"), warnings
    cache.store("m", b"b", b"artifact")  # best effort: no exception, no stray temp file
    assert [p.name for p in cache.dir.iterdir()] == ["m.cwasm"]
