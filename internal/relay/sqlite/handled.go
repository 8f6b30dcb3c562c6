package sqlite

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Handled returns the highest sequence handled of each of ids that has one.
func (l *Ledger) Handled(ctx context.Context, ids []uuid.UUID) (map[uuid.UUID]int64, error) {
	out := make(map[uuid.UUID]int64, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id.String()
	}
	rows, err := l.r.QueryContext(ctx, `SELECT aggregate_id, sequence FROM handled WHERE aggregate_id IN (?`+
		strings.Repeat(`, ?`, len(ids)-1)+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("relay/sqlite: handled: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, fmt.Errorf("relay/sqlite: handled: %w", err)
		}
		u, err := uuid.Parse(id)
		if err != nil {
			return nil, fmt.Errorf("relay/sqlite: handled: %w", err)
		}
		out[u] = seq
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("relay/sqlite: handled: %w", err)
	}
	return out, nil
}

// MarkHandled raises the handled sequences to seqs, in one transaction; a
// sequence never goes down.
func (l *Ledger) MarkHandled(ctx context.Context, seqs map[uuid.UUID]int64) (err error) {
	if len(seqs) == 0 {
		return nil
	}
	tx, err := l.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("relay/sqlite: mark handled: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
			err = fmt.Errorf("relay/sqlite: mark handled: %w", err)
		}
	}()
	for id, seq := range seqs {
		if _, err := tx.ExecContext(ctx, `INSERT INTO handled (aggregate_id, sequence) VALUES (?, ?)
			ON CONFLICT (aggregate_id) DO UPDATE SET sequence = max(sequence, excluded.sequence)`, id.String(), seq); err != nil {
			return err
		}
	}
	return tx.Commit()
}
