package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/cql"
	"github.com/orderd/orderd/internal/cql/cdc"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/relay"
)

// config is everything orderd reads from its flags and environment, parsed
// once into the values the constructors take. Each flag has an ORDERD_
// variable; a flag given on the command line wins.
type config struct {
	httpAddr        string
	debugAddr       string // net/http/pprof; empty: off
	dataDir         string
	store           string // "sqlite" or "scylla"
	instance        string // this instance's name in leases and /readyz
	logLevel        zapcore.Level
	logFormat       string
	readWait        time.Duration
	shutdownTimeout time.Duration
	adminToken      string
	leaseTTL        time.Duration
	rebuildGrace    time.Duration
	idempotencyTTL  time.Duration
	snapshotEvery   int // events between an aggregate's snapshots; 0: none
	maxConns        int // HTTP connections open at once
	maxWaiters      int // GETs with min_version waiting at once

	brokers []string // empty: the relay is off
	kafka   relay.KafkaConfig
	relay   relay.Config

	scylla cql.Config // with store "scylla"
	feed   cql.FeedOptions
}

// flags are the raw values of the flags whose parsing needs more than the
// flag package does.
type flags struct {
	logLevel, topics, brokers, tablets                           string
	scyllaHosts, scyllaConsistency, scyllaSerial                 string
	partitions, replication, breakerFailures, breakerSuccesses   int
	scyllaTimeout, cdcWindow, cdcPollDelay, cdcIdleDelay, cdcTTL time.Duration
	reconcileInterval, hintPoll                                  time.Duration
	reconcileRate                                                int
}

// parseConfig parses orderd's flags over its environment. -help (or -h)
// prints the usage to stderr and returns flag.ErrHelp, which is no failure.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var (
		c config
		f flags
	)
	fs := flag.NewFlagSet("orderd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, commandsUsage)
		fs.PrintDefaults()
	}
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	host, _ := os.Hostname()
	fs.StringVar(&c.httpAddr, "http-addr", env("ORDERD_HTTP_ADDR", ":8080"), "address the HTTP API listens on (ORDERD_HTTP_ADDR)")
	fs.StringVar(&c.debugAddr, "debug-addr", getenv("ORDERD_DEBUG_ADDR"), "address of Go's profiler (/debug/pprof/), apart from the API; empty: off. Bind it to loopback or a private network (ORDERD_DEBUG_ADDR)")
	fs.StringVar(&c.dataDir, "data-dir", env("ORDERD_DATA_DIR", "./data"), "directory of the embedded store's files (ORDERD_DATA_DIR)")
	fs.StringVar(&c.store, "store", env("ORDERD_STORE", "sqlite"), "event store backend: sqlite or scylla (ORDERD_STORE)")
	fs.StringVar(&c.instance, "instance-id", env("ORDERD_INSTANCE_ID", fmt.Sprintf("%s-%d", host, os.Getpid())), "this instance's name in the workers' leases and /readyz (ORDERD_INSTANCE_ID)")
	fs.StringVar(&f.scyllaHosts, "scylla-hosts", getenv("ORDERD_SCYLLA_HOSTS"), "ScyllaDB contact points, comma-separated host[:port] (ORDERD_SCYLLA_HOSTS)")
	fs.StringVar(&c.scylla.Keyspace, "scylla-keyspace", env("ORDERD_SCYLLA_KEYSPACE", cql.DefaultKeyspace), "keyspace, created when missing (ORDERD_SCYLLA_KEYSPACE)")
	fs.StringVar(&c.scylla.Replication, "scylla-replication", env("ORDERD_SCYLLA_REPLICATION", cql.DefaultReplication), "replication of a keyspace orderd creates (ORDERD_SCYLLA_REPLICATION)")
	fs.StringVar(&f.scyllaConsistency, "scylla-consistency", env("ORDERD_SCYLLA_CONSISTENCY", "LOCAL_QUORUM"), "consistency of reads and writes (ORDERD_SCYLLA_CONSISTENCY)")
	fs.StringVar(&f.scyllaSerial, "scylla-serial-consistency", env("ORDERD_SCYLLA_SERIAL_CONSISTENCY", "LOCAL_SERIAL"), "consistency of the lightweight transactions: LOCAL_SERIAL when every writer is in one datacenter, else SERIAL (ORDERD_SCYLLA_SERIAL_CONSISTENCY)")
	fs.StringVar(&c.scylla.LocalDC, "scylla-local-dc", getenv("ORDERD_SCYLLA_LOCAL_DC"), "this instance's datacenter: requests go to its nodes, token-aware (ORDERD_SCYLLA_LOCAL_DC)")
	fs.StringVar(&f.tablets, "scylla-tablets", env("ORDERD_SCYLLA_TABLETS", "auto"), "tablets of a keyspace orderd creates: auto (on from ScyllaDB 2025.4, where CDC and LWT support them), on or off (ORDERD_SCYLLA_TABLETS)")
	fs.StringVar(&f.logLevel, "log-level", env("ORDERD_LOG_LEVEL", "info"), "debug, info, warn or error (ORDERD_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("ORDERD_LOG_FORMAT", "json"), "json or console (ORDERD_LOG_FORMAT)")
	durations := []struct {
		p          *time.Duration
		flag, name string
		def        time.Duration
		usage      string
	}{
		{&c.readWait, "read-wait", "ORDERD_READ_WAIT", 2 * time.Second, "longest wait of a GET with min_version for the projection"},
		{&c.shutdownTimeout, "shutdown-timeout", "ORDERD_SHUTDOWN_TIMEOUT", 15 * time.Second, "longest wait for in-flight requests on SIGTERM"},
		{&c.idempotencyTTL, "idempotency-ttl", "ORDERD_IDEMPOTENCY_TTL", api.DefaultIdempotencyTTL, "how long the answer to an Idempotency-Key is kept for retries"},
		{&c.leaseTTL, "lease-ttl", "ORDERD_LEASE_TTL", 10 * time.Second, "how long a worker's lease lasts unrenewed: a standby takes over within it when the active instance dies"},
		{&c.rebuildGrace, "rebuild-grace", "ORDERD_REBUILD_GRACE", 5 * time.Second, "how long the read models a rebuild replaced are still written, for reads in flight and for other instances to switch (they look every second), before they are dropped"},
		{&c.relay.RetryInitial, "retry-initial", "ORDERD_RETRY_INITIAL", 100 * time.Millisecond, "first delay before the relay retries a failed publish"},
		{&c.relay.RetryMax, "retry-max", "ORDERD_RETRY_MAX", 5 * time.Second, "longest delay between the relay's retries"},
		{&c.relay.BreakerOpen, "breaker-open", "ORDERD_BREAKER_OPEN", 5 * time.Second, "how long the Kafka circuit breaker stays open before it lets one publish through as a probe: recovery follows the broker within it"},
		{&f.scyllaTimeout, "scylla-timeout", "ORDERD_SCYLLA_TIMEOUT", cql.DefaultTimeout, "bound of each CQL request"},
		{&f.cdcTTL, "cdc-ttl", "ORDERD_CDC_TTL", cql.DefaultCDCTTL, "how long ScyllaDB keeps the CDC log"},
		{&f.cdcWindow, "cdc-window", "ORDERD_CDC_WINDOW", cdc.DefaultWindow, "how old a CDC change must be to be read; what arrives later is found by the reconciliation pass"},
		{&f.cdcPollDelay, "cdc-poll-delay", "ORDERD_CDC_POLL_DELAY", cdc.DefaultPollDelay, "wait after a CDC query that found changes"},
		{&f.cdcIdleDelay, "cdc-idle-delay", "ORDERD_CDC_IDLE_DELAY", cdc.DefaultIdleDelay, "wait after a CDC query that found none"},
		{&f.hintPoll, "hint-poll", "ORDERD_HINT_POLL", cql.DefaultHintPoll, "on Apache Cassandra: how often the active workers read the hints new appends leave"},
		{&f.reconcileInterval, "reconcile-interval", "ORDERD_RECONCILE_INTERVAL", cql.DefaultReconcileEvery, "on CQL: how often the active workers compare every aggregate's version with what they handled"},
	}
	for _, d := range durations {
		def, err := durationEnv(getenv, d.name, d.def)
		if err != nil {
			return c, err
		}
		fs.DurationVar(d.p, d.flag, def, d.usage+" ("+d.name+")")
	}
	ints := []struct {
		p          *int
		flag, name string
		def        int
		usage      string
	}{
		{&f.partitions, "kafka-partitions", "ORDERD_KAFKA_PARTITIONS", 3, "partitions of the topics orderd creates"},
		{&f.replication, "kafka-replication", "ORDERD_KAFKA_REPLICATION", 1, "replication factor of the topics orderd creates"},
		{&f.breakerFailures, "breaker-failures", "ORDERD_BREAKER_FAILURES", 5, "consecutive publish failures that open the breaker"},
		{&f.breakerSuccesses, "breaker-successes", "ORDERD_BREAKER_SUCCESSES", 3, "successful probes that close the breaker"},
		{&f.reconcileRate, "reconcile-rate", "ORDERD_RECONCILE_RATE", cql.DefaultReconcileRate, "on CQL: aggregates per second the reconciliation pass reads at most"},
		{&c.maxConns, "max-conns", "ORDERD_MAX_CONNS", defaultMaxConns(), "HTTP connections open at once; at the cap the longest inactive one is closed for a new one (default: 4096, or 3/4 of the open-file limit when that is lower)"},
		{&c.maxWaiters, "max-waiters", "ORDERD_MAX_WAITERS", readmodel.DefaultMaxWaiters, "GETs with min_version waiting for the projection at once; beyond them 503 too_many_waiters"},
	}
	for _, n := range ints {
		def, err := intEnv(getenv, n.name, n.def, 1)
		if err != nil {
			return c, err
		}
		fs.IntVar(n.p, n.flag, def, n.usage+" ("+n.name+")")
	}
	snapshotEvery, err := intEnv(getenv, "ORDERD_SNAPSHOT_EVERY", 100, 0) // 0: off
	if err != nil {
		return c, err
	}
	fs.IntVar(&c.snapshotEvery, "snapshot-every", snapshotEvery, "events between an aggregate's snapshots, which spare a command the replay of a long history; 0: no snapshots (ORDERD_SNAPSHOT_EVERY)")
	fs.StringVar(&c.adminToken, "admin-token", getenv("ORDERD_ADMIN_TOKEN"), "bearer token of the /v1/admin routes; empty: they are off (ORDERD_ADMIN_TOKEN)")
	fs.StringVar(&f.brokers, "kafka-brokers", getenv("ORDERD_KAFKA_BROKERS"), "Kafka bootstrap servers, comma-separated; empty: the relay is off and the outbox keeps every event (ORDERD_KAFKA_BROKERS)")
	fs.StringVar(&c.relay.Topics.Prefix, "kafka-topic-prefix", getenv("ORDERD_KAFKA_TOPIC_PREFIX"), "prefix of the default topic names order-events and customer-events (ORDERD_KAFKA_TOPIC_PREFIX)")
	fs.StringVar(&f.topics, "kafka-topics", getenv("ORDERD_KAFKA_TOPICS"), "per aggregate type topics, e.g. Order=orders,Customer=customers (ORDERD_KAFKA_TOPICS)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, d := range durations {
		if *d.p <= 0 {
			return c, fmt.Errorf("-%s must be a positive duration, not %s", d.flag, *d.p)
		}
	}
	for _, n := range ints {
		if *n.p < 1 {
			return c, fmt.Errorf("-%s must be 1 or more, not %d", n.flag, *n.p)
		}
	}
	if c.instance == "" {
		return c, errors.New("instance id: must not be empty")
	}
	if c.leaseTTL < time.Second {
		return c, fmt.Errorf("lease ttl %s: at least 1s (leases on CQL count whole seconds)", c.leaseTTL)
	}
	if c.logFormat != "json" && c.logFormat != "console" {
		return c, fmt.Errorf("log format %q: want json or console", c.logFormat)
	}
	if c.logLevel, err = zapcore.ParseLevel(f.logLevel); err != nil {
		return c, fmt.Errorf("log level: %w", err)
	}
	if err := c.kafkaConfig(f); err != nil {
		return c, err
	}
	switch c.store {
	case "sqlite":
	case "scylla":
		if err := c.scyllaConfig(f); err != nil {
			return c, err
		}
		// On CQL the projection follows the fast path (CDC window and
		// polls, or hint polls): a read-your-writes wait must cover them,
		// unless set on purpose.
		set := getenv("ORDERD_READ_WAIT") != ""
		fs.Visit(func(fl *flag.Flag) { set = set || fl.Name == "read-wait" })
		if !set {
			c.readWait = f.cdcWindow + f.cdcIdleDelay + 2*time.Second
		}
	default:
		return c, fmt.Errorf("store %q: want sqlite or scylla", c.store)
	}
	// The HTTP server's write timeout is 30 s: a longer wait would be cut.
	if c.readWait > 25*time.Second {
		return c, fmt.Errorf("read wait %s: at most 25s (with ORDERD_STORE=scylla it defaults to the CDC window + 3 s)", c.readWait)
	}
	return c, nil
}

// kafkaConfig sets the relay's and Kafka's part of c from f.
func (c *config) kafkaConfig(f flags) error {
	c.brokers = splitList(f.brokers)
	topics := map[string]string{}
	for _, kv := range splitList(f.topics) {
		typ, topic, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(typ) == "" || strings.TrimSpace(topic) == "" {
			return fmt.Errorf("kafka topics %q: want Type=topic pairs such as Order=orders", f.topics)
		}
		topics[strings.TrimSpace(typ)] = strings.TrimSpace(topic)
	}
	for _, t := range append(slices.Collect(maps.Values(topics)), c.relay.Topics.Prefix+"order-events") {
		if err := validTopic(t); err != nil {
			return err
		}
	}
	if c.relay.RetryInitial > c.relay.RetryMax {
		return fmt.Errorf("-retry-initial (%s) is longer than -retry-max (%s)", c.relay.RetryInitial, c.relay.RetryMax)
	}
	c.relay.Topics.ByType = topics
	c.relay.BreakerFailures = uint32(f.breakerFailures)
	c.relay.BreakerSuccesses = uint32(f.breakerSuccesses)
	c.kafka = relay.KafkaConfig{Brokers: c.brokers, ClientID: "orderd", Partitions: f.partitions, ReplicationFactor: f.replication}
	return nil
}

// scyllaConfig sets the CQL part of c from f.
func (c *config) scyllaConfig(f flags) error {
	c.scylla.Hosts = splitList(f.scyllaHosts)
	if len(c.scylla.Hosts) == 0 {
		return errors.New("ORDERD_STORE=scylla needs ORDERD_SCYLLA_HOSTS")
	}
	cons, err := gocql.ParseConsistencyWrapper(f.scyllaConsistency)
	if err != nil {
		return fmt.Errorf("scylla consistency: %w", err)
	}
	var serial gocql.Consistency
	if err := serial.UnmarshalText([]byte(strings.ToUpper(f.scyllaSerial))); err != nil || !serial.IsSerial() {
		return fmt.Errorf("scylla serial consistency %q: want SERIAL or LOCAL_SERIAL", f.scyllaSerial)
	}
	c.scylla.Tablets = cql.TabletsMode(f.tablets)
	switch c.scylla.Tablets {
	case cql.TabletsAuto, cql.TabletsOn, cql.TabletsOff:
	default:
		return fmt.Errorf("scylla tablets %q: want auto, on or off", f.tablets)
	}
	c.scylla.Consistency, c.scylla.SerialConsistency = cons, serial
	c.scylla.Timeout, c.scylla.CDCTTL = f.scyllaTimeout, f.cdcTTL
	c.feed = cql.FeedOptions{
		HintPoll:       f.hintPoll,
		ReconcileEvery: f.reconcileInterval,
		ReconcileRate:  f.reconcileRate,
		CDCWindow:      f.cdcWindow,
		CDCPollDelay:   f.cdcPollDelay,
		CDCIdleDelay:   f.cdcIdleDelay,
	}
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// validTopic checks a Kafka topic name as the broker would, so that a typo
// fails at start instead of dead-lettering every event of a type.
func validTopic(t string) error {
	ok := t != "" && t != "." && t != ".." && len(t) <= 249 && !strings.HasPrefix(t, "__")
	for _, r := range t {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}
	if !ok {
		return fmt.Errorf("kafka topic %q: want 1 to 249 of [a-zA-Z0-9._-], not starting with __", t)
	}
	return nil
}

// defaultMaxConns is 4096 connections, or 3/4 of the open-file limit when
// that is lower, leaving the rest to the stores, Kafka and the CQL driver.
// (Go raises the soft limit to the hard one at start.)
func defaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 4096
	}
	return int(max(min(rl.Cur/4*3, 4096), 64))
}

// intEnv reads a whole number of at least least from the variable name,
// def when it is unset.
func intEnv(getenv func(string) string, name string, def, least int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < least {
		return 0, fmt.Errorf("%s=%q: want a whole number of %d or more", name, v, least)
	}
	return n, nil
}

func durationEnv(getenv func(string) string, name string, def time.Duration) (time.Duration, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive duration such as 2s", name, v)
	}
	return d, nil
}

// newLogger builds the process's logger; it is passed down, never global.
func newLogger(c config, w io.Writer) *zap.Logger {
	level := c.logLevel
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level))
}
