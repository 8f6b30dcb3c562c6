package cql

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
)

// TestOneFenceCheckPerBatch: a fenced projector pays one Paxos round per
// batch the feed delivers, shared by its rows' writes and the progress
// save (withBatchCheck), not one for each; and a holder whose lease was
// taken still writes nothing (TestShardFences and the conformance suite
// hold the refusals; here the count).
func TestOneFenceCheckPerBatch(t *testing.T) {
	const consumer = "projector-rounds"
	rounds := NewRounds()
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 2}),
		Options{NoSweep: true, Observer: rounds})
	views := NewViews(s.Session(), zap.NewNop())

	var (
		mu      sync.Mutex
		batches int
		got     = map[uuid.UUID]int64{}
	)
	apply := func(ctx context.Context, evs []store.Event) error {
		if err := views.Apply(ctx, evs); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		batches++
		for _, e := range evs {
			got[e.AggregateID] = max(got[e.AggregateID], e.Sequence)
		}
		return nil
	}
	f := fenceOf(t, s, consumer, store.Whole, "x")
	subscribeFenced(t, s, consumer, f, apply)
	waitShardPass(t, s, consumer, store.Whole) // the one recent pass is over: only batches check from here
	rounds.Take()
	mu.Lock()
	batches = 0
	mu.Unlock()

	events := readmodeltest.Pipeline(t, 120)
	want := map[uuid.UUID]int64{}
	for _, e := range events { // one append per event, as commands make them
		if err := s.Append(ctxFor(t), e.AggregateID, e.Sequence-1, []store.Event{e}); err != nil {
			t.Fatal(err)
		}
		want[e.AggregateID] = e.Sequence
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		done := len(got) == len(want)
		for id, v := range want {
			done = done && got[id] == v
		}
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the projector was not handed every event within a minute")
		}
	}
	time.Sleep(200 * time.Millisecond) // the last batch's progress save
	lwt, _ := rounds.Take()
	mu.Lock()
	defer mu.Unlock()
	if checks := lwt[fenceCheckCQL]; checks != batches {
		t.Errorf("%d fence checks for %d delivered batches, want one each", checks, batches)
	}
	t.Logf("%d events of %d aggregates in %d batches: %d fence checks", len(events), len(want), batches, lwt[fenceCheckCQL])
}

// TestBatchPace: a fenced subscription starts its batches at most every
// FeedOptions.BatchPace when its checks are slow (the factor is raised
// here to make them count as slow), and its requests gather meanwhile;
// when its checks are quick (the real factor, ten times a check on an
// idle node) it does not wait the whole BatchPace.
func TestBatchPace(t *testing.T) {
	t.Run("slow checks", func(t *testing.T) {
		const pace = 300 * time.Millisecond
		s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 2, BatchPace: pace}),
			Options{NoSweep: true})
		s.paceFactor = 100000 // every check counts as slow: the pace is BatchPace
		starts := make(chan time.Time, 1000)
		c := newCollector()
		subscribeFenced(t, s, "paced", fenceOf(t, s, "paced", store.Whole, "x"), func(ctx context.Context, evs []store.Event) error {
			starts <- time.Now()
			return c.handle(ctx, evs)
		})
		waitShardPass(t, s, "paced", store.Whole)
		want := map[uuid.UUID]int64{}
		for range 6 { // six bursts of 10 concurrent creates, 100 ms apart
			var wg sync.WaitGroup
			for range 10 {
				id := uuid.Must(uuid.NewV7())
				want[id] = 1
				wg.Go(func() {
					if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			time.Sleep(100 * time.Millisecond)
		}
		c.waitFor(t, want, 30*time.Second)
		close(starts)
		var (
			prev    time.Time
			batches int
		)
		for at := range starts {
			// The pace spaces the starts of the delivery core's batches;
			// a handler call follows its batch's start by the batch's
			// preparation, which varies by a few milliseconds.
			if !prev.IsZero() && at.Sub(prev) < pace-30*time.Millisecond {
				t.Errorf("batch %d started %v after the one before, want at least the pace %v", batches, at.Sub(prev), pace)
			}
			prev = at
			batches++
		}
		if batches >= len(want)/2 {
			t.Errorf("%d creates came in %d batches; the pace should have gathered them", len(want), batches)
		}
		t.Logf("%d creates in %d batches", len(want), batches)
	})
	t.Run("quick checks", func(t *testing.T) {
		const pace = 10 * time.Second
		s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 2, BatchPace: pace}),
			Options{NoSweep: true})
		c := newCollector()
		subscribeFenced(t, s, "paced", fenceOf(t, s, "paced", store.Whole, "x"), c.handle)
		waitShardPass(t, s, "paced", store.Whole)
		for i := range 5 {
			id := uuid.Must(uuid.NewV7())
			t0 := time.Now()
			if err := s.Append(ctxFor(t), id, 0, []store.Event{event(id, 1)}); err != nil {
				t.Fatal(err)
			}
			// Ten times a fence check is well under the 10 s BatchPace
			// unless the node is badly overloaded.
			c.waitFor(t, map[uuid.UUID]int64{id: 1}, pace/2)
			t.Logf("create %d handed %v after its append", i, time.Since(t0).Round(time.Millisecond))
		}
	})
}
