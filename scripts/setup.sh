#!/usr/bin/env bash
# Create the project venv and install enarx (editable) with its test extras.
# Idempotent and quiet when already done. Works on a fresh Debian bookworm as root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11+ is required ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Debian splits venv out of the interpreter package.
    echo "setup: installing python3-venv"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
  fi
fi
stamp="$VENV/.enarx-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing enarx and its dependencies into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
  "$VENV/bin/python" -c 'import enarx, wasmtime, cryptography, dcap_qvl, mypy' # fail loudly if pip did
  touch "$stamp"
fi
# Build the native fd_read/fd_write path now (otherwise the first run builds it). Quiet and
# never fatal: without a C compiler enarx uses its pure-Python path (enarx/wasi/native.py).
"$VENV/bin/python" -c 'from enarx.wasi import native; native.library()' 2>/dev/null || true
