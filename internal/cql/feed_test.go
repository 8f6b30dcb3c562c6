package cql

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// The conformance suite (TestConformance) checks what the port promises:
// completeness, order, resume, independent consumers, handler errors,
// blind appends, lag and leases. These tests check this backend's own
// mechanisms: that each path works alone, and the knobs.

// collector is a Handler that records what it was handed.
type collector struct {
	mu      sync.Mutex
	got     map[uuid.UUID]int64 // highest sequence per aggregate
	batches []int               // size of each batch
	changed chan struct{}
}

func newCollector() *collector {
	return &collector{got: map[uuid.UUID]int64{}, changed: make(chan struct{})}
}

func (c *collector) handle(_ context.Context, evs []store.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		c.got[e.AggregateID] = max(c.got[e.AggregateID], e.Sequence)
	}
	c.batches = append(c.batches, len(evs))
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

// waitFor waits until every aggregate of want was handed up to its
// version; the guard only turns a hang into a failure.
func (c *collector) waitFor(t *testing.T, want map[uuid.UUID]int64, guard time.Duration) {
	t.Helper()
	deadline := time.After(guard)
	for {
		c.mu.Lock()
		missing := 0
		for id, v := range want {
			if c.got[id] < v {
				missing++
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%d of %d aggregates not handed within %v", missing, len(want), guard)
		}
	}
}

// run subscribes h as consumer until the test ends.
func run(t *testing.T, s *Store, consumer string, h store.Handler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, consumer, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	})
}

// waitPass waits until a reconciliation pass of consumer has finished.
func waitPass(t *testing.T, s *Store, consumer string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l, err := s.Lag(ctxFor(t), consumer)
		if err != nil {
			t.Fatalf("Lag: %v", err)
		}
		if l.Known {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no reconciliation pass within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHintsAlone: with no reconciliation pass after the first, appends on
// Cassandra reach the Handler through their hints.
func TestHintsAlone(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 4}), Options{})
	if s.IsScylla() {
		t.Skip("hints are written on Cassandra only")
	}
	c := newCollector()
	run(t, s, "hinted", c.handle)
	waitPass(t, s, "hinted")

	want := map[uuid.UUID]int64{}
	for range 20 {
		id := uuid.Must(uuid.NewV7())
		if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1), event(id, 2)}); err != nil {
			t.Fatalf("Append: %v", err)
		}
		want[id] = 2
	}
	c.waitFor(t, want, 30*time.Second)
	if n := s.HintsDropped(); n != 0 {
		t.Errorf("%d hints dropped", n)
	}
}

// TestBatchSize: no Handler call gets more than BatchSize events, and an
// aggregate longer than that comes in consecutive batches.
func TestBatchSize(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{BatchSize: 7, ReconcileEvery: time.Hour, RangeSplits: 2}), Options{NoHints: true, NoHandOff: true})
	want := map[uuid.UUID]int64{}
	for i := range 5 {
		id := uuid.Must(uuid.NewV7())
		var evs []store.Event
		for seq := int64(1); seq <= int64(1+i*6); seq++ {
			evs = append(evs, event(id, seq))
		}
		if err := s.Append(ctxFor(t), id, 0, evs); err != nil {
			t.Fatalf("Append: %v", err)
		}
		want[id] = int64(len(evs))
	}
	c := newCollector()
	run(t, s, "small", c.handle) // the start pass delivers them
	c.waitFor(t, want, 30*time.Second)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, n := range c.batches {
		if n > 7 {
			t.Errorf("batch %d has %d events, want ≤ 7", i, n)
		}
	}
}

// TestProgressNeverMovesBack: a save of a lower version, landing after a
// higher one (two subscriptions of one consumer during a failover), leaves
// the higher.
func TestProgressNeverMovesBack(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	sub := s.newSubscription(context.Background(), "failover", store.Whole, nil)
	id := uuid.Must(uuid.NewV7())
	for _, v := range []int64{5, 3, 4} {
		if err := sub.saveProgress(ctxFor(t), map[uuid.UUID]int64{id: v}); err != nil {
			t.Fatalf("saveProgress(%d): %v", v, err)
		}
	}
	if got, err := sub.readProgress(ctxFor(t), id); err != nil || got != 5 {
		t.Errorf("progress = %d, %v; want 5", got, err)
	}
	if got, err := s.newSubscription(context.Background(), "other", store.Whole, nil).readProgress(ctxFor(t), id); err != nil || got != 0 {
		t.Errorf("another consumer's progress = %d, %v; want 0", got, err)
	}
}

// TestSubscribeClosed: a running Subscribe returns store.ErrClosed when
// the store closes, without waiting for its next pass.
func TestSubscribeClosed(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 4}), Options{})
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(context.Background(), "c", newCollector().handle) }()
	waitPass(t, s, "c")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("Subscribe when the store closed: %v, want ErrClosed", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Subscribe did not return after Close")
	}
}

// TestRedeliverableGuessesCreations: for an aggregate at version 1 whose
// progress it has not cached, a subscription of a consumer named in
// FeedOptions.Redeliverable hands event 1 without reading feed_progress,
// so that one it had handled comes again; any other consumer reads the
// progress and gets nothing. An aggregate past version 1 is read for both.
func TestRedeliverableGuessesCreations(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{Redeliverable: []string{"guessing"}}),
		Options{NoHints: true, NoHandOff: true, NoSweep: true})
	created, two := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	if err := s.Append(ctxFor(t), created, 0, []store.Event{event(created, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctxFor(t), two, 0, []store.Event{event(two, 1), event(two, 2)}); err != nil {
		t.Fatal(err)
	}
	for consumer, redelivered := range map[string]bool{"guessing": true, "reading": false} {
		t.Run(consumer, func(t *testing.T) {
			// Both aggregates handled to the end, by an earlier run.
			before := s.newSubscription(context.Background(), consumer, store.Whole, nil)
			if err := before.saveProgress(ctxFor(t), map[uuid.UUID]int64{created: 1, two: 2}); err != nil {
				t.Fatal(err)
			}
			c := newCollector()
			sub := s.newSubscription(context.Background(), consumer, store.Whole, c.handle)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- sub.deliver(ctx) }()
			defer func() { cancel(); <-done }()
			var acks []chan struct{}
			for id, v := range map[uuid.UUID]int64{created: 1, two: 2} {
				ack := make(chan struct{})
				acks = append(acks, ack)
				if err := sub.send(ctx, request{id: id, version: v, known: -1, acks: []chan struct{}{ack}}); err != nil {
					t.Fatal(err)
				}
			}
			for _, ack := range acks {
				select {
				case <-ack:
				case <-time.After(30 * time.Second):
					t.Fatal("a request not handled within 30 s")
				}
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			if got := c.got[created] == 1; got != redelivered {
				t.Errorf("the creation handed again: %v, want %v", got, redelivered)
			}
			if v, ok := c.got[two]; ok {
				t.Errorf("the aggregate at version 2 handed again up to %d, want not at all", v)
			}
			if got, err := sub.readProgress(ctxFor(t), created); err != nil || got != 1 {
				t.Errorf("progress of the creation = %d, %v; want 1", got, err)
			}
		})
	}
}
