#!/usr/bin/env bash
# The whole test suite against real local brokers (this is what .ci/run calls).
#
# Starts the brokers it needs (installing what is missing), checks formatting and lints,
# runs every test, then runs the tests that stop and start brokers one at a time.
# A test that needs a broker fails when the broker is missing; none is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/brokers.sh up

cargo fmt --check
cargo clippy --all-targets --all-features --locked -- -D warnings

runner=(cargo nextest run --all-features --locked --no-fail-fast)
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: cargo-nextest not found; installing it" >&2
  cargo install cargo-nextest --locked
fi
"${runner[@]}" -E 'not test(/broker_restart/)'
# Tests that stop and start a broker would disturb the others: run them alone.
"${runner[@]}" -E 'test(/broker_restart/)' --test-threads 1
