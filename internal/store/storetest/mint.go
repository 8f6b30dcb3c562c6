package storetest

import (
	"errors"
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
			stored := append(first, raceAt(t, w.st, id, 2, 8, 1)...)
			conflicts(t, w, id, 0, 2, 4)
			stored = append(stored, raceAt(t, w.st, id, 3, 8, 1)...)
			b.checkEvents(t, mustLoad(t, s, id, 0), stored)
		})
	}
}
