# shellcheck shell=bash
# What the scripts that run a test server share (scripts/kafka.sh,
# cassandra.sh, keycloak.sh, jaeger.sh): logging, a lock per service
# directory, Java and jar resolution from Maven Central (for the JVM ones),
# process handling and `stop`. Sourced, not run. The caller sets, before
# sourcing:
#   SERVICE       short name for messages (kafka, cassandra)
#   SERVICE_NAME  the product, for messages (Kafka, Cassandra)
#   SERVICE_HOME  the service's cache directory (absolute)
#   POM           the pom that names the jars; LIB, where they go
#   RUN           the directory of this instance (one per port)
#   STOP_TIMEOUT  seconds a clean stop may take before SIGKILL
#   LOG, PIDFILE  the instance's log and pid file
#   PORTS         the instance's ports as ROLE=PORT words (client=9092 ...),
#                 checked before a start and named when a start fails
#   PORT_VARS     the variables that move them, for the hint
#   READY_WHAT    what wait_ready names when nothing answered in time
#   READY_POLL    seconds between wait_ready's probes (default 1)
# and defines port_open PORT (does anything accept connections there?),
# probe (does the server answer a real request? what it prints is kept)
# and service_pid (prints the pid of this instance's process, or fails when
# it does not run).

say() { printf '%s: %s\n' "$SERVICE" "$*"; }
die() { printf '%s: error: %s\n' "$SERVICE" "$*" >&2; exit 1; }

# Serialise start/stop/reset for one instance directory (flock is in
# util-linux, which every Debian has; without it we just run unlocked).
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
  [[ "$major" =~ ^[0-9]+$ && "$major" -ge 17 ]] || die "$SERVICE_NAME is run here on Java 17+, found '$v'"
}

# Resolve the jars once into $LIB. The pom's sha256 is stored next to them,
# so editing the pom (e.g. a new version) triggers a fresh resolve.
lib_current() {
  [[ -f "$LIB/.pom.sha256" && "$(<"$LIB/.pom.sha256")" == "$(sha256sum "$POM" | cut -d' ' -f1)" ]]
}

resolve_lib() {
  command -v mvn >/dev/null 2>&1 || die "mvn not found: Maven is needed once to fetch the $SERVICE_NAME jars"
  say "resolving $SERVICE_NAME jars from Maven Central into $LIB (first use) ..."
  local tmp="$SERVICE_HOME/lib.tmp.$$"
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
  mkdir -p "$SERVICE_HOME"
  if ! command -v flock >/dev/null 2>&1; then
    resolve_lib
    return 0
  fi
  # Several callers may start at once: one downloads, the others wait.
  local fd
  exec {fd}>"$SERVICE_HOME/.lib.lock"
  flock -w 600 "$fd" || die "could not lock $SERVICE_HOME/.lib.lock"
  lib_current || resolve_lib
  exec {fd}>&- # closed again, so the service does not inherit it
}

# Is PID alive (and not a zombie that nobody reaped yet)?
alive() {
  local pid="$1" stat
  [[ -n "$pid" && -r "/proc/$pid/stat" ]] || return 1
  stat="$(<"/proc/$pid/stat")" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

# Stop PID with SIGTERM, and SIGKILL it if it has not exited within
# STOP_TIMEOUT seconds.
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

# Wait up to 5 s for the background launch to write $PIDFILE; WHAT names
# the process in the error.
wait_pidfile() {
  local what="$1" i
  for ((i = 0; i < 50; i++)); do
    [[ -s "$PIDFILE" ]] && return 0
    sleep 0.1
  done
  die "$what did not start (no pid file); see $LOG"
}

# The process listening on TCP port $1, as `ss -ltnp` names it ("java,
# pid 1234"), or nothing when ss is missing or does not say (another user's
# process, without root).
port_holder() {
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$1" 2>/dev/null |
    sed -nE 's/.*users:\(\("([^"]*)",pid=([0-9]+).*/\1, pid \2/p' | head -n 1
}

# Is every port of PORTS free? For each ROLE=PORT word that something
# listens on, it prints the port, its role and, where ss tells, the process
# holding it, and returns 1.
ports_free() {
  local word role port holder rc=0
  for word in $PORTS; do
    role="${word%%=*}" port="${word#*=}"
    port_open "$port" || continue
    holder="$(port_holder "$port")"
    printf '%s: error: port %s (%s port) is already in use by %s\n' "$SERVICE" "$port" "$role" \
      "${holder:-another process (ss -ltnp does not say which)}" >&2
    rc=1
  done
  return "$rc"
}

# Refuse to start when one of the instance's ports is taken: the service
# would fail to bind it, and say so deep in its log.
check_ports() {
  ports_free && return 0
  printf '%s: hint: stop that process, or start %s on other ports (%s)\n' "$SERVICE" "$SERVICE_NAME" "$PORT_VARS" >&2
  exit 1
}

# The lines of a service log that carry an error: those logged at ERROR or
# FATAL (Kafka: "[time] ERROR ...", Cassandra: "ERROR [thread] ..."), the
# first line of an exception and its causes, and bind failures; not the
# INFO and WARN lines that merely mention an exception.
ERROR_PATTERN='^(\[[^]]*\] )?(ERROR|FATAL)\b|^Caused by|^Exception|^[[:alnum:]_.$]+(Exception|Error)(: |$)|Address already in use|Cannot assign requested address'

# Fail a start with the message, the lines of the service's log ($LOG) that
# carry an error (with their line numbers), and the end of the log.
fail_start() {
  printf '%s: error: %s\n' "$SERVICE" "$1" >&2
  local errors n
  errors="$(grep -n -E "$ERROR_PATTERN" "$LOG" 2>/dev/null)" || true
  if [[ -n "$errors" ]]; then
    n="$(printf '%s\n' "$errors" | wc -l)"
    printf -- '--- the lines of %s that carry an error (%d; the first 20) ---\n' "$LOG" "$n" >&2
    printf '%s\n' "$errors" | head -n 20 >&2
  fi
  printf -- '--- last 30 lines of %s ---\n' "$LOG" >&2
  tail -n 30 "$LOG" >&2 || true
  # The service is gone: whatever holds one of its ports now is another
  # process, likely the reason.
  if grep -q -E 'Address already in use|BindException|is in use by another process' "$LOG" 2>/dev/null; then
    ports_free || true
    printf '%s: hint: a port of %s (%s) was taken: free it, or start %s on other ports (%s)\n' \
      "$SERVICE" "$SERVICE_NAME" "$PORTS" "$SERVICE_NAME" "$PORT_VARS" >&2
  fi
  exit 1
}

# stop_process PID: terminate it (SIGTERM, up to STOP_TIMEOUT s, then
# SIGKILL), then whatever its process group still holds (a launcher's
# child, as Keycloak's kc.sh leaves a JVM).
stop_process() {
  terminate "$1"
  kill -KILL -- "-$1" 2>/dev/null || true
}

# wait_ready PID: wait up to START_TIMEOUT s, polling every READY_POLL s
# (default 1), until the caller's probe answers; what it prints is left in
# READY. A process that exits meanwhile fails the start; one that does not
# answer in time is stopped (no half-started server is left behind) and
# fails it, naming READY_WHAT (what did not answer, and where).
wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! alive "$pid"; then
      rm -f "$PIDFILE"
      fail_start "$SERVICE (pid $pid) exited during startup"
    fi
    if READY="$(probe)"; then
      return 0
    fi
    sleep "${READY_POLL:-1}"
  done
  stop_process "$pid"
  rm -f "$PIDFILE"
  fail_start "$READY_WHAT did not answer within ${START_TIMEOUT}s (stopped it)"
}

# cmd_stop stops this instance (stop_process).
cmd_stop() {
  take_lock
  local pid t0=$SECONDS
  if ! pid="$(service_pid)"; then
    rm -f "$PIDFILE"
    say "not running"
    return 0
  fi
  say "stopping (pid $pid)"
  stop_process "$pid"
  rm -f "$PIDFILE"
  say "stopped in $((SECONDS - t0))s"
}

# cluster_members LIST: the members' addresses of a comma- (or space-)
# separated LIST, into the array MEMBERS.
MEMBERS=()
cluster_members() {
  local h
  MEMBERS=()
  for h in ${1//,/ }; do MEMBERS+=("$h"); done
  ((${#MEMBERS[@]} > 0)) || die "no cluster members in '$1'"
}

# cluster_addresses PORT: the members' host:PORT, comma-separated.
cluster_addresses() {
  local h out=""
  for h in "${MEMBERS[@]}"; do out+="${out:+,}$h:$1"; done
  echo "$out"
}
