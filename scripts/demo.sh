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

step "6. A steward (sim allowed by its policy) and a Keep that attests to it before it starts"
printf 'allow = ["sim"]\ntrust_roots = ["%s"]\n' "$work/report.bin.ark.pem" > "$work/steward.toml"
ENARX_SIM_DIR="$work/sim" "$ENARX" steward serve --policy "$work/steward.toml" \
    --state-dir "$work/steward" --port 0 2> "$work/steward.log" &
steward_pid=$!
trap 'kill "$steward_pid" 2>/dev/null; wait "$steward_pid" 2>/dev/null; rm -rf "$work"' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(sed -n 's/.*"event": *"listening".*"url": *"\([^"]*\)".*/\1/p' "$work/steward.log" | head -1)
  [ -n "$url" ] && break
  kill -0 "$steward_pid" 2>/dev/null || { cat "$work/steward.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "demo: the steward did not start" >&2; cat "$work/steward.log" >&2; exit 1; }
"$ENARX" steward ca --state-dir "$work/steward" > "$work/steward-ca.pem"
echo "steward at $url"
ENARX_SIM_DIR="$work/sim" "$ENARX" run --backend sim --steward "$url" \
    --steward-ca "$work/steward-ca.pem" examples/hello/hello.wasm

step "7. The same Keep on nil is refused: the policy does not name nil (exit code 4 expected)"
if "$ENARX" run --backend nil --steward "$url" --steward-ca "$work/steward-ca.pem" \
    examples/hello/hello.wasm; then
  echo "demo: a nil Keep was certified by a steward that does not allow nil" >&2
  exit 1
fi
echo "refused, as it must be"
