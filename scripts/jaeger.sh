#!/usr/bin/env bash
# scripts/jaeger.sh - run a REAL Jaeger (v2, all in one) for the tracing tests.
#
# Jaeger v1.75.0's `jaeger` program, built with Go from the module proxy in
# the small module of its own in scripts/jaeger/ (its go.mod names it with a
# `tool` directive, apart from orderd's module, whose dependencies it would
# swamp), once, into a cache directory: the first build compiles about
# 2,300 packages, 7 CPU-minutes (20 minutes on 2 cores shared with other
# builds); later starts take a second or two. It receives OTLP over HTTP,
# keeps the traces in memory and serves the query API (no UI: Jaeger's
# pages are an npm build its Go module does not ship), on loopback only,
# configured by scripts/jaeger/config.yaml. Needs only Go.
#
# Usage: scripts/jaeger.sh COMMAND
#   start                 build (first use), start Jaeger, return once its query API answers
#   stop                  SIGTERM, up to JAEGER_STOP_TIMEOUT s for a clean exit, then SIGKILL
#   restart               stop, then start
#   status                exit 0 if running and answering, else 3
#   build                 build the binary (first use, or after scripts/jaeger/go.mod changed)
#   endpoint              print the OTLP/HTTP endpoint (http://127.0.0.1:PORT)
#   logs [N]              last N (default 50) lines of Jaeger's log
#
# Environment:
#   JAEGER_OTLP_PORT        OTLP/HTTP receiver, default 4318; go test sends spans there
#   JAEGER_QUERY_PORT       query API, default 16686; go test reads traces there
#                           (http://127.0.0.1:16686/api/traces/<id>; built from the Go
#                           module, Jaeger has no UI: its pages are an npm build)
#   JAEGER_QUERY_GRPC_PORT  query gRPC API, default JAEGER_QUERY_PORT-1 (16685)
#   ORDERD_CACHE            cache root, default <repo>/.cache; Jaeger uses $ORDERD_CACHE/jaeger
#   JAEGER_START_TIMEOUT    seconds `start` waits for the query API, default 60
#   JAEGER_STOP_TIMEOUT     seconds `stop` waits for a clean exit before SIGKILL, default 15
#
# Layout under $ORDERD_CACHE/jaeger:
#   bin/jaeger               the binary (rebuilt if scripts/jaeger/go.mod changes)
#   query-$JAEGER_QUERY_PORT/  jaeger.log (+ jaeger.log.1), jaeger.pid
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not running / not answering (status).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF_DIR="$REPO/scripts/jaeger"
CONFIG="$CONF_DIR/config.yaml"

export JAEGER_OTLP_PORT="${JAEGER_OTLP_PORT:-4318}"
export JAEGER_QUERY_PORT="${JAEGER_QUERY_PORT:-16686}"
export JAEGER_QUERY_GRPC_PORT="${JAEGER_QUERY_GRPC_PORT:-$((JAEGER_QUERY_PORT - 1))}"
HOST=127.0.0.1

JAEGER_HOME="${ORDERD_CACHE:-$REPO/.cache}/jaeger"
[[ "$JAEGER_HOME" == /* ]] || JAEGER_HOME="$PWD/$JAEGER_HOME"
BIN_DIR="$JAEGER_HOME/bin"
BIN="$BIN_DIR/jaeger"
RUN="$JAEGER_HOME/query-$JAEGER_QUERY_PORT"
LOG="$RUN/jaeger.log"
PIDFILE="$RUN/jaeger.pid"

START_TIMEOUT="${JAEGER_START_TIMEOUT:-60}"
STOP_TIMEOUT="${JAEGER_STOP_TIMEOUT:-15}"

SERVICE=jaeger SERVICE_NAME=Jaeger SERVICE_HOME="$JAEGER_HOME"
PORTS="otlp=$JAEGER_OTLP_PORT query=$JAEGER_QUERY_PORT query-grpc=$JAEGER_QUERY_GRPC_PORT"
PORT_VARS="JAEGER_OTLP_PORT, JAEGER_QUERY_PORT, JAEGER_QUERY_GRPC_PORT"
# The process helpers (lock, ports, stop, start failures) are shared with
# the JVM services; nothing of Java is used here.
READY_WHAT="jaeger's query API on $HOST:$JAEGER_QUERY_PORT" READY_POLL=0.3
# shellcheck source=scripts/lib/service.sh
. "$REPO/scripts/lib/service.sh"
# Jaeger logs as zap does: "<time>\terror\t...".
ERROR_PATTERN='[[:space:]](error|fatal|panic)[[:space:]]|^panic:|Error: |address already in use'

port_open() {
  (exec 3<>"/dev/tcp/$HOST/${1:-$JAEGER_QUERY_PORT}") 2>/dev/null
}

# Real readiness check: the query API lists the services it has traces of.
probe() {
  port_open || return 1
  local body
  body="$(curl -fsS --max-time 5 "http://$HOST:$JAEGER_QUERY_PORT/api/services" 2>/dev/null)" || return 1
  [[ "$body" == *'"data"'* ]] && port_open "$JAEGER_OTLP_PORT"
}

service_pid() {
  local pid cmd
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(<"$PIDFILE")"
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$BIN"*"$CONFIG"* ]] || return 1
  echo "$pid"
}

# The binary is current when it was built from this go.mod and go.sum.
bin_current() {
  [[ -x "$BIN" && -f "$BIN_DIR/.mod.sha256" &&
    "$(<"$BIN_DIR/.mod.sha256")" == "$(cat "$CONF_DIR/go.mod" "$CONF_DIR/go.sum" | sha256sum | cut -d' ' -f1)" ]]
}

build() {
  command -v go >/dev/null 2>&1 || die "go not found on PATH: Go builds Jaeger from the module proxy"
  mkdir -p "$BIN_DIR"
  local fd
  exec {fd}>"$JAEGER_HOME/.build.lock"
  flock -w 1200 "$fd" || die "could not lock $JAEGER_HOME/.build.lock"
  if ! bin_current; then
    say "building Jaeger from the module proxy into $BIN (first use: several minutes) ..."
    local t0=$SECONDS
    # GOFLAGS from the caller (-race, say) have no business here.
    (cd "$CONF_DIR" && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger) ||
      die "go build of Jaeger failed (see above)"
    mv -f "$BIN.tmp" "$BIN"
    cat "$CONF_DIR/go.mod" "$CONF_DIR/go.sum" | sha256sum | cut -d' ' -f1 >"$BIN_DIR/.mod.sha256"
    say "built in $((SECONDS - t0))s"
  fi
  exec {fd}>&-
}

launch() {
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  rm -f "$PIDFILE"
  local setsid=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # shellcheck disable=SC2016
  "${setsid[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$BIN" --config "$CONFIG" \
    </dev/null >>"$LOG" 2>&1 {LOCK_FD}>&- &
  wait_pidfile jaeger
}


cmd_start() {
  take_lock
  local pid t0=$SECONDS
  if pid="$(service_pid)"; then
    wait_ready "$pid"
    say "already running (pid $pid), OTLP http://$HOST:$JAEGER_OTLP_PORT, query API http://$HOST:$JAEGER_QUERY_PORT"
    return 0
  fi
  command -v curl >/dev/null 2>&1 || die "curl not found (the readiness check uses it)"
  rm -f "$PIDFILE"
  check_ports
  build
  launch
  pid="$(<"$PIDFILE")"
  wait_ready "$pid"
  say "ready in $((SECONDS - t0))s (pid $pid, log $LOG)"
  say "OTLP http://$HOST:$JAEGER_OTLP_PORT, query API http://$HOST:$JAEGER_QUERY_PORT"
}


cmd_status() {
  local pid
  if ! pid="$(service_pid)"; then
    say "not running"
    return 3
  fi
  if probe; then
    say "running (pid $pid), OTLP http://$HOST:$JAEGER_OTLP_PORT, query API http://$HOST:$JAEGER_QUERY_PORT"
    return 0
  fi
  say "running (pid $pid) but not answering on $HOST:$JAEGER_QUERY_PORT"
  return 3
}

usage() {
  sed -n '14,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  build) build ;;
  endpoint) echo "http://$HOST:$JAEGER_OTLP_PORT" ;;
  logs) tail -n "${2:-50}" "$LOG" ;;
  *) usage ;;
esac
