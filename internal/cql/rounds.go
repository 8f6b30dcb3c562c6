package cql

import (
	"context"
	"regexp"
	"sync"

	"github.com/gocql/gocql"
)

// Rounds counts the Paxos rounds a session runs, by statement: every
// conditional statement (a query with an IF clause, or a batch holding one)
// is a lightweight transaction, and every read at SERIAL or LOCAL_SERIAL is
// a Paxos round of its own. It is a gocql observer: give it to OpenStore
// through Options.Observer. Tests use it to hold the rounds each command
// costs (see docs/performance.md); it is safe for concurrent use.
type Rounds struct {
	mu     sync.Mutex
	lwt    map[string]int // statement (of a batch: its conditional one) → LWTs run
	serial map[string]int // statement → SERIAL reads run
}

// NewRounds returns a counter at zero.
func NewRounds() *Rounds {
	return &Rounds{lwt: map[string]int{}, serial: map[string]int{}}
}

// conditional matches a CQL statement with a condition: IF EXISTS, IF NOT
// EXISTS or IF followed by a column's condition. Schema statements (CREATE
// … IF NOT EXISTS) are no Paxos round and are left out.
var (
	conditional = regexp.MustCompile(`(?is)\bIF\s+(NOT\s+)?EXISTS\b|\bIF\s+[a-z_"]`)
	schemaDDL   = regexp.MustCompile(`(?is)^\s*(CREATE|ALTER|DROP)\b`)
)

// serialRead marks ctx as the context of a read at the serial consistency,
// so that Rounds counts it. The store's SERIAL reads all go through it.
type serialRead struct{}

func withSerialRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, serialRead{}, true)
}

// ObserveQuery counts a conditional query or a read marked as serial.
// Retries (Attempt > 0) count again: each is a round the cluster runs.
func (r *Rounds) ObserveQuery(ctx context.Context, q gocql.ObservedQuery) {
	switch {
	case ctx != nil && ctx.Value(serialRead{}) != nil:
		r.mu.Lock()
		r.serial[q.Statement]++
		r.mu.Unlock()
	case !schemaDDL.MatchString(q.Statement) && conditional.MatchString(q.Statement):
		r.mu.Lock()
		r.lwt[q.Statement]++
		r.mu.Unlock()
	}
}

// ObserveBatch counts a batch with a conditional statement once: a
// conditional batch is one lightweight transaction.
func (r *Rounds) ObserveBatch(_ context.Context, b gocql.ObservedBatch) {
	for _, s := range b.Statements {
		if conditional.MatchString(s) {
			r.mu.Lock()
			r.lwt[s]++
			r.mu.Unlock()
			return
		}
	}
}

// Take returns the LWTs and SERIAL reads counted since the last Take, by
// statement, and starts again from zero.
func (r *Rounds) Take() (lwt, serial map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lwt, serial = r.lwt, r.serial
	r.lwt, r.serial = map[string]int{}, map[string]int{}
	return lwt, serial
}

// Observer sees every query and batch a session runs (see Options).
type Observer interface {
	gocql.QueryObserver
	gocql.BatchObserver
}
