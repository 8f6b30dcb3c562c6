package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testMint: Mint stores an aggregate's first events, which read back and
// are versioned as an append's. The aggregate is then taken: a creation
// (Append at 0) and appends at any version but Mint's are conflicts. Of
// appends racing at Mint's version exactly one wins, and again at the
// version that won; so on a store that minted the aggregate and on one
// that did not (Capabilities.Blind, the same data through another store:
// on CQL, another process, which may or may not have read it first).
func testMint(t *testing.T, b backend) {
	s := b.open(t, nil)
	type writer struct {
		st   store.Store
		read bool // it loads the aggregate before it appends
	}
	writers := map[string]writer{"the minting store": {s, false}}
	if b.caps.Blind != nil {
		other := b.caps.Blind(t, s)
		writers["another store"] = writer{other, false}
		writers["another store that read it"] = writer{other, true}
	}
	mint := func(t *testing.T, w writer) (uuid.UUID, []store.Event) {
		t.Helper()
		id := uuid.Must(uuid.NewV7())
		first := widgets(id, 0, 2)
		if err := s.Mint(testContext(t), id, first); err != nil {
			t.Fatalf("Mint: %v", err)
		}
		if w.read {
			b.checkEvents(t, mustLoad(t, w.st, id, 0), first)
			if typ, v, err := w.st.Version(testContext(t), id); err != nil || typ != "Widget" || v != 2 {
				t.Fatalf("Version = %q, %d, %v; want Widget, 2", typ, v, err)
			}
		}
		return id, first
	}
	conflicts := func(t *testing.T, w writer, id uuid.UUID, versions ...int64) {
		t.Helper()
		for _, expected := range versions {
			err := w.st.Append(testContext(t), id, expected, widgets(id, expected, 1))
			if !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrOutcomeUnknown) {
				t.Errorf("Append at %d: %v, want a certain ErrConflict", expected, err)
			}
		}
	}
	for name, w := range writers {
		t.Run(name, func(t *testing.T) {
			id, first := mint(t, w)
			conflicts(t, w, id, 0, 1, 3)
			b.checkEvents(t, mustLoad(t, s, id, 0), first)

			id, first = mint(t, w)
			stored := append(first, raceAt(t, w.st, id, 2)...)
			conflicts(t, w, id, 0, 2, 4)
			stored = append(stored, raceAt(t, w.st, id, 3)...)
			b.checkEvents(t, mustLoad(t, s, id, 0), stored)
		})
	}
}

// raceAt has appends race at version at of id, checks that exactly one
// wins and the others are conflicts, and returns the winner's events.
func raceAt(t *testing.T, s store.Store, id uuid.UUID, at int64) []store.Event {
	t.Helper()
	const n = 8
	var (
		start = make(chan struct{})
		wg    sync.WaitGroup
		errs  [n]error
		evs   [n][]store.Event
	)
	ctx := testContext(t)
	for i := range n {
		evs[i] = widgets(id, at, 1)
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
