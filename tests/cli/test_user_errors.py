"""Common mistakes a new user makes: each is exit 2 with an error naming the problem and a hint
that says what to do instead (never a traceback)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime

from tests.cliutil import RunEnarx
from tests.vectors import vector_dir

NIL = ("--backend", "nil")
HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello.wasm"


def _error_and_hint(stderr: bytes) -> tuple[str, str]:
    text = stderr.decode()
    assert "Traceback" not in text, text
    error = next(ln for ln in text.splitlines() if ln.startswith("error: "))
    hint = next(ln for ln in text.splitlines() if ln.startswith("hint: "))
    return error, hint


# --- wrong kind of evidence -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "platform", "extra", "right"),
    [
        (("tdx", "dcapqvl-tdx-v4", "quote.bin"), "snp", ("--cert", "VCEK"), "tdx"),
        (("snp", "ms-milan-v3", "report.bin"), "tdx", ("--collateral", "COLL"), "snp"),
        # A quote of the other Intel kind: named before any (expired) collateral is looked at.
        (("sgx", "dcapqvl-sgx-v3", "quote.bin"), "tdx", ("--collateral", "COLL"), "sgx"),
        (("tdx", "dcapqvl-tdx-v4", "quote.bin"), "sgx", ("--collateral", "COLL"), "tdx"),
    ],
)
def test_verify_with_wrong_platform_names_the_right_one(
    enarx: RunEnarx, evidence: tuple[str, str, str], platform: str, extra: tuple[str, str],
    right: str,
) -> None:
    subst = {"VCEK": vector_dir("snp", "ms-milan-v3") / "vcek.pem",
             "COLL": vector_dir("tdx", "dcapqvl-tdx-v4")}
    args = [a if a not in subst else str(subst[a]) for a in extra]
    path = vector_dir(evidence[0], evidence[1]) / evidence[2]
    r = enarx("attest", "verify", path, "--platform", platform, *args)
    assert r.returncode == 2, r.stderr
    error, hint = _error_and_hint(r.stderr)
    assert "not an" in error and hint == f"hint: use --platform {right}"
    j = enarx("attest", "verify", path, "--platform", platform, *args, "--json")
    assert j.returncode == 2
    assert json.loads(j.stdout)["error"]["hint"] == f"use --platform {right}"


def test_verify_quote_without_collateral_and_report_without_cert(enarx: RunEnarx) -> None:
    r = enarx("attest", "verify", vector_dir("tdx", "dcapqvl-tdx-v4") / "quote.bin",
              "--platform", "tdx")
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert "--collateral" in error and "--help" in hint
    r = enarx("attest", "verify", vector_dir("snp", "ms-milan-v3") / "report.bin",
              "--platform", "snp")
    assert r.returncode == 4
    error, hint = _error_and_hint(r.stderr)
    assert "no VCEK" in error and "--cert" in hint and "enarx platform snp vcek" in hint


def test_expired_collateral_hint_names_the_commands(enarx: RunEnarx) -> None:
    v = vector_dir("tdx", "dcapqvl-tdx-v4")
    r = enarx("attest", "verify", v / "quote.bin", "--platform", "tdx", "--collateral", v)
    assert r.returncode == 4
    error, hint = _error_and_hint(r.stderr)
    assert "expired" in error
    assert "enarx platform sgx cache" in hint and "--at" in hint


@pytest.mark.parametrize(
    ("command", "evidence", "tool"),
    [
        (("platform", "snp", "vcek"), ("tdx", "dcapqvl-tdx-v4", "quote.bin"),
         "enarx platform sgx cache"),
        (("platform", "sgx", "cache"), ("snp", "ms-milan-v3", "report.bin"),
         "enarx platform snp vcek"),
    ],
)
def test_fetchers_refuse_the_other_vendors_evidence_before_any_download(
    enarx: RunEnarx, tmp_path: Path, command: tuple[str, ...], evidence: tuple[str, str, str],
    tool: str,
) -> None:
    # An unroutable URL: had the command tried to download, it would fail with exit 5 instead.
    r = enarx(*command, vector_dir(*evidence[:2]) / evidence[2], "--out", tmp_path / "out",
              "--cache-dir", tmp_path / "cache", "--kds-url" if "vcek" in command
              else "--pcs-url", "http://127.0.0.1:9")
    assert r.returncode == 2, r.stderr
    error, hint = _error_and_hint(r.stderr)
    assert "DCAP quote" in error or "SEV-SNP" in error
    assert tool in hint


# --- modules that are not preview1 command modules -------------------------------------------


def test_text_file_named_wasm(enarx: RunEnarx, tmp_path: Path) -> None:
    bad = tmp_path / "app.wasm"
    bad.write_text("#!/bin/sh\necho hello\n")
    r = enarx("run", *NIL, bad)
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert "the file is text" in error and "#!/bin/sh" in error
    assert ".wasm" in hint and "(module" in hint


@pytest.mark.parametrize("form", ["binary", "text"])
def test_component_is_named_as_such(enarx: RunEnarx, tmp_path: Path, form: str) -> None:
    # A real component-model binary (as wasm32-wasip2 toolchains emit), from wasmtime's wat2wasm.
    if form == "binary":
        comp = tmp_path / "app.wasm"
        comp.write_bytes(wasmtime.wat2wasm("(component (core module))"))
    else:
        comp = tmp_path / "app.wat"
        comp.write_text("(component (core module))")
    r = enarx("run", *NIL, comp)
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert "WebAssembly component" in error and "preview2" in error
    assert "wasm32-wasip1" in hint


def test_module_importing_preview2_interfaces(enarx: RunEnarx, tmp_path: Path) -> None:
    mod = tmp_path / "p2.wat"
    mod.write_text('(module (import "wasi:cli/environment@0.2.0" "get-arguments" '
                   '(func (param i32))) (memory (export "memory") 1) (func (export "_start")))')
    r = enarx("run", *NIL, mod)
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert "preview2" in error and "wasi:cli/environment" in error
    assert "wasm32-wasip1" in hint


def test_truncated_module_says_why(enarx: RunEnarx, tmp_path: Path) -> None:
    bad = tmp_path / "cut.wasm"
    bad.write_bytes(HELLO.read_bytes()[:200])
    r = enarx("run", *NIL, bad)
    assert r.returncode == 2
    error, _ = _error_and_hint(r.stderr)
    assert "Caused by" not in error and "end-of-file" in error


# --- flags and Enarx.toml ---------------------------------------------------------------------


def test_dir_pointing_at_a_file(enarx: RunEnarx, tmp_path: Path) -> None:
    f = tmp_path / "input.json"
    f.write_text("{}")
    r = enarx("run", *NIL, "--dir", f"{f}::/data", HELLO)
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert "is not a directory" in error and "--dir" in hint


@pytest.mark.parametrize(
    ("flag", "hint_part"),
    [("NOVALUE", "--env KEY=VALUE"), ("FD_COUNT=9", "--no-fd-env")],
)
def test_env_flag_mistakes(enarx: RunEnarx, flag: str, hint_part: str) -> None:
    r = enarx("run", *NIL, "--env", flag, HELLO)
    assert r.returncode == 2
    _, hint = _error_and_hint(r.stderr)
    assert hint_part in hint


def test_kind_typo_points_at_the_kind_line_and_suggests(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n'
                   '[[files]]\n# the third fd\nkind = "stdeer"\n')
    for args in (("config", "check", cfg), ("run", *NIL, "--wasmcfgfile", cfg, HELLO)):
        r = enarx(*args)
        assert r.returncode == 2
        error, hint = _error_and_hint(r.stderr)
        assert error == f"error: {cfg}:7: files[2]: unknown kind 'stdeer'"
        assert "did you mean 'stderr'?" in hint


def test_connect_to_ipv6_literal_needs_a_name(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "connect"\nhost = "::1"\nport = 443\n')
    r = enarx("config", "check", cfg)
    assert r.returncode == 2
    assert b"set `name`" in r.stderr
    cfg.write_text('[[files]]\nkind = "connect"\nhost = "::1"\nport = 443\nname = "db"\n')
    r = enarx("config", "check", cfg)
    assert r.returncode == 0 and b"connect  db" in r.stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def test_listen_on_a_busy_port(enarx: RunEnarx, tmp_path: Path, busy_port: int) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\n'
                   'kind = "stderr"\n[[files]]\nkind = "listen"\nname = "web"\n'
                   f'addr = "127.0.0.1"\nport = {busy_port}\n')
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, HELLO)
    assert r.returncode == 2
    error, hint = _error_and_hint(r.stderr)
    assert f"files[3] (web): cannot listen on 127.0.0.1:{busy_port}" in error
    assert "port = 0" in hint


def test_unreachable_kds_hint_names_the_flag_to_change(enarx: RunEnarx, tmp_path: Path) -> None:
    r = enarx("platform", "snp", "vcek", vector_dir("snp", "ms-milan-v3") / "report.bin",
              "--kds-url", "http://127.0.0.1:9", "--cache-dir", tmp_path)
    assert r.returncode == 5
    _, hint = _error_and_hint(r.stderr)
    assert "--kds-url" in hint and "--pcs-url" not in hint


# --- hostile Enarx.toml input: typed errors, never a traceback --------------------------------


def _config_error(enarx: RunEnarx, cfg: Path) -> tuple[str, str]:
    """The error and hint of both `config check` and `run` on ``cfg`` (the same for both)."""
    seen = set()
    for args in (("config", "check", cfg), ("run", *NIL, "--wasmcfgfile", cfg, HELLO)):
        r = enarx(*args)
        assert r.returncode == 2, r.stderr
        seen.add(_error_and_hint(r.stderr))
    assert len(seen) == 1
    return seen.pop()


def test_toml_nested_3000_levels_deep(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('args = []\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    error, hint = _config_error(enarx, cfg)
    assert error.startswith(f"error: {cfg}:2: ") and "nested too deeply" in error
    assert "brackets" in hint


def test_nul_byte_in_a_dir_host_path(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "stdin"\n[[files]]\nkind = "dir"\nhost = "x\\u0000y"\n')
    error, hint = _config_error(enarx, cfg)
    assert error == f"error: {cfg}:5: files[1].host: may not contain a NUL byte (\\u0000)"
    assert "\\u0000" in hint


@pytest.mark.parametrize(
    ("body", "where", "fragment"),
    [
        ('kind = "listen"\nname = "web"\naddr = "a..b"\nport = 0', "4: files[0].addr",
         "empty DNS label"),
        ('kind = "connect"\nport = 443\nhost = "' + "x" * 64 + '.example.com"',
         "4: files[0].host", "a label has at most 63"),
    ],
)
def test_bad_dns_label_in_listen_or_connect(
    enarx: RunEnarx, tmp_path: Path, body: str, where: str, fragment: str
) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(f"[[files]]\n{body}\n")
    error, hint = _config_error(enarx, cfg)
    assert f"Enarx.toml:{where}: " in error and fragment in error
    assert "labels of 1 to 63 bytes" in hint
