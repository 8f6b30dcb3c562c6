package cql

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// BenchmarkReplay: Replay of 21,000 events (7,000 aggregates of 3) to a
// Handler that only counts them, and Count over the same keyspace.
func BenchmarkReplay(b *testing.B) {
	const aggregates = 7000
	s := openWith(b, withFeed(testConfig(b), FeedOptions{ReconcileEvery: time.Hour}), Options{NoHints: true, NoHandOff: true})
	fill(b, s, aggregates)
	b.Run("replay", func(b *testing.B) {
		var n atomic.Int64
		count := func(_ context.Context, evs []store.Event) error {
			n.Add(int64(len(evs)))
			return nil
		}
		b.ResetTimer()
		for range b.N {
			if _, err := s.Replay(ctxFor(b), 0, count); err != nil {
				b.Fatalf("Replay: %v", err)
			}
		}
		b.StopTimer()
		if want := int64(3 * aggregates * b.N); n.Load() != want {
			b.Fatalf("Replay handed %d events, want %d", n.Load(), want)
		}
		b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("count", func(b *testing.B) {
		for range b.N {
			if n, err := s.Count(ctxFor(b)); err != nil || n != 3*aggregates {
				b.Fatalf("Count = %d, %v; want %d", n, err, 3*aggregates)
			}
		}
		b.ReportMetric(float64(aggregates*b.N)/b.Elapsed().Seconds(), "aggregates/s")
	})
}
