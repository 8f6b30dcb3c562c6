package cql

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// TestReplayAcrossBatches: an aggregate longer than a batch and than a
// page reaches the Handler in sequence order across batches, beside
// aggregates the other workers read at the same time.
func TestReplayAcrossBatches(t *testing.T) {
	s := mustOpen(t, testConfig(t), nil)
	ctx := ctxFor(t)
	long := uuid.Must(uuid.NewV7())
	const n = 2*replayBatch + 500 // three batches, and pages cut inside the partition
	for v := int64(0); v < n; v += 250 {
		evs := make([]store.Event, 0, 250)
		for seq := v + 1; seq <= v+250 && seq <= n; seq++ {
			evs = append(evs, event(long, seq))
		}
		if err := s.Append(ctx, long, v, evs); err != nil {
			t.Fatalf("Append at %d: %v", v, err)
		}
	}
	short := make([]uuid.UUID, 40)
	for i := range short {
		short[i] = uuid.Must(uuid.NewV7())
		if err := s.Append(ctx, short[i], 0, []store.Event{event(short[i], 1), event(short[i], 2)}); err != nil {
			t.Fatalf("Append: %v", err)
		}
	}
	last := map[uuid.UUID]int64{}
	batches, total := 0, 0
	_, err := s.Replay(ctx, 0, func(_ context.Context, evs []store.Event) error {
		batches++
		if len(evs) > replayBatch {
			t.Errorf("a batch of %d events, want at most %d", len(evs), replayBatch)
		}
		for _, e := range evs {
			if e.Sequence != last[e.AggregateID]+1 {
				t.Fatalf("aggregate %s: sequence %d after %d", e.AggregateID, e.Sequence, last[e.AggregateID])
			}
			last[e.AggregateID] = e.Sequence
			total++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if want := n + 2*len(short); total != want || last[long] != n {
		t.Fatalf("Replay handed %d events (the long aggregate up to %d), want %d (up to %d)", total, last[long], want, n)
	}
	if batches < 3 {
		t.Fatalf("%d batches, want at least 3", batches)
	}
	if c, err := s.Count(ctx); err != nil || c != int64(total) {
		t.Fatalf("Count = %d, %v; want %d", c, err, total)
	}
}
