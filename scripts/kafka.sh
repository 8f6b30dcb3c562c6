#!/usr/bin/env bash
# scripts/kafka.sh - run a REAL Apache Kafka 4.x broker (or a cluster of three)
# for tests.
#
# KRaft combined mode (each JVM is both broker and controller), local addresses only,
# no Docker and no tarball: the jars come from Maven Central through the small
# pom in scripts/kafka/pom.xml, resolved once into a cache directory.
# Needs only a JDK 17+ (`java`) and, on first use, Maven (`mvn`).
#
# Usage: scripts/kafka.sh COMMAND
#   start                 fetch jars (first use), format storage (first use),
#                         start the broker, return once it answers Kafka requests
#   stop                  SIGTERM, up to KAFKA_STOP_TIMEOUT s for a clean exit, then SIGKILL
#   restart               stop, then start
#   status                exit 0 if running and answering, else 3
#   bootstrap             print the bootstrap address (KAFKA_HOST:PORT)
#   topics                list topics
#   create-topic NAME [PARTITIONS]   create a topic if it does not exist (default 1 partition)
#   logs [N]              last N (default 50) lines of the broker log
#   reset                 stop and delete this broker's data (the jar cache is kept)
#   pid                   print the broker's pid (exit 3 if it does not run)
#   cluster-start         start a three-broker cluster (KAFKA_CLUSTER_HOSTS) at once
#                         (the controller quorum needs a majority), return once all answer
#   cluster-stop          stop every broker of the cluster
#   cluster-status        exit 0 if every broker runs and answers, else 3
#   cluster-reset         stop the cluster and delete its brokers' data
#
# Environment:
#   KAFKA_PORT               client (PLAINTEXT) port, default 9092; go test dials
#                            it too (kafkatest), unless ORDERD_TEST_KAFKA names a broker
#   KAFKA_CONTROLLER_PORT    KRaft controller port, default KAFKA_PORT+1 (9093)
#   KAFKA_HOST               the address the broker listens on, default 127.0.0.1; any
#                            local address (a loopback alias, or a bridge's address)
#   KAFKA_NODE_ID            node.id, default 1
#   KAFKA_VOTERS             controller.quorum.voters, default this broker alone
#   KAFKA_CLUSTER_ID         the cluster id storage is formatted with, default a new one
#   KAFKA_REPLICATION        default.replication.factor (and the internal topics'), default 1
#   KAFKA_MIN_ISR            min.insync.replicas, default 1
#   ORDERD_CACHE             cache root, default <repo>/.cache; Kafka uses $ORDERD_CACHE/kafka
#   KAFKA_HEAP_OPTS          broker heap, default "-Xms256m -Xmx512m"
#   KAFKA_JVM_OPTS           extra JVM options, appended (e.g. -XX:TieredStopAtLevel=1)
#   KAFKA_AUTO_CREATE_TOPICS auto.create.topics.enable, default false (create topics explicitly)
#   KAFKA_START_TIMEOUT      seconds `start` waits for the broker to answer, default 90
#   KAFKA_STOP_TIMEOUT       seconds `stop` waits for a clean exit before SIGKILL, default 30
# The cluster (cluster-*; go test dials the same variables, kafkatest.Cluster):
#   KAFKA_CLUSTER_HOSTS      its brokers' addresses, comma-separated, default
#                            127.0.0.5,127.0.0.6,127.0.0.7 (node ids 1, 2, 3 in this order)
#   KAFKA_CLUSTER_PORT       client port of every broker, default KAFKA_PORT+30000 (39092);
#                            the controller port is KAFKA_CLUSTER_PORT+1
#   KAFKA_CLUSTER_HEAP_OPTS  each broker's heap, default "-Xms128m -Xmx384m"
#   KAFKA_CLUSTER_JVM_OPTS   each broker's extra JVM options, default -XX:TieredStopAtLevel=1
#                            (C1 only: starts faster on a busy machine, with slower code)
# Its topics default to replication factor 3 and min.insync.replicas 2.
#
# Layout under $ORDERD_CACHE/kafka:
#   lib/                     all jars (from scripts/kafka/pom.xml; re-resolved if the pom changes)
#   broker-$KAFKA_PORT/      (broker-$KAFKA_HOST-$KAFKA_PORT/ off 127.0.0.1) server.properties, data/ (log.dirs + KRaft metadata),
#                            broker.log (+ broker.log.1 from the previous run), broker.pid
# One directory per address and port, so brokers can run side by side.
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not running / not answering (status).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$REPO/scripts/kafka"
POM="$CONF_DIR/pom.xml"

PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOST="${KAFKA_HOST:-127.0.0.1}"
BOOTSTRAP="$HOST:$PORT"
NODE_ID="${KAFKA_NODE_ID:-1}"
VOTERS="${KAFKA_VOTERS:-$NODE_ID@$HOST:$CONTROLLER_PORT}"
REPLICATION="${KAFKA_REPLICATION:-1}"
MIN_ISR="${KAFKA_MIN_ISR:-1}"

KAFKA_HOME="${ORDERD_CACHE:-$REPO/.cache}/kafka"
[[ "$KAFKA_HOME" == /* ]] || KAFKA_HOME="$PWD/$KAFKA_HOME" # the broker needs absolute paths
LIB="$KAFKA_HOME/lib"
RUN="$KAFKA_HOME/broker-$PORT"
[[ "$HOST" == 127.0.0.1 ]] || RUN="$KAFKA_HOME/broker-$HOST-$PORT"
DATA="$RUN/data"
PROPS="$RUN/server.properties"
ADMIN_PROPS="$RUN/admin.properties"
LOG="$RUN/broker.log"
PIDFILE="$RUN/broker.pid"

HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
EXTRA_JVM_OPTS="${KAFKA_JVM_OPTS:-}"
AUTO_CREATE="${KAFKA_AUTO_CREATE_TOPICS:-false}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

SERVICE=kafka SERVICE_NAME=Kafka SERVICE_HOME="$KAFKA_HOME"
PORTS="client=$PORT controller=$CONTROLLER_PORT"
PORT_VARS="KAFKA_PORT, KAFKA_CONTROLLER_PORT"
READY_WHAT="the broker on $BOOTSTRAP" READY_POLL=0.5
# shellcheck source=scripts/lib/service.sh
. "$REPO/scripts/lib/service.sh"

# ---------------------------------------------------------------- helpers ---

# Run a Kafka command line tool (TopicCommand, StorageTool, ...) in a small,
# quick-starting JVM that only logs warnings to stderr.
KAFKA_TOOL=(
  java -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.xml"
  -cp "$LIB/*"
)
kafka_tool() { "${KAFKA_TOOL[@]}" "$@"; }

# PID of our broker if it is running, from the pid file; checks the command
# line too, so a recycled pid is not taken for the broker.
service_pid() {
  local pid cmd
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(<"$PIDFILE")"
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *kafka.Kafka*"$PROPS"* ]] || return 1
  echo "$pid"
}

# Cheap check: does anything accept TCP connections on port $1 (default: client port)?
port_open() {
  (exec 3<>"/dev/tcp/$HOST/${1:-$PORT}") 2>/dev/null
}

# Real readiness check: a Kafka Admin request (list topics) must succeed.
probe() {
  port_open || return 1
  timeout 30 "${KAFKA_TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --list >/dev/null 2>&1
}

write_config() {
  mkdir -p "$DATA"
  # Regenerated on every start (ports may change); the data stays in $DATA.
  cat >"$PROPS" <<EOF
# Generated by scripts/kafka.sh - edits are overwritten on the next start.
# KRaft: this JVM is broker and controller, with a static quorum of
# voters (this broker alone, or a cluster's brokers), on $HOST only.
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$VOTERS
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

# Data (topic logs and the KRaft metadata log).
log.dirs=$DATA

# One broker: every replication factor / min ISR is 1; a cluster: 3 and 2.
num.partitions=1
default.replication.factor=$REPLICATION
min.insync.replicas=$MIN_ISR
offsets.topic.replication.factor=$REPLICATION
transaction.state.log.replication.factor=$REPLICATION
transaction.state.log.min.isr=$MIN_ISR
share.coordinator.state.topic.replication.factor=$REPLICATION
share.coordinator.state.topic.min.isr=$MIN_ISR
# Few partitions for the internal topics: faster creation and restart.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.num.partitions=1

# Tests: consumer groups start at once; topics are created explicitly unless
# KAFKA_AUTO_CREATE_TOPICS=true.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=$AUTO_CREATE

# Small machine (2 cores shared with the tests).
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
EOF
  # Settings for the tools' Admin client: fail fast while the broker is down.
  cat >"$ADMIN_PROPS" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

# Format the storage once: a new random cluster id (or KAFKA_CLUSTER_ID, the
# one every broker of a cluster shares), static voter set from
# server.properties. Never re-formats existing data.
format_once() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid="${KAFKA_CLUSTER_ID:-}"
  [[ -n "$cid" ]] || cid="$(kafka_tool kafka.tools.StorageTool random-uuid)"
  say "formatting $DATA (cluster id $cid)"
  kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$PROPS" >/dev/null \
    || die "kafka-storage format failed"
}

launch() {
  # Keep the previous run's log for post-mortems.
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  rm -f "$PIDFILE"
  local -a heap extra jvm
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a extra <<<"$EXTRA_JVM_OPTS"
  jvm=(
    "${heap[@]}"
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2-broker.xml"
    -Dkafka.logs.dir="$RUN"
    "${extra[@]}"
    -cp "$LIB/*"
  )
  local setsid=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # Detached from our session and stdio; the inner shell records its own pid
  # and then becomes the JVM (exec), so the pid file holds the broker's pid.
  # {LOCK_FD}>&- : the broker must not inherit (and hold) our lock.
  # shellcheck disable=SC2016
  "${setsid[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    java "${jvm[@]}" kafka.Kafka "$PROPS" \
    </dev/null >>"$LOG" 2>&1 {LOCK_FD}>&- &
  wait_pidfile broker
}


# --------------------------------------------------------------- commands ---

cmd_start() {
  take_lock
  local pid t0=$SECONDS
  if pid="$(service_pid)"; then
    if probe; then
      say "already running (pid $pid), bootstrap $BOOTSTRAP"
      return 0
    fi
    say "running (pid $pid) but not answering yet; waiting"
    wait_ready "$pid"
    say "ready (pid $pid), bootstrap $BOOTSTRAP"
    return 0
  fi
  rm -f "$PIDFILE"
  check_ports
  need_java
  ensure_lib
  write_config
  format_once
  launch
  pid="$(<"$PIDFILE")"
  wait_ready "$pid"
  say "ready in $((SECONDS - t0))s (pid $pid, log $LOG)"
  say "bootstrap $BOOTSTRAP"
}

cmd_status() {
  local pid
  if ! pid="$(service_pid)"; then
    say "not running"
    return 3
  fi
  if probe; then
    say "running (pid $pid), bootstrap $BOOTSTRAP"
    return 0
  fi
  say "running (pid $pid) but not answering on $BOOTSTRAP"
  return 3
}

require_running() {
  service_pid >/dev/null || die "broker not running on port $PORT (scripts/kafka.sh start)"
}

cmd_topics() {
  require_running
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --list
}

cmd_create_topic() {
  local name="${1:-}" parts="${2:-1}"
  [[ -n "$name" ]] || { echo "usage: $0 create-topic NAME [PARTITIONS]" >&2; exit 2; }
  require_running
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" \
    --command-config "$ADMIN_PROPS" --create --if-not-exists \
    --topic "$name" --partitions "$parts" --replication-factor "$REPLICATION"
}

cmd_reset() {
  cmd_stop
  rm -rf "$RUN"
  say "deleted $RUN"
}

cmd_pid() {
  service_pid || { say "not running"; return 3; }
}

# ---------------------------------------------------------------- cluster ---

CLUSTER_PORT="${KAFKA_CLUSTER_PORT:-$((PORT + 30000))}"
CLUSTER_HEAP_OPTS="${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx384m}"
CLUSTER_JVM_OPTS="${KAFKA_CLUSTER_JVM_OPTS:--XX:TieredStopAtLevel=1}"
cluster_members "${KAFKA_CLUSTER_HOSTS:-127.0.0.5,127.0.0.6,127.0.0.7}"

# member N COMMAND: run this script's COMMAND for the cluster's broker N
# (1-based: its node.id, on the N-th address).
member() {
  local n="$1" voters="" i
  shift
  for i in "${!MEMBERS[@]}"; do voters+="${voters:+,}$((i + 1))@${MEMBERS[i]}:$((CLUSTER_PORT + 1))"; done
  KAFKA_HOST="${MEMBERS[n - 1]}" KAFKA_PORT="$CLUSTER_PORT" KAFKA_CONTROLLER_PORT="$((CLUSTER_PORT + 1))" \
    KAFKA_NODE_ID="$n" KAFKA_VOTERS="$voters" KAFKA_CLUSTER_ID="$(cluster_id)" \
    KAFKA_REPLICATION="$(( ${#MEMBERS[@]} < 3 ? ${#MEMBERS[@]} : 3 ))" \
    KAFKA_MIN_ISR="$(( ${#MEMBERS[@]} < 3 ? 1 : 2 ))" \
    KAFKA_HEAP_OPTS="$CLUSTER_HEAP_OPTS" KAFKA_JVM_OPTS="$CLUSTER_JVM_OPTS" "$REPO/scripts/kafka.sh" "$@"
}

# The cluster's id, made once and kept beside its brokers' directories, so
# that every broker formats its storage with the same one.
cluster_id() {
  local f="$KAFKA_HOME/cluster-$CLUSTER_PORT.id" tmp
  if [[ ! -s "$f" ]]; then
    need_java
    ensure_lib
    # The members of `cluster-stop` ask at once: each makes its own, and
    # the first to land is kept (mv -n), so all of them read one id.
    mkdir -p "$KAFKA_HOME"
    tmp=$(mktemp "$f.XXXXXX")
    kafka_tool kafka.tools.StorageTool random-uuid >"$tmp" && mv -n "$tmp" "$f"
    rm -f "$tmp"
  fi
  cat "$f"
}

# All brokers at once: each is a controller too, and the quorum (and so
# each broker's readiness) needs a majority of them.
cmd_cluster_start() {
  local n t0=$SECONDS rc=0 pids=()
  cluster_id >/dev/null
  for n in $(seq 1 "${#MEMBERS[@]}"); do
    member "$n" start &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n" || rc=1; done
  ((rc == 0)) || die "a broker of the cluster did not start (see above)"
  say "cluster of ${#MEMBERS[@]} brokers ready in $((SECONDS - t0))s: bootstrap $(cluster_addresses "$CLUSTER_PORT")"
}

# All brokers at once too: the last one left cannot finish a controlled
# shutdown without a quorum, and would wait for KAFKA_STOP_TIMEOUT.
cmd_cluster_stop() {
  local n t0=$SECONDS pids=()
  for n in $(seq 1 "${#MEMBERS[@]}"); do
    member "$n" stop &
    pids+=($!)
  done
  for n in "${pids[@]}"; do wait "$n" || true; done
  say "cluster stopped in $((SECONDS - t0))s"
}

cmd_cluster_status() {
  local n rc=0
  for n in $(seq 1 "${#MEMBERS[@]}"); do member "$n" status || rc=3; done
  return "$rc"
}

cmd_cluster_reset() {
  local n
  cmd_cluster_stop
  for n in $(seq 1 "${#MEMBERS[@]}"); do member "$n" reset; done
  rm -f "$KAFKA_HOME/cluster-$CLUSTER_PORT.id"
}

usage() {
  sed -n '10,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  bootstrap) echo "$BOOTSTRAP" ;;
  topics) cmd_topics ;;
  create-topic) shift; cmd_create_topic "$@" ;;
  logs) tail -n "${2:-50}" "$LOG" ;;
  reset) cmd_reset ;;
  pid) cmd_pid ;;
  cluster-start) cmd_cluster_start ;;
  cluster-stop) cmd_cluster_stop ;;
  cluster-status) cmd_cluster_status ;;
  cluster-reset) cmd_cluster_reset ;;
  *) usage ;;
esac
