#!/usr/bin/env bash
# The README's first command (`make demo`): run a workload, then walk the attestation flow
# on the simulated platform. Everything runs on embedded defaults; nothing needs a TEE.
set -euo pipefail
cd "$(dirname "$0")/.."
ENARX=${ENARX:-.venv/bin/enarx}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Run an unmodified WASI program (nil backend: no TEE, loudly not confidential)"
"$ENARX" run --backend nil examples/hello/hello.wasm

step "2. What can this host run?"
"$ENARX" platform info

step "3. Evidence from the simulated SEV-SNP platform, binding the workload's digest"
digest=$(sha256sum examples/hello/hello.wasm | cut -d' ' -f1)
ENARX_SIM_DIR="$work/sim" "$ENARX" attest report --platform sim --report-data "$digest" \
    --out "$work/report.bin"

step "4. Verify it (the sim root must be named explicitly: it is a test root)"
"$ENARX" attest verify "$work/report.bin" --platform snp --cert "$work/report.bin.vcek.pem" \
    --chain "$work/report.bin.chain.pem" --trust-root "$work/report.bin.ark.pem"

step "5. Without the sim root the same evidence is refused (exit code 4 expected)"
if "$ENARX" attest verify "$work/report.bin" --platform snp --cert "$work/report.bin.vcek.pem" \
    --chain "$work/report.bin.chain.pem"; then
  echo "demo: evidence from a test root was accepted" >&2
  exit 1
fi
echo "refused, as it must be"
