package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/api"
	"github.com/orderd/orderd/internal/cli"
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
	oidcIssuer      string // empty: the API is open
	oidcAudience    string
	leaseTTL        time.Duration
	rebuildGrace    time.Duration
	idempotencyTTL  time.Duration
	snapshotEvery   int     // events between an aggregate's snapshots; 0: none
	maxConns        int     // HTTP connections open at once
	maxWaiters      int     // GETs with min_version waiting at once
	rateLimit       float64 // requests per second per client on /v1; 0: off
	rateBurst       int     // a client's bucket; 0 until combine derives it
	traceUI         string  // the console's link to a trace, with {trace_id}; empty: none
	// noProjector and noRelay: -workers leaves that worker to the other
	// instances.
	noProjector, noRelay bool

	brokers []string // empty: the relay is off
	kafka   relay.KafkaConfig
	relay   relay.Config
	// acceptPartitions are the partition counts an operator records on
	// purpose for topics whose count changed (see relay.GuardPartitions).
	acceptPartitions map[string]int

	scylla cql.Config // with store "scylla"
	feed   cql.FeedOptions

	keys keysConfig // the personal data's keys
}

// flags are the values of the flags that config holds only once combined
// with others.
type flags struct {
	topics                                                     map[string]string
	partitions, replication, breakerFailures, breakerSuccesses int
	minInsync                                                  int
	stepDown                                                   time.Duration // -1: auto
}

// A setting is one of orderd's flags and its ORDERD_ variable: -data-dir is
// ORDERD_DATA_DIR.
type setting struct {
	name  string // the flag's name, without the dash
	arg   string // what -help shows for its value
	def   string // the default; empty: none
	shown string // the default as -help shows it, when not def
	usage string
	// parse stores a value in the config, or says what is wrong with it,
	// as the end of a sentence that begins with the value: "is not ...".
	parse func(v string) error

	value, from string // the value read and where from: "-name" or ORDERD_NAME; "" for the default
}

// env is the setting's environment variable.
func (s *setting) env() string {
	return "ORDERD_" + strings.ToUpper(strings.ReplaceAll(s.name, "-", "_"))
}

// source names where the setting's value came from, for an error message:
// its flag or its variable (the flag for a default).
func (s *setting) source() string {
	if s.from == "" {
		return "-" + s.name
	}
	return s.from
}

// A group is a heading of -help and its settings.
type group struct {
	title    string
	settings []*setting
}

// settings declares orderd's flags, in the groups and order of -help; each
// parses into c or f.
func settings(c *config, f *flags) []group {
	host, _ := os.Hostname()
	return []group{
		{"Server (the HTTP API)", []*setting{
			{name: "http-addr", arg: "host:port", def: ":8080", usage: "address the HTTP API listens on; port 0 picks a free one",
				parse: address(&c.httpAddr, false)},
			{name: "admin-token", arg: "token", usage: "bearer token of the /v1/admin routes; empty: they are off",
				parse: text(&c.adminToken)},
			{name: "oidc-issuer", arg: "url", usage: "OpenID provider whose bearer tokens (with scopes) the API asks for, found by discovery; empty: the API is open",
				parse: func(v string) error {
					c.oidcIssuer = v
					if u, err := url.Parse(v); v != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
						return errors.New("is not an http(s) URL")
					}
					return nil
				}},
			{name: "oidc-audience", arg: "aud", usage: "the audience (aud) that tokens of -oidc-issuer must be for; needed with it",
				parse: text(&c.oidcAudience)},
			{name: "read-wait", arg: "duration", def: "2s", usage: "longest wait of a GET with min_version for the projection (at most 25s); with -store scylla the default is the CDC window + idle delay + 2s",
				parse: duration(&c.readWait)},
			{name: "idempotency-ttl", arg: "duration", def: fmtDuration(api.DefaultIdempotencyTTL), usage: "how long the answer to an Idempotency-Key is kept for retries",
				parse: duration(&c.idempotencyTTL)},
			{name: "max-conns", arg: "n", def: strconv.Itoa(defaultMaxConns()), usage: "HTTP connections open at once (by default 4096, or 3/4 of the open-file limit when that is lower); at the cap the longest inactive one is closed for a new one",
				parse: whole(&c.maxConns, 1)},
			{name: "max-waiters", arg: "n", def: strconv.Itoa(readmodel.DefaultMaxWaiters), usage: "GETs with min_version waiting for the projection at once; beyond them 503 too_many_waiters",
				parse: whole(&c.maxWaiters, 1)},
			{name: "rate-limit", arg: "n", def: "0", usage: "requests per second each client may sustain on the /v1 routes (0.5 is one every 2s); beyond them 429 rate_limited. A client is its IP address (an IPv6 /64); X-Forwarded-For is not trusted. 0: no limit",
				parse: perSecond(&c.rateLimit)},
			{name: "rate-burst", arg: "n", shown: "2 × -rate-limit, at least 1", usage: "requests a client may send at once with -rate-limit on: the size of its token bucket",
				parse: func(v string) error {
					if v == "" {
						return nil // derived in combine
					}
					return whole(&c.rateBurst, 1)(v)
				}},
			{name: "shutdown-timeout", arg: "duration", def: "15s", usage: "longest wait for in-flight requests on SIGTERM",
				parse: duration(&c.shutdownTimeout)},
		}},
		{"Storage", []*setting{
			{name: "store", arg: "engine", def: "sqlite", usage: "event store engine: sqlite (files in -data-dir) or scylla (ScyllaDB or Cassandra, see CQL below)",
				parse: oneOf(&c.store, "sqlite", "scylla")},
			{name: "data-dir", arg: "dir", def: "./data", usage: "directory of the embedded store's files, created when missing",
				parse: func(v string) error { c.dataDir = v; return nonEmpty(v) }},
			{name: "snapshot-every", arg: "n", def: "100", usage: "events between an aggregate's snapshots, which spare a command the replay of a long history; 0: no snapshots",
				parse: whole(&c.snapshotEvery, 0)},
		}},
		{"Personal data", keySettings(&c.keys)},
		{"Relay (Kafka)", []*setting{
			{name: "kafka-brokers", arg: "list", usage: "Kafka bootstrap servers, comma-separated host:port; empty: the relay is off and the outbox keeps every event",
				parse: func(v string) error { c.brokers = splitList(v); return nil }},
			{name: "kafka-topic-prefix", arg: "prefix", usage: "prefix of the default topic names order-events and customer-events",
				parse: func(v string) error {
					c.relay.Topics.Prefix = v
					if err := validTopic(v + "order-events"); err != nil {
						return fmt.Errorf("makes a bad topic name: %w", err)
					}
					return nil
				}},
			{name: "kafka-topics", arg: "list", usage: "per aggregate type topics, e.g. Order=orders,Customer=customers",
				parse: topics(&f.topics)},
			{name: "kafka-partitions", arg: "n", def: "3", usage: "partitions of the topics orderd creates",
				parse: whole(&f.partitions, 1)},
			{name: "kafka-replication", arg: "n", def: "auto", usage: "replication factor of the topics orderd creates; auto: the cluster's broker count, up to 3",
				parse: auto(&f.replication, relay.MaxReplication)},
			{name: "kafka-min-insync-replicas", arg: "n", def: "auto", usage: "min.insync.replicas of the topics orderd creates: replicas that acknowledge each event (the relay asks for acks=all); auto: one less than the replication factor, at least 1",
				parse: auto(&f.minInsync, relay.MaxReplication)},
			{name: "kafka-accept-partitions", arg: "list", usage: "topic=n pairs: partition counts to record on purpose for topics whose count changed since orderd recorded it, which the relay refuses otherwise (see docs/operations.md)",
				parse: acceptPartitions(&c.acceptPartitions)},
			{name: "retry-initial", arg: "duration", def: "100ms", usage: "first delay before the relay retries a failed publish",
				parse: duration(&c.relay.RetryInitial)},
			{name: "retry-max", arg: "duration", def: "5s", usage: "longest delay between the relay's retries",
				parse: duration(&c.relay.RetryMax)},
			{name: "breaker-failures", arg: "n", def: "5", usage: "consecutive publish failures that open the circuit breaker",
				parse: whole(&f.breakerFailures, 1)},
			{name: "breaker-open", arg: "duration", def: "5s", usage: "how long the breaker stays open before it lets one publish through as a probe: recovery follows the broker within it",
				parse: duration(&c.relay.BreakerOpen)},
			{name: "breaker-successes", arg: "n", def: "3", usage: "successful probes that close the breaker",
				parse: whole(&f.breakerSuccesses, 1)},
			{name: "relay-step-down", arg: "duration", def: "auto", usage: "how long the active relay may go without a publish succeeding (Kafka failing, the breaker open, a publish hanging) before it gives its lease up and stands aside as long, so that an instance that reaches Kafka takes over (on a shared store; never on SQLite); commands are accepted meanwhile; auto: 3 × -lease-ttl; 0: never",
				parse: func(v string) error {
					switch v {
					case "auto":
						f.stepDown = -1
						return nil
					case "0", "0s":
						f.stepDown = 0
						return nil
					}
					return duration(&f.stepDown)(v)
				}},
		}},
		{"CQL (with -store scylla: ScyllaDB or Apache Cassandra)", []*setting{
			{name: "scylla-hosts", arg: "list", usage: "contact points, comma-separated host[:port]; required with -store scylla",
				parse: func(v string) error { c.scylla.Hosts = splitList(v); return nil }},
			{name: "scylla-keyspace", arg: "name", def: cql.DefaultKeyspace, usage: "keyspace, created when missing",
				parse: func(v string) error { c.scylla.Keyspace = v; return nonEmpty(v) }},
			{name: "scylla-replication", arg: "map", def: cql.DefaultReplication, usage: "replication of a keyspace orderd creates",
				parse: func(v string) error { c.scylla.Replication = v; return nil }},
			{name: "scylla-local-dc", arg: "name", usage: "this instance's datacenter: requests go to its nodes, token-aware",
				parse: text(&c.scylla.LocalDC)},
			{name: "scylla-consistency", arg: "level", def: "LOCAL_QUORUM", usage: "consistency of reads and writes",
				parse: func(v string) error {
					var err error
					if c.scylla.Consistency, err = gocql.ParseConsistencyWrapper(v); err != nil {
						return errors.New("is not a consistency such as QUORUM, LOCAL_QUORUM or ONE")
					}
					return nil
				}},
			{name: "scylla-serial-consistency", arg: "level", def: "LOCAL_SERIAL", usage: "consistency of the lightweight transactions: LOCAL_SERIAL when every writer is in one datacenter, else SERIAL (the workers' leases and fences are SERIAL whatever this says)",
				parse: func(v string) error {
					s := &c.scylla.SerialConsistency
					if err := s.UnmarshalText([]byte(strings.ToUpper(v))); err != nil || !s.IsSerial() {
						return errors.New("is not SERIAL or LOCAL_SERIAL")
					}
					return nil
				}},
			{name: "scylla-tablets", arg: "mode", def: "auto", usage: "tablets of a keyspace orderd creates: auto (on from ScyllaDB 2025.4, where CDC and LWT support them), on or off",
				parse: func(v string) error {
					c.scylla.Tablets = cql.TabletsMode(v)
					return oneOf(new(string), string(cql.TabletsAuto), string(cql.TabletsOn), string(cql.TabletsOff))(v)
				}},
			{name: "shards", arg: "n", def: strconv.Itoa(cql.DefaultShards), usage: "shards the aggregate ids of a keyspace orderd creates are split into, each with its own relay and projector worker: a power of two from 1 to 256, fixed when the keyspace is created (a later different value is ignored, with a warning)",
				parse: func(v string) error {
					if err := whole(&c.scylla.Shards, 1)(v); err != nil || c.scylla.Shards > cql.MaxShards || c.scylla.Shards&(c.scylla.Shards-1) != 0 {
						return fmt.Errorf("is not a power of two from 1 to %d", cql.MaxShards)
					}
					return nil
				}},
			{name: "scylla-timeout", arg: "duration", def: fmtDuration(cql.DefaultTimeout), usage: "bound of each CQL request",
				parse: duration(&c.scylla.Timeout)},
			{name: "cdc-ttl", arg: "duration", def: fmtDuration(cql.DefaultCDCTTL), usage: "how long ScyllaDB keeps the CDC log",
				parse: duration(&c.scylla.CDCTTL)},
			{name: "cdc-window", arg: "duration", def: fmtDuration(cdc.DefaultWindow), usage: "how old a CDC change must be to be read; what arrives later is found by the reconciliation pass",
				parse: duration(&c.feed.CDCWindow)},
			{name: "cdc-poll-delay", arg: "duration", def: fmtDuration(cdc.DefaultPollDelay), usage: "wait after a CDC query that found changes",
				parse: duration(&c.feed.CDCPollDelay)},
			{name: "cdc-idle-delay", arg: "duration", def: fmtDuration(cdc.DefaultIdleDelay), usage: "wait after a CDC query that found none",
				parse: duration(&c.feed.CDCIdleDelay)},
			{name: "hint-poll", arg: "duration", def: fmtDuration(cql.DefaultHintPoll), usage: "on Apache Cassandra: how often the active workers read the hints new appends leave",
				parse: duration(&c.feed.HintPoll)},
			{name: "feed-deliveries", arg: "n", def: strconv.Itoa(cql.DefaultDeliveries), usage: "batches of one worker an instance delivers at once over all its shards; each costs a Paxos round, so fewer gather more events",
				parse: whole(&c.feed.Deliveries, 1)},
			{name: "reconcile-interval", arg: "duration", def: fmtDuration(cql.DefaultReconcileEvery), usage: "how often the active workers compare the versions of the aggregates touched since the last pass with what they handled",
				parse: duration(&c.feed.ReconcileEvery)},
			{name: "reconcile-rate", arg: "n", def: strconv.Itoa(cql.DefaultReconcileRate), usage: "aggregates per second the full sweeps of every instance read together at most",
				parse: whole(&c.feed.ReconcileRate, 1)},
			{name: "sweep-interval", arg: "duration", def: fmtDuration(cql.DefaultSweepEvery), usage: "from the start of one full sweep of every aggregate (the safety net, resumed from its cursor) to the start of the next",
				parse: duration(&c.feed.SweepEvery)},
			{name: "clock-skew", arg: "duration", def: fmtDuration(cql.DefaultClockSkew), usage: "budget for how far the instances' clocks may differ; the reconciliation reads that much again",
				parse: duration(&c.feed.ClockSkew)},
		}},
		{"Operations (workers, logs, profiling)", []*setting{
			{name: "instance-id", arg: "name", def: fmt.Sprintf("%s-%d", host, os.Getpid()), shown: "<host name>-<process id>", usage: "this instance's name in the workers' leases, /readyz and the idempotency records its requests own; a stable name lets a restarted instance settle at once the keys its previous run left in flight",
				parse: func(v string) error { c.instance = v; return nonEmpty(v) }},
			{name: "lease-ttl", arg: "duration", def: "10s", usage: "how long a worker's lease lasts unrenewed: a standby takes over within it when the active instance dies (at least 1s)",
				parse: func(v string) error {
					if err := duration(&c.leaseTTL)(v); err != nil {
						return err
					}
					if c.leaseTTL < time.Second {
						return errors.New("is less than 1s (leases on CQL count whole seconds)")
					}
					return nil
				}},
			{name: "workers", arg: "list", def: "projector,relay", usage: "the workers this instance runs, comma-separated: projector, relay, or none for an instance that only serves the API; the instances that run a worker share its shards out. The relay also needs -kafka-brokers; on the embedded store (sqlite) the projector always runs, the only instance being the one that can",
				parse: func(v string) error {
					c.noProjector, c.noRelay = true, true
					workers := splitList(v)
					if len(workers) == 0 {
						return errors.New("is empty: name projector, relay, or none")
					}
					for _, w := range workers {
						switch w {
						case "projector":
							c.noProjector = false
						case "relay":
							c.noRelay = false
						case "none":
						default:
							return errors.New("is not a list of projector and relay, or none")
						}
					}
					return nil
				}},
			{name: "trace-ui-url", arg: "url", usage: "a trace UI's address with {trace_id}, e.g. http://localhost:16686/trace/{trace_id} (Jaeger): the console links each event's trace id there; tracing itself is set by the OTEL_ variables",
				parse: traceURL(&c.traceUI)},
			{name: "rebuild-grace", arg: "duration", def: "5s", usage: "how long the read models a rebuild replaced are still written, for reads in flight and for other instances to switch (they look every second), before they are dropped",
				parse: duration(&c.rebuildGrace)},
			{name: "log-level", arg: "level", def: "info", usage: "debug, info, warn or error",
				parse: func(v string) error {
					var err error
					if c.logLevel, err = zapcore.ParseLevel(v); err != nil {
						return errors.New("is not a level: debug, info, warn or error")
					}
					return nil
				}},
			{name: "log-format", arg: "format", def: "json", usage: "json, or console for people (coloured on a terminal)",
				parse: oneOf(&c.logFormat, "json", "console")},
			{name: "debug-addr", arg: "host:port", usage: "address of Go's profiler (/debug/pprof/), apart from the API; empty: off. Bind it to loopback or a private network",
				parse: address(&c.debugAddr, true)},
		}},
	}
}

// usageError is a command line that orderd does not understand: an unknown
// flag or an argument. Its message ends with a hint to -help, on a line of
// its own.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() + "\nrun 'orderd -help' for usage" }
func (e usageError) Unwrap() error { return e.err }

// parseConfig parses orderd's flags over its environment, and checks every
// value before anything is opened or created. -help (or -h) prints the
// usage to stderr and returns flag.ErrHelp, which is no failure. An error
// names the flag or the variable at fault.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var (
		c config
		f flags
	)
	groups := settings(&c, &f)
	byName := map[string]*setting{}
	fs := flag.NewFlagSet("orderd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, -help is printed below
	fs.Usage = func() {}
	for _, g := range groups {
		for _, s := range g.settings {
			byName[s.name] = s
			fs.Func(s.name, s.usage, func(v string) error {
				s.value, s.from = v, "-"+s.name
				return nil
			})
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stderr, groups)
			return c, err
		}
		if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
			if near := closest(name, slices.Collect(maps.Keys(byName))); near != "" {
				err = fmt.Errorf("%w (did you mean -%s?)", err, near)
			}
		}
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	for _, g := range groups {
		for _, s := range g.settings {
			if s.from == "" {
				s.value = s.def
				if v := getenv(s.env()); v != "" {
					s.value, s.from = v, s.env()
				}
			}
			if err := s.parse(s.value); err != nil {
				return c, fmt.Errorf("%s: %q %w", s.source(), s.value, err)
			}
		}
	}
	if err := c.combine(f, byName); err != nil {
		return c, err
	}
	return c, nil
}

// combine checks the settings that depend on one another and fills in the
// parts of c made of several.
func (c *config) combine(f flags, set map[string]*setting) error {
	if c.relay.RetryInitial > c.relay.RetryMax {
		return fmt.Errorf("%s (%s) is longer than %s (%s)", set["retry-initial"].source(), c.relay.RetryInitial, set["retry-max"].source(), c.relay.RetryMax)
	}
	for _, t := range f.topics {
		if err := validTopic(t); err != nil {
			return fmt.Errorf("%s: %w", set["kafka-topics"].source(), err)
		}
	}
	c.relay.Topics.ByType = f.topics
	topics := c.relay.Topics.All(aggregate.PublishedTypes()...)
	for _, t := range slices.Sorted(maps.Keys(c.acceptPartitions)) {
		if !slices.Contains(topics, t) {
			return fmt.Errorf("%s: %s is none of the relay's topics (%s)", set["kafka-accept-partitions"].source(), t, strings.Join(topics, ", "))
		}
	}
	c.relay.BreakerFailures = uint32(f.breakerFailures)
	c.relay.StepDown = f.stepDown
	if f.stepDown < 0 {
		c.relay.StepDown = 3 * c.leaseTTL
	}
	c.relay.BreakerSuccesses = uint32(f.breakerSuccesses)
	if f.replication > 0 && f.minInsync > f.replication {
		return fmt.Errorf("%s (%d) is more than %s (%d): no write with acks=all could succeed",
			set["kafka-min-insync-replicas"].source(), f.minInsync, set["kafka-replication"].source(), f.replication)
	}
	c.kafka = relay.KafkaConfig{Brokers: c.brokers, ClientID: "orderd", Partitions: f.partitions,
		ReplicationFactor: f.replication, MinInsyncReplicas: f.minInsync}
	if c.noProjector && c.store != "scylla" {
		return fmt.Errorf("%s leaves the projector out, which the embedded store (-store sqlite) cannot: its one instance is the only one that can keep the read models", set["workers"].source())
	}
	if c.store == "scylla" {
		if len(c.scylla.Hosts) == 0 {
			return fmt.Errorf("%s=scylla needs -scylla-hosts or ORDERD_SCYLLA_HOSTS", set["store"].from)
		}
		// On CQL the projection follows the fast path (CDC window and
		// polls, or hint polls): a read-your-writes wait must cover them,
		// unless set on purpose.
		if set["read-wait"].from == "" {
			c.readWait = c.feed.CDCWindow + c.feed.CDCIdleDelay + 2*time.Second
		}
	}
	if c.rateLimit == 0 && c.rateBurst != 0 {
		return fmt.Errorf("%s is set but %s is 0: with no rate limit a burst means nothing", set["rate-burst"].source(), set["rate-limit"].source())
	}
	if c.rateBurst == 0 && c.rateLimit > 0 {
		c.rateBurst = int(max(1, math.Ceil(2*c.rateLimit)))
	}
	if (c.oidcIssuer == "") != (c.oidcAudience == "") {
		return fmt.Errorf("%s and %s go together: a token is checked against both", set["oidc-issuer"].source(), set["oidc-audience"].source())
	}
	// The HTTP server's write timeout is 30 s: a longer wait would be cut.
	if c.readWait > 25*time.Second {
		return fmt.Errorf("%s: %s is more than 25s (with -store scylla it defaults to the CDC window + idle delay + 2s)", set["read-wait"].source(), c.readWait)
	}
	return nil
}

// text parses any string into p.
func text(p *string) func(string) error {
	return func(v string) error { *p = v; return nil }
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("is empty")
	}
	return nil
}

// oneOf parses one of the words in want into p.
func oneOf(p *string, want ...string) func(string) error {
	return func(v string) error {
		*p = v
		if !slices.Contains(want, v) {
			return fmt.Errorf("is not %s or %s", strings.Join(want[:len(want)-1], ", "), want[len(want)-1])
		}
		return nil
	}
}

// duration parses a positive duration into p.
func duration(p *time.Duration) func(string) error {
	return func(v string) error {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil && isNumber(v):
			return fmt.Errorf("is not a duration (did you mean %ss?)", v)
		case err != nil:
			return errors.New("is not a duration such as 500ms, 2s or 1m30s")
		case d <= 0:
			return errors.New("is not a positive duration")
		}
		*p = d
		return nil
	}
}

// whole parses a whole number of at least least into p.
func whole(p *int, least int) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < least {
			return fmt.Errorf("is not a whole number of %d or more", least)
		}
		*p = n
		return nil
	}
}

// perSecond parses a rate in requests per second, 0 or more, into p.
func perSecond(p *float64) func(string) error {
	return func(v string) error {
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
			return errors.New("is not a number of requests per second such as 100 or 0.5")
		case f < 0:
			return errors.New("is negative (0 turns the rate limit off)")
		case f > 1e6:
			return errors.New("is more than 1000000 requests per second (0 turns the rate limit off)")
		case f > 0 && f < 1e-3:
			return errors.New("is less than 0.001 requests per second (one every 1000s)")
		}
		*p = f
		return nil
	}
}

// auto parses "auto" as 0, or a whole number from 1 to most, into p.
func auto(p *int, most int) func(string) error {
	return func(v string) error {
		if v == "auto" {
			*p = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > most {
			return fmt.Errorf("is not auto or a whole number from 1 to %d", most)
		}
		*p = n
		return nil
	}
}

// acceptPartitions parses topic=n pairs, n 1 or more, into p.
func acceptPartitions(p *map[string]int) func(string) error {
	return func(v string) error {
		const want = "is not a list of topic=n pairs such as orders=6, n 1 or more"
		pairs, ok := keyValues(v)
		if !ok {
			return errors.New(want)
		}
		m := map[string]int{}
		for topic, count := range pairs {
			n, err := strconv.Atoi(count)
			if err != nil || n < 1 {
				return errors.New(want)
			}
			m[topic] = n
		}
		*p = m
		return nil
	}
}

// address parses a host:port to listen on into p (empty too when
// orEmpty). The host is not resolved: that is left to the listener.
func address(p *string, orEmpty bool) func(string) error {
	return func(v string) error {
		*p = v
		if v == "" && orEmpty {
			return nil
		}
		if isNumber(v) {
			return fmt.Errorf("is not host:port (did you mean :%s?)", v)
		}
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			var aerr *net.AddrError
			if errors.As(err, &aerr) {
				err = errors.New(aerr.Err)
			}
			return fmt.Errorf("is not host:port: %w", err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err == nil || isNumber(port) {
			if err != nil || n > 65535 {
				return fmt.Errorf("is not host:port: port %s is out of range", port)
			}
			return nil
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("is not host:port: unknown port %q", port)
		}
		return nil
	}
}

// topics parses Type=topic pairs into p.
func topics(p *map[string]string) func(string) error {
	return func(v string) error {
		m, ok := keyValues(v)
		if !ok {
			return errors.New("is not a list of Type=topic pairs such as Order=orders")
		}
		*p = m
		return nil
	}
}

// keyValues parses a comma-separated list of key=value pairs, spaces
// around each trimmed; ok is false when a pair lacks its = or a side.
func keyValues(v string) (m map[string]string, ok bool) {
	m = map[string]string{}
	for _, kv := range splitList(v) {
		key, value, found := strings.Cut(kv, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !found || key == "" || value == "" {
			return nil, false
		}
		m[key] = value
	}
	return m, true
}

func isNumber(v string) bool {
	_, err := strconv.ParseUint(v, 10, 64)
	return err == nil
}

// fmtDuration is d as a flag takes it, without zero units: 168h, not
// 168h0m0s.
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// printUsage prints commandsUsage and the flags, by group, to w.
func printUsage(w io.Writer, groups []group) {
	fmt.Fprint(w, commandsUsage)
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s:\n", g.title)
		for _, s := range g.settings {
			def := ""
			if s.shown != "" {
				def = ", default " + s.shown
			} else if s.def != "" {
				def = ", default " + s.def
			}
			fmt.Fprintf(w, "  -%s %s  (%s%s)\n", s.name, s.arg, s.env(), def)
			for _, line := range wrap(s.usage, 72) {
				fmt.Fprintf(w, "        %s\n", line)
			}
		}
	}
}

// wrap breaks s into lines of at most width bytes, between words.
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return append(lines, line)
}

// otherVariables are the ORDERD_ variables that orderd knows besides its
// flags': the client subcommands' (cli.EnvVars) and the scripts'
// (ORDERD_CACHE). ORDERD_TEST_ ones are the tests'.
var otherVariables = append(slices.Clone(cli.EnvVars), "ORDERD_CACHE")

// unknownVariable is an ORDERD_ variable that orderd does not read, with
// the known one it is closest to, if any.
type unknownVariable struct{ name, near string }

// unknownVariables lists the ORDERD_ variables of environ (as os.Environ
// returns it) that orderd does not read: likely typos, which would
// otherwise be ignored in silence.
func unknownVariables(environ []string) []unknownVariable {
	known := slices.Clone(otherVariables)
	for _, g := range settings(&config{}, &flags{}) {
		for _, s := range g.settings {
			known = append(known, s.env())
		}
	}
	var unknown []unknownVariable
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "ORDERD_") || strings.HasPrefix(name, "ORDERD_TEST_") || slices.Contains(known, name) {
			continue
		}
		unknown = append(unknown, unknownVariable{name, closest(name, known)})
	}
	return unknown
}

// closest is the candidate nearest to s, if one is within two edits
// (insertions, deletions, substitutions or swaps of neighbours); else "".
func closest(s string, candidates []string) string {
	best, bestDist := "", 3
	slices.Sort(candidates)
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
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

// newLogger builds the process's logger; it is passed down, never global.
// The console format colours the levels only on a terminal, so that a file
// or a log collector gets no escape codes.
func newLogger(c config, w io.Writer) *zap.Logger {
	level := c.logLevel
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.logFormat == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		if f, ok := w.(*os.File); ok && isTerminal(f) {
			encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		}
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level))
}
