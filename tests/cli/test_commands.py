"""`enarx --version`, `config init/check`, `platform info`."""

from __future__ import annotations

import json
from pathlib import Path

from enarx import __version__, config
from tests.cliutil import RunEnarx


def test_version(enarx: RunEnarx) -> None:
    r = enarx("--version")
    assert r.returncode == 0 and __version__.encode() in r.stdout


def test_help_lists_verbs(enarx: RunEnarx) -> None:
    out = enarx("--help").stdout
    for verb in (b"run", b"config", b"platform", b"attest"):
        assert verb in out
    run_help = enarx("run", "--help").stdout
    for flag in (b"--wasmcfgfile", b"--backend", b"--dir", b"--env", b"--max-memory", b"--timeout"):
        assert flag in run_help


def test_config_init_writes_template_and_refuses_overwrite(enarx: RunEnarx, tmp_path: Path) -> None:
    r = enarx("config", "init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "Enarx.toml").read_text()
    assert written == config.TEMPLATE
    (tmp_path / "Enarx.toml").write_text("# mine\n")
    r = enarx("config", "init", cwd=tmp_path)
    assert r.returncode == 2 and b"already exists" in r.stderr and b"--force" in r.stderr
    assert (tmp_path / "Enarx.toml").read_text() == "# mine\n"
    assert enarx("config", "check", cwd=tmp_path).returncode == 0


def test_platform_info_json_lists_every_backend(enarx: RunEnarx) -> None:
    r = enarx("platform", "info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    names = [b["backend"] for b in info["backends"]]
    assert names == ["nil", "sim", "kvm", "sev-snp", "tdx", "sgx"]
    nil = info["backends"][0]
    assert nil["available"] and not nil["confidential"]
    for b in info["backends"]:
        assert b["checks"], b
        for c in b["checks"]:
            assert set(c) >= {"name", "passed", "detail", "hint"}
            if not c["passed"]:
                assert c["hint"], c  # every failed check says how to fix it
    assert info["default"] in names


def test_platform_info_table(enarx: RunEnarx) -> None:
    r = enarx("platform", "info")
    assert r.returncode == 0 and b"nil" in r.stdout and b"sev-snp" in r.stdout
