#!/usr/bin/env bash
# End-to-end tests of the console (/console) in a real headless Chromium:
# Debian's chromium, driven by playwright-core (pinned in
# e2e/console/package-lock.json, installed there with npm ci; no browser
# download), the tests in e2e/console/console.test.mjs, run by node --test.
#
#   scripts/console-e2e.sh            # the whole run
#   scripts/console-e2e.sh alter-topic TOPIC KEY=VALUE   # used by the tests
#
# It builds orderd; starts Kafka (scripts/kafka.sh, on its own port,
# CONSOLE_KAFKA_PORT, default KAFKA_PORT+20000, so 29092, apart from the
# broker of `make unit` and following a moved KAFKA_PORT) unless one
# already answers there, and stops it afterwards only if it
# started it; creates the order topic with a small max.message.bytes (4096)
# so that a large order is dead-lettered; starts orderd on a free loopback
# port with the SQLite store in a temporary directory, an admin token and
# that broker; runs the tests; and stops orderd whatever happens.
# Screenshots land in e2e/console/artifacts/ (gitignored).
#
# Without chromium, node or Kafka the run is skipped with a message, except
# under CI=true, where that is a failure.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
console_kafka_port=$((${KAFKA_PORT:-9092} + 20000))
[ "$console_kafka_port" -le 65534 ] || console_kafka_port=$((console_kafka_port - 40000))
export KAFKA_PORT=${CONSOLE_KAFKA_PORT:-$console_kafka_port}
# The tests run this script again (alter-topic) with KAFKA_PORT as set
# here: that run must find this broker, not one 20000 ports further on.
export CONSOLE_KAFKA_PORT=$KAFKA_PORT
KAFKA_LIB=${ORDERD_CACHE:-$REPO/.cache}/kafka/lib
KAFKA_ADMIN_PROPS=${ORDERD_CACHE:-$REPO/.cache}/kafka/broker-$KAFKA_PORT/admin.properties
PLAYWRIGHT_VERSION=1.65.1 # as in e2e/console/package.json
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
E2E=$REPO/e2e/console

say() { echo "console-e2e: $*" >&2; }
die() {
	say "$*"
	exit 2
}
# shellcheck source=scripts/lib/orderd.sh
. scripts/lib/orderd.sh
check="the console tests" # for unavailable

# kafka_tool runs one of Kafka's command line tools against the broker.
kafka_tool() {
	local tool=$1
	shift
	java -Xmx192m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$REPO/scripts/kafka/log4j2-tools.xml" -cp "$KAFKA_LIB/*" \
		"org.apache.kafka.tools.$tool" --bootstrap-server "127.0.0.1:$KAFKA_PORT" --command-config "$KAFKA_ADMIN_PROPS" "$@"
}

if [ "${1:-}" = alter-topic ]; then
	[ $# -eq 3 ] || die "usage: $0 alter-topic TOPIC KEY=VALUE"
	kafka_tool ConfigCommand --alter --entity-type topics --entity-name "$2" --add-config "$3" >&2
	exit 0
fi

# --- the browser and its driver ------------------------------------------
[ -x "$CHROMIUM" ] || unavailable "no $CHROMIUM (Debian: apt-get install chromium; scripts/deps.sh does it as root)"
command -v node >/dev/null 2>&1 || unavailable "no node (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || unavailable "no npm (Debian: apt-get install npm)"
[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ] || unavailable "node $(node --version) is too old: playwright-core needs 20 or later"
installed=$(node -p "require('$E2E/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
	say "installing playwright-core $PLAYWRIGHT_VERSION into e2e/console (npm ci)"
	# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the tests use Debian's chromium.
	(cd "$E2E" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts >&2)
fi

# --- Kafka -------------------------------------------------------------
started_kafka=
work=$(mktemp -d "${TMPDIR:-/tmp}/orderd-console.XXXXXX")
pid=
stop() {
	local rc=$?
	orderd_stop "$pid" "$work/orderd.log" "$rc"
	[ -n "$started_kafka" ] && scripts/kafka.sh stop >&2 || true
	rm -rf "$work"
	exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

brokers=
if scripts/kafka.sh status >/dev/null 2>&1; then
	say "Kafka already runs on 127.0.0.1:$KAFKA_PORT; using it"
	brokers=127.0.0.1:$KAFKA_PORT
elif scripts/kafka.sh start >&2; then
	started_kafka=1
	brokers=127.0.0.1:$KAFKA_PORT
elif [ "${CI:-}" = true ]; then
	die "FAIL: Kafka did not start (CI=true: the dead-letter test must run)"
else
	say "Kafka did not start: the dead-letter test will be skipped"
fi

# Topics of this run only; the orders' topic refuses records over 4 KiB.
prefix=console-e2e-$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')-
if [ -n "$brokers" ]; then
	kafka_tool TopicCommand --create --topic "${prefix}order-events" --partitions 3 --replication-factor 1 \
		--config max.message.bytes=4096 >&2
fi

# --- orderd --------------------------------------------------------------
say "building orderd"
go build -o "$work/orderd" ./cmd/orderd
token=console-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
# Only a link in the page: no trace UI has to answer there.
trace_ui='http://localhost:16686/trace/{trace_id}'
ORDERD_HTTP_ADDR=127.0.0.1:0 \
	ORDERD_DATA_DIR="$work/data" \
	ORDERD_STORE=sqlite \
	ORDERD_KAFKA_BROKERS="$brokers" \
	ORDERD_KAFKA_TOPIC_PREFIX="$prefix" \
	ORDERD_ADMIN_TOKEN="$token" \
	ORDERD_TRACE_UI_URL="$trace_ui" \
	ORDERD_LOG_LEVEL=info \
	"$work/orderd" >"$work/orderd.log" 2>&1 &
pid=$!
base=$(orderd_base "$pid" "$work/orderd.log") || exit 1
say "orderd is up at $base (SQLite in $work/data, Kafka ${brokers:-off})"

# --- the tests -------------------------------------------------------------
mkdir -p "$E2E/artifacts"
start=$SECONDS
rc=0
ORDERD_URL=$base ORDERD_ADMIN_TOKEN=$token CHROMIUM=$CHROMIUM E2E_TRACE_UI_URL=$trace_ui \
	E2E_KAFKA=${brokers:+1} E2E_ORDER_TOPIC="${prefix}order-events" E2E_SCRIPT="$REPO/scripts/console-e2e.sh" \
	node --test --test-concurrency=1 "$E2E/console.test.mjs" || rc=$?
say "tests exited $rc after $((SECONDS - start)) s; screenshots in e2e/console/artifacts/"
exit "$rc"
