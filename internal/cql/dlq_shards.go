package cql

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// The ledger's dead letters are scoped per shard (issue 17): the letters
// of a shard's aggregates live in a partition of relay_dead_letters of
// their own, named as the shard's lease (relay/0007; relay for a keyspace
// of one shard), with the static epoch of that shard's relay. So the relay
// of each shard claims, fences and reads its own partition, and relays of
// different shards never fence each other, while the operators' reads
// (List, Get, Count) span every partition and a request on a letter is
// carried out by the relay of the letter's shard (Requests).
//
// A relay of the whole keyspace (a fence without a shard) on a keyspace of
// several shards keeps its letters in the partition relay, which every
// read spans too; the relay of a shard that claims its partition later
// moves its shard's letters from there into its own (adopt), so that a
// keyspace can go from one whole relay to relays per shard.

// inLimit bounds the partition keys of one IN query: ScyllaDB refuses more
// than max_partition_key_restrictions_per_query (100 by default).
const inLimit = 64

// letterPartition is the partition of the dead letters of aggregate id.
func (l *Ledger) letterPartition(id uuid.UUID) string {
	return store.Shard{Index: shardOf(id, l.shards), Count: l.shards}.Lease(consumer)
}

// partitions lists every partition of dead letters: the whole relay's,
// then the shards' in order.
func (l *Ledger) partitions() []string {
	out := []string{consumer}
	if l.shards > 1 {
		for i := range l.shards {
			out = append(out, store.Shard{Index: i, Count: l.shards}.Lease(consumer))
		}
	}
	return out
}

// fencePartition is the partition whose epoch fences the writes made
// under f: its shard's, or the whole relay's for a fence without a shard.
// A fence of a shard of another count than the keyspace's has none.
func (l *Ledger) fencePartition(f store.Fence) (string, error) {
	if f.Shard.Count <= 1 {
		return consumer, nil
	}
	if f.Shard.Count != l.shards || f.Shard.Index < 0 || f.Shard.Index >= f.Shard.Count {
		return "", fmt.Errorf("the fence %s is of shard %d of %d; the keyspace's dead letters are in %d shards",
			f, f.Shard.Index, f.Shard.Count, l.shards)
	}
	return f.Shard.Lease(consumer), nil
}

// inChunks runs f on parts (partition keys for an IN), at most inLimit at
// a time.
func inChunks(parts []string, f func([]string) error) error {
	for lo := 0; lo < len(parts); lo += inLimit {
		if err := f(parts[lo:min(lo+inLimit, len(parts))]); err != nil {
			return err
		}
	}
	return nil
}

// locateCQL finds which partition holds a position.
const locateCQL = `SELECT consumer FROM relay_dead_letters WHERE consumer IN ? AND position = ?`

// locate returns the partition that holds the letter at position, "" when
// none does.
func (l *Ledger) locate(ctx context.Context, position int64) (string, error) {
	var found string
	err := inChunks(l.partitions(), func(parts []string) error {
		if found != "" {
			return nil
		}
		iter := l.query(ctx, locateCQL, parts, position).Iter()
		var p string
		for iter.Scan(&p) {
			found = p
		}
		return iter.Close()
	})
	return found, err
}

// adopt moves into partition p, under f (the fence of p's shard, claimed
// already), the letters of p's shard that a whole relay left in its own
// partition: one fenced batch that records them in p, then the removal of
// each from the whole relay's partition, each a lightweight transaction.
// A crash in between leaves a letter in both, which the next claim moves
// again; meanwhile both copies block the aggregate alike.
func (l *Ledger) adopt(ctx context.Context, f store.Fence, p string) error {
	if p == consumer {
		return nil
	}
	left, err := l.scanQuery(l.query(ctx, allCQL, consumer).Consistency(leaseSerial))
	if err != nil {
		return fmt.Errorf("read the whole relay's letters: %w", err)
	}
	var mine []relay.DeadLetter
	for _, d := range left {
		if l.letterPartition(d.AggregateID) == p {
			mine = append(mine, d)
		}
	}
	if len(mine) == 0 {
		return nil
	}
	if err := l.recordFenced(ctx, f, mine); err != nil {
		return err
	}
	for _, d := range mine {
		if _, err := l.lwt(ctx, nil, removeCQL, consumer, d.Position); err != nil {
			return fmt.Errorf("move letter %d: %w", d.Position, err)
		}
	}
	l.log.Info("moved the dead letters of a shard from the whole relay's partition", zap.String("partition", p), zap.Int("letters", len(mine)))
	return nil
}
