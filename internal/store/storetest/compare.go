package storetest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// ByAggregate reads every event of lg, by aggregate, each aggregate's in
// sequence order, with Position cleared (a position belongs to one store).
// The handler may be called from several goroutines (CQL replays token
// ranges at once), so it locks.
func ByAggregate(t testing.TB, lg store.Log) map[uuid.UUID][]store.Event {
	t.Helper()
	out := map[uuid.UUID][]store.Event{}
	var mu sync.Mutex
	if _, err := lg.Replay(context.Background(), 0, func(_ context.Context, evs []store.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range evs {
			e.Position = 0
			out[e.AggregateID] = append(out[e.AggregateID], e)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// SameEvents fails t unless got holds exactly want's aggregates and
// events, field by field; timestamps to the millisecond where millis
// (what a CQL store keeps).
func SameEvents(t testing.TB, want, got map[uuid.UUID][]store.Event, millis bool) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d aggregates, want %d", len(got), len(want))
	}
	for id, ws := range want {
		gs := got[id]
		if len(gs) != len(ws) {
			t.Fatalf("aggregate %s: %d events, want %d", id, len(gs), len(ws))
		}
		for i, w := range ws {
			g := gs[i]
			if millis {
				w.Timestamp = w.Timestamp.Truncate(time.Millisecond)
			}
			if g.ID != w.ID || g.AggregateType != w.AggregateType || g.Sequence != w.Sequence || g.Type != w.Type ||
				g.SchemaVersion != w.SchemaVersion || !bytes.Equal(g.Data, w.Data) || g.CausationID != w.CausationID ||
				g.CorrelationID != w.CorrelationID || !g.Timestamp.Equal(w.Timestamp) || fmt.Sprint(g.Metadata) != fmt.Sprint(w.Metadata) {
				t.Fatalf("aggregate %s event %d:\n got %+v\nwant %+v", id, i+1, g, w)
			}
		}
	}
}
