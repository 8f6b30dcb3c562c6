#!/usr/bin/env bash
# The independent contract check: Schemathesis, an HTTP fuzzer that knows
# nothing of orderd but openapi.yaml, sends generated requests to a live
# orderd and checks every answer against the spec, with all its checks.
#
#   scripts/contract.sh [schemathesis run options...]
#
# It installs Schemathesis from PyPI (pinned below and in
# scripts/contract/constraints.txt) into a venv under .cache/contract, once;
# builds orderd; starts it on 127.0.0.1 on a free port, with the SQLite
# store in a temporary directory, the admin routes on (a random token) and
# no Kafka; runs Schemathesis against the document orderd serves at
# /openapi.yaml, configured by scripts/contract/schemathesis.toml (which, with
# scripts/contract/hooks.py, says what is excluded and why); and stops
# orderd whatever happens. The exit code is Schemathesis's: non-zero on any
# finding that is not excluded there.
#
# The budget is about 2 minutes on 2 cores (max-examples in the config).
# CONTRACT_SEED=N replays the run whose output ended with "Seed: N";
# CONTRACT_MAX_EXAMPLES=N overrides the number of cases per operation and
# phase. Extra arguments go to `schemathesis run`, e.g. `--report vcr`
# (reports land in .cache/contract/report) or `--include-operation-id
# createOrder`.
#
# Without python3 and its venv module the check is skipped with a message,
# except under CI=true, where that is a failure.
set -euo pipefail

cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
CONFIG=scripts/contract/schemathesis.toml
CONSTRAINTS=scripts/contract/constraints.txt
CACHE=$PWD/.cache/contract
VENV=$CACHE/venv-$SCHEMATHESIS_VERSION
# The longest wait of a GET with min_version. Its length is not part of the
# contract; a short one keeps the run's time bounded, since generated
# requests ask for versions that do not exist.
READ_WAIT=1s

say() { echo "contract: $*" >&2; }
die() {
	say "$*"
	exit 2
}
# shellcheck source=scripts/lib/orderd.sh
. scripts/lib/orderd.sh
check="the contract check" # for unavailable

# --- Schemathesis, in its own venv ------------------------------------------
command -v python3 >/dev/null 2>&1 || unavailable "no python3 (Debian: apt-get install python3 python3-venv)"
stamp=$(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/schemathesis" ] || [ "$(cat "$VENV/.constraints" 2>/dev/null)" != "$stamp" ]; then
	say "installing Schemathesis $SCHEMATHESIS_VERSION from PyPI into $VENV (once)"
	rm -rf "$VENV" "$VENV.tmp"
	mkdir -p "$CACHE"
	python3 -m venv "$VENV.tmp" >/dev/null 2>&1 ||
		{ rm -rf "$VENV.tmp"; unavailable "python3 -m venv failed (Debian: apt-get install python3-venv)"; }
	# The venv's paths are absolute: install into its final place.
	mv "$VENV.tmp" "$VENV"
	if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
		"$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" "schemathesis==$SCHEMATHESIS_VERSION"; then
		rm -rf "$VENV"
		die "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
	fi
	echo "$stamp" >"$VENV/.constraints"
fi
"$VENV/bin/schemathesis" --version >&2

# --- orderd --------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/orderd-contract.XXXXXX")
pid=
stop() {
	local rc=$?
	orderd_stop "$pid" "$work/orderd.log" "$rc"
	rm -rf "$work"
	exit "$rc"
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building orderd"
go build -o "$work/orderd" ./cmd/orderd

token=contract-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
ORDERD_HTTP_ADDR=127.0.0.1:0 \
	ORDERD_DATA_DIR="$work/data" \
	ORDERD_STORE=sqlite \
	ORDERD_KAFKA_BROKERS= \
	ORDERD_ADMIN_TOKEN="$token" \
	ORDERD_READ_WAIT="$READ_WAIT" \
	ORDERD_LOG_LEVEL=info \
	"$work/orderd" >"$work/orderd.log" 2>&1 &
pid=$!

base=$(orderd_base "$pid" "$work/orderd.log") || exit 1
say "orderd is up at $base (SQLite in $work/data, no Kafka)"

# --- Schemathesis ----------------------------------------------------------
args=(--config-file "$CONFIG" run "$base/openapi.yaml" --report-dir "$CACHE/report")
[ -n "${CONTRACT_SEED:-}" ] && args+=(--seed "$CONTRACT_SEED")
[ -n "${CONTRACT_MAX_EXAMPLES:-}" ] && args+=(--max-examples "$CONTRACT_MAX_EXAMPLES")
[ -t 1 ] || args+=(--no-color)
start=$SECONDS
rc=0
# Hypothesis keeps its own files (Unicode tables, constants) out of the work
# tree too.
ORDERD_ADMIN_TOKEN=$token HYPOTHESIS_STORAGE_DIRECTORY="$CACHE/hypothesis" "$VENV/bin/schemathesis" "${args[@]}" "$@" || rc=$?
say "schemathesis exited $rc after $((SECONDS - start)) s"
exit "$rc"
