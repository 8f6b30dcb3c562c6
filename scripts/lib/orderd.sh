# shellcheck shell=bash
# What the scripts that run an orderd binary share. Sourced, not run; the
# caller defines say and die, and check to use unavailable.

# unavailable skips the caller's check for a missing tool, or fails it
# under CI=true, where every check must run. The caller names its check in
# check, e.g. check="the contract check".
unavailable() {
	if [ "${CI:-}" = true ]; then
		say "FAIL: $* (CI=true: ${check:?} must run)"
		exit 1
	fi
	say "skipped: $*"
	exit 0
}

# wait_http waits until url answers with a 2xx while the process pid, called
# name, runs; it dies if the process exits or after 30 s.
wait_http() {
	local url=$1 pid=$2 name=$3
	for _ in $(seq 150); do
		curl -fs -o /dev/null "$url" && return 0
		kill -0 "$pid" 2>/dev/null || die "$name exited at start"
		sleep 0.2
	done
	die "$name did not answer $url within 30 s"
}

# orderd_stop stops the orderd of pid (empty: none), SIGTERM first and
# SIGKILL after 10 s, and, when rc is not 0, shows the last lines of its
# log.
orderd_stop() {
	local pid=$1 log=$2 rc=$3
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	if [ "$rc" -ne 0 ] && [ -s "$log" ]; then
		say "orderd's last log lines:"
		tail -n 20 "$log" >&2
	fi
}

# orderd_base waits until the orderd of pid, logging to log, has bound its
# address (its "orderd listening" line) and answers /healthz, then prints
# its base URL. It dies if orderd exits or is not up within 30 s.
orderd_base() {
	local pid=$1 log=$2 addr= base
	for _ in $(seq 150); do
		kill -0 "$pid" 2>/dev/null || die "orderd exited at start"
		addr=$(sed -n 's/.*"msg":"orderd listening".*"addr":"\([^"]*\)".*/\1/p' "$log" | head -n 1)
		[ -n "$addr" ] && break
		sleep 0.2
	done
	[ -n "$addr" ] || die "orderd did not log its address within 30 s"
	base=http://$addr
	wait_http "$base/healthz" "$pid" orderd
	printf '%s\n' "$base"
}
