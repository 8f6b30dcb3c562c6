package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/readmodel/readmodeltest"
	"github.com/orderd/orderd/internal/store"
)

// TestSyncBeforeSave: a consumer registered with SyncBeforeSave has its
// progress saved only after its sync ran, and never beyond what it had
// handled when the sync ran; once a sync failed, nothing more is saved
// (not even when the subscription ends) and the subscription ends with
// the error.
func TestSyncBeforeSave(t *testing.T) {
	s := mustOpenWith(t, filepath.Join(t.TempDir(), "events.db"), Options{FeedBatch: 5, ProgressEvery: time.Millisecond})
	var (
		mu      sync.Mutex
		handled int64   // the last position handed to the consumer
		synced  []int64 // handled, at each sync
		fail    error   // what the next sync returns
	)
	s.SyncBeforeSave("views", func() error {
		mu.Lock()
		defer mu.Unlock()
		synced = append(synced, handled)
		return fail
	})
	handler := func(_ context.Context, evs []store.Event) error {
		mu.Lock()
		handled = evs[len(evs)-1].Position
		mu.Unlock()
		return nil
	}
	appendN := func(n int) {
		for range n {
			id := uuid.Must(uuid.NewV7())
			if err := s.Append(t.Context(), id, 0, []store.Event{event(id, 1)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(40)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, "views", handler) }()
	waitFor(t, func() bool { p, _ := s.savedProgress(t.Context(), "views"); return p == 40 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	saved, err := s.savedProgress(t.Context(), "views")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(synced) == 0 || synced[len(synced)-1] < saved {
		t.Fatalf("progress saved at %d, syncs ran when %v were handled", saved, synced)
	}
	synced, fail = nil, errors.New("fsync: input/output error")
	mu.Unlock()

	// A failed sync: the subscription ends with it and saves nothing more.
	appendN(20)
	err = s.Subscribe(t.Context(), "views", handler)
	if err == nil || !errors.Is(err, fail) {
		t.Fatalf("Subscribe = %v, want the sync's error", err)
	}
	if p, err := s.savedProgress(t.Context(), "views"); err != nil || p != saved {
		t.Fatalf("progress %d (%v) after a failed sync, want %d as before", p, err, saved)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(synced) != 1 {
		t.Errorf("%d syncs after the failed one, want none: a second fsync may succeed without the lost pages", len(synced)-1)
	}
}

// TestViewsDeferSync: views opened with DeferSync commit at
// synchronous=NORMAL and Sync syncs their WAL; without, FULL, and Sync
// does nothing. The catalog's Sync reaches every generation it opened.
func TestViewsDeferSync(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		opts []ViewsOption
		want int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{nil, 2}, {[]ViewsOption{DeferSync()}, 1}} {
		cat, err := OpenCatalog(t.Context(), dir, zaptest.NewLogger(t), c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		g, err := cat.Open(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Apply(t.Context(), readmodeltest.Pipeline(t, 2)); err != nil {
			t.Fatal(err)
		}
		var mode int
		if err := g.(*Views).write.QueryRow(`PRAGMA synchronous`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != c.want {
			t.Errorf("synchronous = %d, want %d", mode, c.want)
		}
		if err := cat.Sync(); err != nil {
			t.Errorf("Sync: %v", err)
		}
		if err := cat.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOpenViewsConsumer: Open with Config.ViewsConsumer defers the views'
// syncs only together with the sync before that consumer's saves; without
// it the views sync every commit and no save waits for them.
func TestOpenViewsConsumer(t *testing.T) {
	for _, consumer := range []string{"", "projector"} {
		b, err := Open(t.Context(), Config{Dir: t.TempDir(), ViewsConsumer: consumer})
		if err != nil {
			t.Fatal(err)
		}
		g, err := b.Catalog.Open(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		var mode int
		if err := g.(*Views).write.QueryRow(`PRAGMA synchronous`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		hooked := b.Store.syncBeforeSave("projector") != nil
		if deferred := mode == 1; deferred != (consumer != "") || hooked != deferred {
			t.Errorf("ViewsConsumer %q: synchronous %d, sync before the projector's saves %v", consumer, mode, hooked)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
