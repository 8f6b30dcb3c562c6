// Package cql is the CQL engine (ScyllaDB, Apache Cassandra): every port of
// orderd (event store, feed, leases, replay log, idempotency keys,
// snapshots, read models and their catalog, the relay's dead-letter ledger)
// on one session and keyspace, for orderd processes that share one cluster.
// Open returns them all on one Backend. Files are named after the port
// they implement: views_* the read models (readmodel), dlq_* the ledger
// (relay); the others the event store and its sibling ports (store). The
// CDC reader of ScyllaDB's change log is the subpackage cdc.
//
// Each aggregate is one partition of the events table: one row per event,
// clustered by sequence, and a static column holding the aggregate's
// current version. Append is one lightweight transaction (a conditional
// batch on that partition), so optimistic concurrency holds across any
// number of processes; see append.go. An append that returned nil is
// committed at Config.Consistency (a local quorum by default); ScyllaDB
// also syncs the commit log of every LWT write before it answers.
//
// The Store is also a store.Feed and store.Leases. A partitioned store has
// no global commit order, so events carry no Position, and each consumer's
// progress is kept per aggregate (feed_progress). The feed has a fast path,
// the CDC log on ScyllaDB and hints written after each append on
// Cassandra, and a slow path that makes it complete: a recent pass over an
// index of touched aggregates that every append writes first, and a full
// sweep of the token ring behind it, which compare aggregates' versions
// with the consumer's progress; see feed.go, deliver.go, touched.go and
// reconcile.go.
package cql

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Defaults that Open and Migrate apply to the zero fields of Config.
const (
	DefaultKeyspace    = "orderd"
	DefaultReplication = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
	// DefaultTimeout is above ScyllaDB's and Cassandra's server-side
	// write and CAS contention timeouts (2 s and 1 s by default), so that
	// the server's answer to a write, which says what happened, usually
	// arrives before the client gives up; and well under a client's
	// patience: a read the cluster cannot serve ends within it, an append
	// (with its settling read) within twice it.
	DefaultTimeout = 3 * time.Second
	// DefaultCDCTTL is how long the CDC log keeps a change. A worker down
	// for longer loses nothing (the reconciliation pass delivers from the
	// events table whatever the log no longer has), it only catches up
	// through the slower path.
	DefaultCDCTTL = 7 * 24 * time.Hour
)

// Config says where the cluster is and how to talk to it.
type Config struct {
	// Hosts are the contact points, host or host:port (port 9042 when
	// omitted). At least one is required.
	Hosts []string
	// Keyspace holds the events table; it is created when missing.
	// Default DefaultKeyspace.
	Keyspace string
	// Replication is the CQL map of a keyspace that has to be created, for
	// example "{'class': 'NetworkTopologyStrategy', 'dc1': 3}". It is used as
	// given. Default DefaultReplication.
	Replication string
	// Consistency of reads and of the commit of an append. Default
	// LocalQuorum.
	Consistency gocql.Consistency
	// SerialConsistency of the Paxos phase of an append and of the read that
	// settles an append whose outcome is unknown: Serial or LocalSerial.
	// Default LocalSerial.
	//
	// LOCAL_SERIAL (and LOCAL_QUORUM) is safe only when every writer of an
	// aggregate talks to one datacenter: Paxos then runs among that DC's
	// replicas, and two appends at the same version in the same DC cannot
	// both win. On one DC that always holds. On several, set LocalDC on
	// every instance to the same DC (the others stand by or serve reads),
	// or, with writers in several DCs, set SERIAL, whose Paxos spans every
	// DC: two LOCAL_SERIAL appends in different DCs can both write version
	// n+1, the later silently replacing the earlier.
	SerialConsistency gocql.Consistency
	// LocalDC, when set, is the datacenter this process talks to: the
	// driver connects only to that DC's nodes and sends each request to a
	// replica of its partition there (token aware, and shard aware on
	// ScyllaDB), so LOCAL_QUORUM and LOCAL_SERIAL mean that DC. Open fails
	// when no node is in it. Empty: any node of any DC, as the contact
	// points lead, and Open warns when the cluster has several DCs.
	LocalDC string
	// Tablets says how the keyspace is created when missing; an existing
	// one is left as it is. Default TabletsAuto; see TabletsMode.
	Tablets TabletsMode
	// Timeout bounds each attempt of a request and the connection set-up.
	// A request is retried once at most, and never after a timeout (see
	// oneRetry), so it ends within Timeout unless a host refused it at
	// once; an append makes one attempt and a settling read, within
	// 2 × Timeout. Default DefaultTimeout.
	Timeout time.Duration
	// CDCTTL is how long ScyllaDB keeps the CDC log, in whole seconds. It is
	// set when the events table is created; changing it later takes an
	// ALTER TABLE by hand. Default DefaultCDCTTL.
	CDCTTL time.Duration
	// Shards is the number of shards the aggregate-id space of a keyspace
	// that has none yet is split into: a power of two from 1 to MaxShards.
	// It is fixed on the keyspace's first migration; a later different
	// setting is ignored, with a warning. Default DefaultShards.
	Shards int

	// Upcaster is applied to every event read; nil upcasts nothing.
	Upcaster store.Upcaster
	// Logger receives the driver's warnings and schema decisions; nil logs
	// nothing.
	Logger *zap.Logger
	// Feed tunes Subscribe and the hints appends write for it.
	Feed FeedOptions

	observer Observer // Options.Observer, set by OpenStore
}

// Options are OpenStore's knobs for tests. The zero value is production's.
type Options struct {
	// NoHints, for tests, makes Append write no hint on Cassandra, so that
	// only the reconciliation pass can deliver its events. (On ScyllaDB
	// the CDC log sees every append whatever this says.)
	NoHints bool
	// NoSweep, for tests, makes subscriptions run no full sweep of the
	// token ring, so that only the recent pass over the index of touched
	// aggregates (and the fast path) can deliver.
	NoSweep bool
	// NoHandOff, for tests, makes Append hand nothing to the
	// subscriptions of this process (see handOff), so that what they
	// deliver of its appends comes through the reads under test.
	NoHandOff bool
	// Observer, if not nil, sees every query and batch of the store's
	// sessions: tests count Paxos rounds with it (see Rounds).
	Observer Observer
}

// Store is a store.Store on a ScyllaDB (or Cassandra) keyspace. It is safe
// for concurrent use, also by several processes on the same keyspace.
//
// Timestamps round-trip to the millisecond (CQL's precision), in UTC.
// Metadata round-trips exactly except that an empty map reads back as nil.
// Data comes back byte-equal.
type Store struct {
	sess   gocqlx.Session
	cfg    Config
	up     store.Upcaster
	log    *zap.Logger
	scylla bool // the server is ScyllaDB, not Cassandra
	shards int  // the keyspace's shard count (shards.go)
	closed atomic.Bool
	health *store.Health // the outcome of the recent appends

	feed      FeedOptions
	noSweep   bool     // Options.NoSweep
	noHandOff bool     // Options.NoHandOff
	hints     *hinter  // nil on ScyllaDB and with Options.NoHints
	hintsIn   hintHub  // reads the hints for this process's subscriptions, on Cassandra
	subs      sync.Map // subscription key (consumer, or consumer/shard) → *subscription running in this process
	turns     sync.Map // consumer → chan struct{}: its batches being delivered in this process (deliveryTurns)
	// local is the subscriptions running in this process, for the hand-off
	// of its appends (handoff.go); localMu orders its replacements.
	local           atomic.Pointer[localSubs]
	localMu         sync.Mutex
	handOffsDropped atomic.Int64
	done            chan struct{} // closed by Close, to stop subscriptions

	settles atomic.Int64 // appends settled by a read, for tests
	minted  mintedAt     // aggregates Mint left without a version cell (mint.go)

	// feedLoad, if not nil, replaces load in the feed's delivery core:
	// tests hide rows with it, as a replica that missed them would.
	feedLoad func(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error)
	// mintFault, if not nil, runs before each try of a mint's batch; an
	// error fails that try without sending it, as the cluster would. For
	// tests.
	mintFault func(try int) error
	// sweepFault, if not nil, runs before each token range a sweep reads;
	// an error fails that read, as the cluster would. For tests.
	sweepFault func(lo, hi int64) error

	// The reconciliation's counters (see Reconciliation).
	passFailures atomic.Int64 // failed reads of a pass or sweep, each retried
	recentRows   atomic.Int64 // index rows the recent passes read
	sweepRows    atomic.Int64 // aggregates the sweeps read
	skew         skewGauge    // the clock skew observed against the nodes
}

// keyspaceName is what an unquoted CQL identifier for a keyspace may be.
// Checking it keeps the name, which is spliced into DDL, from being CQL.
// Lower case only: CQL folds an unquoted name to lower case in DDL, while
// the driver quotes it in USE and the metadata lookups are exact.
var keyspaceName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,47}$`)

// withDefaults fills the zero fields of c and checks the result.
func (c Config) withDefaults() (Config, error) {
	if c.Keyspace == "" {
		c.Keyspace = DefaultKeyspace
	}
	if c.Replication == "" {
		c.Replication = DefaultReplication
	}
	if c.Consistency == gocql.Any { // the zero value; ANY cannot serve an LWT anyway
		c.Consistency = gocql.LocalQuorum
	}
	if c.SerialConsistency == 0 {
		c.SerialConsistency = gocql.LocalSerial
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.CDCTTL == 0 {
		c.CDCTTL = DefaultCDCTTL
	}
	if c.Tablets == "" {
		c.Tablets = TabletsAuto
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	switch {
	case len(c.Hosts) == 0:
		return c, errors.New("scylla: no hosts")
	case !keyspaceName.MatchString(c.Keyspace):
		return c, fmt.Errorf("scylla: keyspace %q: want a lower-case letter, then up to 47 lower-case letters, digits or _", c.Keyspace)
	case !c.SerialConsistency.IsSerial():
		return c, fmt.Errorf("scylla: serial consistency %v: want SERIAL or LOCAL_SERIAL", c.SerialConsistency)
	case c.CDCTTL < time.Second:
		return c, fmt.Errorf("scylla: CDC TTL %v: want at least 1s", c.CDCTTL)
	case c.Tablets != TabletsAuto && c.Tablets != TabletsOn && c.Tablets != TabletsOff:
		return c, fmt.Errorf("scylla: tablets %q: want auto, on or off", c.Tablets)
	case !validShards(c.Shards):
		return c, fmt.Errorf("scylla: shards %d: want a power of two from 1 to %d", c.Shards, MaxShards)
	}
	return c, nil
}

// OpenStore connects to the cluster, creates the keyspace if it is missing,
// brings the schema up to date (see Migrate) and returns the event store
// alone (Open returns every port). The caller must Close it. It returns an
// error when the cluster cannot be reached or the schema cannot be applied.
func OpenStore(ctx context.Context, cfg Config, opts Options) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	cfg.observer = opts.Observer
	sess, scylla, shards, err := migrate(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	s := &Store{sess: sess, cfg: cfg, up: cfg.Upcaster, log: log, scylla: scylla, shards: shards,
		health: store.NewHealth("scylla", log), feed: cfg.Feed.withDefaults(), done: make(chan struct{})}
	if !scylla && !opts.NoHints {
		s.hints = newHinter(s)
	}
	s.hintsIn.s = s
	s.noSweep = opts.NoSweep
	s.noHandOff = opts.NoHandOff
	return s, nil
}

// cluster returns the driver configuration for cfg, bound to keyspace ("":
// none).
func cluster(cfg Config, keyspace string, log *zap.Logger) *gocql.ClusterConfig {
	c := gocql.NewCluster(cfg.Hosts...)
	c.Keyspace = keyspace
	c.Consistency = cfg.Consistency
	c.SerialConsistency = cfg.SerialConsistency
	c.Timeout = cfg.Timeout
	c.ConnectTimeout = cfg.Timeout
	// One retry at most, and none after a timeout (see oneRetry), so that
	// a request that the cluster cannot serve ends within Timeout and
	// answers 503, where the driver's default of three retries held it for
	// 4 × Timeout. Appends never retry (see append).
	c.RetryPolicy = oneRetry{}
	// A node that was down is dialled again every 2 s rather than the
	// driver's minute, so that an instance cut off from its only
	// reachable node serves (and /readyz says ready) soon after the node
	// is back.
	c.ReconnectInterval = 2 * time.Second
	if cfg.LocalDC != "" {
		// Token aware over DC aware: a replica of the partition in the
		// local DC, else another local node; never a remote one, which
		// would make LOCAL_* mean its DC. The filter keeps the pools (and
		// the control connection) off the other DCs' nodes altogether.
		// scylladb/gocql picks the replica's shard itself, whatever the
		// policy.
		c.PoolConfig.HostSelectionPolicy = gocql.TokenAwareHostPolicy(
			gocql.DCAwareRoundRobinPolicy(cfg.LocalDC, gocql.HostPolicyOptionDisableDCFailover))
		c.HostFilter = gocql.DataCenterHostFilter(cfg.LocalDC)
	}
	// The driver logs what it cannot do about a node (dial failures,
	// reconnections): warnings, not the info its plain Print would make.
	c.Logger, _ = zap.NewStdLogAt(log.Named("gocql"), zap.WarnLevel) // fails only for an invalid level
	if cfg.observer != nil {
		c.QueryObserver, c.BatchObserver = cfg.observer, cfg.observer
	}
	return c
}

// connect opens a session on keyspace ("": none).
func connect(cfg Config, keyspace string, log *zap.Logger) (gocqlx.Session, error) {
	sess, err := gocqlx.WrapSession(cluster(cfg, keyspace, log).CreateSession())
	if err != nil {
		return sess, fmt.Errorf("scylla: connect to %v: %w", cfg.Hosts, err)
	}
	return sess, nil
}

// IsScylla reports whether the server is ScyllaDB rather than Apache
// Cassandra. CDC is on only then.
func (s *Store) IsScylla() bool { return s.scylla }

// Session returns the store's session, for the read models and the CDC
// readers that share the keyspace. It is closed with the store.
func (s *Store) Session() gocqlx.Session { return s.sess }

// Keyspace returns the keyspace of the events table.
func (s *Store) Keyspace() string { return s.cfg.Keyspace }

// Migrate applies the schema files that the keyspace has not seen yet. Open
// already did; this is for a schema shipped while the store is open.
func (s *Store) Migrate(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return applySchema(ctx, s.sess, s.cfg, s.scylla, s.log)
}

// Close writes the hints still queued (for up to a second) and closes the
// session. Calls after Close, a second Close included, return
// store.ErrClosed; calls still running fail with it, Subscribe included.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return store.ErrClosed
	}
	close(s.done)
	if s.hints != nil {
		s.hints.close()
	}
	s.sess.Close()
	return nil
}

// closedOr reports store.ErrClosed for a request that failed because Close
// ran meanwhile, err wrapping store.ErrUnavailable for the cluster's
// failure (counted as cql), and err otherwise.
func (s *Store) closedOr(ctx context.Context, err error) error {
	if s.closed.Load() || errors.Is(err, gocql.ErrSessionClosed) {
		return store.ErrClosed
	}
	return s.fault(ctx, "cql", err)
}

var _ store.Store = (*Store)(nil)
