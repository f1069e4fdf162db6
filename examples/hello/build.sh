#!/usr/bin/env bash
# Rebuild hello.wasm (committed, so the README demo needs no toolchain). Needs zig:
# `pip install ziglang` (scripts/install-toolchains.sh does it into .venv).
set -euo pipefail
cd "$(dirname "$0")"
if command -v zig >/dev/null; then zig=(zig)
else zig=("${PYTHON:-../../.venv/bin/python}" -m ziglang); fi
"${zig[@]}" cc -target wasm32-wasi -O2 -s -o hello.wasm hello.c
echo "built $(pwd)/hello.wasm ($(wc -c <hello.wasm) bytes)"
