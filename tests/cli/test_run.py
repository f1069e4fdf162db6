"""`enarx run` end to end: the real entry point, real guest programs compiled from C."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cliutil import RunEnarx
from tests.guestbuild import build_c

NIL = ("--backend", "nil")


@pytest.fixture(scope="module")
def env_wasm() -> Path:
    return build_c("cli_env.c")


def lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def test_hello(enarx: RunEnarx) -> None:
    r = enarx("run", *NIL, build_c("hello.c"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"Hello, world!\n"
    # nil is loud about not being confidential, exactly once.
    assert r.stderr.decode().count("not confidential".upper()) + r.stderr.decode().count(
        "NOT confidential"
    ) == 1


def test_argv_env_and_fd_vars_from_flags(enarx: RunEnarx, env_wasm: Path) -> None:
    r = enarx("run", *NIL, "--env", "A=1", "--env", "B=x=y", env_wasm, "one", "--two", "3")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[:4] == ["arg[0]=cli_env.wasm", "arg[1]=one", "arg[2]=--two", "arg[3]=3"] or out[
        1:4
    ] == ["arg[1]=one", "arg[2]=--two", "arg[3]=3"]
    envs = [ln.removeprefix("env:") for ln in out if ln.startswith("env:")]
    # FD_COUNT and FD_NAMES come first, then the user's variables.
    assert envs == ["FD_COUNT=3", "FD_NAMES=stdin:stdout:stderr", "A=1", "B=x=y"]


def test_argv_env_from_enarx_toml(enarx: RunEnarx, env_wasm: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(
        'args = ["cfg-arg"]\n[env]\nFROM_TOML = "yes"\n'
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n'
        '[[files]]\nkind = "stderr"\nname = "errors"\n[[files]]\nkind = "null"\n'
    )
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, "--env", "FROM_FLAG=1", env_wasm, "cli-arg")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert "arg[1]=cfg-arg" in out and "arg[2]=cli-arg" in out
    envs = [ln.removeprefix("env:") for ln in out if ln.startswith("env:")]
    assert envs == ["FD_COUNT=4", "FD_NAMES=stdin:stdout:errors:null", "FROM_TOML=yes", "FROM_FLAG=1"]


def test_config_from_environment_variable(enarx: RunEnarx, env_wasm: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[env]\nVIA_ENV = "1"\n')
    r = enarx("run", env_wasm, env={"ENARX_WASMCFGFILE": str(cfg), "ENARX_BACKEND": "nil"})
    assert r.returncode == 0, r.stderr
    assert "env:VIA_ENV=1" in lines(r.stdout)


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_is_propagated(enarx: RunEnarx, env_wasm: Path, code: int) -> None:
    r = enarx("run", *NIL, "--env", f"EXIT_CODE={code}", env_wasm)
    assert r.returncode == code


def test_stdin_to_stdout_several_mib_byte_exact(enarx: RunEnarx) -> None:
    data = os.urandom(6 * 1024 * 1024 + 123)
    r = enarx("run", *NIL, build_c("cli_cat.c"), input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


def test_trap_is_one_clear_line(enarx: RunEnarx) -> None:
    r = enarx("run", *NIL, build_c("cli_trap.c", "-g"))
    assert r.returncode != 0
    assert r.stdout == b"about to trap\n"
    err = [ln for ln in lines(r.stderr) if not ln.startswith("warning:")]
    assert len(err) == 1, r.stderr
    assert err[0].startswith("error: trap: unreachable executed in func explode")
    assert b"Traceback" not in r.stderr


def test_memory_limit_makes_malloc_fail(enarx: RunEnarx) -> None:
    wasm = build_c("cli_alloc.c")
    small = enarx("run", *NIL, "--max-memory", "32M", wasm)
    assert small.returncode == 0, small.stderr
    got = int(small.stdout.split()[1])
    assert 4 <= got < 32
    big = enarx("run", *NIL, "--max-memory", "96M", wasm)
    # libc's allocator grows in steps, so it gets a good part of the cap, never more.
    assert got + 16 <= int(big.stdout.split()[1]) < 96
    unlimited = enarx("run", *NIL, wasm)
    assert int(unlimited.stdout.split()[1]) > 1000


def test_memory_limit_from_enarx_toml(enarx: RunEnarx, tmp_path: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[limits]\nmax_memory = "32M"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, build_c("cli_alloc.c"))
    assert int(r.stdout.split()[1]) < 32


@pytest.mark.parametrize("mode", ["spin", "sleep"])
def test_timeout_interrupts_the_workload(enarx: RunEnarx, mode: str) -> None:
    r = enarx("run", *NIL, "--timeout", "0.5", build_c("cli_spin.c"), mode, timeout=30)
    assert r.returncode == 124, r.stderr
    assert b"timeout" in r.stderr
    assert b"Traceback" not in r.stderr


def test_fuel_runs_out(enarx: RunEnarx) -> None:
    r = enarx("run", *NIL, "--fuel", "100000", build_c("cli_spin.c"), timeout=30)
    assert r.returncode == 124
    assert b"fuel" in r.stderr


def test_preopened_dir_from_flag_and_toml(enarx: RunEnarx, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    r = enarx("run", *NIL, "--dir", f"{data}::/data", build_c("cli_files.c"), "/data/out.txt", "hi")
    assert r.returncode == 0, r.stderr
    assert b"FD_COUNT=4 FD_NAMES=stdin:stdout:stderr:/data" in r.stdout
    assert b"read back 2 bytes: hi" in r.stdout
    assert (data / "out.txt").read_text() == "hi"

    cfg = tmp_path / "Enarx.toml"
    cfg.write_text(
        '[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n[[files]]\nkind = "stderr"\n'
        '[[files]]\nkind = "dir"\nhost = "data"\nguest = "/srv"\nname = "srv"\n'
    )
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, build_c("cli_files.c"), "/srv/b.txt", "toml")
    assert r.returncode == 0, r.stderr
    assert b"FD_NAMES=stdin:stdout:stderr:srv" in r.stdout
    assert (data / "b.txt").read_text() == "toml"


def test_readonly_dir_refuses_writes(enarx: RunEnarx, tmp_path: Path) -> None:
    r = enarx("run", *NIL, "--dir", f"{tmp_path}::/ro:ro", build_c("cli_files.c"), "/ro/x", "no")
    assert r.returncode == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "not a WebAssembly module"),
        (b"\0asm\x01\0\0\0\x99garbage", "invalid WebAssembly module"),
        (b"\x7fELF\x02\x01\x01", "not a WebAssembly module"),
        (b"(module (func $f (unreachable))", "invalid WebAssembly text"),
    ],
)
def test_malformed_module(enarx: RunEnarx, tmp_path: Path, content: bytes, fragment: str) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(content)
    r = enarx("run", *NIL, bad)
    assert r.returncode == 2
    assert fragment.encode() in r.stderr
    assert b"hint:" in r.stderr
    assert b"Traceback" not in r.stderr


def test_module_without_start_or_with_foreign_imports(enarx: RunEnarx, tmp_path: Path) -> None:
    lib = tmp_path / "lib.wat"
    lib.write_text('(module (func (export "f")))')
    r = enarx("run", *NIL, lib)
    assert r.returncode == 2 and b"no `_start`" in r.stderr
    foreign = tmp_path / "foreign.wat"
    foreign.write_text('(module (import "env" "f" (func)) (func (export "_start")))')
    r = enarx("run", *NIL, foreign)
    assert r.returncode == 2 and b"cannot link" in r.stderr


def test_wat_module_runs(enarx: RunEnarx, tmp_path: Path) -> None:
    wat = tmp_path / "exit7.wat"
    wat.write_text(
        '(module (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))'
        ' (memory (export "memory") 1) (func (export "_start") (call $exit (i32.const 7))))'
    )
    assert enarx("run", *NIL, wat).returncode == 7


def test_missing_module_and_config(enarx: RunEnarx, tmp_path: Path, env_wasm: Path) -> None:
    r = enarx("run", *NIL, tmp_path / "nope.wasm")
    assert r.returncode == 2 and b"no such module" in r.stderr
    r = enarx("run", *NIL, "--wasmcfgfile", tmp_path / "nope.toml", env_wasm)
    assert r.returncode == 2 and b"nope.toml: no such file" in r.stderr
    assert b"enarx config init" in r.stderr


def test_bad_config_names_line_and_key(enarx: RunEnarx, tmp_path: Path, env_wasm: Path) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "stdin"\n\n[[files]]\nkind = "stdout"\nnmae = "x"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, env_wasm)
    assert r.returncode == 2
    assert f"{cfg}:6: files[1].nmae: unknown key".encode() in r.stderr
    assert b"Traceback" not in r.stderr


def test_missing_dir_is_clear(enarx: RunEnarx, tmp_path: Path, env_wasm: Path) -> None:
    r = enarx("run", *NIL, "--dir", f"{tmp_path}/absent::/x", env_wasm)
    assert r.returncode == 2
    assert b"files[3]" in r.stderr and b"Traceback" not in r.stderr


def test_bad_flags(enarx: RunEnarx, env_wasm: Path) -> None:
    r = enarx("run", *NIL, "--max-memory", "12Q", env_wasm)
    assert r.returncode == 2 and b"invalid size" in r.stderr
    r = enarx("run", *NIL, "--env", "NOVALUE", env_wasm)
    assert r.returncode == 2 and b"KEY=VALUE" in r.stderr
    r = enarx("run", "--backend", "quantum", env_wasm)
    assert r.returncode == 2 and b"unknown backend" in r.stderr


def test_compiled_module_cache_survives_corruption(
    enarx: RunEnarx, tmp_path: Path, env_wasm: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"ENARX_CACHE_DIR": str(cache)}
    assert enarx("run", *NIL, env_wasm, env=env).returncode == 0
    entries = list(cache.glob("*.cwasm"))
    assert len(entries) == 1
    blob = bytearray(entries[0].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    entries[0].write_bytes(bytes(blob))
    r = enarx("run", *NIL, env_wasm, env=env)
    assert r.returncode == 0 and b"arg[0]=" in r.stdout
    entries[0].write_bytes(b"truncated")
    assert enarx("run", *NIL, env_wasm, env=env).returncode == 0
    assert len(entries[0].read_bytes()) > 1000  # recompiled and rewritten


def test_dir_flag_is_relative_to_cwd_even_with_a_config_elsewhere(
    enarx: RunEnarx, tmp_path: Path
) -> None:
    cfgdir, work = tmp_path / "cfg", tmp_path / "work"
    cfgdir.mkdir()
    (work / "data").mkdir(parents=True)
    cfg = cfgdir / "Enarx.toml"
    cfg.write_text('[[files]]\nkind = "stdin"\n[[files]]\nkind = "stdout"\n'
                   '[[files]]\nkind = "stderr"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, "--dir", "data::/d", build_c("cli_files.c"),
              "/d/f.txt", "x", cwd=work)
    assert r.returncode == 0, r.stderr
    assert (work / "data" / "f.txt").read_text() == "x"


def test_configured_steward_is_never_silently_ignored(
    enarx: RunEnarx, tmp_path: Path, env_wasm: Path
) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('steward = "https://steward.example"\n')
    r = enarx("run", *NIL, "--wasmcfgfile", cfg, env_wasm)
    # A configured steward is used (tests/keep/test_attest.py): without its CA the Keep
    # refuses to start rather than run unattested.
    assert r.returncode == 2, r.stderr
    assert b"steward https://steward.example needs the CA" in r.stderr
    assert b"hint: pass --steward-ca" in r.stderr


@pytest.mark.parametrize("mode", ["small", "big"])
def test_timeout_ends_writes_to_a_pipe_nobody_reads(
    module_cache: Path, tmp_path: Path, mode: str
) -> None:
    # stdout is a pipe the test never drains: the guest blocks in fd_write once it is full.
    import subprocess

    from tests.cliutil import ENARX

    env = {**os.environ, "ENARX_CACHE_DIR": str(module_cache)}
    proc = subprocess.Popen(
        [str(ENARX), "run", *NIL, "--timeout", "1", str(build_c("cli_yes.c")), mode],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 124


def test_writes_with_a_deadline_are_complete_and_in_order(enarx: RunEnarx) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    r = enarx("run", *NIL, "--timeout", "60", build_c("cli_cat.c"), input=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout == data


# --- command-line bytes and upstream Enarx's forms ------------------------------------------


def test_non_utf8_argument_env_and_dir_reach_the_guest_as_bytes(
    enarx: RunEnarx, env_wasm: Path, tmp_path: Path
) -> None:
    # subprocess encodes str with the filesystem encoding: surrogates become the raw bytes.
    raw_dir = tmp_path / os.fsdecode(b"d\xff")
    raw_dir.mkdir()
    r = enarx("run", *NIL, "--env", os.fsdecode(b"K\xfe=v\xff"), "--dir", raw_dir,
              env_wasm, os.fsdecode(b"a\xffb"))
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr
    out = r.stdout.split(b"\n")
    assert b"arg[1]=a\xffb" in out
    assert b"env:K\xfe=v\xff" in out
    assert b"env:FD_NAMES=stdin:stdout:stderr:" + os.fsencode(raw_dir) in out


@pytest.mark.parametrize(("body", "code"), [("i32.const 1", 0), ("unreachable", 134)])
def test_default_export_runs_without_start(
    enarx: RunEnarx, tmp_path: Path, body: str, code: int
) -> None:
    # Upstream Enarx's return_1.wat: no `_start`, a function exported as "" (wasmtime's rule).
    wat = tmp_path / "return_1.wat"
    wat.write_text(f'(module (func (export "") (result i32) {body}))')
    r = enarx("run", *NIL, wat)
    assert r.returncode == code, r.stderr
    assert r.stdout == b""


def test_upstream_option_order_loads_the_config(
    enarx: RunEnarx, env_wasm: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "Enarx.toml"
    cfg.write_text('args = ["from-toml"]\n[env]\nFROM_TOML = "1"\n')
    # Upstream's harness: `enarx run MODULE --wasmcfgfile Enarx.toml`.
    r = enarx("run", env_wasm, "--wasmcfgfile", cfg, "--backend=nil")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert "arg[1]=from-toml" in out and "env:FROM_TOML=1" in out
    assert not any("wasmcfgfile" in ln or "backend" in ln for ln in out)
    err = r.stderr.decode()
    assert err.count("after MODULE is read as an enarx option") == 2
    # A bad config given that way is an error, never ignored.
    r = enarx("run", *NIL, env_wasm, "--wasmcfgfile", tmp_path / "missing.toml")
    assert r.returncode == 2 and b"no such file" in r.stderr
    r = enarx("run", *NIL, env_wasm, "--wasmcfgfile")
    assert r.returncode == 2 and b"error: --wasmcfgfile after MODULE needs a value" in r.stderr


def test_double_dash_passes_everything_after_it_verbatim(
    enarx: RunEnarx, env_wasm: Path, tmp_path: Path
) -> None:
    r = enarx("run", *NIL, env_wasm, "--", "--wasmcfgfile", tmp_path / "nope", "--", "-x")
    assert r.returncode == 0, r.stderr
    args = [ln for ln in lines(r.stdout) if ln.startswith("arg[")]
    assert args[1:] == ["arg[1]=--wasmcfgfile", f"arg[2]={tmp_path / 'nope'}", "arg[3]=--",
                        "arg[4]=-x"]
    assert b"warning: --" not in r.stderr


def test_enarx_option_among_guest_arguments_is_passed_on_with_a_warning(
    enarx: RunEnarx, env_wasm: Path
) -> None:
    r = enarx("run", *NIL, env_wasm, "input.json", "--env", "A=1")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert out[1:4] == ["arg[1]=input.json", "arg[2]=--env", "arg[3]=A=1"]
    assert "env:A=1" not in out
    assert b"--env comes after a guest argument, so it is passed to the guest" in r.stderr
