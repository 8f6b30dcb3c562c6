package cql

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/store"
)

// The reconciliation pass has two parts, which together make the feed
// complete without reading the whole events table every interval:
//
//   - the recent pass (touched.go), every ReconcileEvery: the aggregates
//     the index of touched aggregates names since the last pass, so its
//     cost follows the writes, not the table's size;
//   - the full sweep (here), a background safety net for what the index
//     cannot name (rows older than its TTL, events written by hand or
//     before the index existed): every aggregate's version, token range by
//     token range, from a cursor saved after each range (so a restart or a
//     handover resumes it), at a rate that all running sweeps share, with
//     each failed range read retried until it succeeds.
//
// Neither depends on the fast path: whatever an append's fate there, the
// aggregate's version in the events table is above the consumer's progress
// until the event is handled, and the next recent pass or sweep sees that.

// versionsCQL reads every aggregate's current version (the static cells,
// see versionIn) in a token range: one row per partition, whatever its
// number of events.
const versionsCQL = `SELECT DISTINCT aggregate_id, version, minted FROM events
	WHERE token(aggregate_id) > ? AND token(aggregate_id) <= ?`

// rangePage is the page size of the token-range reads.
const rangePage = 1000

// cursorSaveEvery is how often a sweep saves its cursor at most (and at
// the end of the ring): a small keyspace's ranges take milliseconds each.
const cursorSaveEvery = time.Second

// Retries of a failed range read: rangeRetryFirst doubling up to
// rangeRetryMax, for as long as it fails.
const (
	rangeRetryFirst = 500 * time.Millisecond
	rangeRetryMax   = time.Minute
)

// tokenRange is the token range (lo, hi] of the Murmur3 ring.
type tokenRange struct{ lo, hi int64 }

// tokenRanges cuts the Murmur3 ring, from MinInt64 (exclusive: no key has
// that token) to MaxInt64, into n equal ranges, in ring order.
func tokenRanges(n int) []tokenRange {
	return tokenRange{math.MinInt64, math.MaxInt64}.split(n)
}

// split cuts r into n ranges of equal width (the last takes the rest), in
// ring order.
func (r tokenRange) split(n int) []tokenRange {
	step := (uint64(r.hi) - uint64(r.lo)) / uint64(n)
	out := make([]tokenRange, n)
	lo := r.lo
	for i := range out {
		hi := int64(uint64(lo) + step)
		if i == n-1 {
			hi = r.hi
		}
		out[i] = tokenRange{lo, hi}
		lo = hi
	}
	return out
}

// shardRange is the token range of the subscription's shard: the whole
// ring for store.Whole.
func (sub *subscription) shardRange() tokenRange {
	return tokenRangeOf(sub.shard.Index, sub.shard.Count)
}

// rangesAfter returns the ranges of the subscription's shard, cut in
// RangeSplits per ring (so at least one per shard), that lie after cursor,
// the last token of the last range finished; a cursor inside a range (the
// splits changed since it was saved) starts that range at the cursor.
func (sub *subscription) rangesAfter(cursor int64) []tokenRange {
	var out []tokenRange
	for _, r := range sub.shardRange().split(max(1, sub.opt.RangeSplits/max(1, sub.shard.Count))) {
		switch {
		case r.hi <= cursor:
		case r.lo < cursor:
			out = append(out, tokenRange{cursor, r.hi})
		default:
			out = append(out, r)
		}
	}
	return out
}

// sweep runs full sweeps of the subscription's shard (of its token range;
// the whole ring for store.Whole) until ctx ends: each starts
// SweepEvery after the previous one started (at once when none ever ran
// or one was left unfinished), and resumes from the saved cursor.
func (sub *subscription) sweep(ctx context.Context) error {
	if sub.s.noSweep {
		return nil
	}
	share := newRateShare(sub)
	go share.run(ctx)
	for {
		st, err := retried(sub, ctx, "load the sweep's cursor", func() (sweepState, error) { return sub.loadSweep(ctx) })
		if err != nil {
			return fenced(err) // or ctx ended
		}
		if st.cursor == sub.shardRange().hi || st.started.IsZero() {
			// Finished, or never begun: the next one starts on time.
			if wait := time.Until(st.started.Add(sub.opt.SweepEvery)); !st.started.IsZero() && wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			st = sweepState{cursor: sub.shardRange().lo, started: time.Now(), finished: st.finished}
			if _, err := retried(sub, ctx, "save the sweep's start", func() (struct{}, error) {
				return struct{}{}, sub.saveSweep(ctx, st)
			}); err != nil {
				return fenced(err)
			}
		}
		if err := sub.sweepFrom(ctx, share, st); err != nil {
			return fenced(err)
		}
	}
}

// fenced returns err if it says the lease was taken (which ends the
// subscription), nil otherwise (ctx ended).
func fenced(err error) error {
	if errors.Is(err, store.ErrFenced) {
		return err
	}
	return nil
}

// sweepFrom reads the ranges after st's cursor, saving the cursor after a
// range (at most every cursorSaveEvery) once the delivery core has handled
// what it and the ranges before it found. It returns only
// when the ring is done or ctx ended (then ctx's error).
func (sub *subscription) sweepFrom(ctx context.Context, share *rateShare, st sweepState) error {
	var (
		read, sent int64
		saved      = time.Now()
	)
	end := sub.shardRange().hi
	for _, r := range sub.rangesAfter(st.cursor) {
		p := &pass{}
		n, err := retried(sub, ctx, fmt.Sprintf("sweep the token range (%d, %d]", r.lo, r.hi), func() ([2]int64, error) {
			n, k, err := sub.passRange(ctx, p, r.lo, r.hi, share)
			return [2]int64{n, k}, err
		})
		if err != nil {
			return err
		}
		if n[1] > 0 { // else nothing of this range is in the core's hands
			if err := sub.waitCore(ctx, p); err != nil {
				return err
			}
		}
		read, sent = read+n[0], sent+n[1]
		sub.s.sweepRows.Add(n[0])
		st.cursor = r.hi
		if r.hi == end {
			st.finished = time.Now()
		} else if time.Since(saved) < cursorSaveEvery {
			continue // a restart reads again what this range read: at most a second's worth
		}
		if _, err := retried(sub, ctx, "save the sweep's cursor", func() (struct{}, error) {
			return struct{}{}, sub.saveSweep(ctx, st)
		}); err != nil {
			return err
		}
		saved = time.Now()
	}
	sub.log.Debug("reconciliation: full sweep done", zap.Int64("aggregates", read), zap.Int64("behind", sent),
		zap.Duration("took", time.Since(st.started)))
	return nil
}

// retried runs f until it succeeds or ctx ends (then it returns ctx's
// error), waiting rangeRetryFirst, doubling up to rangeRetryMax, between
// tries: a cluster that fails a read delays the sweep, it never ends the
// subscription. A fenced write (the lease was taken) is not retried: its
// error, wrapping store.ErrFenced, is returned at once.
func retried[T any](sub *subscription, ctx context.Context, what string, f func() (T, error)) (T, error) {
	for try := 0; ; try++ {
		v, err := f()
		switch {
		case err != nil && errors.Is(err, store.ErrFenced):
			return v, err
		case ctx.Err() != nil:
			return v, ctx.Err()
		case err == nil:
			return v, nil
		}
		sub.s.passFailures.Add(1)
		delay := min(rangeRetryFirst<<min(try, 10), rangeRetryMax)
		sub.log.Warn("reconciliation: "+what+" failed; retrying", zap.Int("try", try+1), zap.Duration("in", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(delay):
		}
	}
}

// passRange does one token range (lo, hi] of a sweep and returns how many
// aggregates it read and how many it sent to the core, paced at the
// sweep's share of ReconcileRate.
func (sub *subscription) passRange(ctx context.Context, p *pass, lo, hi int64, share *rateShare) (n, sent int64, err error) {
	if f := sub.s.sweepFault; f != nil {
		if err := f(lo, hi); err != nil {
			return 0, 0, err
		}
	}
	// Progress first: what was handled after this read makes the core
	// skip the aggregate, never miss it.
	progress, err := sub.rangeProgress(ctx, lo, hi)
	if err != nil {
		return 0, 0, err
	}
	iter := sub.s.sess.Session.Query(versionsCQL, lo, hi).WithContext(ctx).
		Idempotent(true).PageSize(rangePage).Iter()
	var (
		id              uuid.UUID
		version, minted *int64 // both null in a partition written by hand
		start           = time.Now()
		rate            = share.rate()
	)
	for iter.Scan(&id, &version, &minted) {
		n++
		if v := versionIn(version, minted); v > progress[id] {
			r := request{id: id, version: v, known: progress[id], pass: p}
			if err := sub.send(ctx, r); err != nil {
				_ = iter.Close()
				return n, sent, err
			}
			sent++
		}
		if n%100 == 0 {
			if err := pace(ctx, start, n, rate); err != nil {
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

// pace waits until reading n aggregates since start keeps within rate per
// second.
func pace(ctx context.Context, start time.Time, n int64, rate float64) error {
	due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
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
