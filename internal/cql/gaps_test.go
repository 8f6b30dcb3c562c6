package cql

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// hider is a load that hides one row of one aggregate from the first
// loads, as a replica that missed the write would, and records the
// sequence each load of that aggregate started after.
type hider struct {
	s      *Store
	id     uuid.UUID
	hidden int64 // the sequence hidden
	times  int   // how many loads it is hidden from

	mu     sync.Mutex
	afters []int64
}

func (h *hider) load(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
	evs, err := h.s.load(ctx, id, after)
	if err != nil || id != h.id {
		return evs, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.afters = append(h.afters, after)
	if len(h.afters) <= h.times {
		evs = slices.DeleteFunc(evs, func(e store.Event) bool { return e.Sequence == h.hidden })
	}
	return evs, nil
}

// orderChecker is a Handler that fails the test when an aggregate's event
// arrives before the one below it has.
type orderChecker struct {
	t  *testing.T
	mu sync.Mutex
	// top is the highest sequence handed per aggregate; at is when each
	// aggregate reached want.
	top  map[uuid.UUID]int64
	at   map[uuid.UUID]time.Time
	want map[uuid.UUID]int64
}

func (c *orderChecker) handle(_ context.Context, evs []store.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range evs {
		if e.Sequence > c.top[e.AggregateID]+1 {
			c.t.Errorf("aggregate %s: event %d handed before %d", e.AggregateID, e.Sequence, c.top[e.AggregateID]+1)
		}
		c.top[e.AggregateID] = max(c.top[e.AggregateID], e.Sequence)
		if c.top[e.AggregateID] == c.want[e.AggregateID] && c.at[e.AggregateID].IsZero() {
			c.at[e.AggregateID] = time.Now()
		}
	}
	return nil
}

// TestDeliverParksAHole: a row hidden from the first loads of one
// aggregate (events 1, 2, 4, 5 visible of 1..5) makes the delivery core
// hand 1 and 2 only, save progress through 2, and retry that aggregate
// alone until 3 shows; another aggregate of the same batch is handed in
// full meanwhile. Nothing but the retry asks again: no hints, no sweep,
// and one recent pass at the start.
func TestDeliverParksAHole(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: time.Hour, RangeSplits: 2}), Options{NoHints: true, NoHandOff: true, NoSweep: true})
	holed, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	h := &hider{s: s, id: holed, hidden: 3, times: 3}
	s.feedLoad = h.load
	for id, n := range map[uuid.UUID]int64{holed: 5, other: 4} {
		var evs []store.Event
		for seq := int64(1); seq <= n; seq++ {
			evs = append(evs, event(id, seq))
		}
		if err := s.Append(ctxFor(t), id, 0, evs); err != nil {
			t.Fatal(err)
		}
	}
	c := &orderChecker{t: t, top: map[uuid.UUID]int64{}, at: map[uuid.UUID]time.Time{},
		want: map[uuid.UUID]int64{holed: 5, other: 4}}
	run(t, s, "gaps", c.handle)

	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		done := c.top[holed] == 5 && c.top[other] == 4
		c.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			c.mu.Lock()
			t.Fatalf("handed %v within 30 s, want holed 5 and other 4", c.top)
		}
		time.Sleep(20 * time.Millisecond)
	}

	h.mu.Lock()
	afters := slices.Clone(h.afters)
	h.mu.Unlock()
	// Every load while 3 was hidden started after 2: progress never jumped
	// the hole. The first load starts after 0, the retries after 2, and
	// the one that saw 3 is the last.
	if want := []int64{0, 2, 2, 2}; !slices.Equal(afters, want) {
		t.Errorf("loads of the holed aggregate started after %v, want %v", afters, want)
	}
	// The progress is saved once the Handler returned: wait for it.
	for deadline := time.Now().Add(30 * time.Second); ; {
		got, err := s.newSubscription(context.Background(), "gaps", store.Whole, nil).readProgress(ctxFor(t), holed)
		if err == nil && got == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress of the holed aggregate = %d, %v; want 5", got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at[other].Before(c.at[holed]) {
		t.Errorf("the other aggregate was handed at %v, after the holed one (%v): it waited for the hole",
			c.at[other], c.at[holed])
	}
}

func TestContiguous(t *testing.T) {
	evs := func(seqs ...int64) []store.Event {
		var out []store.Event
		for _, s := range seqs {
			out = append(out, store.Event{Sequence: s})
		}
		return out
	}
	seqs := func(evs []store.Event) []int64 {
		out := []int64{}
		for _, e := range evs {
			out = append(out, e.Sequence)
		}
		return out
	}
	for _, c := range []struct {
		in      []int64
		handled int64
		want    []int64
	}{
		{[]int64{3, 4, 5}, 2, []int64{3, 4, 5}},
		{[]int64{3, 5, 6}, 2, []int64{3}},
		{[]int64{4, 5}, 2, []int64{}},
		{[]int64{}, 2, []int64{}},
	} {
		if got := seqs(contiguous(evs(c.in...), c.handled)); !slices.Equal(got, c.want) {
			t.Errorf("contiguous(%v after %d) = %v, want %v", c.in, c.handled, got, c.want)
		}
	}
	if got := seqs(after(evs(1, 2, 3, 4), 2)); !slices.Equal(got, []int64{3, 4}) {
		t.Errorf("after(1..4, 2) = %v", got)
	}
}

// TestDeliverParksAMiddleHole: the hole is in a later loaded batch, not at
// its first sequence. An aggregate handed up to 2 gets 3..6, of which 4
// stays hidden (a replica that missed it, for good): the core hands 3 and
// nothing after the hole, saves progress through 3 and no further, and
// keeps retrying that aggregate alone, while another aggregate appended
// meanwhile is handed in full.
func TestDeliverParksAMiddleHole(t *testing.T) {
	s := openWith(t, withFeed(testConfig(t), FeedOptions{ReconcileEvery: 200 * time.Millisecond, RangeSplits: 2}),
		Options{NoHints: true, NoHandOff: true, NoSweep: true})
	holed, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	// Row 4 is hidden from every load; until it is appended that hides
	// nothing.
	h := &hider{s: s, id: holed, hidden: 4, times: math.MaxInt}
	s.feedLoad = h.load
	appendN := func(id uuid.UUID, from, to int64) {
		t.Helper()
		var evs []store.Event
		for seq := from; seq <= to; seq++ {
			evs = append(evs, event(id, seq))
		}
		if err := s.Append(ctxFor(t), id, from-1, evs); err != nil {
			t.Fatal(err)
		}
	}
	appendN(holed, 1, 2)
	c := &orderChecker{t: t, top: map[uuid.UUID]int64{}, at: map[uuid.UUID]time.Time{},
		want: map[uuid.UUID]int64{holed: 6, other: 3}}
	run(t, s, "middle", c.handle)
	waitTop := func(id uuid.UUID, v int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			c.mu.Lock()
			got := c.top[id]
			c.mu.Unlock()
			if got >= v {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("aggregate handed up to %d within 30 s, want %d", got, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitTop(holed, 2)

	appendN(holed, 3, 6)
	appendN(other, 1, 3)
	waitTop(other, 3)
	waitTop(holed, 3)

	// Let it retry a few times (50, 100, 200, 400 ms ...).
	deadline := time.Now().Add(30 * time.Second)
	for {
		h.mu.Lock()
		retries := 0
		for _, a := range h.afters {
			if a == 3 {
				retries++
			}
		}
		h.mu.Unlock()
		if retries >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the holed aggregate was loaded after 3 only %d times within 30 s: not parked and retried", retries)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.mu.Lock()
	top := c.top[holed]
	c.mu.Unlock()
	if top != 3 {
		t.Errorf("handed the holed aggregate up to %d, want 3: events after the hole were handed", top)
	}
	if got, err := s.newSubscription(context.Background(), "middle", store.Whole, nil).readProgress(ctxFor(t), holed); err != nil || got != 3 {
		t.Errorf("saved progress of the holed aggregate = %d, %v; want 3", got, err)
	}
	h.mu.Lock()
	for _, a := range h.afters {
		if a > 3 {
			t.Errorf("a load started after %d: progress jumped the hole (loads after %v)", a, h.afters)
		}
	}
	h.mu.Unlock()
}
