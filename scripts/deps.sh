#!/usr/bin/env bash
# Installs the Debian packages the tests use besides Go and a JDK: kcat, the
# independent Kafka client some end-to-end tests consume with;
# prometheus, for promtool, with which scripts/check-monitoring.sh checks
# the Prometheus configuration, the alerting rules and their tests; and
# chromium, node and npm for the console's browser tests. Needs root
# (CI runs as root); elsewhere it says what to install and carries on, and
# the tests that need kcat skip locally (they fail under CI=true).
set -euo pipefail

missing=()
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
# wrk, for scripts/wrk.sh (make wrk): orderd against a bare chi handler.
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# scripts/keycloak.sh: unzip unpacks Keycloak's distribution, curl probes it
# (Keycloak itself needs a JDK 21+, which Debian 12 does not package: the
# script finds one under /usr/lib/jvm, or says what is missing).
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The console's browser tests (scripts/console-e2e.sh): Debian's chromium,
# driven from Node by playwright-core, which that script installs with npm ci.
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
# make cluster-test: ip (iproute2) makes the test bridge of scripts/testnet.sh
# and the network namespaces the partition tests cut off.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: not root; install these Debian packages for the full test run: ${missing[*]}" >&2
	exit 0
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
