package cql

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// fill appends n aggregates of 3 events each, from 16 writers, through a
// store that writes no hints.
func fill(b *testing.B, s *Store, n int) {
	b.Helper()
	var (
		wg   sync.WaitGroup
		next = make(chan int)
		fail error
		mu   sync.Mutex
	)
	for range 16 {
		wg.Go(func() {
			for range next {
				id := uuid.Must(uuid.NewV7())
				if err := s.Append(ctxFor(b), id, 0, []store.Event{event(id, 1), event(id, 2), event(id, 3)}); err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if fail != nil {
		b.Fatalf("Append: %v", fail)
	}
}

// benchSplits is RangeSplits in BenchmarkReconcile: few, since with only
// a few thousand aggregates a query per range would measure round trips.
const benchSplits = 8

// BenchmarkReconcile: one full sweep over 5,000 aggregates of 3
// events, in benchSplits token ranges, with no rate limit. "behind" is a
// consumer that has handled nothing: every aggregate is loaded, handed to
// a Handler that does nothing, and its progress saved. "caught-up" is the
// steady state: the pass only reads versions and progress.
func BenchmarkReconcile(b *testing.B) {
	const aggregates = 5000
	cfg := testConfig(b)
	s := openWith(b, withFeed(cfg, FeedOptions{ReconcileRate: 1 << 30, ReconcileEvery: time.Hour, RangeSplits: benchSplits}), Options{NoHints: true, NoHandOff: true})
	fill(b, s, aggregates)
	noop := func(context.Context, []store.Event) error { return nil }

	onePass := func(b *testing.B, consumer string) time.Duration {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sub := s.newSubscription(context.Background(), consumer, store.Whole, noop)
		done := make(chan error, 1)
		go func() { done <- sub.deliver(ctx) }()
		start := time.Now()
		if err := sub.sweepFrom(ctx, newRateShare(sub), sweepState{cursor: minToken, started: start}); err != nil {
			b.Fatalf("sweep: %v", err)
		}
		took := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("deliver: %v", err)
		}
		return took
	}
	b.Run("behind", func(b *testing.B) {
		var total time.Duration
		for i := range b.N {
			total += onePass(b, fmt.Sprintf("fresh-%d", i))
		}
		b.ReportMetric(float64(aggregates*b.N)/total.Seconds(), "aggregates/s")
	})
	b.Run("caught-up", func(b *testing.B) {
		onePass(b, "steady")
		var total time.Duration
		for range b.N {
			total += onePass(b, "steady")
		}
		b.ReportMetric(float64(aggregates*b.N)/total.Seconds(), "aggregates/s")
	})
}

// BenchmarkHintLatency: the time from an Append returning to the Handler
// being handed its event, on Cassandra, through the hints, at the default
// HintPoll of 100 ms, with 4 writers appending one event at a time.
func BenchmarkHintLatency(b *testing.B) {
	s := openWith(b, withFeed(testConfig(b), FeedOptions{ReconcileEvery: time.Hour}), Options{}) // the default Concurrency, 64
	if s.IsScylla() {
		b.Skip("hints are written on Cassandra only")
	}
	var (
		mu       sync.Mutex
		appended = map[uuid.UUID]time.Time{} // when Append returned
		handed   = map[uuid.UUID]time.Time{} // when the Handler got it
		all      = make(chan struct{})
	)
	h := func(_ context.Context, evs []store.Event) error {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			if _, ok := handed[e.AggregateID]; !ok {
				handed[e.AggregateID] = now
				if len(handed) == b.N {
					close(all)
				}
			}
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Subscribe(ctx, "latency", h) }()
	deadline := time.Now().Add(30 * time.Second)
	for l, _ := s.Lag(ctx, "latency"); !l.Known; l, _ = s.Lag(ctx, "latency") {
		if time.Now().After(deadline) {
			b.Fatal("no first pass within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	b.ResetTimer()
	var wg sync.WaitGroup
	next := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for range next {
				id := uuid.Must(uuid.NewV7())
				if err := s.Append(ctx, id, 0, []store.Event{event(id, 1)}); err != nil {
					b.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				appended[id] = time.Now()
				mu.Unlock()
			}
		})
	}
	for range b.N {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d of %d events not handed within 30s", b.N-len(handed), b.N)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	var latencies []time.Duration
	for id, at := range appended {
		latencies = append(latencies, handed[id].Sub(at))
	}
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(s.HintsDropped()), "dropped")
}

// BenchmarkDeliverCreations: the delivery core bringing 2,000 aggregates
// of one event each (a burst of creations) to a consumer that has handled
// none, from requests that name them at version 1 without their events
// (as the hints and the recent pass do), to a Handler that does nothing.
// "reads-progress" reads each one's progress first, as the relay does;
// "redeliverable" is a consumer named in FeedOptions.Redeliverable, as
// the projector is. cpu-µs/event is this process's CPU (the driver's work
// included, Cassandra's not).
func BenchmarkDeliverCreations(b *testing.B) {
	const aggregates = 2000
	s := openWith(b, withFeed(testConfig(b), FeedOptions{ReconcileEvery: time.Hour}), Options{NoHints: true, NoHandOff: true, NoSweep: true})
	ids := make([]uuid.UUID, aggregates)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
		if err := s.Append(ctxFor(b), ids[i], 0, []store.Event{event(ids[i], 1)}); err != nil {
			b.Fatal(err)
		}
	}
	noop := func(context.Context, []store.Event) error { return nil }
	onePass := func(b *testing.B, consumer string) (time.Duration, time.Duration) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		sub := s.newSubscription(context.Background(), consumer, store.Whole, noop)
		sub.redeliverable = strings.HasPrefix(consumer, "redeliverable")
		done := make(chan error, 1)
		go func() { done <- sub.deliver(ctx) }()
		cpu0, start := processCPU(b), time.Now()
		acks := make([]chan struct{}, len(ids))
		for i, id := range ids {
			acks[i] = make(chan struct{})
			if err := sub.send(ctx, request{id: id, version: 1, known: -1, acks: []chan struct{}{acks[i]}}); err != nil {
				b.Fatal(err)
			}
		}
		for _, ack := range acks {
			<-ack
		}
		took, cpu := time.Since(start), processCPU(b)-cpu0
		cancel()
		if err := <-done; err != nil {
			b.Fatalf("deliver: %v", err)
		}
		return took, cpu
	}
	for _, kind := range []string{"reads-progress", "redeliverable"} {
		b.Run(kind, func(b *testing.B) {
			var took, cpu time.Duration
			for range b.N {
				consumer := "fresh-" + uuid.NewString()
				if kind == "redeliverable" {
					consumer = kind + "-" + uuid.NewString()
				}
				t, c := onePass(b, consumer)
				took, cpu = took+t, cpu+c
			}
			b.ReportMetric(float64(aggregates*b.N)/took.Seconds(), "events/s")
			b.ReportMetric(float64(cpu.Microseconds())/float64(aggregates*b.N), "cpu-µs/event")
		})
	}
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
