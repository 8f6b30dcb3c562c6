package cql

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// versionsCQL reads every aggregate's current version (the static column)
// in a token range: one row per partition, whatever its number of events.
const versionsCQL = `SELECT DISTINCT aggregate_id, version FROM events
	WHERE token(aggregate_id) > ? AND token(aggregate_id) <= ?`

// rangePage is the page size of the token-range reads.
const rangePage = 1000

// tokenRange is the token range (lo, hi] of the Murmur3 ring.
type tokenRange struct{ lo, hi int64 }

// tokenRanges cuts the Murmur3 ring, from MinInt64 (exclusive: no key has
// that token) to MaxInt64, into n equal ranges, in ring order.
func tokenRanges(n int) []tokenRange {
	step := uint64(math.MaxUint64 / uint64(n))
	out := make([]tokenRange, n)
	lo := int64(math.MinInt64)
	for i := range out {
		hi := int64(uint64(lo) + step)
		if i == n-1 {
			hi = math.MaxInt64
		}
		out[i] = tokenRange{lo, hi}
		lo = hi
	}
	return out
}

// reconcile runs a reconciliation pass at once and then one every
// ReconcileEvery, until ctx ends.
//
// The pass is what makes the feed complete: it does not depend on the
// fast path, on a time window or on a clock. Whatever an append's fate on
// the fast path (a CDC change behind the confidence window, a hint lost in
// a crash or dropped, an LWT completed later by Paxos), the aggregate's
// version in the events table is above the consumer's progress until the
// event is handled, and the next pass sees that.
func (sub *subscription) reconcile(ctx context.Context) error {
	for {
		start := time.Now()
		if err := sub.pass(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reconciliation pass: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(start.Add(sub.opt.ReconcileEvery))):
		}
	}
}

// pass compares, range by range, each aggregate's version with the
// consumer's progress and sends the delivery core every aggregate the
// consumer is behind on. It waits until the core has handled them, then
// records the lag it found.
func (sub *subscription) pass(ctx context.Context) error {
	var (
		p      = &pass{}
		start  = time.Now()
		read   int64
		sent   int64
		splits = sub.opt.RangeSplits
	)
	for _, r := range tokenRanges(splits) {
		n, k, err := sub.passRange(ctx, p, r.lo, r.hi, start, read)
		if err != nil {
			return err
		}
		read, sent = read+n, sent+k
	}

	done := make(chan struct{})
	if err := sub.send(ctx, request{done: done}); err != nil {
		return err
	}
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}

	l := store.Lag{Known: true, Events: p.events, At: time.Now().UTC()}
	if p.events > 0 {
		l.Age = max(0, l.At.Sub(p.oldest))
	}
	sub.lag.Store(&l)
	if err := sub.saveLag(ctx, l); err != nil {
		// Only other instances' Lag reads it: not worth stopping the feed.
		sub.log.Warn("reconciliation: lag not saved", zap.Error(err))
	}
	sub.log.Debug("reconciliation pass",
		zap.Int64("aggregates", read), zap.Int64("behind", sent),
		zap.Int64("events", p.events), zap.Duration("took", time.Since(start)))
	return nil
}

// passRange does one token range (lo, hi] of a pass and returns how many
// aggregates it read and how many it sent to the core. read is how many
// the pass read before, which paces it at ReconcileRate from start.
func (sub *subscription) passRange(ctx context.Context, p *pass, lo, hi int64, start time.Time, read int64) (n, sent int64, err error) {
	// Progress first: what was handled after this read makes the core
	// skip the aggregate, never miss it.
	progress, err := sub.rangeProgress(ctx, lo, hi)
	if err != nil {
		return 0, 0, err
	}
	iter := sub.s.sess.Session.Query(versionsCQL, lo, hi).WithContext(ctx).
		Idempotent(true).PageSize(rangePage).Iter()
	var (
		id      uuid.UUID
		version *int64 // null in a partition with no static value, written by hand
	)
	for iter.Scan(&id, &version) {
		n++
		if version != nil && *version > progress[id] {
			r := request{id: id, version: *version, known: progress[id], pass: p}
			if err := sub.send(ctx, r); err != nil {
				_ = iter.Close()
				return n, sent, err
			}
			sent++
		}
		if (read+n)%100 == 0 {
			if err := sub.pace(ctx, start, read+n); err != nil {
				_ = iter.Close()
				return n, sent, err
			}
		}
	}
	if err := iter.Close(); err != nil {
		return n, sent, fmt.Errorf("read versions in (%d, %d]: %w", lo, hi, err)
	}
	return n, sent, nil
}

// pace waits until reading n aggregates since start keeps within
// ReconcileRate.
func (sub *subscription) pace(ctx context.Context, start time.Time, n int64) error {
	due := start.Add(time.Duration(float64(n) / float64(sub.opt.ReconcileRate) * float64(time.Second)))
	wait := time.Until(due)
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
