#!/usr/bin/env bash
# orderd against a bare chi handler, side by side, with wrk: the figures of
# issue 12's targets. For each of RUNS rounds it starts the baseline
# (scripts/wrk/baseline: decodes the same CreateOrder JSON, answers 201,
# nothing behind it) and then a fresh orderd on SQLite (no Kafka, logs at
# warn), and measures, one after the other so they never share the cores:
#
#   create    POST /v1/orders, CONNS connections, DURATION
#   get       GET /v1/orders/{id} of 1,000 orders at random, same load
#   create/1  POST /v1/orders over one connection (latency at rest)
#
# and on orderd alone, creates with an Idempotency-Key each (keyed, the
# same load as create), and the lifecycle mix with its read-your-writes reads
# (orderd bench -mix lifecycle). The first round also takes a CPU profile
# of orderd during its create run, unless BEFORE is set and PROFILE=1 is
# not (.cache/wrk/create.pprof; go tool pprof
# -top .cache/wrk/orderd .cache/wrk/create.pprof). A table of the figures and
# the ratios ends the output; every wrk output is in .cache/wrk/.
#
#   scripts/wrk.sh            # RUNS=2 DURATION=10s CONNS=64
#   BEFORE=main scripts/wrk.sh   # also an earlier build (a git revision or a
#                                # binary) in every round, compared side by side
#   ORDERD=bin BEFORE=bin2 scripts/wrk.sh   # two given binaries
#
# Every wrk row also gives the server's own CPU per request (user +
# system time from /proc/PID/stat over the run, divided by the requests):
# unlike throughput, it holds when other work shares the machine. Each
# round measures the disk's synced write in orderd's data directory (200
# appends of 4 KiB, each followed by fdatasync) just before the
# one-connection creates, and the summary puts the two side by side, with
# the keyed/unkeyed ratio of the round and the load average at its start
# (issue 20's targets).
#
# wrk runs on the same two cores as the server, as the README's figures do;
# it is a Debian package (scripts/deps.sh installs it).
set -euo pipefail

cd "$(dirname "$0")/.."

RUNS=${RUNS:-2}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
OUT=$PWD/.cache/wrk

say() { echo "wrk: $*" >&2; }
die() {
	say "$*"
	exit 2
}
# shellcheck source=scripts/lib/orderd.sh
. scripts/lib/orderd.sh
command -v wrk >/dev/null 2>&1 || die "no wrk (Debian: apt-get install wrk, or scripts/deps.sh as root)"

rm -rf "$OUT"
mkdir -p "$OUT"
work=$(mktemp -d "${TMPDIR:-/tmp}/orderd-wrk.XXXXXX")
pid=
stop() {
	local rc=$?
	orderd_stop "$pid" "$work/server.log" "$rc"
	rm -rf "$work"
	exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building orderd and the baseline"
# ORDERD: a binary to load instead of this tree's build (to compare two
# earlier builds with BEFORE).
if [ -n "${ORDERD:-}" ]; then
	cp "$ORDERD" "$OUT/orderd"
else
	go build -o "$OUT/orderd" ./cmd/orderd
fi
go build -o "$work/baseline" ./scripts/wrk/baseline
# BEFORE: another build of orderd (a binary, or a git revision built here)
# that every round also loads, right after this one, for a side-by-side
# comparison of a change.
BEFORE=${BEFORE:-}
# PROFILE=1 takes the CPU profile of the first round; by default only
# without BEFORE, since the profiler's own cost (a few % of the CPU) would
# count against this build in the comparison.
PROFILE=${PROFILE:-$([ -n "$BEFORE" ] && echo 0 || echo 1)}
if [ -n "$BEFORE" ] && [ -x "$BEFORE" ]; then
	cp "$BEFORE" "$OUT/before"
elif [ -n "$BEFORE" ]; then
	say "building orderd at $BEFORE"
	git worktree add -q --detach "$work/before-src" "$BEFORE"
	(cd "$work/before-src" && go build -o "$OUT/before" ./cmd/orderd)
	git worktree remove --force "$work/before-src"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wrk_run NAME URL LUA CONNS DURATION: runs wrk, keeps its output in
# $OUT/NAME.txt.
wrk_run() {
	local name=$1 url=$2 lua=$3 conns=$4 duration=$5 threads=2
	[ "$conns" -lt 2 ] && threads=1
	local before after
	before=$(cpu_ticks "$pid")
	wrk -t"$threads" -c"$conns" -d"$duration" --latency -s "$lua" "$url" >"$OUT/$name.txt"
	after=$(cpu_ticks "$pid")
	# The server's own CPU over the run (user + system, from /proc), per
	# request: unlike throughput, robust to other work on the machine.
	awk -v b="$before" -v a="$after" -v hz="$(getconf CLK_TCK)" '/ requests in / {
		printf "cpu_us_per_request: %.1f\n", (a - b) / hz * 1e6 / $1 }' "$OUT/$name.txt" >>"$OUT/$name.txt"
	grep -q "Non-2xx" "$OUT/$name.txt" && { cat "$OUT/$name.txt" >&2; die "$name: answers other than 2xx"; }
	say "$name: $(rps "$OUT/$name.txt") requests/s, p50 $(pct "$OUT/$name.txt" 50%) ms, p99 $(pct "$OUT/$name.txt" 99%) ms, $(cpu "$OUT/$name.txt") µs of CPU per request"
}
# cpu_ticks PID: the process's user + system CPU time so far, in clock ticks
# (fields 14 and 15 of /proc/PID/stat; the command name, field 2, has no
# space for orderd or the baseline).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu() { awk '/^cpu_us_per_request:/ {print $2}' "$1"; }
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$1"; }
# pct FILE P: wrk's latency percentile P ("50%") in milliseconds.
pct() {
	awk -v p="$2" '$1 == p {
		v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
		if (u == "us") v /= 1000; else if (u == "s") v *= 1000
		printf "%.2f", v; exit }' "$1"
}

# sync_probe FILE DIR: the disk's synced-write latency, measured now, where
# orderd's files are: 200 appends of a 4 KiB page to a file in DIR, each
# followed by fdatasync (what a commit of the WAL at synchronous=FULL
# costs at least), the p50 and p90 in milliseconds into FILE.
sync_probe() {
	python3 - "$2" >"$1" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "sync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
page, took = b"\0" * 4096, []
try:
    for _ in range(200):
        t = time.perf_counter()
        os.write(fd, page)
        os.fdatasync(fd)
        took.append(time.perf_counter() - t)
finally:
    os.close(fd)
    os.unlink(path)
took.sort()
print("sync_p50_ms: %.3f" % (took[len(took) // 2] * 1e3))
print("sync_p90_ms: %.3f" % (took[len(took) * 9 // 10] * 1e3))
PY
}
sync_p50() { awk '/^sync_p50_ms:/ {print $2}' "$1"; }

body='{"customer_id":"%s","items":[{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","quantity":2},{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abce","quantity":1}]}'

# orderd_round NAME BINARY: one round of orderd's loads against BINARY on a
# fresh data directory, its outputs in $OUT/NAME-*-$run.txt.
orderd_round() {
	local name=$1 bin=$2 customer profile secs
	rm -rf "$work/data"
	port=$(free_port) dport=$(free_port)
	# At warn, as the README's other figures: at info orderd logs a line per
	# request.
	ORDERD_HTTP_ADDR=127.0.0.1:$port ORDERD_DATA_DIR="$work/data" ORDERD_STORE=sqlite ORDERD_KAFKA_BROKERS= \
		ORDERD_LOG_LEVEL=warn ORDERD_DEBUG_ADDR=127.0.0.1:$dport "$bin" >"$work/server.log" 2>&1 &
	pid=$!
	base=http://127.0.0.1:$port
	wait_http "$base/healthz" "$pid" "$name"
	customer=$(curl -fsS -X POST "$base/v1/customers" -H 'Content-Type: application/json' \
		-d "{\"email\":\"wrk-$run-$RANDOM@example.com\",\"first_name\":\"W\",\"last_name\":\"Rk\"}" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
	profile=
	if [ "$run" = 1 ] && [ "$name" = orderd ] && [ "$PROFILE" = 1 ]; then
		secs=$(( ${DURATION%s} > 4 ? ${DURATION%s} - 2 : 2 ))
		curl -fsS -o "$OUT/create.pprof" "http://127.0.0.1:$dport/debug/pprof/profile?seconds=$secs" &
		profile=$!
	fi
	WRK_BODY=$(printf "$body" "$customer") wrk_run "$name-create-$run" "$base/v1/orders" scripts/wrk/create.lua "$CONNS" "$DURATION"
	[ -n "$profile" ] && wait "$profile"
	python3 - "$base" "$customer" >"$work/orderd.paths" <<'PY'
import json, sys, urllib.request
base, customer = sys.argv[1], sys.argv[2]
after = ""
for _ in range(2):
    page = json.load(urllib.request.urlopen(f"{base}/v1/customers/{customer}/orders?limit=500{after}"))
    for o in page["orders"]:
        print(f"/v1/orders/{o['id']}")
    if not page["next_after"]:
        break
    after = "&after=" + page["next_after"]
PY
	WRK_PATHS=$work/orderd.paths wrk_run "$name-get-$run" "$base" scripts/wrk/get.lua "$CONNS" "$DURATION"
	sync_probe "$OUT/$name-sync-$run.txt" "$work/data"
	say "$name: a synced 4 KiB write in the data directory, p50 $(sync_p50 "$OUT/$name-sync-$run.txt") ms"
	WRK_BODY=$(printf "$body" "$customer") wrk_run "$name-create1-$run" "$base/v1/orders" scripts/wrk/create.lua 1 5s
	WRK_BODY=$(printf "$body" "$customer") wrk_run "$name-keyed-$run" "$base/v1/orders" scripts/wrk/keyed.lua "$CONNS" "$DURATION"
	"$OUT/orderd" bench -addr "$base" -mix lifecycle -connections "$CONNS" -duration "$DURATION" >"$OUT/$name-lifecycle-$run.txt" 2>/dev/null
	say "$name lifecycle: $(awk '$1 == "total" {print $3 " operations/s, p99 " $6 " ms"}' "$OUT/$name-lifecycle-$run.txt"); $(grep '^read-your-writes' "$OUT/$name-lifecycle-$run.txt")"
	orderd_stop "$pid" "$work/server.log" 0
	pid=
}

for run in $(seq "$RUNS"); do
	# The machine's load when the round starts: CPU per request holds under
	# other work, throughput does not.
	cut -d' ' -f1-3 /proc/loadavg >"$OUT/load-$run.txt"
	# --- the baseline ------------------------------------------------------
	port=$(free_port)
	"$work/baseline" -addr "127.0.0.1:$port" >"$work/server.log" 2>&1 &
	pid=$!
	base=http://127.0.0.1:$port
	wait_http "$base/v1/orders/$(cat /proc/sys/kernel/random/uuid)" "$pid" baseline
	for i in $(seq 1000); do echo "/v1/orders/$(cat /proc/sys/kernel/random/uuid)"; done >"$work/baseline.paths"
	WRK_BODY=$(printf "$body" "$(cat /proc/sys/kernel/random/uuid)") wrk_run "baseline-create-$run" "$base/v1/orders" scripts/wrk/create.lua "$CONNS" "$DURATION"
	WRK_PATHS=$work/baseline.paths wrk_run "baseline-get-$run" "$base" scripts/wrk/get.lua "$CONNS" "$DURATION"
	WRK_BODY=$(printf "$body" "$(cat /proc/sys/kernel/random/uuid)") wrk_run "baseline-create1-$run" "$base/v1/orders" scripts/wrk/create.lua 1 5s
	orderd_stop "$pid" "$work/server.log" 0
	pid=

	orderd_round orderd "$OUT/orderd"
	if [ -n "$BEFORE" ]; then orderd_round before "$OUT/before"; fi
done

# --- the table -------------------------------------------------------------
echo
# The µs columns are each server's own CPU per request over the run.
printf '%-10s %4s %10s %10s %6s %9s %9s %9s %9s %8s %8s\n' load run baseline orderd ratio "base p50" "orderd p50" "base p99" "orderd p99" "base µs" "orderd µs"
for load in create get create1; do
	for run in $(seq "$RUNS"); do
		b=$OUT/baseline-$load-$run.txt o=$OUT/orderd-$load-$run.txt
		printf '%-10s %4s %10s %10s %6s %9s %9s %9s %9s %8s %8s\n' "$load" "$run" "$(rps "$b")" "$(rps "$o")" \
			"$(awk -v b="$(rps "$b")" -v o="$(rps "$o")" 'BEGIN {printf "%.2f", o / b}')" \
			"$(pct "$b" 50%)" "$(pct "$o" 50%)" "$(pct "$b" 99%)" "$(pct "$o" 99%)" "$(cpu "$b")" "$(cpu "$o")"
	done
done
# With BEFORE, this build against it: the ratio is this one's to before's.
if [ -n "$BEFORE" ]; then
	echo
	printf '%-10s %4s %10s %10s %6s %9s %9s %9s %9s %8s %8s\n' load run before orderd ratio "bef p50" "orderd p50" "bef p99" "orderd p99" "bef µs" "orderd µs"
	for load in create get create1 keyed; do
		for run in $(seq "$RUNS"); do
			b=$OUT/before-$load-$run.txt o=$OUT/orderd-$load-$run.txt
			printf '%-10s %4s %10s %10s %6s %9s %9s %9s %9s %8s %8s\n' "$load" "$run" "$(rps "$b")" "$(rps "$o")" \
				"$(awk -v b="$(rps "$b")" -v o="$(rps "$o")" 'BEGIN {printf "%.2f", o / b}')" \
				"$(pct "$b" 50%)" "$(pct "$o" 50%)" "$(pct "$b" 99%)" "$(pct "$o" 99%)" "$(cpu "$b")" "$(cpu "$o")"
		done
	done
	for run in $(seq "$RUNS"); do
		for name in before orderd; do
			echo "lifecycle $run $name: $(awk '$1 == "total" {print $3 " operations/s, p99 " $6 " ms"}' "$OUT/$name-lifecycle-$run.txt"); $(grep '^read-your-writes' "$OUT/$name-lifecycle-$run.txt")"
		done
	done
	echo
fi
# Keyed creates have no baseline: their ratio is to orderd's unkeyed ones
# of the same round (issue 20's target: at least 0.8).
for run in $(seq "$RUNS"); do
	k=$OUT/orderd-keyed-$run.txt o=$OUT/orderd-create-$run.txt
	printf '%-10s %4s %10s %10s %6s %9s %9s %9s %9s %8s %8s\n' keyed "$run" - "$(rps "$k")" \
		"$(awk -v o="$(rps "$o")" -v k="$(rps "$k")" 'BEGIN {printf "%.2f", k / o}')" \
		- "$(pct "$k" 50%)" - "$(pct "$k" 99%)" - "$(cpu "$k")"
done
# One connection's create against the disk's synced write of the same round
# (issue 20's target: p50 at most the synced write + 0.15 ms), and the CPU
# per create at 64 connections (target: at most 50 µs).
echo
for run in $(seq "$RUNS"); do
	o=$OUT/orderd-create1-$run.txt y=$OUT/orderd-sync-$run.txt
	echo "round $run: create/1 p50 $(pct "$o" 50%) ms, synced 4 KiB write p50 $(sync_p50 "$y") ms," \
		"difference $(awk -v o="$(pct "$o" 50%)" -v y="$(sync_p50 "$y")" 'BEGIN {printf "%.2f", o - y}') ms;" \
		"CPU per create $(cpu "$OUT/orderd-create-$run.txt") µs, per keyed create $(cpu "$OUT/orderd-keyed-$run.txt") µs;" \
		"load average at the start $(cat "$OUT/load-$run.txt")"
done
