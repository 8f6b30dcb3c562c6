package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

const selectEventsSQL = `SELECT position, event_id, aggregate_id, aggregate_type, sequence,
	event_type, event_version, data, causation_id, correlation_id, timestamp, metadata
	FROM events`

// Load returns the aggregate's events with a sequence above after, in
// sequence order, upcast. An unknown aggregate yields no events and no
// error. It returns store.ErrClosed after Close.
func (s *Store) Load(ctx context.Context, aggregateID uuid.UUID, after int64) ([]store.Event, error) {
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	evs, err := s.query(ctx, s.loadQ, aggregateID.String(), after)
	if err != nil {
		return nil, fmt.Errorf("sqlite: load %s: %w", aggregateID, err)
	}
	return evs, nil
}

// LoadPage returns at most limit of the aggregate's events with a
// sequence above after, in sequence order, upcast: a range scan of the
// UNIQUE (aggregate_id, sequence) index that stops after limit rows. It
// returns store.ErrClosed after Close.
func (s *Store) LoadPage(ctx context.Context, aggregateID uuid.UUID, after int64, limit int) ([]store.Event, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: load page of %s: limit %d, want > 0", aggregateID, limit)
	}
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	evs, err := s.query(ctx, s.loadPageQ, aggregateID.String(), after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: load page of %s after %d: %w", aggregateID, after, err)
	}
	return evs, nil
}

// versionSQL reads the last row of one aggregate: one step down the
// UNIQUE (aggregate_id, sequence) index, whatever the history's length.
const versionSQL = `SELECT aggregate_type, sequence FROM events
	WHERE aggregate_id = ? ORDER BY sequence DESC LIMIT 1`

// Version returns the type and the sequence of the aggregate's last event,
// "" and 0 for an unknown aggregate. It returns store.ErrClosed after Close.
func (s *Store) Version(ctx context.Context, aggregateID uuid.UUID) (string, int64, error) {
	if s.isClosed() {
		return "", 0, store.ErrClosed
	}
	var (
		aggType string
		seq     int64
	)
	err := s.versionQ.QueryRowContext(ctx, aggregateID.String()).Scan(&aggType, &seq)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", 0, nil
	case err != nil:
		return "", 0, fmt.Errorf("sqlite: version of %s: %w", aggregateID, s.closedOr(err))
	}
	return aggType, seq, nil
}

// ReadFeed returns up to limit events with a position above after, in
// position order, upcast. When there are none it blocks until a commit of
// this Store adds some, ctx ends (it returns ctx.Err()) or the store is
// closed (store.ErrClosed).
//
// Positions are assigned in commit order, so a reader can never see position
// n+1 before n: SQLite admits one write transaction at a time, the writer
// allocates positions inside its transaction above every position committed
// before it (AUTOINCREMENT), and a WAL reader's snapshot holds exactly the
// transactions committed before the snapshot was taken, a prefix of the
// commit order. A checkpoint "after n" therefore never skips an event.
func (s *Store) ReadFeed(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("sqlite: read feed: limit %d, want > 0", limit)
	}
	for {
		if s.isClosed() {
			return nil, store.ErrClosed
		}
		wake := s.wakeChan() // before the query, so no commit goes unnoticed
		evs, err := s.feed(ctx, after, limit)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("sqlite: read feed after %d: %w", after, err)
		}
		if len(evs) > 0 {
			return evs, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closing:
			return nil, store.ErrClosed
		}
	}
}

// feed returns up to limit events with a position above after: from the
// tail in memory when it holds them, else from the log.
func (s *Store) feed(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	if evs, ok := s.tail.after(after, limit); ok {
		return evs, nil
	}
	return s.query(ctx, s.feedQ, after, limit)
}

// Head returns the newest committed position, 0 for an empty store, or
// store.ErrClosed after Close.
func (s *Store) Head(ctx context.Context) (int64, error) {
	if s.isClosed() {
		return 0, store.ErrClosed
	}
	var pos int64
	if err := s.headQ.QueryRowContext(ctx).Scan(&pos); err != nil {
		return 0, fmt.Errorf("sqlite: head: %w", s.closedOr(err))
	}
	return pos, nil
}

// closedOr reports store.ErrClosed for a query that failed because Close
// ran meanwhile, err wrapping store.ErrUnavailable for a read that failed
// for the disk (counted, but no sign that writes fail), and err otherwise.
func (s *Store) closedOr(err error) error {
	if s.isClosed() {
		return store.ErrClosed
	}
	return s.fault("read", false, err)
}

func (s *Store) query(ctx context.Context, q *sql.Stmt, args ...any) (evs []store.Event, err error) {
	rows, err := q.QueryContext(ctx, args...)
	if err != nil {
		return nil, s.closedOr(err)
	}
	defer func() {
		if cerr := rows.Close(); cerr != nil && err == nil {
			err = s.closedOr(cerr)
		}
	}()
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		if s.up != nil {
			if e, err = s.up.Upcast(e); err != nil {
				return nil, err // already says which event
			}
		}
		evs = append(evs, e)
	}
	if err := rows.Err(); err != nil {
		return nil, s.closedOr(err)
	}
	return evs, nil
}

func scanEvent(rows *sql.Rows) (store.Event, error) {
	var (
		e                          store.Event
		id, agg, causation, correl string
		data                       []byte
		nanos                      int64
		meta                       sql.NullString
	)
	if err := rows.Scan(&e.Position, &id, &agg, &e.AggregateType, &e.Sequence,
		&e.Type, &e.SchemaVersion, &data, &causation, &correl, &nanos, &meta); err != nil {
		return e, fmt.Errorf("scan: %w", err)
	}
	var errs [4]error
	e.ID, errs[0] = uuid.Parse(id)
	e.AggregateID, errs[1] = uuid.Parse(agg)
	e.CausationID, errs[2] = uuid.Parse(causation)
	e.CorrelationID, errs[3] = uuid.Parse(correl)
	if err := errors.Join(errs[:]...); err != nil {
		return e, fmt.Errorf("event at position %d: %w", e.Position, err)
	}
	e.Data = json.RawMessage(data)
	e.Timestamp = time.Unix(0, nanos).UTC()
	if meta.Valid {
		if err := json.Unmarshal([]byte(meta.String), &e.Metadata); err != nil {
			return e, fmt.Errorf("event %s: metadata: %w", e.ID, err)
		}
	}
	return e, nil
}
