package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// EmailClaims is the store.EmailClaims of an event store, in events.db's
// table email_claims, written by the event writer: a claim shares the
// group commit (and its fsync) of the appends it is batched with, and a
// backup copies the claims with the events they guard, at one point.
//
// A Claim's insert and read run in the writer's transaction: every Claim
// sees every Claim committed before it, so of two racing claims the later
// sees the earlier.
type EmailClaims struct{ s *Store }

// EmailClaims returns the e-mail claims kept in the event store's file.
func (s *Store) EmailClaims() *EmailClaims { return &EmailClaims{s: s} }

// claimReq is one Claim or Drop waiting for the event writer: a Drop when
// drop is set.
type claimReq struct {
	key  uuid.UUID
	row  store.ClaimRow
	drop []store.ClaimRow
	rows []store.ClaimRow // a Claim's answer
	done chan error       // buffered: the writer never blocks on a reply
}

// run writes the request in the writer's transaction.
func (r *claimReq) run(ctx context.Context, tx *sql.Tx) error {
	if r.drop != nil {
		for _, d := range r.drop {
			if _, err := tx.ExecContext(ctx, `DELETE FROM email_claims WHERE claim = ? AND attempt = ?`,
				r.key.String(), d.Attempt.String()); err != nil {
				return err
			}
		}
		return nil
	}
	// A row already there is kept: the same attempt written again.
	if _, err := tx.ExecContext(ctx, `INSERT INTO email_claims (claim, attempt, customer, since, at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (claim, attempt) DO NOTHING`,
		r.key.String(), r.row.Attempt.String(), r.row.Customer.String(), r.row.Since,
		formatTime(r.row.At.Truncate(time.Millisecond))); err != nil {
		return err
	}
	var err error
	r.rows, err = claimRows(ctx, tx, r.key)
	return err
}

// write hands r to the event writer and waits for its commit.
func (e *EmailClaims) write(ctx context.Context, r *claimReq) error {
	s := e.s
	if s.isClosed() {
		return store.ErrClosed
	}
	select {
	case s.claims <- r:
	case <-ctx.Done():
		return fmt.Errorf("sqlite: claim %s: %w", r.key, ctx.Err())
	case <-s.closing:
		return store.ErrClosed
	}
	return s.reply(r.done) // the batch is bound to no caller's context: wait for it
}

// Claim writes row under key and returns every row of key.
func (e *EmailClaims) Claim(ctx context.Context, key uuid.UUID, row store.ClaimRow) ([]store.ClaimRow, error) {
	r := &claimReq{key: key, row: row, done: make(chan error, 1)}
	if err := e.write(ctx, r); err != nil {
		return nil, err
	}
	return r.rows, nil
}

// Rows reads every row of key, as committed.
func (e *EmailClaims) Rows(ctx context.Context, key uuid.UUID) ([]store.ClaimRow, error) {
	s := e.s
	if s.isClosed() {
		return nil, store.ErrClosed
	}
	rows, err := claimRows(ctx, s.r, key)
	if err != nil {
		return nil, fmt.Errorf("sqlite: read the claims of %s: %w", key, s.closedOr(err))
	}
	return rows, nil
}

// Drop deletes rows of key. SQLite's writes are not retried behind the
// caller's back, so a delete is all it takes.
func (e *EmailClaims) Drop(ctx context.Context, key uuid.UUID, rows ...store.ClaimRow) error {
	if e.s.isClosed() {
		return store.ErrClosed
	}
	if len(rows) == 0 {
		return nil
	}
	return e.write(ctx, &claimReq{key: key, drop: rows, done: make(chan error, 1)})
}

// claimRows reads every row of key through q.
func claimRows(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, key uuid.UUID) ([]store.ClaimRow, error) {
	rows, err := q.QueryContext(ctx, `SELECT claim, attempt, customer, since, at FROM email_claims WHERE claim = ?`, key.String())
	if err != nil {
		return nil, err
	}
	_, out, err := readClaims(rows)
	return out, err
}

// readClaims reads rows of (claim, attempt, customer, since, at), and
// closes them.
func readClaims(rows *sql.Rows) (keys []uuid.UUID, out []store.ClaimRow, err error) {
	defer rows.Close()
	for rows.Next() {
		var claim, attempt, customer, at string
		var r store.ClaimRow
		if err := rows.Scan(&claim, &attempt, &customer, &r.Since, &at); err != nil {
			return nil, nil, err
		}
		key, err := uuid.Parse(claim)
		if err != nil {
			return nil, nil, err
		}
		if r.Attempt, err = uuid.Parse(attempt); err != nil {
			return nil, nil, err
		}
		if r.Customer, err = uuid.Parse(customer); err != nil {
			return nil, nil, err
		}
		if r.At, err = parseTime(at); err != nil {
			return nil, nil, err
		}
		keys, out = append(keys, key), append(out, r)
	}
	return keys, out, rows.Err()
}

// Scan calls fn with every row, a page at a time.
func (e *EmailClaims) Scan(ctx context.Context, fn func(key uuid.UUID, row store.ClaimRow) error) error {
	afterKey, afterAttempt := "", ""
	for {
		if e.s.isClosed() {
			return store.ErrClosed
		}
		keys, page, err := e.scanPage(ctx, afterKey, afterAttempt)
		if err != nil {
			return fmt.Errorf("sqlite: scan claims: %w", err)
		}
		for i, r := range page {
			if err := fn(keys[i], r); err != nil {
				return err
			}
		}
		if len(page) < scanPage {
			return nil
		}
		afterKey, afterAttempt = keys[len(page)-1].String(), page[len(page)-1].Attempt.String()
	}
}

func (e *EmailClaims) scanPage(ctx context.Context, afterKey, afterAttempt string) ([]uuid.UUID, []store.ClaimRow, error) {
	rows, err := e.s.r.QueryContext(ctx, `SELECT claim, attempt, customer, since, at FROM email_claims
		WHERE (claim, attempt) > (?, ?) ORDER BY claim, attempt LIMIT ?`, afterKey, afterAttempt, scanPage)
	if err != nil {
		return nil, nil, err
	}
	return readClaims(rows)
}

var _ store.EmailClaims = (*EmailClaims)(nil)
