package cql

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// TestHandOff: with no hints, no sweep and no recent pass after the first,
// the appends of this process reach its subscriptions by the hand-off
// alone: each subscription gets exactly its shard's aggregates, in order,
// without reading one event, and what it gets is what a read of the events
// table returns (the timestamp to the millisecond, no empty metadata map),
// so that a consumer cannot tell the two paths apart.
func TestHandOff(t *testing.T) {
	const count, consumer = 4, "handoff"
	s := openWith(t, withShards(withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 2}), count),
		Options{NoHints: true, NoSweep: true})
	if s.IsScylla() {
		t.Skip("on ScyllaDB the CDC log sees every append too")
	}
	var loads atomic.Int64
	s.feedLoad = func(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
		loads.Add(1)
		return s.load(ctx, id, after)
	}
	a, b := store.Shard{Index: 1, Count: count}, store.Shard{Index: 2, Count: count}
	ca, cb := newKeeper(t), newKeeper(t)
	subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, a, "x"), ca.handle)
	subscribeFenced(t, s, consumer, fenceOf(t, s, consumer, b, "x"), cb.handle)
	for _, sh := range []store.Shard{a, b} {
		waitShardPass(t, s, consumer, sh) // the one recent pass is over: nothing else reads
	}

	wantA, wantB := map[uuid.UUID]int64{}, map[uuid.UUID]int64{}
	var ids []uuid.UUID
	for i := range 12 {
		id := idIn(i%count, count)
		ids = append(ids, id)
		first := event(id, 1)
		first.Metadata = map[string]string{} // reads back as nil
		if err := s.Append(ctxFor(t), id, 0, []store.Event{first, event(id, 2)}); err != nil {
			t.Fatal(err)
		}
		if err := s.Append(ctxFor(t), id, 2, []store.Event{event(id, 3)}); err != nil {
			t.Fatal(err)
		}
		switch shardOf(id, count) {
		case a.Index:
			wantA[id] = 3
		case b.Index:
			wantB[id] = 3
		}
	}
	ca.waitFor(t, wantA, 30*time.Second)
	cb.waitFor(t, wantB, 30*time.Second)
	if n := loads.Load(); n != 0 {
		t.Errorf("the delivery core read events %d times; the hand-off should have brought them all", n)
	}
	for name, c := range map[string]struct {
		k    *keeper
		want map[uuid.UUID]int64
	}{"A": {ca, wantA}, "B": {cb, wantB}} {
		got := c.k.events()
		if len(got) != len(c.want) {
			t.Errorf("shard %s's subscription was handed %d aggregates, want only its %d", name, len(got), len(c.want))
		}
		for id, evs := range got {
			stored, err := s.Load(ctxFor(t), id, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(evs, stored) {
				t.Errorf("shard %s: %s handed\n%+v\nbut the table holds\n%+v", name, id, evs, stored)
			}
		}
	}
	if n := s.HandOffsDropped(); n != 0 {
		t.Errorf("%d hand-offs dropped with empty queues", n)
	}
}

// waitShardPass waits until a reconciliation pass of consumer's shard sh
// has finished.
func waitShardPass(t *testing.T, s *Store, consumer string, sh store.Shard) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		l, err := s.ShardLag(ctxFor(t), consumer, sh)
		if err != nil {
			t.Fatalf("ShardLag: %v", err)
		}
		if l.Known {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reconciliation pass of shard %d within 30s", sh.Index)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// keeper is a collector that keeps every event it was handed, and fails
// the test when an aggregate's events come out of order.
type keeper struct {
	*collector
	t    *testing.T
	mu   sync.Mutex
	kept map[uuid.UUID][]store.Event
}

func newKeeper(t *testing.T) *keeper {
	return &keeper{collector: newCollector(), t: t, kept: map[uuid.UUID][]store.Event{}}
}

func (k *keeper) handle(ctx context.Context, evs []store.Event) error {
	k.mu.Lock()
	for _, e := range evs {
		prev := k.kept[e.AggregateID]
		if want := int64(len(prev)) + 1; e.Sequence != want {
			k.t.Errorf("aggregate %s: event %d handed, want %d next", e.AggregateID, e.Sequence, want)
			continue
		}
		k.kept[e.AggregateID] = append(prev, e)
	}
	k.mu.Unlock()
	return k.collector.handle(ctx, evs)
}

func (k *keeper) events() map[uuid.UUID][]store.Event {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make(map[uuid.UUID][]store.Event, len(k.kept))
	for id, evs := range k.kept {
		out[id] = append([]store.Event(nil), evs...)
	}
	return out
}
