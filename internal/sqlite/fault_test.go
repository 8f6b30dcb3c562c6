package sqlite

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
	"github.com/orderd/orderd/internal/store/disktest"
)

// bigEvent is event with a payload of n bytes, to use up a disk quickly.
func bigEvent(id uuid.UUID, seq int64, n int) store.Event {
	e := event(id, seq)
	e.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", n) + `"}`)
	return e
}

// TestDiskFull fills the file system under the store: an append fails with
// an error wrapping store.ErrUnavailable, leaves nothing of itself, and the
// store reports that it cannot write; once space is freed, the probe notices
// without any append, and appends work again.
func TestDiskFull(t *testing.T) {
	dir := disktest.Mount(t, 8<<20)
	s := mustOpen(t, filepath.Join(dir, "events.db"), nil)
	ctx := t.Context()
	id := uuid.Must(uuid.NewV7())
	if err := s.Append(ctx, id, 0, []store.Event{bigEvent(id, 1, 100)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckWrite(ctx); err != nil {
		t.Fatalf("CheckWrite on a healthy store: %v", err)
	}

	filler := disktest.Fill(t, dir)
	// The WAL may still have room for a few pages: append until the disk
	// refuses, which a few hundred KB must bring about.
	version, failed := int64(1), error(nil)
	for range 200 {
		err := s.Append(ctx, id, version, []store.Event{bigEvent(id, version+1, 8<<10)})
		if err != nil {
			failed = err
			break
		}
		version++
	}
	if failed == nil {
		t.Fatal("200 appends of 8 KB succeeded on a full disk")
	}
	if !errors.Is(failed, store.ErrUnavailable) {
		t.Fatalf("append on a full disk: %v, want an error wrapping store.ErrUnavailable", failed)
	}
	if errors.Is(failed, store.ErrConflict) {
		t.Fatalf("append on a full disk: %v is also a conflict", failed)
	}
	t.Logf("append %d failed: %v", version+1, failed)

	// Nothing half-written: the aggregate is at the last version that
	// succeeded, and every event of it reads back.
	evs, err := s.Load(ctx, id, 0)
	if err != nil {
		t.Fatalf("Load on a full disk: %v", err)
	}
	if int64(len(evs)) != version || evs[len(evs)-1].Sequence != version {
		t.Fatalf("after the failed append: %d events, want %d", len(evs), version)
	}
	if err := s.CheckWrite(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("CheckWrite while the disk is full: %v, want store.ErrUnavailable", err)
	}
	if got := s.StorageFaults()["append"]; got < 1 {
		t.Fatalf("storage faults of append: %d, want 1 or more", got)
	}
	// More failures belong to the same episode.
	_ = s.Append(ctx, id, version, []store.Event{bigEvent(id, version+1, 8<<10)})
	if n := s.health.Episodes(); n != 1 {
		t.Fatalf("episodes: %d, want 1", n)
	}

	disktest.Free(t, filler)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := s.CheckWrite(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CheckWrite 5 s after space was freed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := s.Append(ctx, id, version, []store.Event{bigEvent(id, version+1, 100)}); err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	if evs, err := s.Load(ctx, id, 0); err != nil || int64(len(evs)) != version+1 {
		t.Fatalf("after recovery: %d events (%v), want %d", len(evs), err, version+1)
	}
}

// TestSubscribeHoldsWhileProgressCannotBeSaved checks that a subscription
// whose progress cannot be saved hands nothing new until it can, rather
// than failing (a supervisor would restart it and it would hand the same
// events again), and goes on once space is freed.
func TestSubscribeHoldsWhileProgressCannotBeSaved(t *testing.T) {
	dir := disktest.Mount(t, 8<<20)
	s := mustOpenWith(t, filepath.Join(dir, "events.db"), Options{FeedBatch: 10})
	ctx := t.Context()
	const n = 100
	for i := range n {
		id := uuid.Must(uuid.NewV7())
		if err := s.Append(ctx, id, 0, []store.Event{bigEvent(id, 1, 100)}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	filler := disktest.Fill(t, dir)
	// Writes fail from here on: open the episode, as a command would.
	for v := int64(0); ; v++ {
		id := uuid.Must(uuid.NewV7())
		if err := s.Append(ctx, id, 0, []store.Event{bigEvent(id, 1, 8<<10)}); err != nil {
			break
		}
		if v > 200 {
			t.Fatal("appends still succeed on a full disk")
		}
	}

	handed := make(chan int, 1000)
	done := make(chan error, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		done <- s.Subscribe(sctx, "test", func(_ context.Context, evs []store.Event) error {
			handed <- len(evs)
			return nil
		})
	}()
	// One batch, then nothing while its progress cannot be saved.
	select {
	case <-handed:
	case <-time.After(5 * time.Second):
		t.Fatal("no batch handed")
	}
	select {
	case k := <-handed:
		t.Fatalf("a second batch (%d events) was handed while the first's progress could not be saved", k)
	case err := <-done:
		t.Fatalf("Subscribe returned while the disk was full: %v", err)
	case <-time.After(2 * time.Second):
	}

	disktest.Free(t, filler)
	got := 10
	for got < n {
		select {
		case k := <-handed:
			got += k
		case err := <-done:
			t.Fatalf("Subscribe returned: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d events handed 10 s after space was freed", got, n)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
}
