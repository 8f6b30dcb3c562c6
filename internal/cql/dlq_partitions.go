package cql

import (
	"context"
	"fmt"
)

const (
	recordPartitionsCQL = `INSERT INTO relay_topic_partitions (consumer, topic, partitions)
		VALUES (?, ?, ?) IF NOT EXISTS`
	replacePartitionsCQL = `UPDATE relay_topic_partitions SET partitions = ?
		WHERE consumer = ? AND topic = ? IF EXISTS`
)

// RecordPartitions records n as topic's partition count unless one is
// recorded, in one lightweight transaction, and returns the count recorded
// now: instances racing at their first start agree on the first one. See
// relay.PartitionRecord.
func (l *Ledger) RecordPartitions(ctx context.Context, topic string, n int) (int, error) {
	if n < 1 {
		return 0, fmt.Errorf("scylla: ledger: record partitions of %s: %d is not 1 or more", topic, n)
	}
	current := map[string]any{}
	applied, err := l.lwt(ctx, current, recordPartitionsCQL, consumer, topic, n)
	if err != nil {
		return 0, fmt.Errorf("scylla: ledger: record partitions of %s: %w", topic, err)
	}
	if applied {
		return n, nil
	}
	recorded, ok := current["partitions"].(int)
	if !ok {
		return 0, fmt.Errorf("scylla: ledger: record partitions of %s: the recorded row has no count", topic)
	}
	return recorded, nil
}

// ReplacePartitions records n as topic's partition count in place of the
// recorded one, or records it when there is none. See
// relay.PartitionRecord.
func (l *Ledger) ReplacePartitions(ctx context.Context, topic string, n int) error {
	if n < 1 {
		return fmt.Errorf("scylla: ledger: replace partitions of %s: %d is not 1 or more", topic, n)
	}
	applied, err := l.lwt(ctx, nil, replacePartitionsCQL, n, consumer, topic)
	if err == nil && !applied {
		_, err = l.lwt(ctx, nil, recordPartitionsCQL, consumer, topic, n)
	}
	if err != nil {
		return fmt.Errorf("scylla: ledger: replace partitions of %s: %w", topic, err)
	}
	return nil
}
