package cql

import (
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// perAggregate is how many events a benchmark writer appends to one
// aggregate before it starts another, so that creations (IF version = null)
// and advances (IF version = n) are both measured, and partitions stay
// small.
const perAggregate = 20

// BenchmarkAppendLWT: one writer appending one event at a time, each append
// one lightweight transaction (four round trips between coordinator and
// replicas: prepare, read, propose, commit).
func BenchmarkAppendLWT(b *testing.B) {
	s := mustOpen(b, testConfig(b), nil)
	ctx := ctxFor(b)
	var id uuid.UUID
	var version int64
	b.ResetTimer()
	for i := range b.N {
		if i%perAggregate == 0 {
			id, version = uuid.Must(uuid.NewV7()), 0
		}
		if err := s.Append(ctx, id, version, []store.Event{event(id, version+1)}); err != nil {
			b.Fatalf("Append: %v", err)
		}
		version++
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/append")
}

// BenchmarkAppendLWTParallel: 32 writers, each appending one event at a
// time to aggregates of its own, so that there is no contention, only load.
func BenchmarkAppendLWTParallel(b *testing.B) {
	s := mustOpen(b, testConfig(b), nil)
	ctx := ctxFor(b)
	var failed atomic.Value
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0))) // RunParallel starts p×GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var id uuid.UUID
		version := int64(perAggregate)
		for pb.Next() {
			if version == perAggregate {
				id, version = uuid.Must(uuid.NewV7()), 0
			}
			if err := s.Append(ctx, id, version, []store.Event{event(id, version+1)}); err != nil {
				failed.Store(err)
				return
			}
			version++
		}
	})
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatalf("Append: %v", err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
