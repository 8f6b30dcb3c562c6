package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testUpcast: both read paths bring stored payloads to the current schema;
// what is stored stays as it was written.
func testUpcast(t *testing.T, b backend) {
	var up store.Upcasters
	up.Register("WidgetMade", 1, func(e store.Event) (json.RawMessage, error) {
		var m map[string]any
		if err := json.Unmarshal(e.Data, &m); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		m["colour"] = "grey" // the field v2 added, with its default
		return json.Marshal(m)
	})
	s := b.open(t, &up)

	id := uuid.Must(uuid.NewV7())
	stored := widgets(id, 0, 2) // a v1 WidgetMade, then a WidgetTurned
	mustAppend(t, s, id, 0, stored)

	want := slices.Clone(stored)
	var m map[string]any
	if err := json.Unmarshal(want[0].Data, &m); err != nil {
		t.Fatal(err)
	}
	m["colour"] = "grey"
	want[0].Data, _ = json.Marshal(m)
	want[0].SchemaVersion = 2

	b.checkEvents(t, mustLoad(t, s, id, 0), want)
	if b.caps.Positions {
		b.checkEvents(t, readFeedTo(t, s, 0, mustHead(t, s), 10), want)
	}

	// An event written at the current version is left alone.
	id2 := uuid.Must(uuid.NewV7())
	current := widgets(id2, 0, 1)
	current[0].SchemaVersion = 2
	current[0].Data = json.RawMessage(`{"seq":1,"colour":"red"}`)
	mustAppend(t, s, id2, 0, current)
	b.checkEvents(t, mustLoad(t, s, id2, 0), current)
}

// testClose: Close wakes a waiting ReadFeed, and every call after Close,
// Close included, returns ErrClosed.
func testClose(t *testing.T, b backend) {
	s := b.open(t, nil)
	id := uuid.Must(uuid.NewV7())
	mustAppend(t, s, id, 0, widgets(id, 0, 1))

	if !b.caps.Positions {
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	} else {
		head := mustHead(t, s)
		waiting := make(chan error, 1)
		go func() {
			_, err := positioned(t, s).ReadFeed(testContext(t), head, 10)
			waiting <- err
		}()
		time.Sleep(20 * time.Millisecond) // let it block, though it need not have

		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-waiting:
			if !errors.Is(err, store.ErrClosed) {
				t.Errorf("waiting ReadFeed after Close: %v, want ErrClosed", err)
			}
		case <-time.After(guard):
			t.Error("Close did not wake a waiting ReadFeed")
		}
	}

	ctx := testContext(t)
	checks := map[string]error{
		"Append":    s.Append(ctx, id, 1, widgets(id, 1, 1)),
		"Close":     s.Close(),
		"Load":      func() error { _, err := s.Load(ctx, id, 0); return err }(),
		"LoadPage":  func() error { _, err := s.LoadPage(ctx, id, 0, 10); return err }(),
		"Version":   func() error { _, _, err := s.Version(ctx, id); return err }(),
		"Subscribe": as[store.Feed](t, s).Subscribe(ctx, "after-close", func(context.Context, []store.Event) error { return nil }),
		"Acquire":   func() error { _, err := as[store.Leases](t, s).Acquire(ctx, "l", "h", time.Second); return err }(),
	}
	if b.caps.Positions {
		checks["ReadFeed"] = func() error { _, err := positioned(t, s).ReadFeed(ctx, 0, 10); return err }()
		checks["Head"] = func() error { _, err := positioned(t, s).Head(ctx); return err }()
	}
	for name, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// RunRestart checks that a store's data outlives it: after a close and a
// reopen, aggregates load as before and their versions hold; with a feed,
// a feed reader also resumes from its checkpoint without skipping or
// repeating, and new positions continue after the old head.
func RunRestart(t *testing.T, open Reopener, caps Capabilities) {
	b := backend{caps: caps}
	s, reopen := open(t)
	var want []store.Event
	ids := make([]uuid.UUID, 3)
	for i := range ids {
		ids[i] = uuid.Must(uuid.NewV7())
		evs := widgets(ids[i], 0, i+2)
		mustAppend(t, s, ids[i], 0, evs)
		want = append(want, evs...)
	}
	var head, checkpoint int64
	var fromCheckpoint []store.Event
	if caps.Positions {
		head = mustHead(t, s)
		feed := readFeedTo(t, s, 0, head, 100)
		b.checkEvents(t, feed, want)
		checkpoint = feed[len(feed)/2].Position
		fromCheckpoint = want[len(feed)/2+1:]
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = reopen()
	if caps.Positions {
		if h := mustHead(t, s); h != head {
			t.Fatalf("Head after reopen = %d, want %d", h, head)
		}
		b.checkEvents(t, readFeedTo(t, s, checkpoint, head, 2), fromCheckpoint)
	}
	at := 0
	for i, id := range ids {
		n := i + 2
		b.checkEvents(t, mustLoad(t, s, id, 0), want[at:at+n])
		at += n
	}

	// The versions survived: a stale append conflicts, the right one lands
	// (after the old head, with a feed).
	if err := s.Append(testContext(t), ids[0], 0, widgets(ids[0], 0, 1)); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Append at version 0 after reopen: %v, want ErrConflict", err)
	}
	more := widgets(ids[0], 2, 2)
	mustAppend(t, s, ids[0], 2, more)
	if caps.Positions {
		b.checkEvents(t, readFeedTo(t, s, head, mustHead(t, s), 10), more)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Once more, to see what the second session wrote persisted too.
	s = reopen()
	b.checkEvents(t, mustLoad(t, s, ids[0], 0), append(slices.Clone(want[:2]), more...))
	if caps.Positions {
		b.checkEvents(t, readFeedTo(t, s, 0, mustHead(t, s), 100), append(want, more...))
	}
}
