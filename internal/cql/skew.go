package cql

import (
	"context"
	"math"
	"sync/atomic"
	"time"

	"github.com/gocql/gocql"
	"go.uber.org/zap"
)

// skewEvery is how often a subscription measures the clock skew between
// this instance and a node of the cluster.
const skewEvery = 30 * time.Second

// skewNowCQL asks the coordinator for a time UUID of its own clock.
const skewNowCQL = `SELECT now() FROM system.local`

// skewGauge holds the last clock skew observed, in nanoseconds: the node's
// clock minus this instance's, from the middle of the request's round trip.
type skewGauge struct {
	ns     atomic.Int64
	warned atomic.Int64 // when the last warning was logged, unix nanoseconds
}

// warnDue reports whether a skew warning is due: at most one per skewEvery
// for the whole store, whatever the number of subscriptions (one per
// shard) that measure.
func (g *skewGauge) warnDue(now time.Time) bool {
	last := g.warned.Load()
	return now.UnixNano()-last >= int64(skewEvery) && g.warned.CompareAndSwap(last, now.UnixNano())
}

// measureSkew asks a node for its clock and records how far it is from
// this instance's; it returns the skew, with an error when the read fails.
// The error of the estimate is half the round trip.
func (s *Store) measureSkew(ctx context.Context) (time.Duration, error) {
	var now gocql.UUID
	sent := time.Now()
	if err := s.sess.Session.Query(skewNowCQL).WithContext(ctx).Idempotent(true).Scan(&now); err != nil {
		return 0, err
	}
	back := time.Now()
	mid := sent.Add(back.Sub(sent) / 2)
	d := now.Time().Sub(mid)
	s.skew.ns.Store(int64(d))
	return d, nil
}

// ClockSkew returns the last clock skew observed between this instance and
// a node of the cluster (the node's clock minus this one's), 0 before the
// first measurement. A running subscription measures it every 30 s; it
// should stay well inside FeedOptions.ClockSkew.
func (s *Store) ClockSkew() time.Duration { return time.Duration(s.skew.ns.Load()) }

// watchSkew measures the skew every skewEvery until ctx ends, and warns
// when it exceeds the budget: the reconciliation's margins assume the
// instances' clocks agree within FeedOptions.ClockSkew.
func (sub *subscription) watchSkew(ctx context.Context) error {
	t := time.NewTicker(skewEvery)
	defer t.Stop()
	for {
		if d, err := sub.s.measureSkew(ctx); err == nil && math.Abs(float64(d)) > float64(sub.opt.ClockSkew) && sub.s.skew.warnDue(time.Now()) {
			sub.log.Warn("the clock of this instance and a node's differ by more than the budget (ORDERD_CLOCK_SKEW); fast-path misses are caught later by the reconciliation",
				zap.Duration("skew", d), zap.Duration("budget", sub.opt.ClockSkew))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reconciliation is what the reconciliation of this process's
// subscriptions did since Open, for metrics.
type Reconciliation struct {
	// Failures counts failed reads of a recent pass or a sweep (each is
	// retried; none ends a subscription).
	Failures int64
	// RecentRows counts the rows of the index of touched aggregates the
	// recent passes read; SweepRows the aggregates the full sweeps read.
	RecentRows, SweepRows int64
	// ClockSkew is the last skew observed against a node (see ClockSkew).
	ClockSkew time.Duration
}

// Reconciliation returns the counters of the reconciliation.
func (s *Store) Reconciliation() Reconciliation {
	return Reconciliation{Failures: s.passFailures.Load(), RecentRows: s.recentRows.Load(),
		SweepRows: s.sweepRows.Load(), ClockSkew: s.ClockSkew()}
}
