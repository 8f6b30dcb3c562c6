package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testConflict: an append at the wrong expected version fails with
// ErrConflict and stores none of its events. A conflict is certain: it
// never wraps ErrUnavailable or ErrOutcomeUnknown, which the caller answers
// as "try again later" rather than as a refusal.
func testConflict(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	first := widgets(id, 0, 2)
	mustAppend(t, s, id, 0, first)
	var head int64
	if b.caps.Positions {
		head = mustHead(t, s)
	}

	tests := []struct {
		name     string
		expected int64
		n        int
	}{
		{"behind", 0, 1},
		{"behind, several events", 1, 3},
		{"ahead", 5, 1},
		{"ahead, several events", 3, 4},
	}
	for _, tc := range tests {
		err := s.Append(testContext(t), id, tc.expected, widgets(id, tc.expected, tc.n))
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Append error = %v, want ErrConflict", tc.name, err)
		}
		if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrOutcomeUnknown) {
			t.Errorf("%s: Append error = %v, a conflict that says the outcome is unknown", tc.name, err)
		}
	}
	b.checkEvents(t, mustLoad(t, s, id, 0), first)
	if b.caps.Positions {
		if h := mustHead(t, s); h != head {
			t.Errorf("Head = %d after conflicts, want %d", h, head)
		}
	}

	// The aggregate still takes the right version.
	next := widgets(id, 2, 2)
	mustAppend(t, s, id, 2, next)
	b.checkEvents(t, mustLoad(t, s, id, 0), append(first, next...))
}

// testSameVersionRace: of many appends racing at the same version exactly
// one wins, and the stored events are the winner's.
func testSameVersionRace(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	won := raceAt(t, s, id, 0, 16, 2)
	b.checkEvents(t, mustLoad(t, s, id, 0), won)
}

// raceAt has n appends of size events each race at version at of id,
// checks that exactly one wins and the others are conflicts, and returns
// the winner's events.
func raceAt(t *testing.T, s store.Store, id uuid.UUID, at int64, n, size int) []store.Event {
	t.Helper()
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		errs  = make([]error, n)
		evs   = make([][]store.Event, n)
	)
	ctx := testContext(t)
	for i := range n {
		evs[i] = widgets(id, at, size)
		wg.Go(func() {
			<-start
			errs[i] = s.Append(ctx, id, at, evs[i])
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("appends %d and %d both succeeded at version %d", winner, i, at)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("append %d at version %d: %v, want nil or ErrConflict", i, at, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no append succeeded at version %d", at)
	}
	return evs[winner]
}

// testConcurrentWriters: writers that load, append at the loaded version and
// retry on conflict all get their events in, with no gap and no duplicate.
func testConcurrentWriters(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	const writers, perWriter = 32, 5
	ctx := testContext(t)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		written = make(map[uuid.UUID]int) // event id → writer
	)
	for w := range writers {
		wg.Go(func() {
			for range perWriter {
				for {
					if t.Failed() {
						return
					}
					evs, err := s.Load(ctx, id, 0)
					if err != nil {
						t.Errorf("writer %d: Load: %v", w, err)
						return
					}
					version := int64(len(evs))
					e := widgets(id, version, 1)
					err = s.Append(ctx, id, version, e)
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						t.Errorf("writer %d: Append at %d: %v", w, version, err)
						return
					}
					mu.Lock()
					written[e[0].ID] = w
					mu.Unlock()
					break
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	got := mustLoad(t, s, id, 0)
	if len(got) != writers*perWriter {
		t.Fatalf("stored %d events, want %d", len(got), writers*perWriter)
	}
	perW := make(map[int]int)
	for i, e := range got {
		if e.Sequence != int64(i)+1 {
			t.Fatalf("event %d has sequence %d", i, e.Sequence)
		}
		w, ok := written[e.ID]
		if !ok {
			t.Fatalf("event %s (seq %d) was stored but no Append reported it", e.ID, e.Sequence)
		}
		delete(written, e.ID) // a duplicate id would now miss
		perW[w]++
	}
	for w := range writers {
		if perW[w] != perWriter {
			t.Errorf("writer %d has %d events stored, want %d", w, perW[w], perWriter)
		}
	}
}
