#!/usr/bin/env bash
# Local brokers for bridge's tests and demo: RabbitMQ, Kafka (tansu on sqlite), SQS/SNS
# (moto in server mode), Google's Pub/Sub emulator, NATS with JetStream, Redis and
# Mosquitto (MQTT).
#
#   scripts/brokers.sh up [NAME...]      install what is missing, start what is not answering
#   scripts/brokers.sh status [NAME...]  health of each broker (exit 1 if one is down)
#   scripts/brokers.sh down [NAME...]    stop the brokers this script started (others are left)
#   scripts/brokers.sh pause NAME        make a broker unreachable (tests of recovery)
#   scripts/brokers.sh resume NAME       bring it back
#
# NAME is rabbitmq, kafka, aws, pubsub, nats, redis or mosquitto (default: all; Redis is
# also the shared store of `dedup`). Tools are installed under $BRIDGE_TOOLS
# (default /opt/bridge-tools) so that later runs on the same machine reuse them; broker
# state lives under $BRIDGE_TOOLS/state. Idempotent: a broker that already answers is kept.
set -euo pipefail

TOOLS=${BRIDGE_TOOLS:-/opt/bridge-tools}
STATE=$TOOLS/state
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TANSU_VERSION=0.6.0
KAFKA_PORT=${BRIDGE_KAFKA_PORT:-9092}
RABBIT_PORT=5672
MOTO_VERSION=5.2.5
AWS_PORT=${BRIDGE_AWS_PORT:-4566}
PUBSUB_PORT=${BRIDGE_PUBSUB_PORT:-8085}
# A system Redis may hold 6379: bridge's own server has a port of its own.
REDIS_PORT=${BRIDGE_REDIS_PORT:-6390}
# A system NATS may hold 4222: bridge's own server has a port of its own.
NATS_PORT=${BRIDGE_NATS_PORT:-4223}
# A system Mosquitto may hold 1883.
MQTT_PORT=${BRIDGE_MQTT_PORT:-1884}
MQTT_DIR=$STATE/mosquitto
ALL=(rabbitmq kafka aws pubsub nats redis mosquitto)

log() { printf 'brokers: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

answers() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for_port() { # PORT SECONDS NAME
  local deadline=$((SECONDS + $2))
  until answers "$1"; do
    ((SECONDS < deadline)) || die "$3 did not answer on 127.0.0.1:$1 within $2 s"
    sleep 0.2
  done
}

started_by_us() { [[ -f $STATE/$1.started ]]; }

# Stops the process whose id FILE holds (TERM, then KILL after 5 s) and removes FILE.
stop_pidfile() {
  [[ -f $1 ]] || return 0
  local pid; pid=$(cat "$1")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$1"
}

# --- RabbitMQ -------------------------------------------------------------------------
rabbitmq_up() {
  if answers $RABBIT_PORT; then log "rabbitmq: already answering on $RABBIT_PORT"; return; fi
  if ! command -v rabbitmq-server >/dev/null; then
    log "rabbitmq: installing the Debian package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >/dev/null
  fi
  log "rabbitmq: starting"
  mkdir -p "$STATE"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 rabbitmq-server -detached
  touch "$STATE/rabbitmq.started"
  wait_for_port $RABBIT_PORT 90 rabbitmq
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
}

rabbitmq_down() {
  started_by_us rabbitmq || { log "rabbitmq: not started by this script; left running"; return; }
  rabbitmqctl -q stop >/dev/null 2>&1 || true
  pkill -x epmd 2>/dev/null || true
  rm -f "$STATE/rabbitmq.started"
}

rabbitmq_pause() { rabbitmqctl -q stop_app >/dev/null; }
rabbitmq_resume() { rabbitmqctl -q start_app >/dev/null; wait_for_port $RABBIT_PORT 60 rabbitmq; }

# --- Kafka (tansu) --------------------------------------------------------------------
TANSU=$TOOLS/tansu/bin/tansu
TANSU_DIR=$STATE/tansu

# tansu is built from its published sources with fixes (scripts/tansu-storage-keeps-
# serving.patch): unpatched, its storage service stops for good when a query finds no row
# where it expects one (after a restart of tansu: a producer epoch, a fetch's offsets) or
# when a client goes away before its answer; every produce, fetch and commit then fails
# until tansu is restarted.
TANSU_PATCH=$ROOT/scripts/tansu-storage-keeps-serving.patch

tansu_install() {
  local marker=$TOOLS/tansu/patched-with
  local wanted; wanted=$(sha256sum "$TANSU_PATCH" | cut -d' ' -f1)
  [[ -x $TANSU && -f $marker && $(cat "$marker") == "$wanted" ]] && return
  log "kafka: building tansu $TANSU_VERSION with fixes into $TOOLS/tansu (once; about 12 minutes on 2 cores)"
  local tool
  for tool in curl patch; do
    command -v $tool >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $tool >/dev/null \
      || die "kafka: building tansu needs $tool (apt-get install $tool)"
  done
  local src=$TOOLS/tansu-src
  rm -rf "$src" && mkdir -p "$src" "$TOOLS/tansu"
  for crate in tansu tansu-storage; do
    curl -sSfL "https://static.crates.io/crates/$crate/$TANSU_VERSION/download" | tar xz -C "$src" \
      || die "kafka: cannot download $crate $TANSU_VERSION from crates.io"
  done
  patch -s -d "$src/tansu-storage-$TANSU_VERSION" -p1 <"$TANSU_PATCH" \
    || die "kafka: $TANSU_PATCH does not apply"
  printf '\n[patch.crates-io]\ntansu-storage = { path = "../tansu-storage-%s" }\n' "$TANSU_VERSION" \
    >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
  # The patched crate changes one entry of the published Cargo.lock (its source); any
  # cargo command rewrites just that entry, then the build is --locked to the rest.
  (cd "$src/tansu-$TANSU_VERSION" && cargo metadata --format-version 1 >/dev/null 2>&1) \
    || die "kafka: cannot resolve tansu's dependencies"
  # The build directory is kept so that a change of the patch rebuilds in minutes.
  cargo install --path "$src/tansu-$TANSU_VERSION" --locked --features dynostore,libsql \
    --force --root "$TOOLS/tansu" --target-dir "$TOOLS/tansu-build" \
    >"$TOOLS/tansu-install.log" 2>&1 \
    || die "kafka: tansu build failed; see $TOOLS/tansu-install.log"
  echo "$wanted" >"$marker"
  rm -rf "$src"
}

tansu_start() {
  (
    cd "$TANSU_DIR"
    nohup "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine sqlite://tansu.db >>tansu.log 2>&1 </dev/null &
    echo $! >tansu.pid
  )
  wait_for_port "$KAFKA_PORT" 30 kafka
}

tansu_stop() { stop_pidfile "$TANSU_DIR/tansu.pid"; }

kafka_up() {
  if answers "$KAFKA_PORT"; then log "kafka: already answering on $KAFKA_PORT"; return; fi
  tansu_install
  log "kafka: starting tansu (sqlite) in $TANSU_DIR with a fresh database"
  rm -rf "$TANSU_DIR"; mkdir -p "$TANSU_DIR"
  # First start creates the schema; then add the index that keeps fetches with headers fast.
  tansu_start; sleep 0.5; tansu_stop
  python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create index if not exists header_topition_offset on header (topition, offset_id)'); c.commit()" "$TANSU_DIR/tansu.db"
  tansu_start
  touch "$STATE/kafka.started"
}

kafka_down() {
  started_by_us kafka || { log "kafka: not started by this script; left running"; return; }
  tansu_stop
  rm -f "$STATE/kafka.started"
}

kafka_pause() { tansu_stop; }
kafka_resume() { tansu_start; }

# --- SQS and SNS (moto) ---------------------------------------------------------------
MOTO=$TOOLS/moto
MOTO_DIR=$STATE/moto

MOTO_PATCH=$ROOT/scripts/moto-fifo-deduplication.patch

# moto from PyPI, with one fix: a FIFO queue remembers a deduplication id for SQS's 5
# minutes even once its message is deleted (moto only compares with messages still queued).
# Sets MOTO_CHANGED=1 when it installed or re-patched moto.
MOTO_CHANGED=0
moto_install() {
  local marker=$MOTO/patched-with
  local wanted; wanted=$(sha256sum "$MOTO_PATCH" | cut -d' ' -f1)
  [[ -x $MOTO/bin/moto_server && -f $marker && $(cat "$marker") == "$wanted" ]] && return
  if [[ ! -x $MOTO/bin/moto_server ]]; then
    log "aws: installing moto $MOTO_VERSION into $MOTO"
    python3 -m venv "$MOTO"
    "$MOTO/bin/pip" install -q "moto[sqs,sns]==$MOTO_VERSION" flask flask-cors >"$TOOLS/moto-install.log" 2>&1 \
      || die "aws: moto install failed; see $TOOLS/moto-install.log"
  fi
  command -v patch >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q patch >/dev/null \
    || die "aws: patching moto needs patch (apt-get install patch)"
  local site; site=$("$MOTO/bin/python" -c 'import os, moto; print(os.path.dirname(os.path.dirname(moto.__file__)))')
  local models=$site/moto/sqs/models.py
  [[ -f $models.pristine ]] || cp "$models" "$models.pristine"
  cp "$models.pristine" "$models"
  patch -s -d "$site" -p1 <"$MOTO_PATCH" || die "aws: $MOTO_PATCH does not apply"
  echo "$wanted" >"$marker"
  MOTO_CHANGED=1
  log "aws: moto patched with $(basename "$MOTO_PATCH")"
}

aws_up() {
  moto_install
  if answers "$AWS_PORT" && ! started_by_us aws; then
    log "aws: the moto answering on $AWS_PORT was not started by this script; unless it runs $MOTO with $(basename "$MOTO_PATCH"), SQS FIFO deduplication differs from SQS's"
  elif answers "$AWS_PORT" && ((MOTO_CHANGED)); then
    log "aws: restarting moto to load the patched code"
    aws_down
    local deadline=$((SECONDS + 15))
    while answers "$AWS_PORT"; do
      ((SECONDS < deadline)) || die "aws: moto did not stop within 15 s"
      sleep 0.2
    done
  fi
  if answers "$AWS_PORT"; then log "aws: already answering on $AWS_PORT"; return; fi
  log "aws: starting moto on $AWS_PORT"
  mkdir -p "$MOTO_DIR"
  (
    cd "$MOTO_DIR"
    nohup "$MOTO/bin/moto_server" -H 127.0.0.1 -p "$AWS_PORT" >>moto.log 2>&1 </dev/null &
    echo $! >moto.pid
  )
  wait_for_port "$AWS_PORT" 30 aws
  touch "$STATE/aws.started"
}

aws_down() {
  started_by_us aws || { log "aws: not started by this script; left running"; return; }
  [[ -f $MOTO_DIR/moto.pid ]] && kill "$(cat "$MOTO_DIR/moto.pid")" 2>/dev/null || true
  rm -f "$MOTO_DIR/moto.pid" "$STATE/aws.started"
}

# moto keeps its state in memory, so an outage is simulated by freezing the process
# (SIGSTOP: connections hang, as with a broker that stops answering) and thawing it.
aws_pause() { kill -STOP "$(moto_pid)"; }
aws_resume() { kill -CONT "$(moto_pid)"; }
moto_pid() {
  [[ -f $MOTO_DIR/moto.pid ]] && cat "$MOTO_DIR/moto.pid" && return
  pgrep -f "moto_server.*-p $AWS_PORT" | head -1
}

# --- Pub/Sub (Google's emulator) ------------------------------------------------------
PUBSUB_DIR=$STATE/pubsub

pubsub_emulator() {
  local script
  for script in /usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator \
      /usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator; do
    [[ -x $script ]] && { echo "$script"; return; }
  done
  return 1
}

pubsub_up() {
  if answers "$PUBSUB_PORT"; then log "pubsub: already answering on $PUBSUB_PORT"; return; fi
  local emulator
  if ! emulator=$(pubsub_emulator); then
    log "pubsub: installing Google's Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q google-cloud-cli-pubsub-emulator >/dev/null \
      || die "pubsub: the emulator is not installed and apt could not install it"
    emulator=$(pubsub_emulator) || die "pubsub: emulator script not found after install"
  fi
  command -v java >/dev/null || die "pubsub: the emulator needs Java 17 (apt-get install openjdk-17-jre-headless)"
  log "pubsub: starting the emulator on $PUBSUB_PORT"
  rm -rf "$PUBSUB_DIR"; mkdir -p "$PUBSUB_DIR"
  (
    cd "$PUBSUB_DIR"
    nohup "$emulator" --host=127.0.0.1 --port="$PUBSUB_PORT" >>emulator.log 2>&1 </dev/null &
    echo $! >emulator.pid
  )
  wait_for_port "$PUBSUB_PORT" 60 pubsub
  touch "$STATE/pubsub.started"
}

pubsub_pid() {
  pgrep -f "cloud-pubsub-emulator.*--port=$PUBSUB_PORT|CloudPubSubEmulator.*--port=$PUBSUB_PORT|pubsub-emulator.*$PUBSUB_PORT" | head -1
}

pubsub_down() {
  started_by_us pubsub || { log "pubsub: not started by this script; left running"; return; }
  local pid; pid=$(pubsub_pid) && kill "$pid" 2>/dev/null || true
  rm -f "$PUBSUB_DIR/emulator.pid" "$STATE/pubsub.started"
}

# The emulator keeps its state in memory: an outage is a frozen process, as with moto.
pubsub_pause() { kill -STOP "$(pubsub_pid)"; }
pubsub_resume() { kill -CONT "$(pubsub_pid)"; }

# --- NATS with JetStream ----------------------------------------------------------------
NATS_DIR=$STATE/nats

nats_start() {
  (
    cd "$NATS_DIR"
    nohup nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR/jetstream" \
      >>nats.log 2>&1 </dev/null &
    echo $! >nats.pid
  )
  wait_for_port "$NATS_PORT" 30 nats
}

nats_stop() { stop_pidfile "$NATS_DIR/nats.pid"; }

nats_up() {
  if answers "$NATS_PORT"; then log "nats: already answering on $NATS_PORT"; return; fi
  if ! command -v nats-server >/dev/null; then
    log "nats: installing the Debian package nats-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null \
      || die "nats: apt could not install nats-server"
  fi
  log "nats: starting nats-server with JetStream on $NATS_PORT (storage in $NATS_DIR)"
  rm -rf "$NATS_DIR"; mkdir -p "$NATS_DIR"
  nats_start
  touch "$STATE/nats.started"
}

nats_down() {
  started_by_us nats || { log "nats: not started by this script; left running"; return; }
  nats_stop
  rm -f "$STATE/nats.started"
}

# JetStream keeps its streams on disk, so an outage is a stopped server, as with tansu.
nats_pause() { nats_stop; }
nats_resume() { nats_start; }

# --- Redis (Streams, and the shared deduplication store) ------------------------------
# An own instance without persistence. Besides the default user (no password) it has the
# ACL user `bridge` with password `bridge-pw`, for the authentication tests.
redis_up() {
  if answers "$REDIS_PORT"; then log "redis: already answering on $REDIS_PORT"; return; fi
  if ! command -v redis-server >/dev/null; then
    log "redis: installing the Debian package redis-server"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null \
      || die "redis: apt could not install redis-server"
  fi
  log "redis: starting redis-server on $REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --dir "$STATE" --pidfile "$STATE/redis.pid" --logfile "$STATE/redis.log" \
    --user bridge on '>bridge-pw' '~*' '&*' '+@all'
  touch "$STATE/redis.started"
  wait_for_port "$REDIS_PORT" 30 redis
}

redis_down() {
  started_by_us redis || { log "redis: not started by this script; left running"; return; }
  stop_pidfile "$STATE/redis.pid"
  rm -f "$STATE/redis.started"
}

# Redis keeps nothing on disk here, so an outage is a frozen process (SIGSTOP / SIGCONT).
redis_pause() { kill -STOP "$(cat "$STATE/redis.pid")"; }
redis_resume() { kill -CONT "$(cat "$STATE/redis.pid")"; }

# --- Mosquitto (MQTT 3.1.1 and 5) -------------------------------------------------------
# Mosquitto's defaults keep only 1,000 QoS 1 messages per offline persistent session and
# 20 in flight per client: too few for a bridge that was down a minute, and a throttle on
# one that is up. The project's instance raises both (docs/testing.md); persistence keeps
# sessions across a restart.
mosquitto_start() {
  mkdir -p "$MQTT_DIR"
  # Run as the user who started it (as root, mosquitto would switch to a user that cannot
  # write here).
  printf '%s\n' "user $(id -un)" "listener $MQTT_PORT 127.0.0.1" "allow_anonymous true" "persistence true" \
    "persistence_location $MQTT_DIR/" "max_queued_messages 100000" \
    "max_inflight_messages 1000" "log_dest file $MQTT_DIR/mosquitto.log" \
    >"$MQTT_DIR/mosquitto.conf"
  (
    cd "$MQTT_DIR"
    nohup mosquitto -c "$MQTT_DIR/mosquitto.conf" >>mosquitto.out 2>&1 </dev/null &
    echo $! >mosquitto.pid
  )
  wait_for_port "$MQTT_PORT" 30 mosquitto
}

mosquitto_stop() { stop_pidfile "$MQTT_DIR/mosquitto.pid"; }

mosquitto_up() {
  if answers "$MQTT_PORT"; then log "mosquitto: already answering on $MQTT_PORT"; return; fi
  if ! command -v mosquitto >/dev/null; then
    log "mosquitto: installing the Debian package mosquitto"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto >/dev/null \
      || die "mosquitto: apt could not install mosquitto"
  fi
  log "mosquitto: starting mosquitto on $MQTT_PORT (sessions in $MQTT_DIR)"
  rm -rf "$MQTT_DIR"
  mosquitto_start
  touch "$STATE/mosquitto.started"
}

mosquitto_down() {
  started_by_us mosquitto || { log "mosquitto: not started by this script; left running"; return; }
  mosquitto_stop
  rm -f "$STATE/mosquitto.started"
}

# Sessions are kept on disk, so an outage is a stopped server.
mosquitto_pause() { mosquitto_stop; }
mosquitto_resume() { mosquitto_start; }

# --- commands -------------------------------------------------------------------------
port_of() { case $1 in rabbitmq) echo $RABBIT_PORT ;; kafka) echo "$KAFKA_PORT" ;; aws) echo "$AWS_PORT" ;; pubsub) echo "$PUBSUB_PORT" ;; nats) echo "$NATS_PORT" ;; redis) echo "$REDIS_PORT" ;; mosquitto) echo "$MQTT_PORT" ;; esac; }

status() {
  local down=0
  for name in "$@"; do
    if answers "$(port_of "$name")"; then echo "$name: up (127.0.0.1:$(port_of "$name"))"
    else echo "$name: down"; down=1; fi
  done
  return $down
}

command=${1:-status}; shift || true
names=("$@"); ((${#names[@]})) || names=("${ALL[@]}")
for name in "${names[@]}"; do
  [[ " ${ALL[*]} " == *" $name "* ]] || die "unknown broker '$name' (known: ${ALL[*]})"
done
mkdir -p "$STATE"
case $command in
  up) for name in "${names[@]}"; do "${name}_up"; done; status "${names[@]}" ;;
  down) for name in "${names[@]}"; do "${name}_down"; done ;;
  status) status "${names[@]}" ;;
  pause|resume) for name in "${names[@]}"; do "${name}_${command}"; done ;;
  *) die "usage: $0 up|down|status|pause|resume [${ALL[*]}]" ;;
esac
