package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
)

const selectLettersSQL = `SELECT position, event_id, aggregate_id, aggregate_type, sequence, event_type,
	topic, state, error, attempts, first_failed_at, last_failed_at FROM dead_letters`

// Blocked returns the aggregates that have dead letters, failed or parked,
// each with the lowest sequence among its letters. The relay parks the
// aggregate's events from that sequence on.
func (l *Ledger) Blocked(ctx context.Context) (map[uuid.UUID]int64, error) {
	// Under a fence, a holder whose lease was taken reads nothing: it must
	// stop, as its writes would be refused.
	release, err := l.fences.hold(ctx, "read the blocked set")
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: %w", err)
	}
	release()
	rows, err := l.r.QueryContext(ctx, `SELECT aggregate_id, min(sequence) FROM dead_letters GROUP BY aggregate_id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: blocked: %w", asUnavailable(err))
	}
	defer rows.Close()
	blocked := map[uuid.UUID]int64{}
	for rows.Next() {
		var s string
		var seq int64
		if err := rows.Scan(&s, &seq); err != nil {
			return nil, fmt.Errorf("sqlite: ledger: blocked: %w", asUnavailable(err))
		}
		id, err := uuid.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("sqlite: ledger: blocked: bad aggregate id %q: %w", s, asUnavailable(err))
		}
		blocked[id] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ledger: blocked: %w", asUnavailable(err))
	}
	return blocked, nil
}

// List returns up to limit dead letters with a position greater than after,
// in position order. limit must be at least 1.
func (l *Ledger) List(ctx context.Context, after int64, limit int) ([]relay.DeadLetter, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: ledger: list: limit %d, want 1 or more", limit)
	}
	ls, err := l.query(ctx, selectLettersSQL+` WHERE position > ? ORDER BY position LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: list after %d: %w", after, asUnavailable(err))
	}
	return ls, nil
}

// Get returns the dead letter at position, or an error wrapping
// relay.ErrNotFound.
func (l *Ledger) Get(ctx context.Context, position int64) (relay.DeadLetter, error) {
	ls, err := l.query(ctx, selectLettersSQL+` WHERE position = ?`, position)
	if err != nil {
		return relay.DeadLetter{}, fmt.Errorf("sqlite: ledger: get %d: %w", position, asUnavailable(err))
	}
	if len(ls) == 0 {
		return relay.DeadLetter{}, fmt.Errorf("sqlite: ledger: get %d: %w", position, relay.ErrNotFound)
	}
	return ls[0], nil
}

// OfAggregate returns the aggregate's dead letters in sequence order; none
// (and no error) for an aggregate that has none.
func (l *Ledger) OfAggregate(ctx context.Context, aggregateID uuid.UUID) ([]relay.DeadLetter, error) {
	ls, err := l.query(ctx, selectLettersSQL+` WHERE aggregate_id = ? ORDER BY sequence`, aggregateID.String())
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: dead letters of %s: %w", aggregateID, asUnavailable(err))
	}
	return ls, nil
}

// Update stores d's State, Error, Attempts and LastFailedAt for the dead
// letter at d.Position. What identifies the event (ids, sequence, type,
// topic) and FirstFailedAt stay as first recorded: they are history, not
// state. It returns an error wrapping relay.ErrNotFound when there is no
// such letter, and an error for a state other than relay.Failed or
// relay.Parked.
func (l *Ledger) Update(ctx context.Context, d relay.DeadLetter) error {
	if err := d.Check(); err != nil {
		return fmt.Errorf("sqlite: ledger: update: %w", asUnavailable(err))
	}
	release, err := l.fences.hold(ctx, "update a dead letter")
	if err != nil {
		return fmt.Errorf("sqlite: ledger: %w", err)
	}
	defer release()
	res, err := l.w.ExecContext(ctx, `UPDATE dead_letters SET state = ?, error = ?, attempts = ?, last_failed_at = ?
		WHERE position = ?`, d.State, d.Error, d.Attempts, formatTime(d.LastFailedAt), d.Position)
	if err != nil {
		return fmt.Errorf("sqlite: ledger: update %d: %w", d.Position, asUnavailable(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlite: ledger: update %d: %w", d.Position, asUnavailable(err))
	}
	if n == 0 {
		return fmt.Errorf("sqlite: ledger: update %d: %w", d.Position, relay.ErrNotFound)
	}
	return nil
}

// Remove deletes the dead letters at positions, all or none. Unknown
// positions are ignored, so removing again after a crash is harmless.
func (l *Ledger) Remove(ctx context.Context, positions ...int64) error {
	if len(positions) == 0 {
		return nil
	}
	args := make([]any, len(positions))
	for i, p := range positions {
		args[i] = p
	}
	// One statement is one transaction: the positions go together or not at
	// all. (The relay removes a replayed letter as soon as Kafka took it, one
	// at a time, so a crash in a replay republishes at most one.)
	release, err := l.fences.hold(ctx, "remove dead letters")
	if err != nil {
		return fmt.Errorf("sqlite: ledger: %w", err)
	}
	defer release()
	q := `DELETE FROM dead_letters WHERE position IN (?` + strings.Repeat(`, ?`, len(positions)-1) + `)`
	if _, err := l.w.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("sqlite: ledger: remove %v: %w", positions, asUnavailable(err))
	}
	return nil
}

// Count returns the number of dead letters by state. relay.Failed and
// relay.Parked are always present, zero when there are none, so that a
// metric or a status line need not special-case an empty ledger.
func (l *Ledger) Count(ctx context.Context) (map[string]int, error) {
	rows, err := l.r.QueryContext(ctx, `SELECT state, count(*) FROM dead_letters GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: count: %w", asUnavailable(err))
	}
	defer rows.Close()
	counts := map[string]int{relay.Failed: 0, relay.Parked: 0}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			return nil, fmt.Errorf("sqlite: ledger: count: %w", asUnavailable(err))
		}
		counts[state] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ledger: count: %w", asUnavailable(err))
	}
	return counts, nil
}

func (l *Ledger) query(ctx context.Context, q string, args ...any) ([]relay.DeadLetter, error) {
	rows, err := l.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []relay.DeadLetter
	for rows.Next() {
		d, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

func scan(rows *sql.Rows) (relay.DeadLetter, error) {
	var d relay.DeadLetter
	var eventID, aggID, first, last string
	if err := rows.Scan(&d.Position, &eventID, &aggID, &d.AggregateType, &d.Sequence, &d.EventType,
		&d.Topic, &d.State, &d.Error, &d.Attempts, &first, &last); err != nil {
		return d, err
	}
	var errs [4]error
	d.EventID, errs[0] = uuid.Parse(eventID)
	d.AggregateID, errs[1] = uuid.Parse(aggID)
	d.FirstFailedAt, errs[2] = parseTime(first)
	d.LastFailedAt, errs[3] = parseTime(last)
	if err := errors.Join(errs[:]...); err != nil {
		return d, fmt.Errorf("dead letter %d: %w", d.Position, err)
	}
	return d, nil
}
