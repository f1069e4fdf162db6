"""keep/files.py's encrypted ``dir`` entries, through the real ``enarx run``: ``--dir
HOST::GUEST:enc=KEYFILE`` and Enarx.toml ``encryption_key_file`` / ``encryption_key``; a
libc guest sees exactly what it sees on a plain pre-open, and a wrong or missing key stops
the run before the workload starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from enarx.encdir import EncDir
from tests.cliutil import RunEnarx
from tests.guestbuild import GUESTS, ToolchainMissing, build_c, python_args, python_wasm

NIL = ("--backend", "nil")


@pytest.fixture
def enc(tmp_path: Path) -> tuple[Path, Path]:
    """An empty encrypted directory and its key file (0600)."""
    key = tmp_path / "dir.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    host = tmp_path / "enc"
    EncDir.create(str(host), key.read_bytes()).close()
    return host, key


def _host_bytes(root: Path) -> bytes:
    out = b""
    for d, dirs, files in os.walk(root):
        out += "\n".join(dirs + files).encode()
        for n in files:
            out += Path(d, n).read_bytes()
    return out


def test_libc_guest_sees_the_same_as_on_a_plain_preopen(enarx: RunEnarx, tmp_path: Path,
                                                        enc: tuple[Path, Path]) -> None:
    host, key = enc
    wasm = build_c("encfs_libc.c")
    plain = tmp_path / "plain"
    plain.mkdir()
    p = enarx("run", *NIL, "--dir", f"{plain}::/data", wasm, "/data", "write")
    e = enarx("run", *NIL, "--dir", f"{host}::/data:enc={key}", wasm, "/data", "write")
    assert p.returncode == 0, p.stderr.decode()
    assert e.returncode == 0, e.stderr.decode()
    assert e.stdout == p.stdout
    out = e.stdout.decode()
    assert "cat 255 line 0000 of the secret report" in out and "rename 0" in out
    # a second run (read-only, the key file relative to the current directory) reads it back
    again = enarx("run", *NIL, "--dir", f"{host}::/data:ro:enc=dir.key", wasm, "/data", "check",
                  cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout.decode().splitlines() == [
        out.splitlines()[-1], "ls . .. notes.txt"]
    # nothing the guest wrote, and no name it chose, is on the host in the clear
    seen = _host_bytes(host)
    for marker in (b"secret report", b"appended", b"notes", b"journal", b"EDITED", b"a.txt"):
        assert marker not in seen


def test_enarx_toml_key_file_relative_to_the_config(enarx: RunEnarx, tmp_path: Path,
                                                    enc: tuple[Path, Path]) -> None:
    host, _key = enc
    (tmp_path / "Enarx.toml").write_text(
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        f'[[files]]\nkind = "dir"\nhost = "{host.name}"\nguest = "/data"\n'
        'encryption_key_file = "dir.key"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", tmp_path / "Enarx.toml", build_c("cli_files.c"),
              "/data/x.txt", "hello-from-toml")
    assert r.returncode == 0, r.stderr.decode()
    assert "read back 15 bytes: hello-from-toml" in r.stdout.decode()
    assert b"hello-from-toml" not in _host_bytes(host)


def test_wrong_key_is_refused_before_the_workload_starts(enarx: RunEnarx, tmp_path: Path,
                                                         enc: tuple[Path, Path]) -> None:
    host, _key = enc
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(os.urandom(32))
    r = enarx("run", *NIL, "--dir", f"{host}::/data:enc={wrong}", build_c("cli_files.c"),
              "/data/x", "y")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert r.stdout == b""  # the guest never ran
    assert "error:" in err and "hint:" in err and "Traceback" not in err
    assert "files[3]" in err  # the entry at fault is named


@pytest.mark.parametrize("content", [b"", b"x" * 31, b"x" * 33, b"x" * 64])
def test_key_file_must_hold_exactly_32_bytes(enarx: RunEnarx, tmp_path: Path,
                                             enc: tuple[Path, Path], content: bytes) -> None:
    host, _key = enc
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    r = enarx("run", *NIL, "--dir", f"{host}::/data:enc={bad}", build_c("cli_files.c"))
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"", err
    assert "32" in err and "hint:" in err and "Traceback" not in err


def test_missing_key_file_and_missing_directory(enarx: RunEnarx, tmp_path: Path,
                                                enc: tuple[Path, Path]) -> None:
    host, key = enc
    r = enarx("run", *NIL, "--dir", f"{host}::/data:enc={tmp_path / 'nope.key'}",
              build_c("cli_files.c"))
    assert r.returncode == 2 and "nope.key" in r.stderr.decode(), r.stderr.decode()
    r = enarx("run", *NIL, "--dir", f"{tmp_path / 'nodir'}::/data:enc={key}",
              build_c("cli_files.c"))
    err = r.stderr.decode()
    assert r.returncode == 2 and "hint:" in err and "Traceback" not in err, err


def test_steward_key_without_a_steward_is_refused(enarx: RunEnarx, tmp_path: Path,
                                                  enc: tuple[Path, Path]) -> None:
    host, _key = enc
    (tmp_path / "Enarx.toml").write_text(
        f'[[files]]\nkind = "dir"\nhost = "{host}"\nguest = "/data"\n'
        'encryption_key = "app/dirkey/v1"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", tmp_path / "Enarx.toml", build_c("cli_files.c"))
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"", err
    assert "steward" in err and "Traceback" not in err


@pytest.mark.slow
def test_cpython_guest_writes_and_reads_json_in_an_encrypted_dir(
        enarx: RunEnarx, enc: tuple[Path, Path]) -> None:
    try:
        interpreter, stdlib = python_wasm()
    except ToolchainMissing as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"toolchain missing: {e}")
    host, key = enc
    r = enarx("run", *NIL, *python_args(stdlib), "--dir", f"{GUESTS / 'python'}::/app:ro",
              "--dir", f"{host}::/data:enc={key}", interpreter, "/app/encdir_app.py", "/data")
    assert r.returncode == 0, r.stderr.decode()
    report = json.loads(r.stdout.decode().splitlines()[-1])
    assert report["json"] is True
    assert report["files"] == ["SECRETFILE.json.bak"]
    assert report["sqlite"] in (True, "unavailable")  # this CPython build may lack sqlite3
    assert b"SECRET" not in _host_bytes(host)


def test_an_encrypted_directory_open_for_writing_is_not_opened_again(enarx: RunEnarx, tmp_path: Path,
                                                    enc: tuple[Path, Path]) -> None:
    host, key = enc
    r = enarx("run", *NIL, "--dir", f"{host}::/a:enc={key}", "--dir",
              f"{tmp_path}/./enc::/b:ro:enc={key}", build_c("cli_files.c"))
    err = r.stderr.decode()
    assert r.returncode == 2 and r.stdout == b"", err
    assert "files[4]" in err and "hint:" in err and "Traceback" not in err
