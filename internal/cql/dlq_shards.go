package cql

import (
	"context"
	"fmt"

	"github.com/google/uuid"

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

// inLimit bounds the partition keys of one IN query: ScyllaDB refuses more
// than max_partition_key_restrictions_per_query (100 by default).
const inLimit = 64

// letterPartition is the partition of the dead letters of aggregate id.
func (l *Ledger) letterPartition(id uuid.UUID) string {
	return store.Shard{Index: shardOf(id, l.shards), Count: l.shards}.Lease(consumer)
}

// partitions lists every partition of dead letters, in shard order.
func (l *Ledger) partitions() []string {
	out := make([]string, l.shards)
	for i := range out {
		out[i] = store.Shard{Index: i, Count: l.shards}.Lease(consumer)
	}
	return out
}

// fencePartition is the partition whose epoch fences the writes made
// under f: its shard's. A fence of another shard count than the
// keyspace's (a whole relay on a split keyspace) has none.
func (l *Ledger) fencePartition(f store.Fence) (string, error) {
	count := max(1, f.Shard.Count)
	if count != l.shards || f.Shard.Index < 0 || f.Shard.Index >= count {
		return "", fmt.Errorf("the fence %s is of shard %d of %d; the keyspace's dead letters are in %d shards",
			f, f.Shard.Index, f.Shard.Count, l.shards)
	}
	return f.Shard.Lease(consumer), nil
}

// inChunks runs f on parts, at most inLimit at a time.
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
