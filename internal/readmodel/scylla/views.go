// Package scylla keeps orderd's read models in ScyllaDB (or any CQL store),
// in the event store's keyspace, for ORDERD_STORE=scylla.
//
// There the projector is fed by Scylla's CDC log, which keeps each
// aggregate's events in order but may repeat them and may lose some (TTL
// expiry, a confidence window too small). So Project is written to be
// idempotent and self-healing rather than to trust its input:
//
//   - an event at or below a row's version changes nothing (readmodel's pure
//     Apply functions decide that);
//   - an event beyond version+1 makes Project load the missing events from
//     the event store (History) and apply them first;
//   - every row write is a lightweight transaction conditioned on the
//     version it was computed from, so two projectors (two orderd instances)
//     can race on one row and neither ever moves it back.
//
// CQL timestamps hold milliseconds, so on this backend the read models keep
// times to the millisecond.
package scylla

import (
	"context"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// History is the part of the event store Project needs to heal a gap: the
// events of one aggregate after a given sequence, in sequence order, as
// store.Store.Load returns them.
type History interface {
	Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]store.Event, error)
}

// DefaultConcurrency is how many aggregates Project works on at once unless
// WithConcurrency says otherwise.
const DefaultConcurrency = 32

// Views is the Scylla backend of the read models. Project writes them; it
// implements the readmodel.Views that queries read. It is safe for
// concurrent use, also by several Views (in several processes) on one
// keyspace.
type Views struct {
	session     gocqlx.Session
	history     History
	log         *zap.Logger
	consistency gocql.Consistency // reads and the commit of writes
	serial      gocql.Consistency // the Paxos phase of conditional writes, and re-reads after one failed
	concurrency int

	// Changes closes Changed when a Project call that brought a row up to
	// one of its events returns.
	readmodel.Changes
}

// Option configures Views.
type Option func(*Views)

// WithConsistency sets the consistency of reads and of the commit of
// writes; the default, LocalQuorum, makes a row written by one orderd
// instance visible to the reads of another in the same datacenter. One
// (say, on a single node) trades that for latency.
func WithConsistency(c gocql.Consistency) Option {
	return func(v *Views) { v.consistency = c }
}

// WithSerialConsistency sets the consistency of the Paxos round of the
// conditional writes, and of the linearizable re-read after one of them
// lost a race: LocalSerial (the default) or Serial.
func WithSerialConsistency(c gocql.Consistency) Option {
	return func(v *Views) { v.serial = c }
}

// WithConcurrency sets how many aggregates one Project call works on at
// once. An aggregate's own events are always applied in order, by one
// goroutine. Values below 1 are ignored.
func WithConcurrency(n int) Option {
	return func(v *Views) {
		if n > 0 {
			v.concurrency = n
		}
	}
}

// New returns views over the tables of migrations/scylla/01xx_*.cql in
// session's keyspace; the event store's migration creates them. history is
// the event store, read only to heal gaps in what Project is given.
func New(session gocqlx.Session, history History, log *zap.Logger, opts ...Option) *Views {
	v := &Views{
		session:     session,
		history:     history,
		log:         log,
		consistency: gocql.LocalQuorum,
		serial:      gocql.LocalSerial,
		concurrency: DefaultConcurrency,
	}
	for _, opt := range opts {
		opt(v)
	}
	return v
}

// The consumer defines the interface, this backend promises to satisfy it.
var _ readmodel.Views = (*Views)(nil)
