package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// testSubscribeFenced: a subscription under a fence whose epoch is not the
// lease's any more (another holder took it) saves no progress: it ends
// with store.ErrFenced, and the holder of the lease is handed the same
// events again.
func testSubscribeFenced(t *testing.T, b backend) {
	s := b.open(t, nil)
	ctx := testContext(t)
	l := as[store.Leases](t, s)
	f := as[store.Feed](t, s)
	const consumer = "fenced"
	if e, err := l.Acquire(ctx, consumer, "a", time.Minute); err != nil || e != 1 {
		t.Fatalf("Acquire(a) = epoch %d, %v; want 1", e, err)
	}
	if err := l.Release(ctx, consumer, "a"); err != nil {
		t.Fatal(err)
	}
	if e, err := l.Acquire(ctx, consumer, "b", time.Minute); err != nil || e != 2 {
		t.Fatalf("Acquire(b) = epoch %d, %v; want 2", e, err)
	}
	id := uuid.New()
	mustAppend(t, s, id, 0, widgets(id, 0, 3))

	// handed runs a subscription under fence until it was handed every
	// event of id, or ended, and returns how it ended.
	handed := func(fence store.Fence) (int64, error) {
		sctx, cancel := context.WithCancel(store.WithFence(ctx, fence))
		defer cancel()
		var top int64
		seen := make(chan int64, 100)
		done := make(chan error, 1)
		go func() {
			done <- f.Subscribe(sctx, consumer, func(_ context.Context, evs []store.Event) error {
				for _, e := range evs {
					if e.AggregateID == id {
						seen <- e.Sequence
					}
				}
				return nil
			})
		}()
		for top < 3 {
			select {
			case seq := <-seen:
				top = max(top, seq)
			case err := <-done:
				return top, err
			}
		}
		cancel()
		return top, <-done
	}
	if _, err := handed(store.Fence{Lease: consumer, Epoch: 1}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("Subscribe under the lapsed holder's fence = %v, want store.ErrFenced", err)
	}
	// Had the lapsed holder's progress been saved, the holder would be
	// handed nothing.
	top, err := handed(store.Fence{Lease: consumer, Epoch: 2})
	if err != nil || top != 3 {
		t.Fatalf("the holder's subscription = handed up to %d, %v; want all 3 events again and nil", top, err)
	}
}
