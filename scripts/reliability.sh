#!/usr/bin/env bash
# The reliability scenarios of tests/reliability.rs against the local brokers, then the
# table of docs/reliability.md printed from their reports (target/tmp/reliability/*.json).
#
#   scripts/reliability.sh          the bounded sizes, as CI runs them
#   scripts/reliability.sh --long   more messages and more faults (BRIDGE_RELIABILITY=long)
#
# BRIDGE_RELIABILITY_SEED repeats the random kill moments of an earlier run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} == --long ]]; then
  export BRIDGE_RELIABILITY=long
fi
scripts/brokers.sh up
reports=target/tmp/reliability
rm -rf "$reports"
runner=(cargo nextest run --all-features --locked --no-fail-fast --test reliability)
status=0
# Scenarios that stop a broker, and the network faults (timing-sensitive), run alone.
source "$(dirname "${BASH_SOURCE[0]}")/alone-tests.sh"
alone=$ALONE_TESTS
"${runner[@]}" -E "not $alone" || status=$?
"${runner[@]}" -E "$alone" --test-threads 1 || status=$?

python3 - "$reports" <<'PY'
import json, pathlib, sys
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
print("| scenario | messages | lost | duplicates | reordered | time to recover |")
print("|---|---|---|---|---|---|")
for r in rows:
    recovery = "-" if r["recovery_ms"] is None else f'{r["recovery_ms"] / 1000:.1f} s'
    print(f'| {r["scenario"]} | {r["messages"]} | {r["lost"]} | {r["duplicates"]} | {r["reordered"]} | {recovery} |')
PY
exit $status
