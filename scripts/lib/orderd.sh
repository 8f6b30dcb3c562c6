# shellcheck shell=bash
# What the scripts that run an orderd binary share. Sourced, not run; the
# caller defines say and die.

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
	for _ in $(seq 150); do
		curl -fsS -o /dev/null "$base/healthz" 2>/dev/null && break
		kill -0 "$pid" 2>/dev/null || die "orderd exited at start"
		sleep 0.2
	done
	curl -fsS -o /dev/null "$base/healthz" || die "orderd did not answer /healthz within 30 s"
	printf '%s\n' "$base"
}
