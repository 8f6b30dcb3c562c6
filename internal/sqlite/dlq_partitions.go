package sqlite

import (
	"context"
	"fmt"
)

// RecordPartitions records n as topic's partition count unless one is
// recorded, and returns the count recorded now. See relay.PartitionRecord.
func (l *Ledger) RecordPartitions(ctx context.Context, topic string, n int) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("sqlite: ledger: record partitions of %s: %d is not 1 or more", topic, n)
	}
	if _, err := l.w.ExecContext(ctx, `INSERT INTO relay_topic_partitions (topic, partitions) VALUES (?, ?)
		ON CONFLICT (topic) DO NOTHING`, topic, n); err != nil {
		return 0, fmt.Errorf("sqlite: ledger: record partitions of %s: %w", topic, asUnavailable(err))
	}
	// The writer connection, so that the row just written (or kept) is
	// what is read.
	var recorded int
	if err := l.w.QueryRowContext(ctx, `SELECT partitions FROM relay_topic_partitions WHERE topic = ?`,
		topic).Scan(&recorded); err != nil {
		return 0, fmt.Errorf("sqlite: ledger: read partitions of %s: %w", topic, asUnavailable(err))
	}
	return recorded, nil
}

// ReplacePartitions records n as topic's partition count in place of the
// recorded one. See relay.PartitionRecord.
func (l *Ledger) ReplacePartitions(ctx context.Context, topic string, n int) error {
	if n < 1 {
		return fmt.Errorf("sqlite: ledger: replace partitions of %s: %d is not 1 or more", topic, n)
	}
	if _, err := l.w.ExecContext(ctx, `INSERT INTO relay_topic_partitions (topic, partitions) VALUES (?, ?)
		ON CONFLICT (topic) DO UPDATE SET partitions = excluded.partitions`, topic, n); err != nil {
		return fmt.Errorf("sqlite: ledger: replace partitions of %s: %w", topic, asUnavailable(err))
	}
	return nil
}
