package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
)

// keepFinished is how long a finished request stays readable: its waiter
// gives up after 20 s, so a week only serves the curious.
const keepFinished = 7 * 24 * time.Hour

const requestSQL = `SELECT position, id, op, requested_at, state, published, error, finished_at FROM relay_requests`

// Request queues q on the dead letter at q.Position unless a request is
// pending there, and returns the pending one. See relay.Ledger.
func (l *Ledger) Request(ctx context.Context, q relay.Request) (_ relay.Request, err error) {
	if q.Op != relay.OpReplay && q.Op != relay.OpDiscard {
		return q, fmt.Errorf("sqlite: ledger: request on %d: unknown op %q", q.Position, q.Op)
	}
	tx, err := l.w.BeginTx(ctx, nil)
	if err != nil {
		return q, fmt.Errorf("sqlite: ledger: request on %d: %w", q.Position, asUnavailable(err))
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			err = fmt.Errorf("sqlite: ledger: request on %d: %w", q.Position, asUnavailable(err))
		}
	}()
	var one int
	switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM dead_letters WHERE position = ?`, q.Position).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return q, relay.ErrNotFound
	case err != nil:
		return q, err
	}
	pending, err := scanRequest(tx.QueryRowContext(ctx, requestSQL+` WHERE position = ? AND state = ?`,
		q.Position, relay.RequestPending))
	switch {
	case err == nil:
		return pending, tx.Commit()
	case !errors.Is(err, sql.ErrNoRows):
		return q, err
	}
	q.State, q.Published, q.Error, q.FinishedAt = relay.RequestPending, 0, "", time.Time{}
	if _, err := tx.ExecContext(ctx, `INSERT INTO relay_requests (position, id, op, requested_at, state)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (position) DO UPDATE SET id = excluded.id, op = excluded.op, requested_at = excluded.requested_at,
			state = excluded.state, published = 0, error = '', finished_at = ''`,
		q.Position, q.ID.String(), q.Op, formatTime(q.RequestedAt), q.State); err != nil {
		return q, err
	}
	q.RequestedAt = q.RequestedAt.UTC()
	return q, tx.Commit()
}

// Requests returns the pending requests in position order.
func (l *Ledger) Requests(ctx context.Context) ([]relay.Request, error) {
	rows, err := l.r.QueryContext(ctx, requestSQL+` WHERE state = ? ORDER BY position`, relay.RequestPending)
	if err != nil {
		return nil, fmt.Errorf("sqlite: ledger: requests: %w", asUnavailable(err))
	}
	defer rows.Close()
	var out []relay.Request
	for rows.Next() {
		q, err := scanRequest(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: ledger: requests: %w", asUnavailable(err))
		}
		out = append(out, q)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: ledger: requests: %w", asUnavailable(err))
	}
	return out, nil
}

// RequestAt returns the latest request on the dead letter at position, or
// an error wrapping relay.ErrNotFound.
func (l *Ledger) RequestAt(ctx context.Context, position int64) (relay.Request, error) {
	q, err := scanRequest(l.r.QueryRowContext(ctx, requestSQL+` WHERE position = ?`, position))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return q, fmt.Errorf("sqlite: ledger: request on %d: %w", position, relay.ErrNotFound)
	case err != nil:
		return q, fmt.Errorf("sqlite: ledger: request on %d: %w", position, asUnavailable(err))
	}
	return q, nil
}

// Finish records the outcome of the pending request q.ID, and forgets the
// requests finished more than a week ago. See relay.Ledger.
func (l *Ledger) Finish(ctx context.Context, q relay.Request) error {
	switch q.State {
	case relay.RequestDone, relay.RequestFailed, relay.RequestMissing:
	default:
		return fmt.Errorf("sqlite: ledger: finish request on %d: state %q is not an outcome", q.Position, q.State)
	}
	release, err := l.fences.hold(ctx, "finish a request")
	if err != nil {
		return fmt.Errorf("sqlite: ledger: %w", err)
	}
	defer release()
	if _, err := l.w.ExecContext(ctx, `UPDATE relay_requests SET state = ?, published = ?, error = ?, finished_at = ?
		WHERE position = ? AND id = ? AND state = ?`,
		q.State, q.Published, q.Error, formatTime(q.FinishedAt), q.Position, q.ID.String(), relay.RequestPending); err != nil {
		return fmt.Errorf("sqlite: ledger: finish request on %d: %w", q.Position, asUnavailable(err))
	}
	if _, err := l.w.ExecContext(ctx, `DELETE FROM relay_requests WHERE state != ? AND finished_at < ?`,
		relay.RequestPending, formatTime(q.FinishedAt.Add(-keepFinished))); err != nil {
		return fmt.Errorf("sqlite: ledger: prune finished requests: %w", asUnavailable(err))
	}
	return nil
}

// scanRequest reads one row of requestSQL.
func scanRequest(row interface{ Scan(...any) error }) (relay.Request, error) {
	var q relay.Request
	var id, requested, finished string
	if err := row.Scan(&q.Position, &id, &q.Op, &requested, &q.State, &q.Published, &q.Error, &finished); err != nil {
		return q, err
	}
	var errs [3]error
	q.ID, errs[0] = uuid.Parse(id)
	q.RequestedAt, errs[1] = parseTime(requested)
	if finished != "" {
		q.FinishedAt, errs[2] = parseTime(finished)
	}
	if err := errors.Join(errs[:]...); err != nil {
		return q, fmt.Errorf("request on %d: %w", q.Position, err)
	}
	return q, nil
}
