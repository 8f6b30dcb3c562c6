package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orderd/orderd/internal/cql"
)

// envOf serves vars as the environment.
func envOf(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// TestConfigDefaults: with nothing set, the values orderd has always had;
// a variable overrides a default and a flag overrides the variable.
func TestConfigDefaults(t *testing.T) {
	c, err := parseConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	for _, v := range []struct {
		name      string
		got, want any
	}{
		{"http addr", c.httpAddr, ":8080"}, {"debug addr", c.debugAddr, ""}, {"data dir", c.dataDir, "./data"},
		{"store", c.store, "sqlite"}, {"instance", c.instance, fmt.Sprintf("%s-%d", host, os.Getpid())},
		{"log level", c.logLevel, zapcore.InfoLevel}, {"log format", c.logFormat, "json"},
		{"read wait", c.readWait, 2 * time.Second}, {"shutdown timeout", c.shutdownTimeout, 15 * time.Second},
		{"admin token", c.adminToken, ""}, {"lease ttl", c.leaseTTL, 10 * time.Second},
		{"rebuild grace", c.rebuildGrace, 5 * time.Second}, {"projector runs", c.noProjector, false}, {"relay runs", c.noRelay, false}, {"idempotency ttl", c.idempotencyTTL, 24 * time.Hour},
		{"snapshot every", c.snapshotEvery, 100}, {"max conns", c.maxConns, defaultMaxConns()}, {"max waiters", c.maxWaiters, 1024},
		{"brokers", len(c.brokers), 0}, {"kafka client", c.kafka.ClientID, "orderd"}, {"partitions", c.kafka.Partitions, 3},
		{"topic replication", c.kafka.ReplicationFactor, 0}, {"min insync", c.kafka.MinInsyncReplicas, 0}, // auto
		{"kafka brokers", len(c.kafka.Brokers), 0}, {"accept partitions", len(c.acceptPartitions), 0},
		{"retry initial", c.relay.RetryInitial, 100 * time.Millisecond}, {"retry max", c.relay.RetryMax, 5 * time.Second},
		{"breaker open", c.relay.BreakerOpen, 5 * time.Second}, {"breaker failures", c.relay.BreakerFailures, uint32(5)},
		{"breaker successes", c.relay.BreakerSuccesses, uint32(3)}, {"topic prefix", c.relay.Topics.Prefix, ""},
		{"topics", len(c.relay.Topics.ByType), 0}, {"relay step-down", c.relay.StepDown, 30 * time.Second}, // 3 × the lease TTL
		{"keyspace", c.scylla.Keyspace, cql.DefaultKeyspace}, {"replication", c.scylla.Replication, cql.DefaultReplication},
		{"consistency", c.scylla.Consistency, gocql.LocalQuorum}, {"serial", c.scylla.SerialConsistency, gocql.LocalSerial},
		{"tablets", c.scylla.Tablets, cql.TabletsAuto}, {"scylla timeout", c.scylla.Timeout, cql.DefaultTimeout},
		{"cdc ttl", c.scylla.CDCTTL, cql.DefaultCDCTTL}, {"shards", c.scylla.Shards, cql.DefaultShards},
	} {
		if v.got != v.want {
			t.Errorf("%s: %v, want %v", v.name, v.got, v.want)
		}
	}

	env := map[string]string{"ORDERD_READ_WAIT": "3s", "ORDERD_HTTP_ADDR": "127.0.0.1:9000", "ORDERD_KAFKA_BROKERS": "a:9092, b:9092",
		"ORDERD_KAFKA_TOPICS": "Order=orders", "ORDERD_LOG_LEVEL": "debug"}
	c, err = parseConfig([]string{"-read-wait", "4s", "-log-level=warn"}, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.readWait != 4*time.Second || c.httpAddr != "127.0.0.1:9000" || c.logLevel != zapcore.WarnLevel ||
		!slices.Equal(c.kafka.Brokers, []string{"a:9092", "b:9092"}) || c.relay.Topics.ByType["Order"] != "orders" {
		t.Errorf("flags over variables over defaults: %+v", c)
	}
	kafkaEnv := map[string]string{"ORDERD_KAFKA_REPLICATION": "3", "ORDERD_KAFKA_MIN_INSYNC_REPLICAS": "2",
		"ORDERD_KAFKA_ACCEPT_PARTITIONS": "order-events=6, customer-events=12"}
	if c, err = parseConfig(nil, envOf(kafkaEnv), io.Discard); err != nil || c.kafka.ReplicationFactor != 3 ||
		c.kafka.MinInsyncReplicas != 2 || !maps.Equal(c.acceptPartitions, map[string]int{"order-events": 6, "customer-events": 12}) {
		t.Errorf("kafka durability settings: %+v %v, %v", c.kafka, c.acceptPartitions, err)
	}
	// min.insync.replicas alone, against an automatic replication factor,
	// is checked when topics are created, once the broker count is known.
	if c, err = parseConfig([]string{"-kafka-min-insync-replicas", "2", "-kafka-replication", "auto"}, envOf(nil), io.Discard); err != nil ||
		c.kafka.MinInsyncReplicas != 2 || c.kafka.ReplicationFactor != 0 {
		t.Errorf("min insync with auto replication: %+v, %v", c.kafka, err)
	}
	// The relay's step-down follows the lease TTL unless set; 0 is never.
	for _, v := range []struct {
		env  map[string]string
		want time.Duration
	}{
		{map[string]string{"ORDERD_LEASE_TTL": "2s"}, 6 * time.Second},
		{map[string]string{"ORDERD_LEASE_TTL": "2s", "ORDERD_RELAY_STEP_DOWN": "45s"}, 45 * time.Second},
		{map[string]string{"ORDERD_RELAY_STEP_DOWN": "0"}, 0},
	} {
		if c, err := parseConfig(nil, envOf(v.env), io.Discard); err != nil || c.relay.StepDown != v.want {
			t.Errorf("relay step-down with %v: %v, %v; want %v", v.env, c.relay.StepDown, err, v.want)
		}
	}
	// A flag wins over its variable, which is then not even read.
	if _, err := parseConfig([]string{"-http-addr", ":0"}, envOf(map[string]string{"ORDERD_HTTP_ADDR": "49516"}), io.Discard); err != nil {
		t.Errorf("-http-addr over a bad ORDERD_HTTP_ADDR: %v", err)
	}

	// On CQL the read wait covers the CDC path, unless it is set.
	cql := map[string]string{"ORDERD_STORE": "scylla", "ORDERD_SCYLLA_HOSTS": "127.0.0.1", "ORDERD_CDC_WINDOW": "1s"}
	if c, err = parseConfig(nil, envOf(cql), io.Discard); err != nil || c.readWait != 3750*time.Millisecond {
		t.Errorf("read wait on CQL: %s, %v; want 1s + 750ms + 2s", c.readWait, err)
	}
	if c.feed.CDCWindow != time.Second || !slices.Equal(c.scylla.Hosts, []string{"127.0.0.1"}) {
		t.Errorf("CQL: %+v %+v", c.feed, c.scylla)
	}
	cql["ORDERD_READ_WAIT"] = "1s"
	if c, err = parseConfig(nil, envOf(cql), io.Discard); err != nil || c.readWait != time.Second {
		t.Errorf("read wait set on CQL: %s, %v; want 1s", c.readWait, err)
	}
}

// TestConfigErrors: a value that orderd cannot use is refused with the
// variable or the flag that gave it, and what is wrong with it.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env: map[string]string{"ORDERD_HTTP_ADDR": "49516"}, want: `ORDERD_HTTP_ADDR: "49516" is not host:port (did you mean :49516?)`},
		{args: []string{"-http-addr", "49516"}, want: `-http-addr: "49516" is not host:port (did you mean :49516?)`},
		{env: map[string]string{"ORDERD_HTTP_ADDR": "localhost"}, want: `ORDERD_HTTP_ADDR: "localhost" is not host:port: missing port in address`},
		{env: map[string]string{"ORDERD_HTTP_ADDR": ":70000"}, want: `ORDERD_HTTP_ADDR: ":70000" is not host:port: port 70000 is out of range`},
		{args: []string{"-http-addr="}, want: `-http-addr: "" is not host:port: missing port in address`},
		{env: map[string]string{"ORDERD_DEBUG_ADDR": "6060"}, want: `ORDERD_DEBUG_ADDR: "6060" is not host:port (did you mean :6060?)`},
		{env: map[string]string{"ORDERD_LOG_LEVEL": "verbose"}, want: `ORDERD_LOG_LEVEL: "verbose" is not a level: debug, info, warn or error`},
		{args: []string{"-log-format", "text"}, want: `-log-format: "text" is not json or console`},
		{env: map[string]string{"ORDERD_READ_WAIT": "2"}, want: `ORDERD_READ_WAIT: "2" is not a duration (did you mean 2s?)`},
		{env: map[string]string{"ORDERD_SHUTDOWN_TIMEOUT": "soon"}, want: `ORDERD_SHUTDOWN_TIMEOUT: "soon" is not a duration such as 500ms, 2s or 1m30s`},
		{args: []string{"-retry-max", "0s"}, want: `-retry-max: "0s" is not a positive duration`},
		{env: map[string]string{"ORDERD_RELAY_STEP_DOWN": "soon"}, want: `ORDERD_RELAY_STEP_DOWN: "soon" is not a duration such as 500ms, 2s or 1m30s`},
		{env: map[string]string{"ORDERD_LEASE_TTL": "500ms"}, want: `ORDERD_LEASE_TTL: "500ms" is less than 1s (leases on CQL count whole seconds)`},
		{env: map[string]string{"ORDERD_MAX_CONNS": "lots"}, want: `ORDERD_MAX_CONNS: "lots" is not a whole number of 1 or more`},
		{args: []string{"-kafka-partitions", "0"}, want: `-kafka-partitions: "0" is not a whole number of 1 or more`},
		{args: []string{"-kafka-replication", "0"}, want: `-kafka-replication: "0" is not auto or a whole number from 1 to 32767`},
		{env: map[string]string{"ORDERD_KAFKA_REPLICATION": "three"}, want: `ORDERD_KAFKA_REPLICATION: "three" is not auto or a whole number from 1 to 32767`},
		{env: map[string]string{"ORDERD_KAFKA_REPLICATION": "40000"}, want: `ORDERD_KAFKA_REPLICATION: "40000" is not auto or a whole number from 1 to 32767`},
		{env: map[string]string{"ORDERD_KAFKA_MIN_INSYNC_REPLICAS": "0"}, want: `ORDERD_KAFKA_MIN_INSYNC_REPLICAS: "0" is not auto or a whole number from 1 to 32767`},
		{env: map[string]string{"ORDERD_KAFKA_REPLICATION": "2", "ORDERD_KAFKA_MIN_INSYNC_REPLICAS": "3"},
			want: `ORDERD_KAFKA_MIN_INSYNC_REPLICAS (3) is more than ORDERD_KAFKA_REPLICATION (2): no write with acks=all could succeed`},
		{args: []string{"-kafka-replication", "1", "-kafka-min-insync-replicas", "2"},
			want: `-kafka-min-insync-replicas (2) is more than -kafka-replication (1): no write with acks=all could succeed`},
		{env: map[string]string{"ORDERD_KAFKA_ACCEPT_PARTITIONS": "orders"}, want: `ORDERD_KAFKA_ACCEPT_PARTITIONS: "orders" is not a list of topic=n pairs such as orders=6, n 1 or more`},
		{env: map[string]string{"ORDERD_KAFKA_ACCEPT_PARTITIONS": "orders=0"}, want: `ORDERD_KAFKA_ACCEPT_PARTITIONS: "orders=0" is not a list of topic=n pairs such as orders=6, n 1 or more`},
		{env: map[string]string{"ORDERD_KAFKA_ACCEPT_PARTITIONS": "orders=3"}, want: `ORDERD_KAFKA_ACCEPT_PARTITIONS: orders is none of the relay's topics (order-events, customer-events)`},
		{env: map[string]string{"ORDERD_KAFKA_ACCEPT_PARTITIONS": "x-orders=3", "ORDERD_KAFKA_TOPIC_PREFIX": "x-"},
			want: `ORDERD_KAFKA_ACCEPT_PARTITIONS: x-orders is none of the relay's topics (x-order-events, x-customer-events)`},
		{env: map[string]string{"ORDERD_SHARDS": "48"}, want: `ORDERD_SHARDS: "48" is not a power of two from 1 to 256`},
		{args: []string{"-shards", "512"}, want: `-shards: "512" is not a power of two from 1 to 256`},
		{env: map[string]string{"ORDERD_SNAPSHOT_EVERY": "-1"}, want: `ORDERD_SNAPSHOT_EVERY: "-1" is not a whole number of 0 or more`},
		{env: map[string]string{"ORDERD_STORE": "postgres"}, want: `ORDERD_STORE: "postgres" is not sqlite or scylla`},
		{args: []string{"-instance-id="}, want: `-instance-id: "" is empty`},
		{env: map[string]string{"ORDERD_KAFKA_TOPICS": "Order"}, want: `ORDERD_KAFKA_TOPICS: "Order" is not a list of Type=topic pairs such as Order=orders`},
		{env: map[string]string{"ORDERD_KAFKA_TOPICS": "Order=__x"}, want: `ORDERD_KAFKA_TOPICS: kafka topic "__x": want 1 to 249 of [a-zA-Z0-9._-], not starting with __`},
		{env: map[string]string{"ORDERD_KAFKA_TOPIC_PREFIX": "__"}, want: `ORDERD_KAFKA_TOPIC_PREFIX: "__" makes a bad topic name: kafka topic "__order-events": want 1 to 249 of [a-zA-Z0-9._-], not starting with __`},
		{env: map[string]string{"ORDERD_SCYLLA_CONSISTENCY": "most"}, want: `ORDERD_SCYLLA_CONSISTENCY: "most" is not a consistency such as QUORUM, LOCAL_QUORUM or ONE`},
		{env: map[string]string{"ORDERD_SCYLLA_SERIAL_CONSISTENCY": "QUORUM"}, want: `ORDERD_SCYLLA_SERIAL_CONSISTENCY: "QUORUM" is not SERIAL or LOCAL_SERIAL`},
		{env: map[string]string{"ORDERD_SCYLLA_TABLETS": "maybe"}, want: `ORDERD_SCYLLA_TABLETS: "maybe" is not auto, on or off`},
		{env: map[string]string{"ORDERD_STORE": "scylla"}, want: `ORDERD_STORE=scylla needs -scylla-hosts or ORDERD_SCYLLA_HOSTS`},
		{args: []string{"-store", "scylla"}, want: `-store=scylla needs -scylla-hosts or ORDERD_SCYLLA_HOSTS`},
		{env: map[string]string{"ORDERD_RETRY_INITIAL": "10s"}, want: `ORDERD_RETRY_INITIAL (10s) is longer than -retry-max (5s)`},
		{env: map[string]string{"ORDERD_TRACE_UI_URL": "localhost:16686/trace/{trace_id}"}, want: `ORDERD_TRACE_UI_URL: "localhost:16686/trace/{trace_id}" is not an absolute http or https URL`},
		{args: []string{"-trace-ui-url", "javascript:alert({trace_id})"}, want: `-trace-ui-url: "javascript:alert({trace_id})" is not an absolute http or https URL`},
		{env: map[string]string{"ORDERD_TRACE_UI_URL": "http://localhost:16686/search"}, want: `ORDERD_TRACE_UI_URL: "http://localhost:16686/search" has no {trace_id} for the trace id to go in`},
		{env: map[string]string{"ORDERD_WORKERS": "projector,kafka"}, want: `ORDERD_WORKERS: "projector,kafka" is not a list of projector and relay, or none`},
		{args: []string{"-workers="}, want: `-workers: "" is empty: name projector, relay, or none`},
		{args: []string{"-workers", "relay"}, want: `-workers leaves the projector out, which the embedded store (-store sqlite) cannot: its one instance is the only one that can keep the read models`},
		{env: map[string]string{"ORDERD_READ_WAIT": "30s"}, want: `ORDERD_READ_WAIT: 30s is more than 25s (with -store scylla it defaults to the CDC window + idle delay + 2s)`},
	} {
		_, err := parseConfig(c.args, envOf(c.env), io.Discard)
		if err == nil || err.Error() != c.want {
			t.Errorf("%v %v: %v\nwant %s", c.env, c.args, err, c.want)
		}
	}
}

// TestConfigWorkers: -workers picks the workers an instance of a cluster
// runs; none leaves it serving only the API.
func TestConfigWorkers(t *testing.T) {
	for _, c := range []struct {
		workers              string
		noProjector, noRelay bool
	}{
		{"projector,relay", false, false}, {"relay", true, false}, {"projector", false, true},
		{" relay , projector ", false, false}, {"none", true, true},
	} {
		cfg, err := parseConfig([]string{"-workers", c.workers}, envOf(map[string]string{"ORDERD_STORE": "scylla", "ORDERD_SCYLLA_HOSTS": "127.0.0.1"}), io.Discard)
		if err != nil {
			t.Fatalf("-workers %q: %v", c.workers, err)
		}
		if cfg.noProjector != c.noProjector || cfg.noRelay != c.noRelay {
			t.Errorf("-workers %q: no projector %v, no relay %v; want %v, %v", c.workers, cfg.noProjector, cfg.noRelay, c.noProjector, c.noRelay)
		}
	}
}

// TestConfigErrorBeforeAnyFile: orderd refuses a bad configuration before
// it creates its data directory or anything in it.
func TestConfigErrorBeforeAnyFile(t *testing.T) {
	for _, env := range []map[string]string{
		{"ORDERD_HTTP_ADDR": "49516"}, {"ORDERD_DEBUG_ADDR": "localhost"}, {"ORDERD_LOG_LEVEL": "loud"},
		{"ORDERD_KAFKA_TOPICS": "Order=__x"}, {"ORDERD_SCYLLA_TABLETS": "maybe"}, {"ORDERD_KAFKA_ACCEPT_PARTITIONS": "nosuch=3"},
	} {
		parent := t.TempDir()
		env["ORDERD_DATA_DIR"] = filepath.Join(parent, "data")
		var stderr bytes.Buffer
		err := run(context.Background(), nil, envOf(env), nil, &stderr, func(net.Addr) { t.Errorf("%v: orderd listened", env) })
		if err == nil {
			t.Fatalf("%v: no error", env)
		}
		if entries, _ := os.ReadDir(parent); len(entries) != 0 {
			t.Errorf("%v: %v, and the data dir was created", env, err)
		}
		if stderr.Len() != 0 {
			t.Errorf("%v: wrote %q", env, stderr.String())
		}
	}
}

// TestUsageMistypedFlag: an unknown flag or an argument is an error with a
// one-line hint to -help (and a guess at the flag meant), not the whole
// usage.
func TestUsageMistypedFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-htp-addr", "x"}, "flag provided but not defined: -htp-addr (did you mean -http-addr?)\nrun 'orderd -help' for usage"},
		{[]string{"-no-such-flag"}, "flag provided but not defined: -no-such-flag\nrun 'orderd -help' for usage"},
		{[]string{"-http-addr", ":0", "serve"}, "unexpected argument \"serve\"\nrun 'orderd -help' for usage"},
	} {
		var stderr bytes.Buffer
		_, err := parseConfig(c.args, envOf(nil), &stderr)
		if err == nil || err.Error() != c.want || !errors.As(err, new(usageError)) {
			t.Errorf("%v: %v\nwant %s", c.args, err, c.want)
		}
		if stderr.Len() != 0 {
			t.Errorf("%v printed %q", c.args, stderr.String())
		}
	}
}

// TestUsageBinary: as a process, a mistyped flag prints two lines and
// exits 1, as every failure to start does; a bad variable prints one and
// creates nothing; -help exits 0.
func TestUsageBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "x")
	for _, c := range []struct {
		env, args []string
		code      int
		want      string
	}{
		{nil, []string{"-htp-addr", "x"}, 1, "orderd: flag provided but not defined: -htp-addr (did you mean -http-addr?)\nrun 'orderd -help' for usage\n"},
		{[]string{"ORDERD_HTTP_ADDR=49516"}, []string{"-data-dir", dir}, 1, "orderd: ORDERD_HTTP_ADDR: \"49516\" is not host:port (did you mean :49516?)\n"},
		{nil, []string{"-help"}, 0, ""},
	} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = append(os.Environ(), c.env...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		_ = cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != c.code || c.want != "" && stderr.String() != c.want || stdout.Len() != 0 {
			t.Errorf("%v orderd %v: exit %d, stderr %q; want %d, %q", c.env, c.args, code, stderr.String(), c.code, c.want)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the data dir was created: %v", err)
	}
}

// TestHelpGroups: -help lists every flag once, in its group, with its
// variable and its default, and returns flag.ErrHelp.
func TestHelpGroups(t *testing.T) {
	var out bytes.Buffer
	if _, err := parseConfig([]string{"-help"}, envOf(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-help: %v", err)
	}
	help := out.String()
	if !strings.HasPrefix(help, commandsUsage) {
		t.Errorf("-help does not begin with the commands:\n%s", help)
	}
	for _, sub := range []string{"orderd migrate", "orderd healthcheck", "orderd dlq", "orderd rebuild", "orderd bench"} {
		if !strings.Contains(help, sub) {
			t.Errorf("-help does not mention %s", sub)
		}
	}
	last := -1
	for _, title := range []string{"Server", "Storage", "Relay (Kafka)", "CQL", "Operations"} {
		at := strings.Index(help, "\n"+title)
		if at < last {
			t.Errorf("group %s missing or out of order", title)
		}
		last = at
	}
	groups := settings(&config{}, &flags{})
	n := 0
	for _, g := range groups {
		body := help[strings.Index(help, "\n"+g.title+":\n"):]
		if end := strings.Index(body[1:], "\n\n"); end > 0 {
			body = body[:end+1]
		}
		for _, s := range g.settings {
			n++
			line := fmt.Sprintf("\n  -%s %s  (%s", s.name, s.arg, s.env())
			if strings.Count(help, "\n  -"+s.name+" ") != 1 || !strings.Contains(body, line) {
				t.Errorf("-%s is not listed once in %s with %s", s.name, g.title, s.env())
			}
			if s.def != "" && s.shown == "" && !strings.Contains(body, line+", default "+s.def+")\n") {
				t.Errorf("-%s: default %s not shown", s.name, s.def)
			}
		}
	}
	if got := strings.Count(help, "\n  -"); got != n {
		t.Errorf("-help lists %d flags, the groups %d", got, n)
	}
	// Every flag orderd had before the groups is still there.
	for _, name := range strings.Fields(`admin-token breaker-failures breaker-open breaker-successes cdc-idle-delay
		cdc-poll-delay cdc-ttl cdc-window data-dir debug-addr hint-poll http-addr idempotency-ttl instance-id
		kafka-brokers kafka-partitions kafka-replication kafka-topic-prefix kafka-topics lease-ttl log-format
		log-level max-conns max-waiters read-wait rebuild-grace reconcile-interval reconcile-rate retry-initial
		retry-max scylla-consistency scylla-hosts scylla-keyspace scylla-local-dc scylla-replication
		scylla-serial-consistency scylla-tablets scylla-timeout shutdown-timeout snapshot-every store`) {
		if !strings.Contains(help, "\n  -"+name+" ") {
			t.Errorf("-%s is gone", name)
		}
	}
	for _, line := range strings.Split(help, "\n") {
		if len(line) > 120 {
			t.Errorf("line of %d bytes: %s", len(line), line)
		}
	}
}

// TestConfigUnknownVariables: an ORDERD_ variable orderd does not read is
// reported, with the known one it is closest to; the tests' ORDERD_TEST_
// variables and the clients' and scripts' are not.
func TestConfigUnknownVariables(t *testing.T) {
	got := unknownVariables([]string{
		"ORDERD_HTTP_ADRR=:8081", "ORDERD_HTTP_ADDR=:8080", "ORDERD_LOGLEVEL=debug", "ORDERD_FROBNICATE=1",
		"ORDERD_TEST_KAFKA=127.0.0.1:9092", "ORDERD_URL=http://x", "ORDERD_ADMIN_URL=http://x", "ORDERD_CACHE=/tmp",
		"PATH=/bin", "HOME=/root", "ORDERD_=1",
	})
	want := []unknownVariable{{"ORDERD_HTTP_ADRR", "ORDERD_HTTP_ADDR"}, {"ORDERD_LOGLEVEL", "ORDERD_LOG_LEVEL"},
		{"ORDERD_FROBNICATE", ""}, {"ORDERD_", ""}}
	if !slices.Equal(got, want) {
		t.Errorf("unknown: %v, want %v", got, want)
	}

	// At start: one warning each, in the log.
	logs, _ := startLogged(t, []string{"ORDERD_HTTP_ADRR=:8081", "ORDERD_TEST_CQL=1", "ORDERD_LOG_LEVEL=info"})
	var warnings []map[string]any
	for _, l := range logs {
		if l["level"] == "warn" && strings.HasPrefix(l["msg"].(string), "unknown ORDERD_") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || warnings[0]["variable"] != "ORDERD_HTTP_ADRR" || warnings[0]["did_you_mean"] != "ORDERD_HTTP_ADDR" {
		t.Errorf("warnings %v, want one of ORDERD_HTTP_ADRR", warnings)
	}
}

// TestConsoleAddressLogged: the start-up line says where the console is,
// on the address bound, and it is there.
func TestConsoleAddressLogged(t *testing.T) {
	logs, addr := startLogged(t, nil)
	var url any
	for _, l := range logs {
		if l["msg"] == "orderd listening" {
			url = l["console"]
		}
	}
	if want := "http://" + addr.String() + "/console"; url != want {
		t.Fatalf("console %v, want %s", url, want)
	}
	resp, err := http.Get(url.(string))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Errorf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	for _, c := range []struct{ addr, want string }{
		{"[::]:8080", "http://localhost:8080/console"}, {"0.0.0.0:8080", "http://localhost:8080/console"},
		{":8080", "http://localhost:8080/console"}, {"127.0.0.1:9", "http://127.0.0.1:9/console"},
		{"[::1]:9", "http://[::1]:9/console"}, {"10.0.0.7:80", "http://10.0.0.7:80/console"},
	} {
		if got := consoleURL(fakeAddr(c.addr)); got != c.want {
			t.Errorf("%s: %s, want %s", c.addr, got, c.want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

// startLogged runs orderd at log level info with environ until the test
// ends, and returns its log lines once it listens, and its address.
func startLogged(t *testing.T, environ []string) ([]map[string]any, net.Addr) {
	t.Helper()
	vars := map[string]string{"ORDERD_HTTP_ADDR": "127.0.0.1:0", "ORDERD_DATA_DIR": t.TempDir(), "ORDERD_LOG_LEVEL": "info"}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, envOf(vars), environ, logs, func(a net.Addr) { addrs <- a }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("orderd: %v", err)
		}
	})
	var addr net.Addr
	select {
	case addr = <-addrs:
	case err := <-done:
		done <- err
		t.Fatalf("orderd did not start: %v\n%s", err, logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("orderd did not start within 30s\n%s", logs)
	}
	var lines []map[string]any
	for _, raw := range strings.Split(logs.String(), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("log line %q: %v", raw, err)
		}
		lines = append(lines, l)
	}
	return lines, addr
}

// TestLogConsoleNoColour: the console format colours its levels only on a
// terminal; in a file or a pipe it has no escape codes.
func TestLogConsoleNoColour(t *testing.T) {
	file, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	var buf bytes.Buffer
	cfg := config{logFormat: "console", logLevel: zapcore.InfoLevel}
	for _, w := range []io.Writer{&buf, file} {
		log := newLogger(cfg, w)
		log.Warn("hello", zap.String("k", "v"))
		_ = log.Sync()
	}
	written, err := os.ReadFile(file.Name())
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{buf.String(), string(written)} {
		if strings.Contains(out, "\x1b[") || !strings.Contains(out, "\tWARN\thello\t") {
			t.Errorf("console log %q: colour codes, or no plain WARN", out)
		}
	}
}
