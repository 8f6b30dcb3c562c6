# shellcheck shell=bash
# What the scripts that run an orderd binary share. Sourced, not run; the
# caller defines die.

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
