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
