#!/usr/bin/env bash
# scripts/cassandra.sh - run a REAL Apache Cassandra 5.0 node (or a cluster of
# three) for tests, the CQL stand-in for ScyllaDB.
#
# Local addresses only, no Docker and no tarball: the jars come from Maven Central
# through the small pom in scripts/cassandra/pom.xml, resolved once into a
# cache directory. Needs a JDK 17+ (`java`), python3 (readiness check and the
# `cql` command; standard library only) and, on first use, Maven (`mvn`).
#
# Usage: scripts/cassandra.sh COMMAND
#   start                 fetch jars (first use), start the node, return once
#                         it answers a CQL query on the native port
#   stop                  SIGTERM (the node drains), up to CASSANDRA_STOP_TIMEOUT s, then SIGKILL
#   restart               stop, then start
#   status                exit 0 if running and answering CQL, else 3
#   address               print the CQL contact point (CASSANDRA_HOST:PORT)
#   cql 'STATEMENT'       run one CQL statement (consistency ONE) and print the result
#   nodetool ARGS...      run nodetool against the node (needs CASSANDRA_JMX_PORT)
#   logs [N]              last N (default 50) lines of the node's log
#   reset                 stop and delete this node's data (the jar cache is kept)
#   pid                   print the node's pid (exit 3 if it does not run)
#   cluster-start         start a three-node cluster (CASSANDRA_CLUSTER_HOSTS), one
#                         node after the other, every node a seed (none bootstraps)
#   cluster-stop          stop every node of the cluster
#   cluster-status        exit 0 if every node runs and answers CQL, else 3
#   cluster-reset         stop the cluster and delete its nodes' data
#
# Environment:
#   CASSANDRA_PORT           CQL native transport port, default 9042; go test dials
#                            it too (cqltest), unless ORDERD_TEST_CQL names a node
#   CASSANDRA_STORAGE_PORT   internode (gossip) port, default CASSANDRA_PORT-2042
#                            (7000), so that a second node on another
#                            CASSANDRA_PORT gets one of its own
#   CASSANDRA_JMX_PORT       local JMX port (for `nodetool`), default: JMX off
#   CASSANDRA_HOST           the address the node listens on (CQL and gossip), default
#                            127.0.0.1; any local address (a loopback alias such as
#                            127.0.0.2, or a bridge's address that network namespaces reach)
#   CASSANDRA_SEEDS          the seeds (host:storage_port, comma-separated), default the node itself
#   ORDERD_CACHE             cache root, default <repo>/.cache; Cassandra uses $ORDERD_CACHE/cassandra
#   CASSANDRA_HEAP_OPTS      heap, default "-Xms512m -Xmx1g"
#   CASSANDRA_JVM_OPTS       extra JVM options, appended (e.g. -XX:TieredStopAtLevel=1:
#                            C1 only, starts ~25% faster with ~100 MiB less RSS, slower code)
#   CASSANDRA_START_TIMEOUT  seconds `start` waits for CQL to answer, default 180
#   CASSANDRA_STOP_TIMEOUT   seconds `stop` waits for a clean exit before SIGKILL, default 60
# The cluster (cluster-*; go test dials the same variables, cqltest.Cluster):
#   CASSANDRA_CLUSTER_HOSTS  its nodes' addresses, comma-separated, default
#                            127.0.0.2,127.0.0.3,127.0.0.4 (Linux routes all of 127/8 to lo)
#   CASSANDRA_CLUSTER_PORT   CQL port of every node, default CASSANDRA_PORT+20000 (29042);
#                            the storage port is CASSANDRA_CLUSTER_PORT-2042 (27000)
#   CASSANDRA_CLUSTER_HEAP_OPTS  each node's heap, default "-Xms256m -Xmx512m"
#   CASSANDRA_CLUSTER_JVM_OPTS   each node's extra JVM options, default C1 only and no
#                            gossip settle wait (-Dcassandra.skip_wait_for_gossip_to_settle=0)
#
# Layout under $ORDERD_CACHE/cassandra:
#   lib/                     all jars (from scripts/cassandra/pom.xml; re-resolved if the pom changes)
#   node-$CASSANDRA_PORT/    (node-$CASSANDRA_HOST-$CASSANDRA_PORT/ off 127.0.0.1) cassandra.yaml (from scripts/cassandra/cassandra.yaml),
#                            data/ (data, commitlog, saved_caches, hints, cdc_raw),
#                            system.log (+ system.log.1 from the previous run), cassandra.pid
# One directory per address and CQL port, so nodes can run side by side.
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not running / not answering (status).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$REPO/scripts/cassandra"
POM="$CONF_DIR/pom.xml"
YAML_TEMPLATE="$CONF_DIR/cassandra.yaml"
JVM_OPTIONS="$CONF_DIR/jvm17-server.options"
CQL_PY="$CONF_DIR/cql.py"

PORT="${CASSANDRA_PORT:-9042}"
# The storage port keeps its distance from the CQL port (9042 -> 7000), so
# that a node on a moved CASSANDRA_PORT does not take the default node's.
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-$((PORT - 2042 >= 1024 ? PORT - 2042 : PORT + 1))}"
JMX_PORT="${CASSANDRA_JMX_PORT:-}"
HOST="${CASSANDRA_HOST:-127.0.0.1}"
ADDRESS="$HOST:$PORT"
SEEDS="${CASSANDRA_SEEDS:-$HOST:$STORAGE_PORT}"

CASSANDRA_HOME="${ORDERD_CACHE:-$REPO/.cache}/cassandra"
[[ "$CASSANDRA_HOME" == /* ]] || CASSANDRA_HOME="$PWD/$CASSANDRA_HOME" # the node needs absolute paths
LIB="$CASSANDRA_HOME/lib"
RUN="$CASSANDRA_HOME/node-$PORT"
[[ "$HOST" == 127.0.0.1 ]] || RUN="$CASSANDRA_HOME/node-$HOST-$PORT"
DATA="$RUN/data"
YAML="$RUN/cassandra.yaml"
LOG="$RUN/system.log"
PIDFILE="$RUN/cassandra.pid"

HEAP_OPTS="${CASSANDRA_HEAP_OPTS:--Xms512m -Xmx1g}"
EXTRA_JVM_OPTS="${CASSANDRA_JVM_OPTS:-}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-60}"

SERVICE=cassandra SERVICE_NAME=Cassandra SERVICE_HOME="$CASSANDRA_HOME"
PORTS="CQL=$PORT storage=$STORAGE_PORT${JMX_PORT:+ JMX=$JMX_PORT}"
PORT_VARS="CASSANDRA_PORT, CASSANDRA_STORAGE_PORT, CASSANDRA_JMX_PORT"
READY_WHAT="the node (CQL on $ADDRESS)"
# shellcheck source=scripts/lib/service.sh
. "$REPO/scripts/lib/service.sh"

# ---------------------------------------------------------------- helpers ---

need_python() {
  command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (used to talk CQL to the node)"
}

# PID of our node if it is running, from the pid file; checks the command
# line too, so a recycled pid is not taken for the node.
service_pid() {
  local pid cmd
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(<"$PIDFILE")"
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$YAML"*CassandraDaemon* ]] || return 1
  echo "$pid"
}

# Cheap check: does anything accept TCP connections on port $1 (default: CQL port)?
port_open() {
  (exec 3<>"/dev/tcp/$HOST/${1:-$PORT}") 2>/dev/null
}

# Real readiness check: CQL STARTUP -> READY, then a query of system.local.
# Prints the node's release_version.
probe() {
  port_open || return 1
  timeout 20 python3 "$CQL_PY" "$HOST" "$PORT" ping 2>/dev/null
}

write_config() {
  mkdir -p "$DATA" "$RUN/triggers"
  # Regenerated on every start (ports may change); the data stays in $DATA.
  # '|' as the sed delimiter: $RUN is a path.
  {
    echo "# Generated by scripts/cassandra.sh from scripts/cassandra/cassandra.yaml - edits are overwritten on the next start."
    sed -e "s|@@RUN@@|$RUN|g" \
        -e "s|@@NATIVE_PORT@@|$PORT|g" \
        -e "s|@@STORAGE_PORT@@|$STORAGE_PORT|g" \
        -e "s|@@HOST@@|$HOST|g" \
        -e "s|@@SEEDS@@|$SEEDS|g" "$YAML_TEMPLATE"
  } >"$YAML"
  if grep -q '@@[A-Z_]*@@' "$YAML"; then
    die "unreplaced template token in $YAML: $(grep -o '@@[A-Z_]*@@' "$YAML" | head -1)"
  fi
}

# The options in scripts/cassandra/jvm17-server.options: lines starting with '-'.
read_jvm_options() {
  local line
  JVM_FILE_OPTS=()
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line%%[[:space:]]}"
    [[ "$line" == -* ]] && JVM_FILE_OPTS+=("$line")
  done <"$JVM_OPTIONS"
}

launch() {
  # Keep the previous run's log for post-mortems.
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  rm -f "$PIDFILE"
  local -a heap extra jvm jamm jmx=()
  read -r -a heap <<<"$HEAP_OPTS"
  read -r -a extra <<<"$EXTRA_JVM_OPTS"
  read_jvm_options
  # jamm measures object sizes (memtable accounting) and is loaded as an agent,
  # as the distribution's cassandra-env.sh does.
  jamm=("$LIB"/jamm-*.jar)
  [[ -f "${jamm[0]}" ]] || die "no jamm jar in $LIB"
  if [[ -n "$JMX_PORT" ]]; then
    jmx=(-Dcassandra.jmx.local.port="$JMX_PORT" -Dcom.sun.management.jmxremote.authenticate=false
         -Djava.rmi.server.hostname="$HOST")
  fi
  jvm=(
    "${heap[@]}" -Xss256k
    "${JVM_FILE_OPTS[@]}"
    -javaagent:"${jamm[0]}"
    "${jmx[@]}"
    -Dcassandra.config="file://$YAML"
    -Dcassandra.storagedir="$DATA"
    -Dcassandra.logdir="$RUN"
    -Dcassandra.triggers_dir="$RUN/triggers"
    -Dlogback.configurationFile="$CONF_DIR/logback.xml"
    -Dcassandra-foreground=yes
    "${extra[@]}"
    -cp "$LIB/*"
  )
  local setsid=() nolock=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # Cassandra calls mlockall(MCL_CURRENT) at start-up, which faults in and pins
  # the whole committed heap (-Xms) and every other mapping: ~1 GB of RSS that
  # the machine can never reclaim. Only root (CAP_IPC_LOCK) gets past the
  # memlock limit, so as root we drop that capability for the node; the node
  # then logs "Unable to lock JVM memory (ENOMEM)" and carries on.
  if [[ $EUID -eq 0 ]] && command -v setpriv >/dev/null 2>&1; then
    nolock=(setpriv --bounding-set=-ipc_lock)
  fi
  # Detached from our session and stdio; the inner shell records its own pid
  # and then becomes the JVM (exec), so the pid file holds the node's pid.
  # {LOCK_FD}>&- : the node must not inherit (and hold) our lock.
  # MALLOC_ARENA_MAX=4 as in cassandra-env.sh: fewer glibc arenas, less RSS.
  # shellcheck disable=SC2016
  MALLOC_ARENA_MAX=4 "${setsid[@]}" "${nolock[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    java "${jvm[@]}" org.apache.cassandra.service.CassandraDaemon \
    </dev/null >>"$LOG" 2>&1 {LOCK_FD}>&- &
  wait_pidfile node
}


rss_mib() {
  awk '/^VmRSS:/ {printf "%d", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "?"
}

# --------------------------------------------------------------- commands ---

VERSION=
cmd_start() {
  take_lock
  need_python
  local pid t0=$SECONDS
  if pid="$(service_pid)"; then
    if VERSION="$(probe)"; then
      say "already running (pid $pid, Cassandra $VERSION), CQL on $ADDRESS"
      return 0
    fi
    say "running (pid $pid) but not answering yet; waiting"
    wait_ready "$pid"
    VERSION=$READY
    say "ready (pid $pid, Cassandra $VERSION), CQL on $ADDRESS"
    return 0
  fi
  rm -f "$PIDFILE"
  check_ports
  need_java
  ensure_lib
  write_config
  launch
  pid="$(<"$PIDFILE")"
  wait_ready "$pid"
  VERSION=$READY
  say "ready in $((SECONDS - t0))s (pid $pid, Cassandra $VERSION, RSS $(rss_mib "$pid") MiB, log $LOG)"
  say "CQL on $ADDRESS"
}


cmd_status() {
  local pid
  if ! pid="$(service_pid)"; then
    say "not running"
    return 3
  fi
  need_python
  if VERSION="$(probe)"; then
    say "running (pid $pid, Cassandra $VERSION, RSS $(rss_mib "$pid") MiB), CQL on $ADDRESS"
    return 0
  fi
  say "running (pid $pid) but not answering CQL on $ADDRESS"
  return 3
}

require_running() {
  service_pid >/dev/null || die "node not running on port $PORT (scripts/cassandra.sh start)"
}

cmd_cql() {
  [[ $# -eq 1 && -n "$1" ]] || { echo "usage: $0 cql 'STATEMENT'" >&2; exit 2; }
  require_running
  need_python
  python3 "$CQL_PY" "$HOST" "$PORT" query "$1"
}

cmd_nodetool() {
  [[ -n "$JMX_PORT" ]] || die "nodetool needs JMX: start the node with CASSANDRA_JMX_PORT set (and use the same value here)"
  require_running
  # The tools need the same JPMS exports/opens as the node (the --add-* lines).
  local opt jpms=()
  read_jvm_options
  for opt in "${JVM_FILE_OPTS[@]}"; do
    [[ "$opt" == --add-* ]] && jpms+=("$opt")
  done
  # user.home: nodetool keeps its command history in ~/.cassandra; keep it in the run dir.
  java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 "${jpms[@]}" \
    -Duser.home="$RUN" -Dlogback.configurationFile="$CONF_DIR/logback-tools.xml" \
    -cp "$LIB/*" org.apache.cassandra.tools.NodeTool -h "$HOST" -p "$JMX_PORT" "$@"
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

CLUSTER_PORT="${CASSANDRA_CLUSTER_PORT:-$((PORT + 20000))}"
CLUSTER_STORAGE_PORT=$((CLUSTER_PORT - 2042))
CLUSTER_HEAP_OPTS="${CASSANDRA_CLUSTER_HEAP_OPTS:--Xms256m -Xmx512m}"
CLUSTER_JVM_OPTS="${CASSANDRA_CLUSTER_JVM_OPTS:--XX:TieredStopAtLevel=1 -Dcassandra.skip_wait_for_gossip_to_settle=0}"
cluster_members "${CASSANDRA_CLUSTER_HOSTS:-127.0.0.2,127.0.0.3,127.0.0.4}"

# member HOST COMMAND: run this script's COMMAND for the cluster's node on HOST.
member() {
  local host="$1" seeds="" h
  shift
  for h in "${MEMBERS[@]}"; do seeds+="${seeds:+,}$h:$CLUSTER_STORAGE_PORT"; done
  CASSANDRA_HOST="$host" CASSANDRA_PORT="$CLUSTER_PORT" CASSANDRA_STORAGE_PORT="$CLUSTER_STORAGE_PORT" \
    CASSANDRA_SEEDS="$seeds" CASSANDRA_JMX_PORT="" \
    CASSANDRA_HEAP_OPTS="$CLUSTER_HEAP_OPTS" CASSANDRA_JVM_OPTS="$CLUSTER_JVM_OPTS" \
    "$REPO/scripts/cassandra.sh" "$@"
}

# One node after the other: a node that joins while another one is still
# starting may miss it in gossip. Every node is a seed, so none bootstraps
# (no streaming, no ring delay): right for a fresh test cluster, and a node
# that comes back after a kill (cluster-start again) rejoins with its data.
cmd_cluster_start() {
  local h t0=$SECONDS
  for h in "${MEMBERS[@]}"; do member "$h" start; done
  say "cluster of ${#MEMBERS[@]} nodes ready in $((SECONDS - t0))s: CQL on $(cluster_addresses "$CLUSTER_PORT")"
}

cmd_cluster_stop() {
  local h t0=$SECONDS
  for h in "${MEMBERS[@]}"; do member "$h" stop; done
  say "cluster stopped in $((SECONDS - t0))s"
}

cmd_cluster_status() {
  local h rc=0
  for h in "${MEMBERS[@]}"; do member "$h" status || rc=3; done
  return "$rc"
}

cmd_cluster_reset() {
  local h
  for h in "${MEMBERS[@]}"; do member "$h" reset; done
}

usage() {
  sed -n '10,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  address) echo "$ADDRESS" ;;
  cql) shift; cmd_cql "$@" ;;
  nodetool) shift; cmd_nodetool "$@" ;;
  logs) tail -n "${2:-50}" "$LOG" ;;
  reset) cmd_reset ;;
  pid) cmd_pid ;;
  cluster-start) cmd_cluster_start ;;
  cluster-stop) cmd_cluster_stop ;;
  cluster-status) cmd_cluster_status ;;
  cluster-reset) cmd_cluster_reset ;;
  *) usage ;;
esac
