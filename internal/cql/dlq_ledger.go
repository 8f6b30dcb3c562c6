// The relay's ledger (relay.Ledger: its dead letters and the operators'
// requests on them) is kept in CQL tables of the event store's keyspace
// (migrations/scylla/0201_relay.cql), so that every orderd instance on the
// cluster shares it and none keeps state on its own disk.
//
// Every write is a lightweight transaction, because Record must keep a
// letter that is there already and because Paxos writes and plain writes
// to one row do not order. Reads run at the session's consistency (a local
// quorum by default), which sees every write a lightweight transaction
// committed.

package cql

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// consumer is the relay's consumer name: the partition key of
// relay_requests, and of relay_dead_letters on a keyspace of one shard
// (on others, the shards' names after it, see dlq_shards.go).
const consumer = relay.Consumer

const letterColumns = `position, event_id, aggregate_id, aggregate_type, sequence, event_type,
	topic, state, error, attempts, first_failed_at, last_failed_at`

const (
	recordCQL = `INSERT INTO relay_dead_letters (consumer, ` + letterColumns + `)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS`
	updateCQL = `UPDATE relay_dead_letters SET state = ?, error = ?, attempts = ?, last_failed_at = ?
		WHERE consumer = ? AND position = ? IF EXISTS`
	removeCQL = `DELETE FROM relay_dead_letters WHERE consumer = ? AND position = ? IF EXISTS`
	// listCQL reads up to the limit from each partition named, which the
	// caller merges by position.
	listCQL   = `SELECT ` + letterColumns + ` FROM relay_dead_letters WHERE consumer IN ? AND position > ? PER PARTITION LIMIT ?`
	getCQL    = `SELECT ` + letterColumns + ` FROM relay_dead_letters WHERE consumer = ? AND position = ?`
	getAnyCQL = `SELECT ` + letterColumns + ` FROM relay_dead_letters WHERE consumer IN ? AND position = ?`
	allCQL    = `SELECT ` + letterColumns + ` FROM relay_dead_letters WHERE consumer = ?`
	allInCQL  = `SELECT ` + letterColumns + ` FROM relay_dead_letters WHERE consumer IN ?`
)

// Ledger is a relay.Ledger on CQL tables. It is safe for concurrent use,
// also by several processes on the same keyspace. Times read back to the
// millisecond, in UTC.
type Ledger struct {
	sess   gocqlx.Session
	cons   gocql.Consistency
	serial gocql.Consistency
	log    *zap.Logger
	shards int // the keyspace's shard count: one partition of letters each
}

// NewLedger returns the ledger in the keyspace sess is bound to, whose
// schema the event store's migrations created
// (Store.Session is such a session). consistency is that of
// reads and of the commit of writes (LocalQuorum, say); serial that of the
// Paxos phase of writes (LocalSerial or Serial). log may be nil. The
// session stays the caller's to close.
func NewLedger(sess gocqlx.Session, consistency, serial gocql.Consistency, log *zap.Logger) *Ledger {
	if log == nil {
		log = zap.NewNop()
	}
	return &Ledger{sess: sess, cons: consistency, serial: serial, log: log, shards: 1}
}

// sharded sets the keyspace's shard count, which Open reads from the
// store (NewLedger's ledger has one shard).
func (l *Ledger) sharded(n int) *Ledger {
	l.shards = max(1, n)
	return l
}

// query returns a read (or plain) statement.
func (l *Ledger) query(ctx context.Context, stmt string, args ...any) *gocql.Query {
	return l.sess.Session.Query(stmt, args...).WithContext(ctx).Consistency(l.cons).Idempotent(true)
}

// lwt runs a lightweight transaction and reports whether it applied,
// filling current with the row as it was when it did not.
func (l *Ledger) lwt(ctx context.Context, current map[string]any, stmt string, args ...any) (bool, error) {
	if current == nil {
		current = map[string]any{}
	}
	// Idempotent: every write here can be sent again without harm (the
	// conditions make a repeat a no-op), so the driver may retry it.
	return l.sess.Session.Query(stmt, args...).WithContext(ctx).Consistency(l.cons).
		SerialConsistency(l.serial).Idempotent(true).MapScanCAS(current)
}

// Record stores letters, one lightweight transaction each (INSERT IF NOT
// EXISTS), so a letter recorded already keeps its row. After an error the
// letters before the failed one are stored; recording again is harmless.
//
// Recording no letters writes nothing and checks no fence, as on SQLite:
// the relay records after every batch, mostly none, and the progress save
// that follows the batch runs the fence check that stops a lapsed holder.
// (It cost the relay a second Paxos round per batch.)
func (l *Ledger) Record(ctx context.Context, letters []relay.DeadLetter) error {
	if len(letters) == 0 {
		return nil
	}
	for _, d := range letters {
		if err := d.Check(); err != nil {
			return fmt.Errorf("scylla: ledger: record: %w", err)
		}
	}
	if f, ok := store.FenceOf(ctx); ok {
		return l.recordFenced(ctx, f, letters)
	}
	for _, d := range letters {
		if _, err := l.lwt(ctx, nil, recordCQL, l.letterPartition(d.AggregateID), d.Position, gocqlUUID(d.EventID), gocqlUUID(d.AggregateID),
			d.AggregateType, d.Sequence, d.EventType, d.Topic, d.State, d.Error, d.Attempts,
			d.FirstFailedAt, d.LastFailedAt); err != nil {
			return fmt.Errorf("scylla: ledger: record letter %d: %w", d.Position, err)
		}
	}
	return nil
}

// Blocked returns the aggregates that have dead letters, each with the
// lowest sequence among them: under a fence of a shard, those of the
// shard (its partition, which it claims, after moving in its letters that
// a whole relay left, see adopt), else of every shard.
func (l *Ledger) Blocked(ctx context.Context) (map[uuid.UUID]int64, error) {
	var (
		all []relay.DeadLetter
		err error
	)
	if f, ok := store.FenceOf(ctx); ok {
		// A new holder: claim the shard's ledger, then read at serial
		// consistency what every earlier epoch committed.
		p, perr := l.fencePartition(f)
		if perr == nil {
			perr = l.claim(ctx, f, p)
		}
		if perr == nil {
			perr = l.adopt(ctx, f, p)
		}
		if perr != nil {
			return nil, fmt.Errorf("scylla: ledger: blocked: %w", perr)
		}
		if p == consumer {
			all, err = l.everyLetter(ctx, leaseSerial) // the whole relay's: every shard's too
		} else {
			all, err = l.scanQuery(l.query(ctx, allCQL, p).Consistency(leaseSerial))
		}
	} else {
		all, err = l.everyLetter(ctx, l.cons)
	}
	if err != nil {
		return nil, fmt.Errorf("scylla: ledger: blocked: %w", err)
	}
	blocked := map[uuid.UUID]int64{}
	for _, d := range all {
		if first, ok := blocked[d.AggregateID]; !ok || d.Sequence < first {
			blocked[d.AggregateID] = d.Sequence
		}
	}
	return blocked, nil
}

// List returns up to limit dead letters with a position greater than after,
// in position order. limit must be at least 1.
func (l *Ledger) List(ctx context.Context, after int64, limit int) ([]relay.DeadLetter, error) {
	if limit < 1 {
		return nil, fmt.Errorf("scylla: ledger: list: limit %d, want 1 or more", limit)
	}
	var ls []relay.DeadLetter
	err := inChunks(l.partitions(), func(parts []string) error {
		more, err := l.scan(ctx, listCQL, parts, after, limit)
		ls = append(ls, more...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("scylla: ledger: list after %d: %w", after, err)
	}
	slices.SortFunc(ls, func(a, b relay.DeadLetter) int { return cmp.Compare(a.Position, b.Position) })
	return ls[:min(len(ls), limit)], nil
}

// everyLetter reads every partition of dead letters at cons.
func (l *Ledger) everyLetter(ctx context.Context, cons gocql.Consistency) ([]relay.DeadLetter, error) {
	var all []relay.DeadLetter
	err := inChunks(l.partitions(), func(parts []string) error {
		more, err := l.scanQuery(l.query(ctx, allInCQL, parts).Consistency(cons))
		all = append(all, more...)
		return err
	})
	return all, err
}

// Get returns the dead letter at position, or an error wrapping
// relay.ErrNotFound.
func (l *Ledger) Get(ctx context.Context, position int64) (relay.DeadLetter, error) {
	var ls []relay.DeadLetter
	err := inChunks(l.partitions(), func(parts []string) error {
		more, err := l.scan(ctx, getAnyCQL, parts, position)
		ls = append(ls, more...)
		return err
	})
	if err != nil {
		return relay.DeadLetter{}, fmt.Errorf("scylla: ledger: get %d: %w", position, err)
	}
	if len(ls) == 0 {
		return relay.DeadLetter{}, fmt.Errorf("scylla: ledger: get %d: %w", position, relay.ErrNotFound)
	}
	return ls[0], nil
}

// OfAggregate returns the aggregate's dead letters in sequence order. It
// reads the whole partition of the aggregate's shard (and the whole
// relay's, see adopt): dead letters are few.
func (l *Ledger) OfAggregate(ctx context.Context, aggregateID uuid.UUID) ([]relay.DeadLetter, error) {
	parts := []string{l.letterPartition(aggregateID)}
	if parts[0] != consumer {
		parts = append(parts, consumer)
	}
	all, err := l.scan(ctx, allInCQL, parts)
	if err != nil {
		return nil, fmt.Errorf("scylla: ledger: dead letters of %s: %w", aggregateID, err)
	}
	var mine []relay.DeadLetter
	for _, d := range all {
		if d.AggregateID == aggregateID {
			mine = append(mine, d)
		}
	}
	slices.SortFunc(mine, func(a, b relay.DeadLetter) int { return int(a.Sequence - b.Sequence) })
	return mine, nil
}

// Update stores d's State, Error, Attempts and LastFailedAt. It returns an
// error wrapping relay.ErrNotFound when there is no such letter, and an
// error for an invalid state.
func (l *Ledger) Update(ctx context.Context, d relay.DeadLetter) error {
	if err := d.Check(); err != nil {
		return fmt.Errorf("scylla: ledger: update: %w", err)
	}
	if f, ok := store.FenceOf(ctx); ok {
		return l.updateFenced(ctx, f, d)
	}
	p, err := l.locate(ctx, d.Position)
	if err != nil {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, err)
	}
	if p == "" {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, relay.ErrNotFound)
	}
	applied, err := l.lwt(ctx, nil, updateCQL, d.State, d.Error, d.Attempts, d.LastFailedAt, p, d.Position)
	if err != nil {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, err)
	}
	if !applied {
		return fmt.Errorf("scylla: ledger: update %d: %w", d.Position, relay.ErrNotFound)
	}
	return nil
}

// Remove deletes the dead letters at positions, one lightweight
// transaction each. Unknown positions are ignored.
func (l *Ledger) Remove(ctx context.Context, positions ...int64) error {
	if f, ok := store.FenceOf(ctx); ok {
		return l.removeFenced(ctx, f, positions)
	}
	for _, pos := range positions {
		p, err := l.locate(ctx, pos)
		if err == nil && p != "" {
			_, err = l.lwt(ctx, nil, removeCQL, p, pos)
		}
		if err != nil {
			return fmt.Errorf("scylla: ledger: remove %d: %w", pos, err)
		}
	}
	return nil
}

// Count returns the number of dead letters by state, relay.Failed and
// relay.Parked always present.
func (l *Ledger) Count(ctx context.Context) (map[string]int, error) {
	all, err := l.everyLetter(ctx, l.cons)
	if err != nil {
		return nil, fmt.Errorf("scylla: ledger: count: %w", err)
	}
	counts := map[string]int{relay.Failed: 0, relay.Parked: 0}
	for _, d := range all {
		counts[d.State]++
	}
	return counts, nil
}

// scan runs a query of letterColumns and reads every row.
func (l *Ledger) scan(ctx context.Context, stmt string, args ...any) ([]relay.DeadLetter, error) {
	return l.scanQuery(l.query(ctx, stmt, args...))
}

// scanQuery runs q, a query of letterColumns, and reads every row.
func (l *Ledger) scanQuery(q *gocql.Query) ([]relay.DeadLetter, error) {
	iter := q.Iter()
	var out []relay.DeadLetter
	for {
		var d relay.DeadLetter
		var eventID, aggID gocql.UUID
		if !iter.Scan(&d.Position, &eventID, &aggID, &d.AggregateType, &d.Sequence, &d.EventType,
			&d.Topic, &d.State, &d.Error, &d.Attempts, &d.FirstFailedAt, &d.LastFailedAt) {
			break
		}
		if d.Position == 0 {
			continue // the partition's static row (its epoch), with no letter
		}
		d.EventID, d.AggregateID = uuid.UUID(eventID), uuid.UUID(aggID)
		d.FirstFailedAt, d.LastFailedAt = utc(d.FirstFailedAt), utc(d.LastFailedAt)
		out = append(out, d)
	}
	if err := iter.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// utc returns t in UTC, the zero time (a null timestamp) as it is.
func utc(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

var _ relay.Ledger = (*Ledger)(nil)
