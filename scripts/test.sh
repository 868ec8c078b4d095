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
# Some tests disturb the others or need a machine that is not saturated: they run alone,
# after the others (scripts/alone-tests.sh says which and why).
source "$(dirname "${BASH_SOURCE[0]}")/alone-tests.sh"
alone=$ALONE_TESTS
"${runner[@]}" -E "not $alone"
"${runner[@]}" -E "$alone" --test-threads 1
# The benchmark's quick mode: smoke runs that keep the harness working (their figures come
# from an unoptimized build; docs/performance.md has the real ones and their command).
time scripts/bench.sh --quick
time scripts/bench.sh --quick --headers
