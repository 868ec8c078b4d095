#!/usr/bin/env bash
# Starts the local brokers and runs `bridge run routes.example.yaml` with traffic flowing
# through it: orders published to RabbitMQ come out of Kafka, settled payments published
# to Kafka come out of RabbitMQ, shipments sent to SQS and inventory updates published to
# Pub/Sub come out of Kafka (and big orders go on to SNS). Runs until Ctrl-C, or for $DEMO_ROUNDS rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
# The local SQS/SNS stand-in accepts any credentials.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}

scripts/brokers.sh up
cargo build --quiet
bridge=target/debug/bridge
routes=routes.example.yaml
work=$(mktemp -d)
$bridge validate $routes

$bridge run $routes 2>"$work/bridge.log" &
bridge_pid=$!
tail_pids=()
cleanup() {
  kill "${tail_pids[@]}" 2>/dev/null || true
  kill -TERM $bridge_pid 2>/dev/null && wait $bridge_pid || true
  echo "demo: bridge stopped; its log is $work/bridge.log" >&2
}
trap cleanup EXIT

# Wait until bridge has connected (it declares the demo's queues and topics).
for _ in $(seq 100); do grep -q "bridge is running" "$work/bridge.log" && break; sleep 0.2; done
grep -q "bridge is running" "$work/bridge.log" || { cat "$work/bridge.log"; exit 1; }

echo "demo: watching kafka:orders, kafka:shipments, kafka:inventory and rabbit:exchange/shop/payment.# (Ctrl-C to stop)" >&2
$bridge tail kafka:orders -c $routes --follow &
tail_pids+=($!)
$bridge tail kafka:shipments -c $routes --follow &
tail_pids+=($!)
$bridge tail kafka:inventory -c $routes --follow &
tail_pids+=($!)
$bridge tail 'rabbit:exchange/shop/payment.#' -c $routes --follow &
tail_pids+=($!)
sleep 2

round=0
while [[ -z ${DEMO_ROUNDS:-} || $round -lt ${DEMO_ROUNDS} ]]; do
  round=$((round + 1))
  total=$(( (round * 370) % 2000 ))
  $bridge send rabbit:exchange/shop/order.placed -c $routes \
    "{\"order\": $round, \"customer\": \"c-$((round % 3))\", \"total\": $total}" \
    --header source=demo --correlation-id "order-$round" >/dev/null
  $bridge send kafka:payments -c $routes "{\"order\": $round}" --key "c-$((round % 3))" \
    --header status=settled >/dev/null
  $bridge send kafka:payments -c $routes "{\"order\": $round}" --key "c-$((round % 3))" \
    --header status=pending >/dev/null
  $bridge send aws:sqs/shipments -c $routes "{\"order\": $round, \"carrier\": \"demo\"}" \
    --header order="$round" >/dev/null
  $bridge send gcp:topic/inventory -c $routes "{\"sku\": \"sku-$((round % 4))\", \"stock\": $round}" \
    --key "sku-$((round % 4))" >/dev/null
  sleep 1
done
sleep 2
