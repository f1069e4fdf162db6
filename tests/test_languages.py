"""Unmodified programs in seven languages run through `enarx run`.

Every guest in tests/guests/<lang>/ keeps one contract:

    lang_X INPUT OUTPUT EXIT_CODE        (env NAME, default "world")

It reads whitespace-separated integers from INPUT (Python: JSON {"numbers": [...]}), writes
"count=N sum=S\\n" to OUTPUT, prints "hello NAME from LANG: N numbers, sum S" and exits with
EXIT_CODE; a missing INPUT exits 1 without writing OUTPUT. Toolchains come from
scripts/install-toolchains.sh; without one a language skips, except under CI where it fails.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from tests.cliutil import RunEnarx
from tests.guestbuild import (
    GUESTS,
    ToolchainMissing,
    build_as,
    build_c,
    build_cpp,
    build_go,
    build_rust,
    build_zig,
    python_args,
    python_wasm,
)

T = TypeVar("T")
NIL = ("--backend", "nil")
EXAMPLES = Path(__file__).parent.parent / "examples"

# Negative, zero and a value past 32 bits: every language must sum in 64 bits.
NUMBERS = [17, -3, 0, 250, 2**40 + 5, -999, 42]

BUILDERS: dict[str, Callable[[], Path]] = {
    "c": lambda: build_c("lang_c.c"),
    "cpp": lambda: build_cpp("lang_cpp"),
    "rust": lambda: build_rust("lang_rust"),
    "go": lambda: build_go("lang_go"),
    "zig": lambda: build_zig("lang_zig"),
    "as": lambda: build_as("lang_as"),
}


def toolchain(get: Callable[[], T]) -> T:
    """Build (or find) a guest; skip when its toolchain is absent, but fail under CI."""
    try:
        return get()
    except ToolchainMissing as e:
        if os.environ.get("CI"):
            pytest.fail(f"{e}: CI must prove every language")
        pytest.skip(str(e))


def expected(lang: str, name: str) -> tuple[str, str]:
    total = sum(NUMBERS)
    return (
        f"hello {name} from {lang}: {len(NUMBERS)} numbers, sum {total}\n",
        f"count={len(NUMBERS)} sum={total}\n",
    )


@pytest.mark.parametrize("lang", list(BUILDERS))
def test_language_guest(lang: str, enarx: RunEnarx, tmp_path: Path) -> None:
    wasm = toolchain(BUILDERS[lang])
    (tmp_path / "input.txt").write_text(
        " ".join(map(str, NUMBERS[:4])) + "\n" + "\t".join(map(str, NUMBERS[4:])) + "\n"
    )
    name = f"enarx-{lang}"
    code = 3 + len(lang)  # differs per language, never 0 or 1

    r = enarx(
        "run",
        *NIL,
        "--dir",
        f"{tmp_path}::/data",
        "--env",
        f"NAME={name}",
        wasm,
        "/data/input.txt",
        "/data/result.txt",
        str(code),
    )

    stdout, result = expected(lang, name)
    assert r.returncode == code, r.stderr.decode()
    assert r.stdout.decode() == stdout
    assert (tmp_path / "result.txt").read_text() == result


@pytest.mark.parametrize("lang", list(BUILDERS))
def test_language_guest_missing_input(lang: str, enarx: RunEnarx, tmp_path: Path) -> None:
    wasm = toolchain(BUILDERS[lang])

    r = enarx(
        "run",
        *NIL,
        "--dir",
        f"{tmp_path}::/data",
        wasm,
        "/data/absent.txt",
        "/data/result.txt",
        "0",
    )

    assert r.returncode == 1, r.stderr.decode()
    assert r.stdout == b""
    assert not (tmp_path / "result.txt").exists()


@pytest.mark.slow
def test_python_guest(enarx: RunEnarx, tmp_path: Path) -> None:
    interpreter, stdlib = toolchain(python_wasm)
    (tmp_path / "input.json").write_text(json.dumps({"numbers": NUMBERS}))
    name = "enarx-python"

    r = enarx(
        "run",
        *NIL,
        *python_args(stdlib),
        "--dir",
        f"{GUESTS / 'python'}::/app:ro",
        "--dir",
        f"{tmp_path}::/data",
        "--env",
        f"NAME={name}",
        interpreter,
        "/app/lang_python.py",
        "/data/input.json",
        "/data/result.txt",
        "9",
    )

    stdout, result = expected("python", name)
    assert r.returncode == 9, r.stderr.decode()
    assert r.stdout.decode() == stdout
    assert (tmp_path / "result.txt").read_text() == result


def test_prebuilt_hello_example(enarx: RunEnarx) -> None:
    """The committed examples/hello/hello.wasm (the README demo) runs as shipped."""
    r = enarx("run", *NIL, EXAMPLES / "hello" / "hello.wasm")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"Hello, world!\n"


# --- examples/: what the README tells a user to build and run ------------------------------

WC_EXAMPLES: dict[str, Callable[[], Path]] = {
    "c": lambda: build_c(EXAMPLES / "c" / "wc.c"),
    "cpp": lambda: build_cpp(str(EXAMPLES / "cpp" / "wc.cpp")),
    "rust": lambda: build_rust(str(EXAMPLES / "rust" / "wc.rs")),
    "go": lambda: build_go(str(EXAMPLES / "go" / "wc.go")),
    "zig": lambda: build_zig(str(EXAMPLES / "zig" / "wc.zig")),
}
WC_TEXT = "the quick brown fox\n  jumps over\tthe lazy dog\n\nend\n"


def wc_expected(path: str) -> str:
    return f"{WC_TEXT.count(chr(10))} {len(WC_TEXT.split())} {len(WC_TEXT.encode())} {path}\n"


@pytest.mark.parametrize("lang", list(WC_EXAMPLES))
def test_example_wc(lang: str, enarx: RunEnarx, tmp_path: Path) -> None:
    wasm = toolchain(WC_EXAMPLES[lang])
    (tmp_path / "words.txt").write_text(WC_TEXT)

    r = enarx("run", *NIL, "--dir", f"{tmp_path}::/data:ro", wasm, "/data/words.txt")

    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == wc_expected("/data/words.txt")


@pytest.mark.slow
def test_example_wc_python(enarx: RunEnarx, tmp_path: Path) -> None:
    interpreter, stdlib = toolchain(python_wasm)
    (tmp_path / "words.txt").write_text(WC_TEXT)

    r = enarx(
        "run",
        *NIL,
        *python_args(stdlib),
        "--dir",
        f"{EXAMPLES / 'python'}::/app:ro",
        "--dir",
        f"{tmp_path}::/data:ro",
        interpreter,
        "/app/wc.py",
        "/data/words.txt",
    )

    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == wc_expected("/data/words.txt")


def test_example_greet_assemblyscript(enarx: RunEnarx) -> None:
    wasm = toolchain(lambda: build_as(str(EXAMPLES / "assemblyscript" / "greet.ts")))

    r = enarx("run", *NIL, "--env", "NAME=Keep", wasm, "one", "two")

    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"Hello, Keep! 2 argument(s): one two\n"
