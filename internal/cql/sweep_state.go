package cql

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
)

// The statements on feed_sweep and feed_sweepers. Every write of the
// reconciliation's own state goes through saveSweep, saveWatermark and the
// rate share's heartbeat. The first two are fenced, as progress is: one
// check of the lease's epoch before the write (checkFence), so a holder
// whose lease was taken moves neither the cursor nor the watermark. (What
// one that lapsed between its check and its write still writes is a point
// it did reach; the successor reads again from its own.) The heartbeat is
// not: a lapsed holder's beat only shrinks the others' share of the rate
// for 30 s.
const (
	sweepReadCQL      = `SELECT recent_through, cursor, sweep_started, sweep_finished FROM feed_sweep WHERE consumer = ?`
	sweepSaveCQL      = `UPDATE feed_sweep SET cursor = ?, sweep_started = ?, sweep_finished = ? WHERE consumer = ?`
	watermarkSaveCQL  = `UPDATE feed_sweep SET recent_through = ? WHERE consumer = ?`
	sweeperBeatCQL    = `INSERT INTO feed_sweepers (scope, sweeper) VALUES ('sweep', ?) USING TTL ?`
	sweepersCountCQL  = `SELECT COUNT(*) FROM feed_sweepers WHERE scope = 'sweep'`
	sweeperForgetCQL  = `DELETE FROM feed_sweepers WHERE scope = 'sweep' AND sweeper = ?`
	sweeperBeatEvery  = 10 * time.Second
	sweeperBeatExpiry = 30 * time.Second
)

// sweepState is where a consumer's full sweep of its shard's token range
// stands (one per subscription key): cursor is the last token of the last
// range finished (the shard's first lo before the first, its hi once the
// shard is done), started when the sweep under way began (zero if
// none ever did), finished when the last one reached the end.
type sweepState struct {
	cursor            int64
	started, finished time.Time
}

// loadSweep reads the consumer's sweep state; the zero state (never
// started) when there is none.
func (sub *subscription) loadSweep(ctx context.Context) (sweepState, error) {
	var (
		through, started, finished *time.Time
		cursor                     *int64
	)
	err := sub.s.sess.Session.Query(sweepReadCQL, sub.key).WithContext(ctx).Idempotent(true).
		Scan(&through, &cursor, &started, &finished)
	first := sub.shardRange().lo
	switch {
	case errors.Is(err, gocql.ErrNotFound):
		return sweepState{cursor: first}, nil
	case err != nil:
		return sweepState{}, fmt.Errorf("read the sweep state: %w", err)
	}
	st := sweepState{cursor: first}
	if cursor != nil && started != nil {
		st.cursor, st.started = *cursor, *started
	}
	if finished != nil {
		st.finished = *finished
	}
	return st, nil
}

// saveSweep records where the consumer's sweep stands, so that a restart
// or the next holder of the worker's lease resumes it there.
func (sub *subscription) saveSweep(ctx context.Context, st sweepState) error {
	if err := checkFence(ctx, sub.s.sess.Session, sub.s.cfg.Consistency, "save the sweep's cursor of "+sub.key); err != nil {
		return err
	}
	var finished any
	if !st.finished.IsZero() {
		finished = st.finished
	}
	err := sub.s.sess.Session.Query(sweepSaveCQL, st.cursor, st.started, finished, sub.key).
		WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("save the sweep's cursor: %w", err)
	}
	return nil
}

// loadWatermark returns the time up to which the recent pass has covered
// the index of touched aggregates; zero when no pass ever finished.
func (sub *subscription) loadWatermark(ctx context.Context) (time.Time, error) {
	var (
		through, started, finished *time.Time
		cursor                     *int64
	)
	err := sub.s.sess.Session.Query(sweepReadCQL, sub.key).WithContext(ctx).Idempotent(true).
		Scan(&through, &cursor, &started, &finished)
	switch {
	case errors.Is(err, gocql.ErrNotFound), err == nil && through == nil:
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("read the recent pass's watermark: %w", err)
	}
	return *through, nil
}

// saveWatermark records that the recent pass has delivered every append
// whose index row is at or before through, less the margin.
func (sub *subscription) saveWatermark(ctx context.Context, through time.Time) error {
	if err := checkFence(ctx, sub.s.sess.Session, sub.s.cfg.Consistency, "save the recent pass's watermark of "+sub.key); err != nil {
		return err
	}
	err := sub.s.sess.Session.Query(watermarkSaveCQL, through, sub.key).WithContext(ctx).Idempotent(true).Exec()
	if err != nil {
		return fmt.Errorf("save the recent pass's watermark: %w", err)
	}
	return nil
}

// rateShare is a sweep's share of ReconcileRate: the rate divided by the
// number of sweeps running on the keyspace, counted from the heartbeats
// each writes to feed_sweepers every sweeperBeatEvery. A sweep that cannot
// count keeps its last share; until its first count (its first beat, as
// it starts) it takes the whole rate.
type rateShare struct {
	sub  *subscription
	name string
	n    atomic.Int64 // sweeps running, this one included
}

func newRateShare(sub *subscription) *rateShare {
	r := &rateShare{sub: sub, name: sub.key + "/" + gocql.TimeUUID().String()}
	r.n.Store(1)
	return r
}

// rate returns this sweep's share, in aggregates per second.
func (r *rateShare) rate() float64 {
	return float64(r.sub.opt.ReconcileRate) / float64(max(1, r.n.Load()))
}

// run beats and counts until ctx ends, then removes this sweep's beat.
func (r *rateShare) run(ctx context.Context) {
	t := time.NewTicker(sweeperBeatEvery)
	defer t.Stop()
	for {
		r.beat(ctx)
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.sub.s.cfg.Timeout)
			defer cancel()
			_ = r.sub.s.sess.Session.Query(sweeperForgetCQL, r.name).WithContext(fctx).Exec()
			return
		case <-t.C:
		}
	}
}

func (r *rateShare) beat(ctx context.Context) {
	s := r.sub.s.sess.Session
	if err := s.Query(sweeperBeatCQL, r.name, int(sweeperBeatExpiry/time.Second)).WithContext(ctx).Idempotent(true).Exec(); err != nil {
		if ctx.Err() == nil {
			r.sub.log.Warn("reconciliation: sweep heartbeat not written; keeping the last share of the rate", zap.Error(err))
		}
		return
	}
	var n int64
	if err := s.Query(sweepersCountCQL).WithContext(ctx).Idempotent(true).Scan(&n); err != nil {
		return
	}
	r.n.Store(max(1, n))
}
