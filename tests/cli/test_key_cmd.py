"""``enarx key``: signing keys from the real CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from enarx.package import sign
from tests.cliutil import RunEnarx


def test_key_create_writes_both_files_and_prints_the_fingerprint(enarx: RunEnarx,
                                                                 tmp_path: Path) -> None:
    proc = enarx("key", "create", "--out", tmp_path / "signing.pem")
    assert proc.returncode == 0, proc.stderr
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    fp = sign.fingerprint(sign.load_public_key(pub))
    assert sign.fingerprint(sign.load_private_key(priv)) == fp
    out = proc.stdout.decode()
    assert str(pub) in out and fp in out
    assert b"PRIVATE" not in proc.stdout + proc.stderr  # the key itself is never printed
    show = enarx("key", "fingerprint", pub)
    assert show.returncode == 0 and show.stdout.decode().strip() == fp


def test_key_create_json(enarx: RunEnarx, tmp_path: Path) -> None:
    proc = enarx("key", "create", "--out", tmp_path / "k.pem", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == {"private": str(tmp_path / "k.pem"), "public": str(tmp_path / "k.pub.pem"),
                   "fingerprint": sign.fingerprint(sign.load_public_key(tmp_path / "k.pub.pem"))}


def test_key_create_refuses_to_overwrite(enarx: RunEnarx, tmp_path: Path) -> None:
    assert enarx("key", "create", "--out", tmp_path / "k.pem").returncode == 0
    before = (tmp_path / "k.pem").read_bytes()
    proc = enarx("key", "create", "--out", tmp_path / "k.pem")
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert "error: " in err and "already exists" in err and "hint: " in err
    assert "Traceback" not in err
    assert (tmp_path / "k.pem").read_bytes() == before


def test_bad_inputs_exit_2_without_traceback(enarx: RunEnarx, tmp_path: Path) -> None:
    missing = enarx("key", "create", "--out", tmp_path / "no" / "k.pem")
    (tmp_path / "junk.pem").write_text("junk")
    junk = enarx("key", "fingerprint", tmp_path / "junk.pem")
    for proc in (missing, junk):
        assert proc.returncode == 2, proc.stderr
        assert b"hint: " in proc.stderr and b"Traceback" not in proc.stderr
    assert enarx("key", "create").returncode == 2  # --out is required
