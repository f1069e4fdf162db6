#!/usr/bin/env bash
# Make a wasi-testsuite checkout for scripts/wasi-testsuite.sh from a git clone or mirror of
# WebAssembly/wasi-testsuite: the runner and adapters from `main`, the prebuilt tests from
# `prod/testsuite-base`. Prints the checkout's path. Reuses it while both commits are unchanged.
#
# usage: scripts/wasi-testsuite/checkout.sh GIT_DIR [DEST_PARENT]
set -euo pipefail
if [[ $# -lt 1 ]]; then
    echo "usage: $0 GIT_DIR_OF_A_WASI_TESTSUITE_CLONE [DEST_PARENT]" >&2
    exit 2
fi
GIT=(git --git-dir="$1")
[[ -d $1/.git ]] && GIT=(git --git-dir="$1/.git")
PARENT=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/enarx-wasi-testsuite}

ref() {  # a branch, local or remote-tracking
    "${GIT[@]}" rev-parse -q --verify "$1^{commit}" 2>/dev/null ||
        "${GIT[@]}" rev-parse -q --verify "origin/$1^{commit}"
}
MAIN=$(ref main)
TESTS=$(ref prod/testsuite-base)
DEST=$PARENT/checkout-${MAIN:0:12}-${TESTS:0:12}
if [[ ! -f $DEST/.complete ]]; then
    mkdir -p "$PARENT"
    TMP=$(mktemp -d "$PARENT/.checkout-XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    "${GIT[@]}" archive "$MAIN" test-runner adapters | tar -x -C "$TMP"
    "${GIT[@]}" archive "$TESTS" tests | tar -x -C "$TMP"
    touch "$TMP/.complete"
    rm -rf "$DEST"
    mv "$TMP" "$DEST"
    trap - EXIT
fi
echo "$DEST"
