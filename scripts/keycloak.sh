#!/usr/bin/env bash
# scripts/keycloak.sh - run a REAL OpenID provider for tests: Keycloak (its
# Quarkus distribution, a zip on Maven Central), in development mode with
# its embedded H2 file database, on loopback.
#
# The realm in scripts/keycloak/realm.json is imported at the first start:
# realm "orderd", audience "orderd", the client scopes orders:read,
# orders:write, customers:read, customers:write and admin, and clients
# (client_credentials) that hold different sets of them. Needs Java 21+
# (Keycloak 26 does not run on 17: a JDK 21+ under /usr/lib/jvm is found by
# itself), curl, unzip and, on first use, Maven (`mvn`) to fetch the zip.
#
# Usage: scripts/keycloak.sh COMMAND
#   start      fetch and unpack Keycloak (first use), start it, return once
#              the realm's discovery document answers
#   stop       SIGTERM, up to OIDC_STOP_TIMEOUT s, then SIGKILL
#   restart    stop, then start
#   status     exit 0 if running and answering, else 3
#   issuer     print the realm's issuer URL
#   logs [N]   last N (default 50) lines of the log
#   reset      stop and delete this instance's database (the realm is
#              imported again at the next start)
#
# Environment:
#   OIDC_PORT            HTTP port, default 8180; go test reads it too
#                        (internal/oidc/oidctest), unless ORDERD_TEST_OIDC_ISSUER
#                        names an issuer
#   OIDC_ADMIN_PASSWORD  password of the master realm's user "admin" (created
#                        at the first start), default "admin"; the tests rotate
#                        the realm's keys with it
#   KEYCLOAK_VERSION     default 26.5.6
#   KEYCLOAK_JAVA_HOME   the JDK to run it on; default: JAVA_HOME or `java` when
#                        21+, else the newest JDK 21+ in /usr/lib/jvm
#   ORDERD_CACHE         cache root, default <repo>/.cache; Keycloak uses
#                        $ORDERD_CACHE/keycloak
#   OIDC_START_TIMEOUT   seconds `start` waits, default 240
#   OIDC_STOP_TIMEOUT    seconds `stop` waits before SIGKILL, default 30
#
# Layout under $ORDERD_CACHE/keycloak:
#   keycloak-$KEYCLOAK_VERSION/   the distribution (data/import/ holds the realm)
#   node-$OIDC_PORT/              h2/ (the database), keycloak.log (+ .1), keycloak.pid,
#                                 realm.sha256 (a changed realm.json resets the database)
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not running / not answering (status).

set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REALM_JSON="$REPO/scripts/keycloak/realm.json"
REALM=orderd

VERSION="${KEYCLOAK_VERSION:-26.5.6}"
PORT="${OIDC_PORT:-8180}"
HOST=127.0.0.1
ISSUER="http://$HOST:$PORT/realms/$REALM"

KC_CACHE="${ORDERD_CACHE:-$REPO/.cache}/keycloak"
[[ "$KC_CACHE" == /* ]] || KC_CACHE="$PWD/$KC_CACHE"
DIST="$KC_CACHE/keycloak-$VERSION"
RUN="$KC_CACHE/node-$PORT"
LOG="$RUN/keycloak.log"
PIDFILE="$RUN/keycloak.pid"
START_TIMEOUT="${OIDC_START_TIMEOUT:-240}"
STOP_TIMEOUT="${OIDC_STOP_TIMEOUT:-30}"

SERVICE=keycloak SERVICE_NAME=Keycloak SERVICE_HOME="$KC_CACHE"
PORTS="HTTP=$PORT"
PORT_VARS="OIDC_PORT"
READY_WHAT="realm $REALM at $ISSUER"
# shellcheck source=scripts/lib/service.sh
. "$REPO/scripts/lib/service.sh"
# Keycloak's lines: "2026-01-01 10:00:00,000 ERROR [logger] ...".
ERROR_PATTERN='^[0-9-]+ [0-9:,]+ +(ERROR|FATAL)\b|^Caused by|^[[:alnum:]_.$]+(Exception|Error)(: |$)|Address already in use|requires Java|UnsupportedClassVersionError'

port_open() {
  (exec 3<>"/dev/tcp/$HOST/${1:-$PORT}") 2>/dev/null
}

# java_major JAVA: the feature release of that java binary, or nothing.
java_major() {
  local v
  v="$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')" || return 0
  echo "${v%%.*}"
}

# Find a JDK 21+ into JAVA_FOR_KC.
find_java() {
  local cand m best="" bestm=0
  for cand in ${KEYCLOAK_JAVA_HOME:+"$KEYCLOAK_JAVA_HOME/bin/java"} ${JAVA_HOME:+"$JAVA_HOME/bin/java"} \
    "$(command -v java 2>/dev/null || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$cand" && -x "$cand" ]] || continue
    m="$(java_major "$cand")"
    [[ "$m" =~ ^[0-9]+$ ]] || continue
    if [[ -n "${KEYCLOAK_JAVA_HOME:-}" && "$cand" == "$KEYCLOAK_JAVA_HOME/bin/java" ]]; then
      ((m >= 21)) || die "KEYCLOAK_JAVA_HOME=$KEYCLOAK_JAVA_HOME is Java $m; Keycloak $VERSION needs 21+"
      best=$cand bestm=$m
      break
    fi
    if ((m >= 21 && m > bestm)); then best=$cand bestm=$m; fi
  done
  [[ -n "$best" ]] || die "no Java 21+ found (JAVA_HOME, java on PATH, /usr/lib/jvm/*): Keycloak $VERSION needs one; Debian 12 has only 17, install e.g. Temurin 21 or set KEYCLOAK_JAVA_HOME"
  JAVA_FOR_KC="$(dirname "$(dirname "$best")")"
  JAVA_MAJOR=$bestm
}

# Fetch the zip with Maven (it caches in ~/.m2) and unpack it, once.
ensure_dist() {
  [[ -x "$DIST/bin/kc.sh" ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven is needed once to fetch Keycloak's zip"
  command -v unzip >/dev/null 2>&1 || die "unzip not found (Debian: apt-get install unzip)"
  mkdir -p "$KC_CACHE"
  local fd tmp="$KC_CACHE/dl.$$"
  exec {fd}>"$KC_CACHE/.dist.lock"
  flock -w 600 "$fd" || die "could not lock $KC_CACHE/.dist.lock"
  if [[ ! -x "$DIST/bin/kc.sh" ]]; then
    say "fetching org.keycloak:keycloak-quarkus-dist:$VERSION:zip from Maven Central (first use, ~160 MB) ..."
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if ! mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$VERSION:zip" \
      -DoutputDirectory="$tmp" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2; then
      rm -rf "$tmp"
      die "mvn dependency:copy of keycloak-quarkus-dist $VERSION failed (see above)"
    fi
    unzip -q "$tmp/keycloak-quarkus-dist-$VERSION.zip" -d "$tmp" || { rm -rf "$tmp"; die "unzip failed"; }
    mv "$tmp/keycloak-$VERSION" "$DIST"
    rm -rf "$tmp"
  fi
  exec {fd}>&-
}

# PID of our instance (the kc.sh shell, which becomes or forwards to the
# JVM), checked against its command line.
service_pid() {
  local pid cmd
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(<"$PIDFILE")"
  alive "$pid" || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmd" == *"$DIST"* ]] || return 1
  echo "$pid"
}

probe() {
  port_open || return 1
  curl -fsS -m 5 "$ISSUER/.well-known/openid-configuration" 2>/dev/null | grep -q "\"issuer\":\"$ISSUER\""
}

launch() {
  [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
  rm -f "$PIDFILE"
  local sum
  sum="$(sha256sum "$REALM_JSON" | cut -d' ' -f1)"
  if [[ "$(cat "$RUN/realm.sha256" 2>/dev/null)" != "$sum" ]]; then
    [[ -d "$RUN/h2" ]] && say "realm.json changed: a new database, the realm imported again"
    rm -rf "$RUN/h2"
  fi
  mkdir -p "$DIST/data/import" "$RUN"
  cp "$REALM_JSON" "$DIST/data/import/$REALM-realm.json"
  echo "$sum" >"$RUN/realm.sha256"
  local setsid=()
  command -v setsid >/dev/null 2>&1 && setsid=(setsid)
  # shellcheck disable=SC2016
  JAVA_HOME="$JAVA_FOR_KC" JAVA_OPTS_KC_HEAP="-Xms64m -Xmx512m" \
    KC_BOOTSTRAP_ADMIN_USERNAME=admin KC_BOOTSTRAP_ADMIN_PASSWORD="${OIDC_ADMIN_PASSWORD:-admin}" \
    "${setsid[@]}" bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$DIST/bin/kc.sh" start-dev --http-host="$HOST" --http-port="$PORT" --import-realm \
    --db=dev-file --db-url="jdbc:h2:file:$RUN/h2/keycloakdb;NON_KEYWORDS=VALUE" \
    --health-enabled=false --metrics-enabled=false \
    </dev/null >>"$LOG" 2>&1 {LOCK_FD}>&- &
  wait_pidfile keycloak
}



cmd_start() {
  take_lock
  local pid t0=$SECONDS
  command -v curl >/dev/null 2>&1 || die "curl not found (used to probe the realm)"
  if pid="$(service_pid)"; then
    if probe; then
      say "already running (pid $pid), issuer $ISSUER"
      return 0
    fi
    say "running (pid $pid) but not answering yet; waiting"
    wait_ready "$pid"
    say "ready (pid $pid), issuer $ISSUER"
    return 0
  fi
  rm -f "$PIDFILE"
  check_ports
  find_java
  ensure_dist
  launch
  pid="$(<"$PIDFILE")"
  wait_ready "$pid"
  say "ready in $((SECONDS - t0))s (pid $pid, Keycloak $VERSION on Java $JAVA_MAJOR, log $LOG)"
  say "issuer $ISSUER"
}


cmd_status() {
  local pid
  if ! pid="$(service_pid)"; then
    say "not running"
    return 3
  fi
  if probe; then
    say "running (pid $pid), issuer $ISSUER"
    return 0
  fi
  say "running (pid $pid) but the realm does not answer at $ISSUER"
  return 3
}

cmd_reset() {
  cmd_stop
  rm -rf "$RUN"
  say "deleted $RUN"
}

usage() {
  sed -n '13,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  issuer) echo "$ISSUER" ;;
  logs) tail -n "${2:-50}" "$LOG" ;;
  reset) cmd_reset ;;
  *) usage ;;
esac
