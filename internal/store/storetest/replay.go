package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// replayed collects what Replay hands, per aggregate, and fails the test
// when an aggregate's events skip or go back within one Replay.
type replayed struct {
	t      *testing.T
	mu     sync.Mutex
	byAgg  map[uuid.UUID][]store.Event
	total  int
	starts map[uuid.UUID]int64 // the sequence each aggregate may resume at: ≤ its last + 1
}

func newReplayed(t *testing.T) *replayed {
	return &replayed{t: t, byAgg: map[uuid.UUID][]store.Event{}, starts: map[uuid.UUID]int64{}}
}

func (r *replayed) handle(_ context.Context, evs []store.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range evs {
		have := r.byAgg[e.AggregateID]
		if len(have) > 0 && e.Sequence != have[len(have)-1].Sequence+1 {
			r.t.Errorf("aggregate %s: sequence %d after %d", e.AggregateID, e.Sequence, have[len(have)-1].Sequence)
		}
		r.byAgg[e.AggregateID] = append(have, e)
		r.total++
	}
	return nil
}

// byAggregate groups events by aggregate, keeping their order.
func byAggregate(evs []store.Event) map[uuid.UUID][]store.Event {
	m := map[uuid.UUID][]store.Event{}
	for _, e := range evs {
		m[e.AggregateID] = append(m[e.AggregateID], e)
	}
	return m
}

func testReplayWhole(t *testing.T, b backend) {
	s := b.open(t, nil)
	log := as[store.Log](t, s)
	ctx := testContext(t)
	if mark, err := log.Replay(ctx, 0, func(context.Context, []store.Event) error {
		return errors.New("handed an event of an empty store")
	}); err != nil || mark != 0 {
		t.Fatalf("Replay of an empty store = %d, %v; want 0, nil", mark, err)
	}
	want := byAggregate(appendMany(t, s, 4, 10, 40))
	for i := range 3 { // minted, one of them appended to since
		id := uuid.Must(uuid.NewV7())
		evs := widgets(id, 0, 2)
		if err := s.Mint(ctx, id, evs); err != nil {
			t.Fatalf("Mint: %v", err)
		}
		if i == 0 {
			more := widgets(id, 2, 1)
			mustAppend(t, s, id, 2, more)
			evs = append(evs, more...)
		}
		want[id] = evs
	}
	total := 0
	for _, evs := range want {
		total += len(evs)
	}
	if n, err := log.Count(ctx); err != nil || n != int64(total) {
		t.Fatalf("Count = %d, %v; want %d", n, err, total)
	}
	r := newReplayed(t)
	if _, err := log.Replay(ctx, 0, r.handle); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if r.total != total {
		t.Fatalf("Replay handed %d events, want each of the %d once", r.total, total)
	}
	for id, evs := range want {
		b.checkEvents(t, r.byAgg[id], evs)
	}
}

func testReplayMark(t *testing.T, b backend) {
	s := b.open(t, nil)
	log := as[store.Log](t, s)
	ctx := testContext(t)
	first := byAggregate(appendMany(t, s, 2, 5, 20))
	r := newReplayed(t)
	mark, err := log.Replay(ctx, 0, r.handle)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	// Events after the mark: new aggregates and the tails of old ones.
	later := byAggregate(appendMany(t, s, 2, 3, 10))
	var old uuid.UUID
	for id := range first {
		old = id
		break
	}
	tail := widgets(old, int64(len(first[old])), 3)
	mustAppend(t, s, old, int64(len(first[old])), tail)
	later[old] = tail

	again := newReplayed(t)
	mark2, err := log.Replay(ctx, mark, again.handle)
	if err != nil {
		t.Fatalf("Replay after mark %d: %v", mark, err)
	}
	if !b.caps.Positions {
		if mark != 0 || mark2 != 0 {
			t.Fatalf("marks %d, %d from a backend without positions, want 0", mark, mark2)
		}
		// Everything again, then: the old aggregate from its first event.
		b.checkEvents(t, again.byAgg[old], append(append([]store.Event{}, first[old]...), tail...))
		return
	}
	if mark2 <= mark {
		t.Fatalf("second mark %d, want above %d", mark2, mark)
	}
	n := 0
	for id, evs := range later {
		b.checkEvents(t, again.byAgg[id], evs)
		n += len(evs)
	}
	if again.total != n {
		t.Fatalf("Replay after the mark handed %d events, want the %d appended after it", again.total, n)
	}
}

func testReplayHandlerError(t *testing.T, b backend) {
	s := b.open(t, nil)
	appendMany(t, s, 2, 3, 10)
	boom := errors.New("boom")
	calls := 0
	_, err := as[store.Log](t, s).Replay(testContext(t), 0, func(context.Context, []store.Event) error {
		calls++
		return fmt.Errorf("handler: %w", boom)
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Replay = %v, want the handler's error", err)
	}
	if calls != 1 {
		t.Fatalf("handler called %d times after failing, want once", calls)
	}
}

func testReplayCancel(t *testing.T, b backend) {
	s := b.open(t, nil)
	appendMany(t, s, 2, 3, 10)
	ctx, cancel := context.WithCancel(testContext(t))
	_, err := as[store.Log](t, s).Replay(ctx, 0, func(context.Context, []store.Event) error {
		cancel()
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Replay with a context cancelled = %v, want nil or context.Canceled", err)
	}
}
