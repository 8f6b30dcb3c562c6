package sqlite

import (
	"context"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// TestFeedTailSwitch has a consumer switch between the log and the tail in
// memory while writers commit: it falls behind further than the tail
// holds (so it reads events.db), catches up (and is served from memory),
// then stops, misses more than the tail holds, and resumes from its saved
// position. Every event must be handed once, in position order, and equal
// to what the log returns for it; both sources must have served.
func TestFeedTailSwitch(t *testing.T) {
	s := mustOpenWith(t, filepath.Join(t.TempDir(), "events.db"), Options{FeedBatch: 7})
	s.tail.mu.Lock()
	s.tail.max = 24 // a few of the consumer's batches
	s.tail.mu.Unlock()

	var (
		mu   sync.Mutex
		got  []store.Event
		gate = make(chan struct{})
		once sync.Once
	)
	handler := func(ctx context.Context, evs []store.Event) error {
		once.Do(func() { <-gate }) // the first batch waits: the consumer falls behind
		mu.Lock()
		defer mu.Unlock()
		got = append(got, evs...)
		return nil
	}
	handed := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	subscribe := func() (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.Subscribe(ctx, "tail", handler) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Subscribe: %v", err)
			}
		}
	}
	// write has 4 writers append n events each, to aggregates of their
	// own, one or two events an append.
	write := func(n int) {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				id, seq := uuid.New(), int64(0)
				for seq < int64(n) {
					evs := []store.Event{event(id, seq+1)}
					if seq%3 == 1 && seq+2 <= int64(n) {
						evs = append(evs, event(id, seq+2))
					}
					if err := s.Append(t.Context(), id, seq, evs); err != nil {
						t.Errorf("Append: %v", err)
						return
					}
					seq += int64(len(evs))
				}
			})
		}
		wg.Wait()
	}
	waitFor := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for handed() < n {
			if time.Now().After(deadline) {
				t.Fatalf("handed %d events, want %d", handed(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	stop := subscribe()
	write(30) // 120 events while the first batch waits
	close(gate)
	write(30) // 120 more while the consumer catches up
	waitFor(240)
	stop()
	write(20) // 80 more than the tail holds, while no consumer runs
	stop = subscribe()
	waitFor(320)
	write(10)
	waitFor(360)
	stop()

	all, err := s.query(t.Context(), s.feedQ, int64(0), 1000)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(all) {
		t.Fatalf("handed %d events, the log holds %d", len(got), len(all))
	}
	for i := range all {
		if !reflect.DeepEqual(got[i], all[i]) {
			t.Fatalf("event %d handed as\n%+v\nthe log has\n%+v", i, got[i], all[i])
		}
	}
	s.tail.mu.Lock()
	defer s.tail.mu.Unlock()
	if s.tail.fromLog == 0 || s.tail.fromMemory == 0 {
		t.Errorf("batches from the log %d, from memory %d: want both sources used", s.tail.fromLog, s.tail.fromMemory)
	}
}

// TestFeedTailInvalid checks that the tail is not trusted after a write
// it cannot vouch for (here rows written without their events, as a
// failed COMMIT leaves it), and that the next commit anchors it again.
func TestFeedTailInvalid(t *testing.T) {
	s := mustOpen(t, filepath.Join(t.TempDir(), "events.db"), nil)
	id := uuid.New()
	if err := s.Append(t.Context(), id, 0, []store.Event{event(id, 1)}); err != nil {
		t.Fatal(err)
	}
	if evs, ok := s.tail.after(0, 10); !ok || len(evs) != 1 {
		t.Fatalf("after the first commit: %d events, %v; want 1, true", len(evs), ok)
	}
	s.tail.invalidate()
	if _, ok := s.tail.after(1, 10); ok {
		t.Fatal("an invalid tail answered")
	}
	evs, err := s.ReadFeed(t.Context(), 0, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("ReadFeed with an invalid tail: %d events, %v", len(evs), err)
	}
	if err := s.Append(t.Context(), id, 1, []store.Event{event(id, 2)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.tail.after(0, 10); ok {
		t.Fatal("the re-anchored tail answered for a position before its first event")
	}
	if evs, ok := s.tail.after(1, 10); !ok || len(evs) != 1 || evs[0].Sequence != 2 {
		t.Fatalf("after the next commit: %v, %v; want event 2, true", evs, ok)
	}
}

// TestTailTrim adds batches of every size around the tail's bound, with
// gaps between positions as rolled back appends leave them, and checks
// after each one that the tail answers for exactly the positions it
// holds: from every position at or past from, all the events above it.
func TestTailTrim(t *testing.T) {
	tl := tail{max: 10}
	var all []int64 // every position committed
	pos := int64(0)
	id := uuid.New()
	for b, size := range []int{1, 3, 9, 2, 11, 1, 5, 5, 5, 10, 4, 25, 1, 1, 7, 6} {
		r := &appendReq{rows: make([][]any, size), positions: make([]int64, size)}
		for i := range size {
			if (b+i)%4 == 3 {
				pos++ // a position a rolled back append took
			}
			pos++
			r.events = append(r.events, event(id, pos))
			r.positions[i] = pos
			all = append(all, pos)
		}
		tl.committed([]*appendReq{r}, []error{nil})
		if !tl.valid || len(tl.events) > tl.max {
			t.Fatalf("batch %d: valid %v, %d events held, at most %d", b, tl.valid, len(tl.events), tl.max)
		}
		for p := int64(0); p <= pos; p++ {
			evs, ok := tl.after(p, 1000)
			if p < tl.from {
				if ok {
					t.Fatalf("batch %d: answered for %d, below from %d", b, p, tl.from)
				}
				continue
			}
			var want, have []int64
			for _, q := range all {
				if q > p {
					want = append(want, q)
				}
			}
			for _, e := range evs {
				have = append(have, e.Position)
			}
			if !ok || !reflect.DeepEqual(have, want) {
				t.Fatalf("batch %d: after(%d) = %v, %v; want %v (from %d)", b, p, have, ok, want, tl.from)
			}
		}
	}
}
