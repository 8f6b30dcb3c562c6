package cql

import (
	"context"
	"fmt"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

const requestColumns = `position, id, op, requested_at, state, published, error, finished_at`

const (
	// A request row is made once per dead letter and then replaced only
	// by a request that saw the row's previous id and state, so two
	// instances asking at once agree on the one that is pending.
	requestNewCQL = `INSERT INTO relay_requests (consumer, ` + requestColumns + `, letter_partition)
		VALUES (?, ?, ?, ?, ?, ?, 0, '', null, ?) IF NOT EXISTS`
	requestAgainCQL = `UPDATE relay_requests SET id = ?, op = ?, requested_at = ?, state = ?, published = 0,
		error = '', finished_at = null, letter_partition = ? WHERE consumer = ? AND position = ? IF id = ? AND state = ?`
	finishCQL = `UPDATE relay_requests SET state = ?, published = ?, error = ?, finished_at = ?
		WHERE consumer = ? AND position = ? IF id = ? AND state = ?`
	requestAtCQL = `SELECT ` + requestColumns + `, letter_partition FROM relay_requests WHERE consumer = ? AND position = ?`
	requestsCQL  = `SELECT ` + requestColumns + `, letter_partition FROM relay_requests WHERE consumer = ?`
)

// Request queues q on the dead letter at q.Position unless a request is
// pending there, and returns the pending one. See relay.Ledger. The letter
// is looked up first, and the request names the partition of its shard,
// whose relay alone carries it out (Requests): a letter removed just after
// (published by a replay already under way) leaves a request that this
// relay finishes as relay.RequestMissing.
func (l *Ledger) Request(ctx context.Context, q relay.Request) (relay.Request, error) {
	if q.Op != relay.OpReplay && q.Op != relay.OpDiscard {
		return q, fmt.Errorf("scylla: ledger: request on %d: unknown op %q", q.Position, q.Op)
	}
	d, err := l.Get(ctx, q.Position)
	if err != nil {
		return q, err
	}
	part := l.letterPartition(d.AggregateID)
	q.State, q.Published, q.Error, q.FinishedAt = relay.RequestPending, 0, "", time.Time{}
	q.RequestedAt = q.RequestedAt.UTC().Truncate(time.Millisecond)
	// A few rounds: each lost race means another request changed the row,
	// which the next round sees.
	for range 5 {
		current := map[string]any{}
		applied, err := l.lwt(ctx, current, requestNewCQL, consumer, q.Position, gocqlUUID(q.ID), q.Op,
			q.RequestedAt, q.State, part)
		if err != nil {
			return q, fmt.Errorf("scylla: ledger: request on %d: %w", q.Position, err)
		}
		if applied {
			return q, nil
		}
		if state, _ := current["state"].(string); state == relay.RequestPending {
			return l.RequestAt(ctx, q.Position)
		}
		oldID, _ := current["id"].(gocql.UUID)
		oldState, _ := current["state"].(string)
		applied, err = l.lwt(ctx, nil, requestAgainCQL, gocqlUUID(q.ID), q.Op, q.RequestedAt, q.State, part,
			consumer, q.Position, oldID, oldState)
		if err != nil {
			return q, fmt.Errorf("scylla: ledger: request on %d: %w", q.Position, err)
		}
		if applied {
			return q, nil
		}
	}
	return q, fmt.Errorf("scylla: ledger: request on %d: the request row kept changing", q.Position)
}

// Requests returns the pending requests in position order. It reads the
// whole partition: requests are few, and expire a week after their last
// write. Under a fence of a shard (the relay of that shard) it returns only
// those it is to carry out: the requests that name its partition. So a
// request is carried out, and finished as missing when its letter is gone,
// only in the turn of the relay that removes the letters of its shard:
// never by another shard's relay that looks while a replay has removed the
// letter it published and not yet recorded the outcome.
//
// A request written before requests named a partition is its letter's
// shard's, found by looking, or, when no partition holds the letter any
// more, every relay's (which finishes it as missing; relays that race to
// finish one agree, Finish being conditional).
func (l *Ledger) Requests(ctx context.Context) ([]relay.Request, error) {
	all, err := l.scanRequests(ctx, requestsCQL, consumer)
	if err != nil {
		return nil, fmt.Errorf("scylla: ledger: requests: %w", err)
	}
	mine := func(requestRow) (bool, error) { return true, nil }
	if f, ok := store.FenceOf(ctx); ok && f.Shard.Count > 1 {
		p, err := l.fencePartition(f)
		if err != nil {
			return nil, fmt.Errorf("scylla: ledger: requests: %w", err)
		}
		mine = func(q requestRow) (bool, error) {
			if q.partition != "" {
				return q.partition == p, nil
			}
			at, err := l.locate(ctx, q.Position)
			return at == p || at == "", err
		}
	}
	var pending []relay.Request
	for _, q := range all {
		if q.State != relay.RequestPending {
			continue
		}
		switch ok, err := mine(q); {
		case err != nil:
			return nil, fmt.Errorf("scylla: ledger: requests: %w", err)
		case ok:
			pending = append(pending, q.Request)
		}
	}
	return pending, nil
}

// RequestAt returns the latest request on the dead letter at position, or
// an error wrapping relay.ErrNotFound.
func (l *Ledger) RequestAt(ctx context.Context, position int64) (relay.Request, error) {
	qs, err := l.scanRequests(ctx, requestAtCQL, consumer, position)
	if err != nil {
		return relay.Request{}, fmt.Errorf("scylla: ledger: request on %d: %w", position, err)
	}
	if len(qs) == 0 {
		return relay.Request{}, fmt.Errorf("scylla: ledger: request on %d: %w", position, relay.ErrNotFound)
	}
	return qs[0].Request, nil
}

// Finish records the outcome of the pending request q.ID; a no-op when it
// is not pending any more.
func (l *Ledger) Finish(ctx context.Context, q relay.Request) error {
	switch q.State {
	case relay.RequestDone, relay.RequestFailed, relay.RequestMissing:
	default:
		return fmt.Errorf("scylla: ledger: finish request on %d: state %q is not an outcome", q.Position, q.State)
	}
	// Fenced by a check on the dead letters' partition before the write
	// (the requests are in a table of their own): a holder whose lease
	// lapsed finishes nothing once its successor claimed the ledger.
	if err := l.checkFence(ctx, "finish a request"); err != nil {
		return fmt.Errorf("scylla: ledger: %w", err)
	}
	if _, err := l.lwt(ctx, nil, finishCQL, q.State, q.Published, q.Error, q.FinishedAt,
		consumer, q.Position, gocqlUUID(q.ID), relay.RequestPending); err != nil {
		return fmt.Errorf("scylla: ledger: finish request on %d: %w", q.Position, err)
	}
	return nil
}

// requestRow is a request as stored: with the partition of the dead
// letters whose relay carries it out, "" in a row written before requests
// named one.
type requestRow struct {
	relay.Request
	partition string
}

// scanRequests runs a query of requestColumns and letter_partition, and
// reads every row.
func (l *Ledger) scanRequests(ctx context.Context, stmt string, args ...any) ([]requestRow, error) {
	iter := l.query(ctx, stmt, args...).Iter()
	var out []requestRow
	for {
		var q requestRow
		var id gocql.UUID
		if !iter.Scan(&q.Position, &id, &q.Op, &q.RequestedAt, &q.State, &q.Published, &q.Error, &q.FinishedAt, &q.partition) {
			break
		}
		q.ID = uuid.UUID(id)
		q.RequestedAt, q.FinishedAt = utc(q.RequestedAt), utc(q.FinishedAt)
		out = append(out, q)
	}
	if err := iter.Close(); err != nil {
		return nil, err
	}
	return out, nil
}
