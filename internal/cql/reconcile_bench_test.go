package cql

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// scaleTouched is how many aggregates each recent pass of
// BenchmarkReconcileScale finds touched.
const scaleTouched = 1000

// scaleSizes are the keyspace sizes of BenchmarkReconcileScale: 10,000
// aggregates, and those of ORDERD_TEST_RECONCILE_AGGREGATES (a comma-free
// number, say 1000000), which takes minutes to fill.
func scaleSizes(b *testing.B) []int {
	sizes := []int{10000}
	if v := os.Getenv("ORDERD_TEST_RECONCILE_AGGREGATES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < scaleTouched {
			b.Fatalf("ORDERD_TEST_RECONCILE_AGGREGATES=%q: want a number of at least %d", v, scaleTouched)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// fillDirect stores n aggregates of one event each, with the consumer's
// progress at 1 on each (caught up), as plain unlogged single-partition
// batches from many writers: no Paxos round, no index row, which is what
// makes a million affordable here. It returns the ids.
func fillDirect(b *testing.B, s *Store, consumer string, n int) []uuid.UUID {
	b.Helper()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Pointer[error]
	)
	data := `{"note":"a small payload"}`
	for range 128 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || fail.Load() != nil {
					return
				}
				id := ids[i]
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				batch := s.sess.Session.Batch(gocql.UnloggedBatch).WithContext(ctx)
				batch.Query(`UPDATE events SET version = 1 WHERE aggregate_id = ?`, id)
				batch.Query(`INSERT INTO events (aggregate_id, sequence, event_id, aggregate_type, event_type, event_version, data,
					causation_id, correlation_id, timestamp) VALUES (?, 1, ?, 'Widget', 'WidgetTurned', 1, ?, ?, ?, ?)`,
					id, uuid.New(), data, uuid.New(), uuid.New(), time.Now().UnixMilli())
				err := batch.Exec()
				if err == nil {
					err = s.sess.Session.Query(progressSaveCQL, 1, 1, id, consumer).WithContext(ctx).Exec()
				}
				cancel()
				if err != nil {
					fail.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	if err := fail.Load(); err != nil {
		b.Fatalf("fill: %v", *err)
	}
	return ids
}

// BenchmarkReconcileScale: the cost of the reconciliation against the
// number of touched and of all aggregates. A keyspace of N aggregates
// (10,000, and ORDERD_TEST_RECONCILE_AGGREGATES) is filled directly, the
// consumer caught up on all of them; then
//
//   - recent: each iteration appends one event (through Append, so with
//     its index row, no hint) to 1,000 of them, untimed, and times one
//     recent pass from a watermark just before: it reads the index rows of
//     the touched buckets, each touched aggregate's version and progress,
//     loads and hands its new event, and saves its progress. Reported:
//     the pass's time and the index rows it read;
//   - sweep: one full sweep of the ring, unpaced, the consumer caught up:
//     aggregates read per second.
func BenchmarkReconcileScale(b *testing.B) {
	for _, n := range scaleSizes(b) {
		b.Run(fmt.Sprintf("aggregates=%d", n), func(b *testing.B) {
			const consumer = "scale"
			s := openWith(b, withFeed(testConfig(b), FeedOptions{ReconcileRate: 1 << 30, ReconcileEvery: time.Hour}),
				Options{NoHints: true, NoHandOff: true, NoSweep: true})
			start := time.Now()
			ids := fillDirect(b, s, consumer, n)
			b.Logf("filled %d aggregates in %v", n, time.Since(start).Round(time.Millisecond))
			touched := ids[:scaleTouched]
			version := int64(1)
			var handed atomic.Int64
			noop := func(_ context.Context, evs []store.Event) error { handed.Add(int64(len(evs))); return nil }

			b.Run("recent", func(b *testing.B) {
				var took time.Duration
				var rows int64
				for range b.N {
					sub := s.newSubscription(context.Background(), consumer, store.Whole, noop)
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- sub.deliver(ctx) }()
					if err := sub.saveWatermark(ctxFor(b), time.Now().Add(-time.Second)); err != nil {
						b.Fatal(err)
					}
					appendAll(b, s, touched, version)
					version++
					before, h := s.recentRows.Load(), handed.Load()
					t0 := time.Now()
					if err := sub.recentPass(ctx); err != nil {
						b.Fatalf("recent pass: %v", err)
					}
					took += time.Since(t0)
					rows += s.recentRows.Load() - before
					if got := handed.Load() - h; got != scaleTouched {
						b.Fatalf("the pass handed %d events, want %d", got, scaleTouched)
					}
					cancel()
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(took.Seconds()*1000/float64(b.N), "ms/pass")
				b.ReportMetric(float64(rows)/float64(b.N), "index-rows/pass")
			})
			b.Run("sweep", func(b *testing.B) {
				var took time.Duration
				for range b.N {
					sub := s.newSubscription(context.Background(), consumer, store.Whole, noop)
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- sub.deliver(ctx) }()
					before := s.sweepRows.Load()
					t0 := time.Now()
					if err := sub.sweepFrom(ctx, newRateShare(sub), sweepState{cursor: minToken, started: t0}); err != nil {
						b.Fatalf("sweep: %v", err)
					}
					took += time.Since(t0)
					if got := s.sweepRows.Load() - before; got != int64(n) {
						b.Fatalf("the sweep read %d aggregates, want %d", got, n)
					}
					cancel()
					if err := <-done; err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n*b.N)/took.Seconds(), "aggregates/s")
				b.ReportMetric(took.Seconds()/float64(b.N), "s/sweep")
			})
		})
	}
}

// appendAll appends one event at version+1 to each aggregate of ids, from
// 32 writers.
func appendAll(b *testing.B, s *Store, ids []uuid.UUID, version int64) {
	b.Helper()
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Pointer[error]
	)
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(ids)) {
					return
				}
				id := ids[i]
				if err := s.Append(ctxFor(b), id, version, []store.Event{event(id, version+1)}); err != nil {
					fail.Store(&err)
				}
			}
		})
	}
	wg.Wait()
	if err := fail.Load(); err != nil {
		b.Fatalf("Append: %v", *err)
	}
}
