package sqlite

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// appendReq is one Append waiting for the writer goroutine.
type appendReq struct {
	ctx      context.Context
	id       uuid.UUID
	expected int64
	rows     [][]any    // insert arguments, one slice per event
	done     chan error // buffered: the writer never blocks on a reply

	events    []store.Event // as handed to Append, for the feed's tail
	positions []int64       // the positions the inserts were given

	// The record of the idempotency key of the command, written into the
	// journal with the events (see keyJournal); nil when none.
	claim              []any
	claimKey, claimRec string
}

// Append stores events atomically if the aggregate's version is expected.
// It returns a wrapped store.ErrConflict when the version differs, a wrapped
// ctx.Err() when ctx ends before the events are written, store.ErrClosed
// after Close, and a plain error for invalid input (no events, a nil id,
// events of another aggregate, sequences other than expected+1…, a payload
// that is not JSON).
//
// Append returns only once the outcome is known: after its transaction
// committed, or failed. A ctx that ends after the events were written into a
// batch does not cut that wait short, so a nil error always means durable.
func (s *Store) Append(ctx context.Context, aggregateID uuid.UUID, expected int64, events []store.Event) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	rows, err := encode(aggregateID, expected, events)
	if err != nil {
		return fmt.Errorf("sqlite: append %s: %w", aggregateID, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlite: append %s: %w", aggregateID, err)
	}
	r := &appendReq{ctx: ctx, id: aggregateID, expected: expected, rows: rows, done: make(chan error, 1),
		events: events, positions: make([]int64, len(events))}
	r.claim, r.claimKey, r.claimRec = s.journal.of(events)
	select {
	case s.reqs <- r:
		s.accepted.Add(1)
	case <-ctx.Done():
		return fmt.Errorf("sqlite: append %s: %w", aggregateID, ctx.Err())
	case <-s.closing:
		return store.ErrClosed
	}
	return s.reply(r.done)
}

// reply waits for the writer's answer to a request it was handed.
func (s *Store) reply(done <-chan error) error {
	select {
	case err := <-done:
		return err
	case <-s.stopped:
		// The request may have slipped into the queue as Close drained it.
		// The writer replies before it stops, so a reply, if any, is there.
		select {
		case err := <-done:
			return err
		default:
			return store.ErrClosed
		}
	}
}

// encode validates an append and turns its events into insert arguments,
// outside the writer goroutine so that concurrent callers do this work in
// parallel.
func encode(id uuid.UUID, expected int64, events []store.Event) ([][]any, error) {
	if err := store.CheckAppend(id, expected, events); err != nil {
		return nil, err
	}
	rows := make([][]any, len(events))
	for i, e := range events {
		var meta any // NULL when empty: an empty map reads back as nil
		if len(e.Metadata) > 0 {
			b, err := json.Marshal(e.Metadata)
			if err != nil {
				return nil, fmt.Errorf("event %d: metadata: %w", i, err)
			}
			meta = string(b)
		}
		var ids [4]string
		uuidTexts(ids[:], e.ID, id, e.CausationID, e.CorrelationID)
		rows[i] = []any{
			ids[0], ids[1], e.AggregateType, e.Sequence,
			e.Type, e.SchemaVersion, string(e.Data),
			ids[2], ids[3],
			e.Timestamp.UnixNano(), meta,
		}
	}
	return rows, nil
}

// Mint is Append at version 0: the check that the aggregate is new costs
// nothing in the writer's transaction, so it stays.
func (s *Store) Mint(ctx context.Context, aggregateID uuid.UUID, events []store.Event) error {
	return s.Append(ctx, aggregateID, 0, events)
}
