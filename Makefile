# The project's commands. `make test` is the one the README names and CI
# runs. It sets up what the tests need: Go modules from the module proxy,
# kcat, prometheus (promtool) and chromium from Debian and playwright-core
# from npm (scripts/deps.sh), a real Kafka broker and a real Cassandra node
# (the CQL stand-in for ScyllaDB) and a real OpenID provider (Keycloak, on
# Java 21+) from Maven Central (scripts/kafka.sh, scripts/cassandra.sh,
# scripts/keycloak.sh) and a real Jaeger built with Go (scripts/jaeger.sh),
# which it stops afterwards. They listen on KAFKA_PORT, CASSANDRA_PORT and
# OIDC_PORT (default 9092, 9042 and 8180; Jaeger on JAEGER_OTLP_PORT and
# JAEGER_QUERY_PORT), and the tests dial the same ports:
# `KAFKA_PORT=19192 CASSANDRA_PORT=19142 OIDC_PORT=18180 make test` runs
# beside servers on the default ones. `cluster-test` adds a three-node
# Cassandra and a three-broker Kafka (CASSANDRA_CLUSTER_PORT,
# KAFKA_CLUSTER_PORT: CASSANDRA_PORT+20000 and KAFKA_PORT+30000) on a
# bridge that network namespaces reach (scripts/testnet.sh, root).
GO ?= go
# Fuzz budgets are counts of inputs, not durations: with a duration, go
# test's fuzz coordinator can report its own deadline as a failure
# ("context deadline exceeded") when the deadline and a worker's result
# race; a count has no deadline. Each is about 10 s here.
FUZZ_DECODE ?= 50000x
FUZZ_UPCAST ?= 120000x

.PHONY: test quick deps check compose unit cluster-test fuzz bench run

# The fault tests on real clusters (make cluster-test), which `unit` leaves
# out: a go test -run / -skip pattern.
CLUSTER_TESTS = ^Test(CassandraNodeKilled|KafkaBrokerKilled|CassandraPartition|KafkaPartition)E2E$$
# Their clusters' addresses, on the bridge of scripts/testnet.sh (so that
# an orderd in a network namespace reaches them); the scripts and the
# tests read the same variables.
CASSANDRA_CLUSTER_HOSTS ?= 10.231.0.2,10.231.0.3,10.231.0.4
KAFKA_CLUSTER_HOSTS ?= 10.231.0.5,10.231.0.6,10.231.0.7
export CASSANDRA_CLUSTER_HOSTS KAFKA_CLUSTER_HOSTS

# Every test: static checks, the monitoring checks, the unit,
# conformance and end-to-end suites, a short run of each fuzz target, the
# contract check and the console's browser tests.
test: deps check compose monitoring unit cluster-test fuzz contract console

# The inner loop: the Go tests that need no server, about 40 s here
# (results of unchanged packages come from go test's cache). Under -short
# the tests that need Kafka, Cassandra or a tmpfs skip at once
# (kafkatest.Brokers, cqltest.Hosts, disktest.Mount), and so do the slow
# ones that build and run orderd as a process; nothing is started. `make
# test` runs everything, and under CI=true without -short nothing skips.
quick:
	$(GO) test -short ./...

deps:
	scripts/deps.sh

check:
	$(GO) mod download
	@unformatted="$$(gofmt -l cmd internal migrations scripts *.go)"; \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Dockerfile and compose.yaml are shipped, not run (no Docker engine here):
# they are validated with docker compose config and a few checks.
compose:
	scripts/check-compose.sh

# The Prometheus config, the alerting rules and their unit tests (promtool)
# and the Grafana dashboard; TestMonitoringSeriesExist, in unit, checks the
# series they name against a running orderd.
.PHONY: monitoring
monitoring:
	scripts/check-monitoring.sh

# The servers are stopped whatever the tests' outcome; the tests' exit code
# is the target's. Jaeger's first start builds it (scripts/jaeger.sh):
# about 7 CPU-minutes, 20 minutes on 2 busy shared cores; later starts
# take a second or two.
unit:
	scripts/kafka.sh start
	scripts/cassandra.sh start
	scripts/jaeger.sh start
	scripts/keycloak.sh start
	$(GO) test -race -count=1 -timeout=40m -skip '$(CLUSTER_TESTS)' ./... ; rc=$$?; scripts/kafka.sh stop; scripts/cassandra.sh stop; scripts/jaeger.sh stop; scripts/keycloak.sh stop; exit $$rc

# The fault tests (cmd/orderd/faults_e2e_test.go, netns_e2e_test.go) on a
# three-node Cassandra (replication factor 3) and a three-broker Kafka
# (replication factor 3, min.insync.replicas 2), started here with the
# scripts on CASSANDRA_CLUSTER_PORT (CASSANDRA_PORT+20000) and
# KAFKA_CLUSTER_PORT (KAFKA_PORT+30000) after the bridge of
# scripts/testnet.sh (root: the partition tests cut an orderd in a network
# namespace off from one cluster). Each run starts on fresh clusters (the
# previous run's data is reset first); the clusters are stopped and the
# bridge deleted whatever the outcome, and the servers' logs stay in
# .cache/ for a post-mortem. The tests' exit code is the target's. About 9
# minutes here: under a minute to start the clusters, then the four tests.
cluster-test:
	scripts/kafka.sh cluster-reset && scripts/cassandra.sh cluster-reset && \
	  scripts/testnet.sh up && scripts/cassandra.sh cluster-start && scripts/kafka.sh cluster-start && \
	  $(GO) test -race -count=1 -timeout=30m -run '$(CLUSTER_TESTS)' -v ./cmd/orderd ; rc=$$?; \
	  scripts/kafka.sh cluster-stop; scripts/cassandra.sh cluster-stop; scripts/testnet.sh down; exit $$rc

fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzDecodeCommand$$' -fuzztime=$(FUZZ_DECODE) ./internal/api
	$(GO) test -run='^$$' -fuzz='^FuzzUpcastOrderCreated$$' -fuzztime=$(FUZZ_UPCAST) ./internal/aggregate

# The independent contract check: Schemathesis (from PyPI, into .cache)
# against a live orderd, every check, about 2 minutes; what it excludes and
# why is in scripts/contract/.
.PHONY: contract
contract:
	scripts/contract.sh

# The console's end-to-end tests in headless Chromium (Debian's chromium,
# driven by playwright-core from e2e/console, installed there with npm ci),
# against a live orderd and a Kafka broker on port KAFKA_PORT+20000 (29092)
# that the script starts and stops (unless one already answers there),
# apart from the broker of `unit`; screenshots in
# e2e/console/artifacts/.
.PHONY: console
console:
	scripts/console-e2e.sh

# The benchmarks whose figures are in the README.
bench:
	scripts/kafka.sh start
	scripts/cassandra.sh start
	scripts/jaeger.sh start
	scripts/keycloak.sh start
	$(GO) test -run='^$$' -bench=. -benchtime=5s ./internal/sqlite ./internal/cql ./internal/relay ./internal/aggregate ./internal/oidc ./cmd/orderd ; rc=$$?; scripts/kafka.sh stop; scripts/cassandra.sh stop; scripts/jaeger.sh stop; scripts/keycloak.sh stop; exit $$rc

# orderd against a bare chi+JSON handler under wrk, side by side (two
# rounds of create, GET, one-connection create, and orderd's keyed creates
# and lifecycle mix), with each server's CPU per request, the disk's synced
# write beside the one-connection create, and a CPU profile of orderd's
# create run; about 4 minutes.
.PHONY: wrk
wrk:
	scripts/deps.sh
	scripts/wrk.sh

run:
	$(GO) run ./cmd/orderd
