package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// EmailClaims is the store.EmailClaims of a data key store, in
// datakeys.db's table email_claims: beside the claim-hash secret, and
// copied by a backup after events.db (see backupFiles), so that a backup
// never holds an address's customer event without its claim.
//
// A Claim's insert and read run in one transaction of the data keys' one
// writer, committed with the batch it joins (one fsync for the batch):
// every Claim sees every Claim committed before it, so of two racing
// claims the later sees the earlier.
type EmailClaims struct{ d *DataKeys }

// Claims returns the e-mail claims kept in the data key store's file.
func (d *DataKeys) Claims() *EmailClaims { return &EmailClaims{d: d} }

// claimWrite is one Claim in a batch of the data keys' writer.
type claimWrite struct {
	key uuid.UUID
	row store.ClaimRow
}

// write inserts the row (a row already there is kept: the same attempt
// written again) and reads every row of the key.
func (c *claimWrite) write(ctx context.Context, tx *sql.Tx) ([]store.ClaimRow, error) {
	r := c.row
	if _, err := tx.ExecContext(ctx, `INSERT INTO email_claims (claim, attempt, customer, since, at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (claim, attempt) DO NOTHING`,
		c.key.String(), r.Attempt.String(), r.Customer.String(), r.Since, formatTime(r.At.Truncate(time.Millisecond))); err != nil {
		return nil, err
	}
	return claimRows(ctx, tx, c.key)
}

// Claim writes row under key and returns every row of key.
func (e *EmailClaims) Claim(ctx context.Context, key uuid.UUID, row store.ClaimRow) (_ []store.ClaimRow, err error) {
	d := e.d
	defer d.wrapErr(&err, true, "claim %s", key)
	c := keyCreate{claim: &claimWrite{key: key, row: row}, done: make(chan keyCreated, 1)}
	select {
	case d.creates <- c:
	case <-d.stop:
		return nil, store.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := <-c.done // the batch is bound to no caller's context: wait for it
	return r.rows, r.err
}

// Rows reads every row of key, as committed.
func (e *EmailClaims) Rows(ctx context.Context, key uuid.UUID) (_ []store.ClaimRow, err error) {
	if e.d.closed.Load() {
		return nil, store.ErrClosed
	}
	defer e.d.wrapErr(&err, false, "read the claims of %s", key)
	return claimRows(ctx, e.d.r, key)
}

// Drop deletes rows of key. SQLite's writes are not retried behind the
// caller's back, so a delete is all it takes.
func (e *EmailClaims) Drop(ctx context.Context, key uuid.UUID, rows ...store.ClaimRow) (err error) {
	d := e.d
	if d.closed.Load() {
		return store.ErrClosed
	}
	if len(rows) == 0 {
		return nil
	}
	defer d.wrapErr(&err, true, "drop claims of %s", key)
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, r := range rows {
		if _, err := tx.ExecContext(ctx, `DELETE FROM email_claims WHERE claim = ? AND attempt = ?`,
			key.String(), r.Attempt.String()); err != nil {
			return err
		}
	}
	return tx.Commit()
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
	d := e.d
	afterKey, afterAttempt := "", ""
	for {
		if d.closed.Load() {
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
	rows, err := e.d.r.QueryContext(ctx, `SELECT claim, attempt, customer, since, at FROM email_claims
		WHERE (claim, attempt) > (?, ?) ORDER BY claim, attempt LIMIT ?`, afterKey, afterAttempt, scanPage)
	if err != nil {
		return nil, nil, err
	}
	return readClaims(rows)
}

var _ store.EmailClaims = (*EmailClaims)(nil)
