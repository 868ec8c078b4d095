#!/usr/bin/env bash
# The side-by-side pipeline benchmark (benches/pipeline): raw client pipe vs `bridge run`.
#
#   scripts/bench.sh                 full run, optimized build (about 15 minutes here)
#   scripts/bench.sh --only Kafka    only scenarios whose name contains the text (A|B: either)
#   scripts/bench.sh --rounds 2      two drains per pipe and scenario, the order swapped
#   scripts/bench.sh --quick         smoke run (under a minute): a few small scenarios on an
#                                    unoptimized build, so the harness cannot rot; its
#                                    figures are not the performance figures
#
# Starts the local brokers it needs first (scripts/brokers.sh up).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/brokers.sh up >&2
profile=()
for arg in "$@"; do
  if [[ $arg == --quick ]]; then profile=(--profile dev); fi
done
exec cargo bench --locked "${profile[@]}" --bench pipeline -- "$@"
