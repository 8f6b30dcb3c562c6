package cql

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
)

// BenchmarkApply measures projection throughput into Cassandra: each
// iteration applies one batch, as the projector's feed hands them over.
// Every aggregate costs a read and a write (an order's with its row in the
// customer's list), so throughput comes from working on many aggregates
// at once, and a batch that holds several events of one order costs one
// write for them all.
//
// Before issue 17, when every row write was a lightweight transaction:
// Apache Cassandra 5.0, single node on loopback, 2 vCPU shared with other
// test runs. The former Project, -benchtime 10s, two runs: batch=1 160-210
// events/s, batch=16 2,000-2,550, batch=256 5,000-5,650. Apply, which is
// Project without gap healing, in a short check (-benchtime 20x, noisy):
// batch=1 110 events/s, batch=16 1,350, batch=256 6,300.
func BenchmarkApply(b *testing.B) {
	for _, size := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			v := newEnv(b).views(b, nil)
			events := readmodeltest.Pipeline(b, b.N*size)
			ctx := context.Background()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := v.Apply(ctx, events[i*size:(i+1)*size]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkCommandToProjection is the CQL path of a command without the
// change feed: each iteration appends one event (the store's lightweight
// transaction) and applies it (the read model's), one at a time, and it
// reports the latency of the pair. What the feed adds on top (a CDC
// confidence window and poll delay on ScyllaDB, hints or the
// reconciliation pass on Cassandra) is measured with the feed.
func BenchmarkCommandToProjection(b *testing.B) {
	e := newEnv(b)
	v := e.views(b, nil)
	events := readmodeltest.Pipeline(b, b.N)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for _, ev := range events {
		t := time.Now()
		ev.Position = 0
		if err := e.store.Append(ctx, ev.AggregateID, ev.Sequence-1, []store.Event{ev}); err != nil {
			b.Fatal(err)
		}
		if err := v.Apply(ctx, []store.Event{ev}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
}

// BenchmarkApplyDrain drains a backlog of 20,000 events (order lifecycles
// staggered, readmodeltest.Pipeline) through Apply in the feed's batches of
// 256, fenced as the projector's are, side by side in one run: rows=lwt
// writes every row with a lightweight transaction, as before issue 17
// (conditionalRows); rows=stamped writes them plain, stamped with their
// versions. It reports the events drained per second and the lightweight
// transactions per batch. Run it with -benchtime 1x (one drain per run) and
// -count for repeats: the modes then alternate. Figures and the machine's
// state are in docs/performance.md.
func BenchmarkApplyDrain(b *testing.B) {
	const backlog, size = 20_000, 256
	e := newEnv(b)
	for _, mode := range []struct {
		name        string
		conditional bool
	}{{"lwt", true}, {"stamped", false}} {
		b.Run("rows="+mode.name, func(b *testing.B) {
			c := NewRounds()
			v := e.countedViews(b, c)
			v.conditionalRows = mode.conditional
			ctx := e.fenced(b, context.Background())
			var drained, batches int
			lwts(c) // from zero
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				events := readmodeltest.Pipeline(b, backlog)
				b.StartTimer()
				for i := 0; i < len(events); i += size {
					if err := v.Apply(ctx, events[i:min(i+size, len(events))]); err != nil {
						b.Fatal(err)
					}
					batches++
				}
				drained += len(events)
			}
			b.ReportMetric(float64(drained)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(lwts(c))/float64(batches), "lwt/batch")
		})
	}
}
