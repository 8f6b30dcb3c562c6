package store

import "fmt"

// Shard is one part of the aggregate-id space, Index in [0, Count). The
// engine fixes Count (Sharded.Shards); an aggregate belongs to exactly
// one shard of it. Whole is the one shard of an engine that is not split.
type Shard struct{ Index, Count int }

// Whole is the shard of everything.
var Whole = Shard{Index: 0, Count: 1}

// Lease returns the name of the lease a worker of consumer holds to act on
// s: consumer itself for Whole (so an unsplit engine keeps its lease names),
// else consumer/IIII (e.g. "projector/0007").
func (s Shard) Lease(consumer string) string {
	if s.Count <= 1 {
		return consumer
	}
	return fmt.Sprintf("%s/%04d", consumer, s.Index)
}

// Sharded is an engine whose feed is split into shards.
type Sharded interface {
	// Shards returns how many shards the engine's aggregate-id space is
	// split into: 1 on SQLite; on CQL the number fixed when the keyspace
	// was created.
	Shards() int
}
