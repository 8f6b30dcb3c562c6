#!/usr/bin/env bash
# scripts/kafka.sh - run a REAL single-node Apache Kafka 4.x broker for tests.
#
# KRaft combined mode (one JVM is both broker and controller), loopback only,
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
#   bootstrap             print the bootstrap address (127.0.0.1:PORT)
#   topics                list topics
#   create-topic NAME [PARTITIONS]   create a topic if it does not exist (default 1 partition)
#   logs [N]              last N (default 50) lines of the broker log
#   reset                 stop and delete this broker's data (the jar cache is kept)
#
# Environment:
#   KAFKA_PORT               client (PLAINTEXT) port, default 9092
#   KAFKA_CONTROLLER_PORT    KRaft controller port, default KAFKA_PORT+1 (9093)
#   ORDERD_CACHE             cache root, default <repo>/.cache; Kafka uses $ORDERD_CACHE/kafka
#   KAFKA_HEAP_OPTS          broker heap, default "-Xms256m -Xmx512m"
#   KAFKA_AUTO_CREATE_TOPICS auto.create.topics.enable, default false (create topics explicitly)
#   KAFKA_START_TIMEOUT      seconds `start` waits for the broker to answer, default 90
#   KAFKA_STOP_TIMEOUT       seconds `stop` waits for a clean exit before SIGKILL, default 30
#
# Layout under $ORDERD_CACHE/kafka:
#   lib/                     all jars (from scripts/kafka/pom.xml; re-resolved if the pom changes)
#   broker-$KAFKA_PORT/      server.properties, data/ (log.dirs + KRaft metadata),
#                            broker.log (+ broker.log.1 from the previous run), broker.pid
# One directory per port, so brokers on different ports can run side by side.
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not running / not answering (status).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$REPO/scripts/kafka"
POM="$CONF_DIR/pom.xml"

PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
HOST=127.0.0.1
BOOTSTRAP="$HOST:$PORT"

KAFKA_HOME="${ORDERD_CACHE:-$REPO/.cache}/kafka"
[[ "$KAFKA_HOME" == /* ]] || KAFKA_HOME="$PWD/$KAFKA_HOME" # the broker needs absolute paths
LIB="$KAFKA_HOME/lib"
RUN="$KAFKA_HOME/broker-$PORT"
DATA="$RUN/data"
PROPS="$RUN/server.properties"
ADMIN_PROPS="$RUN/admin.properties"
LOG="$RUN/broker.log"
PIDFILE="$RUN/broker.pid"

HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
AUTO_CREATE="${KAFKA_AUTO_CREATE_TOPICS:-false}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

say() { printf 'kafka: %s\n' "$*"; }
die() { printf 'kafka: error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- helpers ---

# Serialise start/stop/reset for one broker directory (flock is in util-linux,
# which every Debian has; without it we just run unlocked).
LOCK_FD=
take_lock() {
  [[ -z "$LOCK_FD" ]] || return 0 # already held (restart = stop + start)
  mkdir -p "$RUN"
  command -v flock >/dev/null 2>&1 || return 0
  exec {LOCK_FD}>"$RUN/.lock"
  flock -w 300 "$LOCK_FD" || die "could not lock $RUN/.lock within 300 s"
}

need_java() {
  command -v java >/dev/null 2>&1 || die "java not found on PATH (JDK 17+ needed)"
  local v major
  v="$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  major="${v%%.*}"
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "Kafka 4 needs Java 17+, found '$v'"
}

# Resolve the jars once into $LIB. The pom's sha256 is stored next to them, so
# editing the pom (e.g. a new Kafka version) triggers a fresh resolve.
lib_current() {
  [[ -f "$LIB/.pom.sha256" && "$(<"$LIB/.pom.sha256")" == "$(sha256sum "$POM" | cut -d' ' -f1)" ]]
}

resolve_lib() {
  command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven is needed once to fetch the Kafka jars"
  say "resolving Kafka jars from Maven Central into $LIB (first use) ..."
  local tmp="$KAFKA_HOME/lib.tmp.$$"
  rm -rf "$tmp"
  # -q: only errors (e.g. an artifact the repository refuses) are printed;
  # sed drops the stray colour codes that Debian's Maven 3.8 emits even with -B.
  if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 |
      sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
    rm -rf "$tmp"
    die "mvn dependency:copy-dependencies failed for $POM (see the Maven errors above)"
  fi
  sha256sum "$POM" | cut -d' ' -f1 >"$tmp/.pom.sha256"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  say "$(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
}

ensure_lib() {
  lib_current && return 0
  mkdir -p "$KAFKA_HOME"
  if ! command -v flock >/dev/null 2>&1; then
    resolve_lib
    return 0
  fi
  # Several callers may start at once: one downloads, the others wait.
  local fd
  exec {fd}>"$KAFKA_HOME/.lib.lock"
  flock -w 600 "$fd" || die "could not lock $KAFKA_HOME/.lib.lock"
  lib_current || resolve_lib
  exec {fd}>&- # closed again, so the broker does not inherit it
}

# Run a Kafka command line tool (TopicCommand, StorageTool, ...) in a small,
# quick-starting JVM that only logs warnings to stderr.
KAFKA_TOOL=(
  java -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$CONF_DIR/log4j2-tools.xml"
  -cp "$LIB/*"
)
kafka_tool() { "${KAFKA_TOOL[@]}" "$@"; }

# Is PID alive (and not a zombie that nobody reaped yet)?
alive() {
  local pid="$1" stat
  [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
  stat="$(<"/proc/$pid/stat")" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# PID of our broker if it is running, from the pid file; checks the command
# line too, so a recycled pid is not taken for the broker.
broker_pid() {
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
# Single-node KRaft: this JVM is broker and controller, with a static
# one-voter quorum, listening on loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT

# Data (topic logs and the KRaft metadata log).
log.dirs=$DATA

# One broker: every replication factor / min ISR is 1.
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
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

# Format the storage once: a new random cluster id, static voter set from
# server.properties. Never re-formats existing data.
format_once() {
  [[ -f "$DATA/meta.properties" ]] && return 0
  local cid
  cid="$(kafka_tool kafka.tools.StorageTool random-uuid)"
  say "formatting $DATA (cluster id $cid)"
  kafka_tool kafka.tools.StorageTool format -t "$cid" -c "$PROPS" >/dev/null \
    || die "kafka-storage format failed"
}

launch() {
  # Keep the previous run's log for post-mortems.
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  rm -f "$PIDFILE"
  local -a heap jvm
  read -r -a heap <<<"$HEAP_OPTS"
  jvm=(
    "${heap[@]}"
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$CONF_DIR/log4j2-broker.xml"
    -Dkafka.logs.dir="$RUN"
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
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$PIDFILE" ]] && return 0
    sleep 0.1
  done
  die "broker did not start (no pid file); see $LOG"
}

fail_start() {
  printf 'kafka: error: %s\n' "$1" >&2
  printf -- '--- last 50 lines of %s ---\n' "$LOG" >&2
  tail -n 50 "$LOG" >&2 || true
  exit 1
}

# Wait until the broker answers a real Kafka request, or fail.
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      rm -f "$PIDFILE"
      fail_start "broker (pid $pid) exited during startup"
    fi
    if port_open && probe; then
      return 0
    fi
    sleep 0.5
  done
  # Do not leave a half-started broker behind.
  terminate "$pid"
  rm -f "$PIDFILE"
  fail_start "broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s (stopped it)"
}

# SIGTERM, wait up to STOP_TIMEOUT for a clean (controlled) shutdown, then SIGKILL.
terminate() {
  local pid="$1" i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do # 0.2 s steps
    alive "$pid" || return 0
    sleep 0.2
  done
  if alive "$pid"; then
    say "no clean exit within ${STOP_TIMEOUT}s, sending SIGKILL to $pid"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
}

# --------------------------------------------------------------- commands ---

cmd_start() {
  take_lock
  local pid t0=$SECONDS
  if pid="$(broker_pid)"; then
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
  local p
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then
      die "port $p is already in use by another process (not our broker in $RUN)"
    fi
  done
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

cmd_stop() {
  take_lock
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  say "stopping (pid $pid)"
  terminate "$pid"
  rm -f "$PIDFILE"
  say "stopped"
}

cmd_status() {
  local pid
  if ! pid="$(broker_pid)"; then
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
  broker_pid >/dev/null || die "broker not running on port $PORT (scripts/kafka.sh start)"
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
    --topic "$name" --partitions "$parts" --replication-factor 1
}

cmd_reset() {
  cmd_stop
  rm -rf "$RUN"
  say "deleted $RUN"
}

usage() {
  sed -n '9,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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
  *) usage ;;
esac
