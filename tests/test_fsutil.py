"""fsutil: atomic writes and the XDG cache/state/config directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from enarx.errors import ResourceError
from enarx.fsutil import atomic_write, cache_dir, config_dir, ensure_private_dir, state_dir


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    yield
    os.umask(old)


# --- atomic_write --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o640])
def test_atomic_write_sets_exactly_the_mode(tmp_path: Path, mode: int, umask0: None) -> None:
    p = tmp_path / "f"
    atomic_write(p, b"data", mode=mode)
    assert p.read_bytes() == b"data" and _mode(p) == mode
    assert os.listdir(tmp_path) == ["f"]  # no temp file left behind


def test_atomic_write_replaces_and_takes_any_buffer(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old contents, longer than the new")
    atomic_write(p, bytearray(b"new"))
    assert p.read_bytes() == b"new"
    atomic_write(p, memoryview(b"view"), mode=0o600)
    assert p.read_bytes() == b"view" and _mode(p) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_failing_midway_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"old")
    gone = memoryview(b"new")
    gone.release()  # writing it raises after the temp file exists
    with pytest.raises(ValueError):
        atomic_write(p, gone)
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_failing_rename_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "d"
    target.mkdir()
    (target / "x").write_bytes(b"")  # a non-empty directory cannot be replaced by a file
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert sorted(os.listdir(tmp_path)) == ["d"] and os.listdir(target) == ["x"]


def test_atomic_write_into_a_missing_directory_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nope" / "f", b"data")
    assert os.listdir(tmp_path) == []


# --- user directories ----------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    os.chmod(h, 0o755)
    monkeypatch.setenv("HOME", str(h))
    for var in ("XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_CONFIG_HOME", "ENARX_TEST_DIR"):
        monkeypatch.delenv(var, raising=False)
    return h


def test_defaults_follow_the_xdg_rules(home: Path) -> None:
    assert cache_dir("modules") == home / ".cache" / "enarx" / "modules"
    assert state_dir("sim") == home / ".local" / "state" / "enarx" / "sim"
    assert config_dir("x") == home / ".config" / "enarx" / "x"
    assert not (home / ".cache").exists()  # nothing is created unless asked


def test_xdg_variables_are_used_when_absolute(home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var, fn in (("XDG_CACHE_HOME", cache_dir), ("XDG_STATE_HOME", state_dir),
                    ("XDG_CONFIG_HOME", config_dir)):
        monkeypatch.setenv(var, str(tmp_path / var))
        assert fn("n") == tmp_path / var / "enarx" / "n"


@pytest.mark.parametrize("value", ["", "relative/cache", "./c"])
def test_empty_or_relative_xdg_values_are_ignored(home: Path, value: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", value)
    assert cache_dir("c") == home / ".cache" / "enarx" / "c"


def test_the_enarx_override_wins(home: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ENARX_TEST_DIR", str(tmp_path / "mine"))
    assert cache_dir("c", env="ENARX_TEST_DIR") == tmp_path / "mine"
    monkeypatch.setenv("ENARX_TEST_DIR", "")  # empty means unset
    assert cache_dir("c", env="ENARX_TEST_DIR") == tmp_path / "xdg" / "enarx" / "c"


def test_create_makes_every_new_component_private(home: Path, umask0: None) -> None:
    d = state_dir("sim", create=True)
    assert d.is_dir()
    for p in (d, d.parent, d.parent.parent, d.parent.parent.parent):  # sim, enarx, state, .local
        assert _mode(p) == 0o700, p
    assert _mode(home) == 0o755  # what already existed is left alone
    assert state_dir("sim", create=True) == d  # idempotent


def test_ensure_private_dir_tightens_an_existing_directory(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    assert ensure_private_dir(d) == d and _mode(d) == 0o700


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        ensure_private_dir(tmp_path / "f")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory away")
def test_ensure_private_dir_refuses_another_users_directory(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    link = tmp_path / "link"
    link.symlink_to(theirs)
    for p in (theirs, link):
        with pytest.raises(PermissionError, match="another user"):
            ensure_private_dir(p)
    assert _mode(theirs) == 0o755  # left as it was


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../x"])
def test_bad_names_are_refused(home: Path, name: str) -> None:
    with pytest.raises(ValueError):
        cache_dir(name)


def test_no_home_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # What Path.home() does with HOME unset and no passwd entry for the user.
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(ResourceError) as err:
        cache_dir("c")
    assert err.value.hint and "HOME" in err.value.hint


def test_the_collateral_cache_follows_the_same_rules(home: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from enarx.platform.collateral import Fetcher

    monkeypatch.delenv("ENARX_COLLATERAL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # invalid per XDG: ignored
    assert Fetcher().cache_dir == home / ".cache" / "enarx" / "collateral"
    monkeypatch.setenv("ENARX_COLLATERAL_CACHE", str(tmp_path / "c"))
    assert Fetcher().cache_dir == tmp_path / "c"
