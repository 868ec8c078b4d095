#!/usr/bin/env bash
# The whole test suite against real local brokers (this is what .ci/run calls).
#
# Starts the brokers it needs (installing what is missing), checks formatting and lints,
# runs every test, then runs the tests that stop and start brokers one at a time.
# A test that needs a broker fails when the broker is missing; none is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/brokers.sh up

# Independent clients that check bridge from outside (Google's own Pub/Sub client).
tools=${BRIDGE_TOOLS:-/opt/bridge-tools}
export BRIDGE_PYTHON=$tools/pyclients/bin/python
if ! "$BRIDGE_PYTHON" -c "import google.cloud.pubsub_v1" 2>/dev/null; then
  echo "test: installing Python clients into $tools/pyclients" >&2
  python3 -m venv "$tools/pyclients"
  "$tools/pyclients/bin/pip" install -q "google-cloud-pubsub>=2.25,<3"
fi

cargo fmt --check
cargo clippy --all-targets --all-features --locked -- -D warnings

runner=(cargo nextest run --all-features --locked --no-fail-fast)
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test: cargo-nextest not found; installing it" >&2
  cargo install cargo-nextest --locked
fi
# Tests that stop and start a broker would disturb the others; so do the SIGKILL tests
# (tansu's group coordinator waits out each killed member's session, and other groups'
# joins stalled past a minute behind them); and the network-fault scenario's timeouts
# (heartbeats, session timeouts) need a machine that is not saturated: run them alone.
alone='test(/broker_restart|network_faults|sigkill/)'
"${runner[@]}" -E "not $alone"
"${runner[@]}" -E "$alone" --test-threads 1
# The benchmark's quick mode: a smoke run that keeps the harness working (its figures come
# from an unoptimized build; docs/performance.md has the real ones and their command).
time scripts/bench.sh --quick
