package storetest

import (
	"errors"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testVersion: Version says the type and the last sequence of one
// aggregate, without reading its history: 0 and "" for an id with no
// events, the last sequence after appends, unchanged by a refused append,
// and another aggregate's appends change nothing.
func testVersion(t *testing.T, b backend) {
	s := b.open(t, nil)
	ctx := testContext(t)
	id, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	want := func(what string, id uuid.UUID, typ string, v int64) {
		t.Helper()
		gotType, got, err := s.Version(ctx, id)
		if err != nil || gotType != typ || got != v {
			t.Errorf("%s: Version = %q, %d, %v; want %q, %d, nil", what, gotType, got, err, typ, v)
		}
	}
	want("unknown id", id, "", 0)

	mustAppend(t, s, id, 0, widgets(id, 0, 1))
	want("after one event", id, "Widget", 1)
	mustAppend(t, s, id, 1, widgets(id, 1, 3))
	want("after a batch", id, "Widget", 4)

	if err := s.Append(ctx, id, 2, widgets(id, 2, 1)); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Append at a stale version: %v, want ErrConflict", err)
	}
	want("after a refused append", id, "Widget", 4)

	evs := widgets(other, 0, 2)
	for i := range evs {
		evs[i].AggregateType = "Gadget"
	}
	mustAppend(t, s, other, 0, evs)
	want("beside another aggregate", id, "Widget", 4)
	want("the other aggregate", other, "Gadget", 2)
	want("still unknown", uuid.Must(uuid.NewV7()), "", 0)
}

// testVersionConcurrent: while writers append to one aggregate, Version
// never goes back and never says more than is stored; once they are done
// it says the last sequence, the length of the history Load returns.
func testVersionConcurrent(t *testing.T, b backend) {
	s := b.open(t, nil)
	ctx := testContext(t)
	id := uuid.Must(uuid.NewV7())
	const writers, perWriter = 8, 5
	done := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for n := 0; n < perWriter; {
				if t.Failed() {
					return
				}
				_, v, err := s.Version(ctx, id)
				if err != nil {
					t.Errorf("writer %d: Version: %v", w, err)
					return
				}
				err = s.Append(ctx, id, v, widgets(id, v, 1))
				switch {
				case err == nil:
					n++
				case !errors.Is(err, store.ErrConflict):
					t.Errorf("writer %d: Append at %d: %v", w, v, err)
					return
				}
			}
		})
	}
	var reader sync.WaitGroup
	reader.Go(func() {
		var last int64
		for {
			select {
			case <-done:
				return
			default:
			}
			_, v, err := s.Version(ctx, id)
			if err != nil {
				t.Errorf("reader: Version: %v", err)
				return
			}
			if v < last || v > writers*perWriter {
				t.Errorf("reader: Version went from %d to %d (at most %d are written)", last, v, writers*perWriter)
				return
			}
			last = v
		}
	})
	wg.Wait()
	close(done)
	reader.Wait()

	typ, v, err := s.Version(ctx, id)
	if err != nil || typ != "Widget" || v != writers*perWriter {
		t.Errorf("Version after the writers = %q, %d, %v; want Widget, %d", typ, v, err, writers*perWriter)
	}
	if n := int64(len(mustLoad(t, s, id, 0))); n != v {
		t.Errorf("Load returns %d events, Version says %d", n, v)
	}
}
