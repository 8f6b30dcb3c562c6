package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testLoadPage: LoadPage returns the first limit events after after, in
// sequence order, of this aggregate only; paging with it from 0 gives what
// Load gives, each event once; a page past the end is empty, an unknown
// aggregate has none, and a limit below 1 is refused.
func testLoadPage(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	all := widgets(id, 0, 23)
	// Several appends, so that a page spans batches.
	mustAppend(t, s, id, 0, all[:5])
	mustAppend(t, s, id, 5, all[5:6])
	mustAppend(t, s, id, 6, all[6:])
	other := uuid.Must(uuid.NewV7()) // a neighbour the pages must not reach into
	mustAppend(t, s, other, 0, widgets(other, 0, 4))

	tests := []struct {
		after int64
		limit int
		want  []store.Event
	}{
		{0, 1, all[:1]},
		{0, 10, all[:10]},
		{3, 4, all[3:7]},
		{20, 10, all[20:]}, // the last, short page
		{0, 23, all},
		{0, 1000, all},
		{22, 5, all[22:]},
		{23, 5, nil}, // at the end
		{40, 5, nil}, // past it
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("after %d limit %d", tc.after, tc.limit), func(t *testing.T) {
			got, err := s.LoadPage(testContext(t), id, tc.after, tc.limit)
			if err != nil {
				t.Fatalf("LoadPage: %v", err)
			}
			b.checkEvents(t, got, tc.want)
		})
	}

	// Paging through the whole history, as a reader of a long one does.
	var paged []store.Event
	for after := int64(0); ; {
		page, err := s.LoadPage(testContext(t), id, after, 7)
		if err != nil {
			t.Fatalf("LoadPage(%d, 7): %v", after, err)
		}
		if len(page) == 0 {
			break
		}
		if len(paged) > len(all) {
			t.Fatalf("paging returned more than the %d events stored", len(all))
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Sequence
	}
	b.checkEvents(t, paged, all)

	if evs, err := s.LoadPage(testContext(t), uuid.Must(uuid.NewV7()), 0, 10); err != nil || len(evs) != 0 {
		t.Errorf("LoadPage of an unknown aggregate = %d events, %v; want none and no error", len(evs), err)
	}
	for _, limit := range []int{0, -1} {
		if _, err := s.LoadPage(testContext(t), id, 0, limit); err == nil {
			t.Errorf("LoadPage with limit %d: no error", limit)
		}
	}
}

// testLoadPageUpcast: every event of a page is upcast, each from its own
// payload, whether it starts the page or not.
func testLoadPageUpcast(t *testing.T, b backend) {
	var up store.Upcasters
	up.Register("WidgetTurned", 1, func(e store.Event) (json.RawMessage, error) {
		var m map[string]any
		if err := json.Unmarshal(e.Data, &m); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		m["turns"] = m["seq"] // the field v2 added, derived from the event's own payload
		return json.Marshal(m)
	})
	s := b.open(t, &up)
	id := uuid.Must(uuid.NewV7())
	stored := widgets(id, 0, 6) // a WidgetMade (not upcast), then v1 WidgetTurned
	stored[4].SchemaVersion = 2 // one already current: left alone
	stored[4].Data = json.RawMessage(`{"seq":5,"turns":"five"}`)
	mustAppend(t, s, id, 0, stored)

	want := slices.Clone(stored)
	for i := 1; i < len(want); i++ {
		if want[i].SchemaVersion != 1 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(want[i].Data, &m); err != nil {
			t.Fatal(err)
		}
		m["turns"] = m["seq"]
		want[i].Data, _ = json.Marshal(m)
		want[i].SchemaVersion = 2
	}
	for _, page := range []struct {
		after int64
		limit int
	}{{0, 2}, {2, 3}, {5, 10}} {
		got, err := s.LoadPage(testContext(t), id, page.after, page.limit)
		if err != nil {
			t.Fatalf("LoadPage(%d, %d): %v", page.after, page.limit, err)
		}
		end := min(int(page.after)+page.limit, len(want))
		b.checkEvents(t, got, want[page.after:end])
	}
}
