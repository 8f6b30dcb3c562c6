package cql

import (
	"context"
	"errors"
	"fmt"
	"math/bits"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"github.com/scylladb/gocqlx/v3"
	gmigrate "github.com/scylladb/gocqlx/v3/migrate"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// Shards (issue 17): the aggregate-id space of a keyspace is split into a
// power of two of shards, fixed when the keyspace is created (the settings
// table, migration 0230). A shard is a contiguous slice of the Murmur3
// token ring, the top log2(count) bits of an aggregate's token, so that
//   - with 64 shards a shard is exactly one shard of the index of touched
//     aggregates (touchShards), and with fewer a whole number of them,
//   - the full sweep of a shard is one token range (tokenRangeOf),
//   - an aggregate's shard is the same whichever instance computes it.
const (
	// DefaultShards is the shard count of a keyspace created without
	// Config.Shards: the index's shard count.
	DefaultShards = touchShards
	// MaxShards bounds Config.Shards: every worker shard holds a lease and
	// a subscription, and their fixed costs grow with the count.
	MaxShards = 256
)

const (
	shardsSetCQL  = `INSERT INTO settings (name, value) VALUES ('shards', ?) IF NOT EXISTS`
	shardsReadCQL = `SELECT value FROM settings WHERE name = 'shards'`
	anyEventCQL   = `SELECT aggregate_id FROM events LIMIT 1`
)

// validShards reports whether n is a shard count a keyspace may have.
func validShards(n int) bool { return n >= 1 && n <= MaxShards && n&(n-1) == 0 }

// shardOfToken returns the shard of count (a power of two) that token t
// falls in: its top log2(count) bits, the ring read from MinInt64 up.
func shardOfToken(t int64, count int) int {
	if count <= 1 {
		return 0
	}
	return int((uint64(t) ^ 1<<63) >> (64 - bits.TrailingZeros(uint(count))))
}

// shardOf returns the shard of count that aggregate id belongs to.
func shardOf(id uuid.UUID, count int) int { return shardOfToken(token(id), count) }

// tokenRangeOf returns the token range (lo, hi] of shard index of count.
// The first shard's lo is MinInt64, which no key has.
func tokenRangeOf(index, count int) tokenRange {
	if count <= 1 {
		return tokenRange{minToken, maxToken}
	}
	shift := 64 - bits.TrailingZeros(uint(count))
	first := uint64(index) << shift        // the shard's first unsigned position
	last := first + (uint64(1)<<shift - 1) // its last
	lo := int64((first ^ 1<<63) - 1)       // the token before its first
	if index == 0 {
		lo = minToken
	}
	return tokenRange{lo, int64(last ^ 1<<63)}
}

// fixShards is the callback of migration 0230: it records the keyspace's
// shard count, once. A keyspace that already holds events keeps 1: its
// feed's sweep cursors, lag and dead letters are kept under the unsplit
// names, which a split would leave behind.
func (env *schemaEnv) fixShards(ctx context.Context, sess gocqlx.Session, _ gmigrate.CallbackEvent, _ string) error {
	n := env.shards
	var id gocql.UUID
	err := sess.Session.Query(anyEventCQL).WithContext(ctx).Idempotent(true).Scan(&id)
	switch {
	case err == nil:
		n = 1
		env.log.Warn("the keyspace holds events from before shards: it keeps one shard (to split it, copy it to a new keyspace)")
	case !errors.Is(err, gocql.ErrNotFound):
		return fmt.Errorf("look for events: %w", err)
	}
	if _, err := sess.Session.Query(shardsSetCQL, n).WithContext(ctx).SerialConsistency(leaseSerial).
		MapScanCAS(map[string]any{}); err != nil {
		return fmt.Errorf("record the shard count: %w", err)
	}
	return nil
}

// readShards returns the keyspace's shard count, and warns when it is not
// the one cfg asks for: the stored one rules.
func readShards(ctx context.Context, sess gocqlx.Session, cfg Config, log *zap.Logger) (int, error) {
	var n int
	err := sess.Session.Query(shardsReadCQL).WithContext(ctx).Consistency(leaseSerial).Idempotent(true).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("scylla: read the keyspace's shard count: %w", err)
	}
	if !validShards(n) {
		return 0, fmt.Errorf("scylla: the keyspace's shard count is %d: want a power of two from 1 to %d", n, MaxShards)
	}
	if n != cfg.Shards {
		log.Warn("the keyspace's shard count was fixed when it was created; the setting is ignored",
			zap.Int("shards", n), zap.Int("setting", cfg.Shards))
	}
	return n, nil
}

// Shards returns the number of shards the keyspace's aggregate-id space is
// split into, fixed when the keyspace was created. See store.Sharded.
func (s *Store) Shards() int { return s.shards }

// checkShard returns the shard a subscription or a lag covers: sh, or
// Whole for its zero value; an error when its count is not the keyspace's.
func (s *Store) checkShard(sh store.Shard) (store.Shard, error) {
	switch {
	case sh.Count <= 1:
		return store.Whole, nil
	case sh.Count != s.shards:
		return sh, fmt.Errorf("scylla: shard %d of %d: the keyspace has %d shards", sh.Index, sh.Count, s.shards)
	case sh.Index < 0 || sh.Index >= sh.Count:
		return sh, fmt.Errorf("scylla: shard %d of %d does not exist", sh.Index, sh.Count)
	}
	return sh, nil
}

var _ store.Sharded = (*Store)(nil)
