// The read models (readmodel.Views) are in ScyllaDB (or any CQL store),
// in the event store's keyspace, for ORDERD_STORE=scylla.
//
// Apply is the projector: a store.Handler that the change feed pushes
// batches to, in order per aggregate and without gaps, but possibly more
// than once, and, during a failover, from two orderd instances at once. So:
//
//   - an event at or below a row's version changes nothing (readmodel's pure
//     Apply functions decide that);
//   - an event beyond version+1 is an error wrapping readmodel.ErrGap: the
//     feed never leaves one, so it reports a bug;
//   - every row write is a plain write of the whole row whose timestamp is
//     the row's version (USING TIMESTAMP, see versionStamp), so two
//     instances can race on one row, a stale batch can land late, and
//     none ever moves it back: Cassandra keeps the greatest version's
//     cells on every replica. The batch's one lightweight transaction is
//     the fence check. (Rows a release before issue 17 wrote with
//     lightweight transactions keep those; see conditionalRow.)
//
// CQL timestamps hold milliseconds, so on this backend the read models keep
// times to the millisecond.

package cql

import (
	"github.com/gocql/gocql"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// concurrency is how many aggregates one Apply call works on at once. An
// aggregate's own events are always applied in order, by one goroutine.
// Each aggregate costs a read and a write or two, so throughput comes from
// overlapping them; 32 keeps a batch of 256 events (the feed's usual size)
// to a handful of rounds without flooding a small cluster.
const concurrency = 32

// Views is the Scylla backend of the read models: the tables of one
// generation (see Catalog). Apply, a store.Handler, writes them; they
// implement the readmodel.Views that queries read. It is safe for
// concurrent use, also by several Views (in several processes) on one
// keyspace.
type Views struct {
	session     gocqlx.Session
	gen         int64
	q           statements // on the tables of gen
	log         *zap.Logger
	consistency gocql.Consistency // reads and the commit of writes
	serial      gocql.Consistency // the Paxos phase of conditional writes, and re-reads after one failed or a gap

	// conditionalRows makes every row write a lightweight transaction, as
	// before issue 17, and not only those of rows written so: the tests'
	// side-by-side measure of the two (BenchmarkApply).
	conditionalRows bool

	// Changes wakes the readers of the rows an Apply call brought up to
	// their events, when it returns.
	readmodel.Changes
}

// ViewsOption configures Views.
type ViewsOption func(*Views)

// WithConsistency sets the consistency of reads and of the commit of
// writes; the default, LocalQuorum, makes a row written by one orderd
// instance visible to the reads of another in the same datacenter. One
// (say, on a single node) trades that for latency.
func WithConsistency(c gocql.Consistency) ViewsOption {
	return func(v *Views) { v.consistency = c }
}

// WithSerialConsistency sets the consistency of the Paxos round of the
// conditional writes (of rows a release before issue 17 wrote), and of the
// linearizable re-read after one of them lost a race or after a read found
// a gap: LocalSerial (the default) or Serial.
func WithSerialConsistency(c gocql.Consistency) ViewsOption {
	return func(v *Views) { v.serial = c }
}

// WithGeneration makes the views those of generation gen (at least 0)
// rather than 0: the tables order_read_model_g<gen>, orders_by_customer_g<gen>
// and customers_g<gen>, which Catalog.Open creates. Generation 0's tables
// are those of migrations/scylla/0101_views.cql.
func WithGeneration(gen int64) ViewsOption {
	return func(v *Views) { v.gen = gen }
}

// NewViews returns views over the tables of one generation in session's
// keyspace: generation 0, those of migrations/scylla/01xx_*.cql, which the
// event store's migration creates, unless WithGeneration says otherwise.
// NewViews creates no table; Catalog.Open does.
func NewViews(session gocqlx.Session, log *zap.Logger, opts ...ViewsOption) *Views {
	v := &Views{
		session:     session,
		log:         log,
		consistency: gocql.LocalQuorum,
		serial:      gocql.LocalSerial,
	}
	for _, opt := range opts {
		opt(v)
	}
	v.q = statementsOf(tablesOf(v.gen))
	return v
}

// Generation returns the generation whose tables v reads and writes.
func (v *Views) Generation() int64 { return v.gen }

// Interface checks: the consumers define the interfaces, this backend
// promises to satisfy them.
var (
	_ store.Handler        = (*Views)(nil).Apply
	_ readmodel.Views      = (*Views)(nil)
	_ readmodel.Generation = (*Views)(nil)
)
