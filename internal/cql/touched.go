package cql

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// The index of touched aggregates (feed_touched, migration 0210). Every
// instance must use the same layout, so none of this is an option.
const (
	// touchBucket is the span of writer clock time in one index
	// partition. A pass every minute reads about two buckets per shard.
	touchBucket = time.Minute
	// touchShardBits splits each bucket into 1<<touchShardBits partitions
	// by the top bits of the aggregate's token: 64, the workers' default
	// shard count of issue 17, so that an index shard is one worker shard.
	touchShardBits = 6
	touchShards    = 1 << touchShardBits
	// touchTTL is how long an index row lives: a worker away for longer
	// has its recent pass start at the oldest row still there, and the
	// full sweep finds what is older.
	touchTTL = 3 * 24 * time.Hour
)

// The statements on feed_touched.
const (
	touchWriteCQL = `INSERT INTO feed_touched (bucket, shard, aggregate_id) VALUES (?, ?, ?) USING TTL ?`
	// touchReadCQL reads a bucket's shards in one query: the coordinator
	// reads the partitions, the client makes one round trip per page.
	touchReadCQL = `SELECT aggregate_id FROM feed_touched WHERE bucket = ? AND shard IN ?`
	// versionOfCQL reads the static cells of one aggregate (see versionIn).
	versionOfCQL = `SELECT version, minted FROM events WHERE aggregate_id = ? LIMIT 1`
)

// token returns the Murmur3 token of an aggregate id, as Cassandra's and
// ScyllaDB's Murmur3Partitioner compute token(aggregate_id): the first
// half of MurmurHash3 x64 128 (seed 0) of the id's 16 bytes, read as
// signed, with the one value no key may have, MinInt64, moved to MaxInt64.
// A uuid is exactly one 16-byte block, so Cassandra's sign-extension of
// the tail bytes never comes into it.
func token(id uuid.UUID) int64 {
	const (
		c1 = 0x87c37b91114253d5
		c2 = 0x4cf5ad432745937f
	)
	k1 := binary.LittleEndian.Uint64(id[0:8])
	k2 := binary.LittleEndian.Uint64(id[8:16])
	var h1, h2 uint64
	k1 *= c1
	k1 = bits.RotateLeft64(k1, 31)
	k1 *= c2
	h1 ^= k1
	h1 = bits.RotateLeft64(h1, 27)
	h1 += h2
	h1 = h1*5 + 0x52dce729
	k2 *= c2
	k2 = bits.RotateLeft64(k2, 33)
	k2 *= c1
	h2 ^= k2
	h2 = bits.RotateLeft64(h2, 31)
	h2 += h1
	h2 = h2*5 + 0x38495ab5

	h1 ^= 16
	h2 ^= 16
	h1 += h2
	h2 += h1
	h1, h2 = fmix64(h1), fmix64(h2)
	h1 += h2
	t := int64(h1)
	if t == minToken {
		return maxToken
	}
	return t
}

func fmix64(k uint64) uint64 {
	k ^= k >> 33
	k *= 0xff51afd7ed558ccd
	k ^= k >> 33
	k *= 0xc4ceb9fe1a85ec53
	k ^= k >> 33
	return k
}

const (
	minToken = -1 << 63
	maxToken = 1<<63 - 1
)

// touchShardOf returns the index shard of a token: its position on the
// ring (MinInt64 first) in 64 equal slices, which is its worker shard
// when the keyspace has 64 shards (shards.go).
func touchShardOf(t int64) int { return shardOfToken(t, touchShards) }

func touchBucketOf(t time.Time) int64 { return t.Unix() / int64(touchBucket/time.Second) }

// touch writes the index row of an append to aggregate id, before the
// append: so a committed append always has its row, and one that fails
// after it leaves an extra row, which costs the pass one read.
func (s *Store) touch(ctx context.Context, id uuid.UUID) error {
	err := s.sess.Session.Query(touchWriteCQL, touchBucketOf(time.Now()), touchShardOf(token(id)), id, int(touchTTL/time.Second)).
		WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("scylla: append %s: index of touched aggregates: %w", id, err)
	}
	return nil
}

// recentMargin is how far before its watermark the recent pass reads
// again. An append's index row carries its writer's clock at T, before the
// append is sent; the append commits by T + 2 × Timeout (one attempt and
// the settling read, see Append) or not at all, and the writer's clock may
// be ClockSkew behind this one. So a pass that started at P has seen every
// append committed before it whose row is at or after P - margin; rows
// before that belong to appends that had committed, and were visible,
// when the previous pass read.
func (sub *subscription) recentMargin() time.Duration {
	return 2*sub.s.cfg.Timeout + sub.opt.ClockSkew
}

// recent runs the recent-bucket pass at once and then one every
// ReconcileEvery, until ctx ends. A failed pass is retried at the next
// interval; it never ends the subscription, unless its save was fenced
// (the lease was taken).
func (sub *subscription) recent(ctx context.Context) error {
	for {
		start := time.Now()
		if err := sub.recentPass(ctx); err != nil {
			if errors.Is(err, store.ErrFenced) {
				return err // the lease was taken: the subscription ends
			}
			if ctx.Err() != nil {
				return nil
			}
			sub.s.passFailures.Add(1)
			sub.log.Warn("reconciliation: recent pass failed; retrying at the next interval", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(start.Add(sub.opt.ReconcileEvery))):
		}
	}
}

// recentPass reads the index buckets from the saved watermark (less the
// margin) to now, sends the delivery core every touched aggregate with its
// current version, waits until the core has handled them, then saves the
// watermark and the lag. The watermark moves no further than the time the
// oldest aggregate the core holds parked was parked (for up to
// SweepEvery), so that a successor reads a parked aggregate again.
func (sub *subscription) recentPass(ctx context.Context) error {
	start := time.Now()
	margin := sub.recentMargin()
	from, err := sub.loadWatermark(ctx)
	if err != nil {
		return err
	}
	switch oldest := start.Add(-touchTTL + touchBucket); {
	case from.IsZero():
		// A consumer new to the index: the sweep brings its past, the
		// recent pass what was appended just before it started.
		from = start.Add(-sub.opt.ReconcileEvery)
	case from.Before(oldest):
		sub.log.Warn("reconciliation: the recent pass was away longer than the index keeps rows; the full sweep finds the appends before",
			zap.Time("watermark", from), zap.Time("oldest_bucket", oldest))
		from = oldest
	}
	p := &pass{}
	n, sent, err := sub.readTouched(ctx, p, touchBucketOf(from.Add(-margin)), touchBucketOf(start))
	if err != nil {
		return err
	}
	if err := sub.waitCore(ctx, p); err != nil {
		return err
	}
	// A parked aggregate holds the watermark back, for up to a sweep
	// interval: a hole that lasts longer (a replica that needs a repair)
	// is left to the sweep, rather than making every pass read more.
	through := start
	if !p.parkedSince.IsZero() && p.parkedSince.Before(through) {
		through = p.parkedSince
		if floor := start.Add(-sub.opt.SweepEvery); through.Before(floor) {
			through = floor
		}
	}
	if err := sub.saveWatermark(ctx, through); err != nil {
		return err
	}
	sub.recordLag(ctx, p)
	sub.log.Debug("reconciliation: recent pass", zap.Int64("touched", n), zap.Int64("behind", sent),
		zap.Int64("events", p.events), zap.Duration("took", time.Since(start)))
	return nil
}

// waitCore sends the delivery core the end mark of pass p and waits until
// every request sent before it is handled.
func (sub *subscription) waitCore(ctx context.Context, p *pass) error {
	done := make(chan struct{})
	if err := sub.send(ctx, request{done: done, pass: p}); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recordLag keeps what pass p measured, in memory and in feed_lag.
func (sub *subscription) recordLag(ctx context.Context, p *pass) {
	l := store.Lag{Known: true, Events: p.events, At: time.Now().UTC()}
	if p.events > 0 {
		l.Age = max(0, l.At.Sub(p.oldest))
	}
	sub.lag.Store(&l)
	if err := sub.saveLag(ctx, l); err != nil {
		// Only other instances' Lag reads it: not worth stopping the feed.
		sub.log.Warn("reconciliation: lag not saved", zap.Error(err))
	}
}

// indexShards lists the index shards that cover the subscription's shard,
// for touchReadCQL: every one for store.Whole, 64/count of them for a
// keyspace of count ≤ 64 shards, and the one that holds it for more (whose
// rows of the other shards the pass leaves out, see owns).
func (sub *subscription) indexShards() []int {
	count := max(1, sub.shard.Count)
	if count > touchShards {
		return []int{sub.shard.Index / (count / touchShards)}
	}
	per := touchShards / count
	out := make([]int, per)
	for i := range out {
		out[i] = sub.shard.Index*per + i
	}
	return out
}

// readTouched reads the index partitions of buckets first..last, the index
// shards of the subscription's shard, a few buckets at a time; for each
// aggregate of its shard it
// reads the current version and sends the core a request. It returns how
// many index rows it read and how many requests it sent.
func (sub *subscription) readTouched(ctx context.Context, p *pass, first, last int64) (rows, sent int64, err error) {
	parts := make(chan int64)
	ids := make(chan uuid.UUID, sub.opt.Concurrency)
	var (
		mu   sync.Mutex
		fail error
		wg   sync.WaitGroup
	)
	setFail := func(err error) {
		mu.Lock()
		if fail == nil {
			fail = err
		}
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readers := max(1, sub.opt.Concurrency/16)
	shards := sub.indexShards()
	for range readers {
		wg.Go(func() {
			for b := range parts {
				iter := sub.s.sess.Session.Query(touchReadCQL, b, shards).WithContext(ctx).
					Idempotent(true).PageSize(rangePage).Iter()
				var id uuid.UUID
				for iter.Scan(&id) {
					if !sub.owns(id) {
						continue // another shard's, in the index shard that covers several
					}
					select {
					case ids <- id:
					case <-ctx.Done():
					}
				}
				if err := iter.Close(); err != nil {
					setFail(fmt.Errorf("read the aggregates touched in bucket %d: %w", b, err))
					cancel()
				}
			}
		})
	}
	var vg sync.WaitGroup
	var count, sends int64
	for range sub.opt.Concurrency {
		vg.Go(func() {
			for id := range ids {
				v, err := sub.versionOf(ctx, id)
				if err != nil {
					setFail(err)
					cancel()
					continue
				}
				mu.Lock()
				count++
				mu.Unlock()
				sub.s.recentRows.Add(1)
				if v <= 0 {
					continue // an index row whose append failed
				}
				if err := sub.send(ctx, request{id: id, version: v, known: -1, pass: p}); err != nil {
					setFail(err)
					continue
				}
				mu.Lock()
				sends++
				mu.Unlock()
			}
		})
	}
feed:
	for b := first; b <= last; b++ {
		select {
		case parts <- b:
		case <-ctx.Done():
			break feed
		}
	}
	close(parts)
	wg.Wait()
	close(ids)
	vg.Wait()
	if fail == nil && ctx.Err() != nil {
		fail = ctx.Err()
	}
	return count, sends, fail
}

// versionOf reads aggregate id's current version, 0 when it has none.
func (sub *subscription) versionOf(ctx context.Context, id uuid.UUID) (int64, error) {
	var v, minted *int64
	err := sub.s.sess.Session.Query(versionOfCQL, id).WithContext(ctx).Idempotent(true).Scan(&v, &minted)
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("read the version of %s: %w", id, err)
	}
	return versionIn(v, minted), nil
}
