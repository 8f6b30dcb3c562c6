#!/usr/bin/env bash
# scripts/testnet.sh - the test network that the partition tests cut: a
# bridge in this (the root) network namespace that carries the addresses of
# the Cassandra and Kafka clusters, so that an orderd in a network namespace
# of its own, on a veth pair plugged into the bridge, reaches them (from a
# namespace, 127.0.0.x is the namespace's own loopback). The tests
# (cmd/orderd, netns) make the namespaces; this script makes only what the
# servers must bind before they start. Needs root and iproute2 (`ip`).
#
# Usage: scripts/testnet.sh COMMAND
#   up        create the bridge (if missing) with ORDERD_TESTNET_GATEWAY, and add
#             each address of CASSANDRA_CLUSTER_HOSTS and KAFKA_CLUSTER_HOSTS to it
#   down      delete the bridge and its addresses
#   status    exit 0 if the bridge is up, else 3
#
# Environment:
#   ORDERD_TESTNET_BRIDGE    the bridge's name, default orderd-br0
#   ORDERD_TESTNET_GATEWAY   its own address and prefix, default 10.231.0.1/24; the
#                            clusters' addresses must lie in that prefix
#   CASSANDRA_CLUSTER_HOSTS, KAFKA_CLUSTER_HOSTS   as scripts/cassandra.sh and kafka.sh
#                            take them (addresses in 127/8 are left alone: lo has them)
#
# Exit codes: 0 ok, 1 failure, 2 usage error, 3 not up (status).

set -euo pipefail

BRIDGE="${ORDERD_TESTNET_BRIDGE:-orderd-br0}"
GATEWAY="${ORDERD_TESTNET_GATEWAY:-10.231.0.1/24}"
PREFIX="${GATEWAY#*/}"

say() { printf 'testnet: %s\n' "$*"; }
die() { printf 'testnet: error: %s\n' "$*" >&2; exit 1; }

need_ip() {
  command -v ip >/dev/null 2>&1 || die "ip (iproute2) not found"
  [[ $EUID -eq 0 ]] || die "needs root (it creates a bridge)"
}

addresses() {
  local h
  for h in ${CASSANDRA_CLUSTER_HOSTS//,/ } ${KAFKA_CLUSTER_HOSTS//,/ }; do
    [[ "$h" == 127.* ]] || echo "$h"
  done
}

cmd_up() {
  need_ip
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$GATEWAY" dev "$BRIDGE"
  local a
  for a in $(addresses); do ip addr replace "$a/$PREFIX" dev "$BRIDGE"; done
  ip link set "$BRIDGE" up
  say "bridge $BRIDGE up: $(ip -br addr show dev "$BRIDGE" | cut -d' ' -f2- | xargs)"
}

cmd_down() {
  need_ip
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE"
    say "bridge $BRIDGE deleted"
  else
    say "no bridge $BRIDGE"
  fi
}

cmd_status() {
  if ip link show "$BRIDGE" 2>/dev/null | grep -q ',UP'; then
    say "bridge $BRIDGE up: $(ip -br addr show dev "$BRIDGE" | cut -d' ' -f2- | xargs)"
    return 0
  fi
  say "bridge $BRIDGE is not up"
  return 3
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) sed -n '10,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
