package cql

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3/qb"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// columns of the events table in the order of insertArgs.
var columns = []string{
	"aggregate_id", "sequence", "event_id", "aggregate_type", "event_type", "event_version",
	"data", "causation_id", "correlation_id", "timestamp", "metadata",
}

// The statements of Append, built once.
var (
	insertCQL, _ = qb.Insert("events").Columns(columns...).ToCql()
	// The version of a new aggregate is null: its partition does not exist,
	// and a condition on a missing row sees nulls, so "= null" holds exactly
	// while nobody has created the aggregate, by Append or by Mint (which
	// writes minted instead). (Checked on Cassandra 5.0 by TestLWTRace at
	// version 0: 32 racing creations, one applied.)
	createCQL, _ = qb.Update("events").Set("version").
			Where(qb.Eq("aggregate_id")).If(qb.EqLit("version", "null"), qb.EqLit("minted", "null")).ToCql()
	advanceCQL, _ = qb.Update("events").Set("version").
			Where(qb.Eq("aggregate_id")).If(qb.Eq("version")).ToCql()
	// advanceMintedCQL is the first append after Mint, which left the
	// version cell null and minted at its version.
	advanceMintedCQL, _ = qb.Update("events").Set("version").
				Where(qb.Eq("aggregate_id")).If(qb.EqLit("version", "null"), qb.Eq("minted")).ToCql()
	readBackCQL, _ = qb.Select("events").Columns("event_id").
			Where(qb.Eq("aggregate_id"), qb.Eq("sequence")).ToCql()
)

// Append stores events atomically if the aggregate's version is expected.
// It returns a wrapped store.ErrConflict when the version differs (nothing
// is stored then), store.ErrClosed after Close, a wrapped ctx.Err() when ctx
// ended before anything was sent, and a plain error for invalid input (no
// events, a nil id, events of another aggregate, sequences other than
// expected+1…, a payload that is not JSON, text that is not UTF-8).
//
// Append returns only once the outcome is known. Once the transaction is
// sent, ctx no longer cuts it short (Config.Timeout bounds it): a request
// abandoned by the client may still run on the server later, and no read
// could tell then whether it will. A transaction that timed out is settled
// by reading the aggregate back (see settle). When that read cannot settle
// it, Append returns store.ErrOutcomeUnknown (never store.ErrConflict); the
// caller can then Load and look for its events.
//
// Before its transaction an append writes its aggregate to the index of
// touched aggregates (see touched.go), a plain write; when that fails the
// append fails, with nothing sent. On Cassandra an append that returned
// nil queues a hint for the feed's subscriptions (see hints.go); that
// never delays or fails the append.
//
// The cluster's failures (unavailable replicas, timeouts, no host) wrap
// store.ErrUnavailable, an outcome left open included, and make CheckWrite
// fail until an append succeeds again.
func (s *Store) Append(ctx context.Context, aggregateID uuid.UUID, expected int64, events []store.Event) error {
	err := s.append(ctx, aggregateID, expected, events)
	return s.appended(ctx, aggregateID, expected, events, err)
}

// appended follows an append or a mint that returned err: a success is
// hinted and handed off, and the cluster's failures are classified (and
// returned) as store.ErrUnavailable.
func (s *Store) appended(ctx context.Context, id uuid.UUID, expected int64, events []store.Event, err error) error {
	switch {
	case err == nil:
		s.health.OK()
		if s.hints != nil {
			s.hints.add(id, expected+int64(len(events)))
		}
		s.handOff(id, expected, events)
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrClosed), ctx.Err() != nil:
	default:
		if !errors.Is(err, store.ErrUnavailable) && unavailable(ctx, err) {
			err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
		if errors.Is(err, store.ErrUnavailable) {
			s.health.Fault("append", true, err)
		}
	}
	return err
}

func (s *Store) append(ctx context.Context, aggregateID uuid.UUID, expected int64, events []store.Event) error {
	rows, err := s.prepare(ctx, "append", aggregateID, expected, events)
	if err != nil {
		return err
	}

	// Reading the version and then writing the events, as the seed
	// tutorial does, races: two writers that both read version 5 both write
	// sequence 6, and since a write to an existing row is an overwrite
	// (last write wins), one event silently disappears while both writers
	// were told they succeeded. Instead the check and the writes are one
	// lightweight transaction: a batch on this one partition whose only
	// conditions are on its static cells. Paxos serialises it
	// against every other conditional write to the partition, and the
	// batch is atomic and isolated within the partition, so either the
	// version moves from expected to expected+n together with all n rows,
	// or nothing is written. The INSERTs carry no IF of their own: the
	// version (see versionIn) is always the highest sequence stored, so
	// rows above it do not exist.
	//
	// An aggregate that Mint created and nobody appended to since has no
	// version cell but minted, its version: the first append after it
	// checks both. Its writer knows that when it minted or loaded the
	// aggregate (see minted); when it does not, the usual check finds no
	// version, and the append is tried once more with the other one.
	next := expected + int64(len(events))
	at, mintedHere := s.minted.take(aggregateID)
	var applied bool
	var current map[string]any
	switch {
	case expected == 0:
		applied, current, err = s.cas(ctx, aggregateID, expected, events, rows, createCQL, next, aggregateID)
	case mintedHere && at == expected:
		applied, current, err = s.cas(ctx, aggregateID, expected, events, rows, advanceMintedCQL, next, aggregateID, expected)
	default:
		applied, current, err = s.cas(ctx, aggregateID, expected, events, rows, advanceCQL, next, aggregateID, expected)
		if err == nil && !applied && casVersion(current) == 0 && !(mintedHere && at != expected) {
			applied, current, err = s.cas(ctx, aggregateID, expected, events, rows, advanceMintedCQL, next, aggregateID, expected)
		}
	}
	switch {
	case err != nil:
		return err
	case !applied:
		found := "no aggregate"
		if v := casVersion(current); v > 0 {
			found = fmt.Sprintf("version %d", v)
		} else if m, _ := current["minted"].(int64); m > 0 {
			found = fmt.Sprintf("version %d, minted", m)
		}
		return fmt.Errorf("scylla: append %s: %w: expected version %d, found %s",
			aggregateID, store.ErrConflict, expected, found)
	}
	return nil
}

// prepare checks an append or a mint (op) of events at version expected
// and writes the aggregate's row in the index of touched aggregates. It
// returns the events' INSERT arguments, or an error when nothing was sent
// to the events table: invalid input, ctx ended, store.ErrClosed, or the
// index's write failed (a certain failure, which Append classifies).
//
// The index row comes first: an append that commits always has one, one
// that fails after it leaves an extra row the recent pass reads once.
func (s *Store) prepare(ctx context.Context, op string, id uuid.UUID, expected int64, events []store.Event) ([][]any, error) {
	if s.closed.Load() {
		return nil, store.ErrClosed
	}
	rows, err := insertArgs(id, expected, events)
	if err != nil {
		return nil, fmt.Errorf("scylla: %s %s: %w", op, id, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scylla: %s %s: %w", op, id, err)
	}
	if err := s.touch(ctx, id); err != nil {
		if s.closed.Load() || errors.Is(err, gocql.ErrSessionClosed) {
			return nil, fmt.Errorf("scylla: %s %s: %w", op, id, store.ErrClosed)
		}
		return nil, err
	}
	return rows, nil
}

// casVersion returns the version cell that a conditional batch that was
// not applied read, 0 for a null one (no version is 0).
func casVersion(current map[string]any) int64 {
	v, _ := current["version"].(int64)
	return v
}

// cas sends the conditional batch of an append: the statement cond with
// args, which holds the condition, then the INSERTs of rows. It returns
// whether the batch was applied and, when not, the cells the condition
// read. A batch that timed out is settled (see settle): a settled one was
// applied, and settle's other outcomes are its error.
func (s *Store) cas(ctx context.Context, id uuid.UUID, expected int64, events []store.Event, rows [][]any, cond string, args ...any) (bool, map[string]any, error) {
	b := s.sess.ContextBatch(context.WithoutCancel(ctx), gocql.LoggedBatch) // one partition: no batch log is written
	b.Query(cond, args...)
	for _, r := range rows {
		b.Query(insertCQL, r...)
	}
	b.SerialConsistency(s.cfg.SerialConsistency)
	// No retry by the driver: a retried transaction that had in fact been
	// applied would be refused (the version moved) and reported as a
	// conflict. Unknown outcomes are settled by settle instead.
	b.RetryPolicy(noRetry{})

	// The Map variant, because ScyllaDB answers a conditional batch with
	// all the table's columns, which the positional ExecuteBatchCAS cannot
	// scan; Cassandra answers with the condition's columns only.
	current := make(map[string]any)
	sent := time.Now()
	applied, iter, err := s.sess.MapExecuteBatchCAS(b, current)
	if iter != nil {
		if cerr := iter.Close(); err == nil {
			err = cerr
		}
	}
	switch {
	case err != nil && uncertain(err):
		if err := s.settle(ctx, id, expected, events[0].ID, sent, err); err != nil {
			return false, nil, err
		}
		return true, nil, nil
	case err != nil && (s.closed.Load() || errors.Is(err, gocql.ErrSessionClosed)):
		return false, nil, fmt.Errorf("scylla: append %s at version %d: %w", id, expected, store.ErrClosed)
	case err != nil: // Append wraps the cluster's failures
		return false, nil, fmt.Errorf("scylla: append %s at version %d: %w", id, expected, err)
	}
	return applied, current, nil
}

// settle finds out whether the transaction of an append whose answer was
// cause, a timeout, was applied: it was exactly if sequence expected+1 now
// holds the append's first event.
//
// The read runs at serial consistency, which makes it a Paxos round of its
// own: it completes a transaction that a quorum had accepted and pre-empts
// one that no quorum had, so the outcome it sees cannot change afterwards,
// provided the transaction is no longer running. When the server answered
// (a write timeout of type CAS, CAS_WRITE_UNKNOWN, …) its coordinator has
// given up on it, and an empty sequence means "not applied, ever": the
// storage failed the append (store.ErrUnavailable), and a retry may succeed.
//
// When the client gave up instead (no answer within Config.Timeout, a
// broken connection), the request may still be queued or running on the
// server: a stalled node (a long GC pause, a frozen process) runs it when it
// resumes, possibly after the read, which then sees nothing although the
// events land a moment later. So an empty sequence settles nothing then:
// the read waits until Config.Timeout has passed since the request was sent
// (by when a server that kept running has ended it), and if it still finds
// nothing the outcome stays open (store.ErrOutcomeUnknown), never a
// conflict. Events of another append at expected+1 are a conflict in
// either case: the version moved past expected, so ours can never apply.
//
// The read gets a deadline of its own, and a few tries, since under
// contention it may time out too.
func (s *Store) settle(ctx context.Context, id uuid.UUID, expected int64, first uuid.UUID, sent time.Time, cause error) error {
	s.settles.Add(1)
	unknown := func(why error) error {
		return fmt.Errorf("scylla: append %s at version %d: %w: %w (%v)", id, expected, store.ErrOutcomeUnknown, cause, why)
	}
	if s.closed.Load() { // Close broke the connection: no session to read with
		return unknown(store.ErrClosed)
	}
	_, serverGaveUp := serverCode(cause)
	if !serverGaveUp {
		time.Sleep(time.Until(sent.Add(s.cfg.Timeout)))
	}
	// One Timeout for all tries: with the wait above, an append that went
	// unanswered ends within 2 × Timeout.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
	defer cancel()
	var err error
	for try := range 3 {
		if try > 0 {
			time.Sleep(time.Duration(try) * 50 * time.Millisecond)
		}
		if s.closed.Load() {
			return unknown(store.ErrClosed)
		}
		var got uuid.UUID
		err = s.sess.Session.Query(readBackCQL, id, expected+1).WithContext(withSerialRead(ctx)).
			Consistency(s.cfg.SerialConsistency).Idempotent(true).Scan(&got)
		switch {
		case err == nil && got == first:
			s.log.Debug("append settled: applied", zap.Stringer("aggregate", id), zap.Error(cause))
			return nil
		case err == nil:
			return fmt.Errorf("scylla: append %s: %w: another append took version %d (ours: %v)",
				id, store.ErrConflict, expected+1, cause)
		case errors.Is(err, gocql.ErrNotFound) && serverGaveUp:
			// The version has not moved: nobody conflicts with us, the
			// cluster failed the transaction.
			return fmt.Errorf("scylla: append %s: %w: the transaction at version %d was not applied (%w)",
				id, store.ErrUnavailable, expected, cause)
		case errors.Is(err, gocql.ErrNotFound):
			return unknown(errors.New("not applied yet, but the request may still run"))
		case ctx.Err() != nil:
			return unknown(fmt.Errorf("reading it back: %w", err))
		}
	}
	return unknown(fmt.Errorf("reading it back: %w", err))
}

// uncertain reports whether a failed transaction may have been applied all
// the same: a server timeout or failure during Paxos or the commit (for an
// LWT, a write timeout of type CAS and CAS_WRITE_UNKNOWN above all), or a
// request that got no answer. Errors that the server returns before it
// starts (unavailable, overloaded, invalid, …) and requests that were never
// sent are certain failures.
func uncertain(err error) bool {
	if code, ok := serverCode(err); ok {
		switch code {
		case gocql.ErrCodeWriteTimeout, gocql.ErrCodeCASWriteUnknown, gocql.ErrCodeWriteFailure,
			gocql.ErrCodeReadTimeout, gocql.ErrCodeReadFailure, gocql.ErrCodeServer:
			return true
		}
		return false
	}
	switch {
	case errors.Is(err, gocql.ErrSessionClosed), errors.Is(err, gocql.ErrNoConnections),
		errors.Is(err, gocql.ErrHostDown), errors.Is(err, gocql.ErrNoPool),
		errors.Is(err, gocql.ErrNoConnectionsInPool):
		return false
	}
	return true // timeouts, a ctx that ended, a connection that broke
}

// noRetry is a retry policy that never retries.
type noRetry struct{}

func (noRetry) Attempt(gocql.RetryableQuery) bool  { return false }
func (noRetry) GetRetryType(error) gocql.RetryType { return gocql.Rethrow }

// insertArgs validates an append and returns the INSERT arguments of its
// events.
func insertArgs(id uuid.UUID, expected int64, events []store.Event) ([][]any, error) {
	if err := store.CheckAppend(id, expected, events); err != nil {
		return nil, err
	}
	rows := make([][]any, len(events))
	for i, e := range events {
		var meta any // null when empty: an empty map reads back as nil
		if len(e.Metadata) > 0 {
			meta = e.Metadata
		}
		rows[i] = []any{
			id, e.Sequence, e.ID, e.AggregateType, e.Type, e.SchemaVersion,
			string(e.Data), e.CausationID, e.CorrelationID, e.Timestamp.UnixMilli(), meta,
		}
	}
	return rows, nil
}
