package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// config is everything orderd reads from its flags and environment. Each
// flag has an ORDERD_ variable; a flag given on the command line wins.
type config struct {
	httpAddr        string
	dataDir         string
	store           string
	logLevel        string
	logFormat       string
	readWait        time.Duration
	shutdownTimeout time.Duration
	adminToken      string

	kafkaBrokers     string // comma-separated; empty: the relay is off
	topicPrefix      string
	topics           string // Type=topic,… overrides
	partitions       int
	replication      int
	relayBatch       int
	retryInitial     time.Duration
	retryMax         time.Duration
	breakerFailures  int
	breakerOpen      time.Duration
	breakerSuccesses int

	scyllaHosts       string // comma-separated
	scyllaKeyspace    string
	scyllaReplication string
	scyllaConsistency string
	scyllaSerial      string
	cdcTTL            time.Duration
	cdcWindow         time.Duration
	cdcPollDelay      time.Duration
	cdcIdleDelay      time.Duration
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("orderd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	fs.StringVar(&c.httpAddr, "http-addr", env("ORDERD_HTTP_ADDR", ":8080"), "address the HTTP API listens on (ORDERD_HTTP_ADDR)")
	fs.StringVar(&c.dataDir, "data-dir", env("ORDERD_DATA_DIR", "./data"), "directory of the embedded store's files (ORDERD_DATA_DIR)")
	fs.StringVar(&c.store, "store", env("ORDERD_STORE", "sqlite"), "event store backend: sqlite or scylla (ORDERD_STORE)")
	fs.StringVar(&c.scyllaHosts, "scylla-hosts", getenv("ORDERD_SCYLLA_HOSTS"), "ScyllaDB contact points, comma-separated host[:port] (ORDERD_SCYLLA_HOSTS)")
	fs.StringVar(&c.scyllaKeyspace, "scylla-keyspace", env("ORDERD_SCYLLA_KEYSPACE", "orderd"), "keyspace, created when missing (ORDERD_SCYLLA_KEYSPACE)")
	fs.StringVar(&c.scyllaReplication, "scylla-replication", env("ORDERD_SCYLLA_REPLICATION", "{'class': 'SimpleStrategy', 'replication_factor': 1}"), "replication of a keyspace orderd creates (ORDERD_SCYLLA_REPLICATION)")
	fs.StringVar(&c.scyllaConsistency, "scylla-consistency", env("ORDERD_SCYLLA_CONSISTENCY", "LOCAL_QUORUM"), "consistency of reads and writes (ORDERD_SCYLLA_CONSISTENCY)")
	fs.StringVar(&c.scyllaSerial, "scylla-serial-consistency", env("ORDERD_SCYLLA_SERIAL_CONSISTENCY", "LOCAL_SERIAL"), "consistency of the lightweight transactions (ORDERD_SCYLLA_SERIAL_CONSISTENCY)")
	fs.StringVar(&c.logLevel, "log-level", env("ORDERD_LOG_LEVEL", "info"), "debug, info, warn or error (ORDERD_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("ORDERD_LOG_FORMAT", "json"), "json or console (ORDERD_LOG_FORMAT)")
	durations := []struct {
		p          *time.Duration
		flag, name string
		def        time.Duration
		usage      string
	}{
		{&c.readWait, "read-wait", "ORDERD_READ_WAIT", 2 * time.Second, "longest wait of a GET with min_version for the projection"},
		{&c.shutdownTimeout, "shutdown-timeout", "ORDERD_SHUTDOWN_TIMEOUT", 15 * time.Second, "longest wait for in-flight requests on SIGTERM"},
		{&c.retryInitial, "retry-initial", "ORDERD_RETRY_INITIAL", 100 * time.Millisecond, "first delay before the relay retries a failed publish"},
		{&c.retryMax, "retry-max", "ORDERD_RETRY_MAX", 5 * time.Second, "longest delay between the relay's retries"},
		{&c.breakerOpen, "breaker-open", "ORDERD_BREAKER_OPEN", 30 * time.Second, "how long the Kafka circuit breaker stays open before probing"},
		{&c.cdcTTL, "cdc-ttl", "ORDERD_CDC_TTL", 7 * 24 * time.Hour, "how long ScyllaDB keeps the CDC log: the longest relay outage that loses nothing"},
		{&c.cdcWindow, "cdc-window", "ORDERD_CDC_WINDOW", 2 * time.Second, "how old a CDC change must be to be read; must cover the write timeout plus clock skew"},
		{&c.cdcPollDelay, "cdc-poll-delay", "ORDERD_CDC_POLL_DELAY", 250 * time.Millisecond, "wait after a CDC query that found changes"},
		{&c.cdcIdleDelay, "cdc-idle-delay", "ORDERD_CDC_IDLE_DELAY", time.Second, "wait after a CDC query that found none"},
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
		{&c.partitions, "kafka-partitions", "ORDERD_KAFKA_PARTITIONS", 3, "partitions of the topics orderd creates"},
		{&c.replication, "kafka-replication", "ORDERD_KAFKA_REPLICATION", 1, "replication factor of the topics orderd creates"},
		{&c.relayBatch, "relay-batch", "ORDERD_RELAY_BATCH", 500, "events the relay reads from the feed at a time"},
		{&c.breakerFailures, "breaker-failures", "ORDERD_BREAKER_FAILURES", 5, "consecutive publish failures that open the breaker"},
		{&c.breakerSuccesses, "breaker-successes", "ORDERD_BREAKER_SUCCESSES", 3, "successful probes that close the breaker"},
	}
	for _, n := range ints {
		def, err := intEnv(getenv, n.name, n.def)
		if err != nil {
			return c, err
		}
		fs.IntVar(n.p, n.flag, def, n.usage+" ("+n.name+")")
	}
	fs.StringVar(&c.adminToken, "admin-token", getenv("ORDERD_ADMIN_TOKEN"), "bearer token of the /v1/admin routes; empty: they are off (ORDERD_ADMIN_TOKEN)")
	fs.StringVar(&c.kafkaBrokers, "kafka-brokers", getenv("ORDERD_KAFKA_BROKERS"), "Kafka bootstrap servers, comma-separated; empty: the relay is off and the outbox keeps every event (ORDERD_KAFKA_BROKERS)")
	fs.StringVar(&c.topicPrefix, "kafka-topic-prefix", getenv("ORDERD_KAFKA_TOPIC_PREFIX"), "prefix of the default topic names order-events and customer-events (ORDERD_KAFKA_TOPIC_PREFIX)")
	fs.StringVar(&c.topics, "kafka-topics", getenv("ORDERD_KAFKA_TOPICS"), "per aggregate type topics, e.g. Order=orders,Customer=customers (ORDERD_KAFKA_TOPICS)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.store != "sqlite" && c.store != "scylla" {
		return c, fmt.Errorf("store %q: want sqlite or scylla", c.store)
	}
	if c.store == "scylla" {
		if _, err := c.scyllaConfig(); err != nil {
			return c, err
		}
		// The CDC log is read a confidence window after the write, so the
		// projection lags by the window and a poll delay at least: a
		// read-your-writes wait must cover them, unless set on purpose.
		set := getenv("ORDERD_READ_WAIT") != ""
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "read-wait" })
		if !set {
			c.readWait = c.cdcWindow + c.cdcIdleDelay + 2*time.Second
		}
	}
	// The HTTP server's write timeout is 30 s: a longer wait would be cut.
	if c.readWait > 25*time.Second {
		return c, fmt.Errorf("read wait %s: at most 25s (with ORDERD_STORE=scylla it defaults to the CDC window + 3 s)", c.readWait)
	}
	if c.logFormat != "json" && c.logFormat != "console" {
		return c, fmt.Errorf("log format %q: want json or console", c.logFormat)
	}
	if _, err := zapcore.ParseLevel(c.logLevel); err != nil {
		return c, fmt.Errorf("log level: %w", err)
	}
	topics, err := c.topicMap()
	if err != nil {
		return c, err
	}
	for _, t := range append(slices.Collect(maps.Values(topics)), c.topicPrefix+"order-events") {
		if err := validTopic(t); err != nil {
			return c, err
		}
	}
	for _, d := range durations {
		if *d.p <= 0 {
			return c, fmt.Errorf("-%s must be a positive duration, not %s", d.flag, *d.p)
		}
	}
	if c.retryInitial > c.retryMax {
		return c, fmt.Errorf("-retry-initial (%s) is longer than -retry-max (%s)", c.retryInitial, c.retryMax)
	}
	for _, n := range ints {
		if *n.p < 1 {
			return c, fmt.Errorf("-%s must be 1 or more, not %d", n.flag, *n.p)
		}
	}
	return c, nil
}

// brokers returns the Kafka bootstrap servers, none when the relay is off.
func (c config) brokers() []string {
	var out []string
	for _, b := range strings.Split(c.kafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// topicMap parses "Order=orders,Customer=customers".
func (c config) topicMap() (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range strings.Split(c.topics, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		typ, topic, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(typ) == "" || strings.TrimSpace(topic) == "" {
			return nil, fmt.Errorf("kafka topics %q: want Type=topic pairs such as Order=orders", c.topics)
		}
		m[strings.TrimSpace(typ)] = strings.TrimSpace(topic)
	}
	return m, nil
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

func intEnv(getenv func(string) string, name string, def int) (int, error) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s=%q: want a whole number of 1 or more", name, v)
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
	level, _ := zapcore.ParseLevel(c.logLevel)
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
