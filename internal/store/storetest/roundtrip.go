package storetest

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testRoundTrip: every envelope field survives Append and comes back from
// Load and from the feed.
func testRoundTrip(t *testing.T, b backend) {
	s := b.open(t, nil)
	if b.caps.Positions {
		if h := mustHead(t, s); h != 0 {
			t.Fatalf("Head of an empty store = %d, want 0", h)
		}
	}

	id := uuid.Must(uuid.NewV7())
	want := widgets(id, 0, 3)
	// Edge values: no metadata at all, an empty map, nil causation, a
	// timestamp handed over in another zone (it must come back in UTC), a
	// newer schema version and a payload with nesting and escapes.
	want[0].Metadata = nil
	want[1].Metadata = map[string]string{}
	want[1].CausationID = uuid.Nil
	want[1].Timestamp = want[1].Timestamp.In(time.FixedZone("UTC+5", 5*3600))
	want[2].SchemaVersion = 3
	want[2].Data = json.RawMessage(`{"a":[1,2.5,"x"],"b":{"c":null,"d":true},"e":"\u00e9\n\"q\""}`)
	want[2].Metadata = map[string]string{"": "empty key", "k": ""}
	mustAppend(t, s, id, 0, want)

	got := mustLoad(t, s, id, 0)
	b.checkEvents(t, got, want)
	if !b.caps.Positions {
		return
	}
	for i := 1; i < len(got); i++ {
		if got[i].Position <= got[i-1].Position {
			t.Errorf("positions %d then %d within one append", got[i-1].Position, got[i].Position)
		}
	}

	head := mustHead(t, s)
	if head != got[len(got)-1].Position {
		t.Errorf("Head = %d, want the last position %d", head, got[len(got)-1].Position)
	}
	feed := readFeedTo(t, s, 0, head, 100)
	b.checkEvents(t, feed, want)
	for i := range feed {
		if feed[i].Position != got[i].Position {
			t.Errorf("event %d: feed position %d, Load position %d", i, feed[i].Position, got[i].Position)
		}
	}
}

// testLoadAfter: Load skips the events up to after; an unknown aggregate has
// no events and is no error.
func testLoadAfter(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	all := widgets(id, 0, 5)
	mustAppend(t, s, id, 0, all[:2])
	mustAppend(t, s, id, 2, all[2:])
	other := uuid.Must(uuid.NewV7())
	mustAppend(t, s, other, 0, widgets(other, 0, 2))

	for _, after := range []int64{0, 1, 3, 5, 9} {
		want := all[min(after, 5):]
		b.checkEvents(t, mustLoad(t, s, id, after), want)
	}
	if evs := mustLoad(t, s, uuid.Must(uuid.NewV7()), 0); len(evs) != 0 {
		t.Errorf("Load of an unknown aggregate returned %d events", len(evs))
	}
}

// testInvalidAppend: malformed appends are refused with an error that is not
// ErrConflict, since retrying them cannot help, and store nothing.
func testInvalidAppend(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	tests := []struct {
		name     string
		id       uuid.UUID
		expected int64
		events   func() []store.Event
	}{
		{"no events", id, 0, func() []store.Event { return nil }},
		{"nil aggregate id", uuid.Nil, 0, func() []store.Event { return widgets(uuid.Nil, 0, 1) }},
		{"event of another aggregate", id, 0, func() []store.Event {
			return widgets(uuid.Must(uuid.NewV7()), 0, 1)
		}},
		{"first sequence not expected+1", id, 0, func() []store.Event { return widgets(id, 1, 1) }},
		{"sequence gap", id, 0, func() []store.Event {
			evs := widgets(id, 0, 3)
			evs[2].Sequence = 4
			return evs
		}},
		{"sequences out of order", id, 0, func() []store.Event {
			evs := widgets(id, 0, 2)
			evs[0], evs[1] = evs[1], evs[0]
			return evs
		}},
		{"nil event id", id, 0, func() []store.Event {
			evs := widgets(id, 0, 2)
			evs[1].ID = uuid.Nil
			return evs
		}},
	}
	for _, tc := range tests {
		err := s.Append(testContext(t), tc.id, tc.expected, tc.events())
		if err == nil || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Append error = %v, want a non-conflict error", tc.name, err)
		}
	}
	if evs := mustLoad(t, s, id, 0); len(evs) != 0 {
		t.Errorf("Load returned %d events after refused appends, want none", len(evs))
	}
	if b.caps.Positions {
		if h := mustHead(t, s); h != 0 {
			t.Errorf("Head = %d after refused appends, want 0", h)
		}
	}
}
