package storetest

import (
	"testing"
	"time"

	"github.com/orderd/orderd/internal/store"
)

// testLeases: one holder at a time; the holder renews; a release by
// someone else changes nothing; after the holder's release another takes
// the lease at once.
func testLeases(t *testing.T, b backend) {
	l := as[store.Leases](t, b.open(t, nil))
	ctx := testContext(t)
	const ttl = time.Minute
	// acquire checks the epoch: 0 for a refusal, one more for each take,
	// the same for a renewal.
	acquire := func(holder string, want int64) {
		t.Helper()
		got, err := l.Acquire(ctx, "relay", holder, ttl)
		if err != nil || got != want {
			t.Fatalf("Acquire(relay, %s) = epoch %d, %v; want %d", holder, got, err, want)
		}
	}
	holder := func(want string) {
		t.Helper()
		if got, err := l.Holder(ctx, "relay"); err != nil || got != want {
			t.Fatalf("Holder(relay) = %q, %v; want %q", got, err, want)
		}
	}
	holder("")
	acquire("a", 1)
	acquire("b", 0)
	holder("a")
	acquire("a", 1) // a renewal keeps the epoch
	if e, err := l.Acquire(ctx, "projector", "b", ttl); err != nil || e != 1 {
		t.Fatalf("Acquire of another lease = epoch %d, %v; want 1: leases and their epochs are independent", e, err)
	}
	if err := l.Release(ctx, "relay", "b"); err != nil {
		t.Fatalf("Release by a non-holder: %v", err)
	}
	holder("a")
	if err := l.Release(ctx, "relay", "a"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	holder("")
	acquire("b", 2) // a take after a release bumps the epoch
	acquire("a", 0)
	acquire("b", 2)
	if err := l.Release(ctx, "relay", "b"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	acquire("b", 3) // the same holder taking again is a take too
}

// testLeaseExpiry: a lease nobody renews passes to another holder, never
// before its ttl has run out, and the old holder cannot renew it then.
func testLeaseExpiry(t *testing.T, b backend) {
	l := as[store.Leases](t, b.open(t, nil))
	ctx := testContext(t)
	const ttl = 2 * time.Second
	start := time.Now()
	if e, err := l.Acquire(ctx, "relay", "stale", ttl); err != nil || e != 1 {
		t.Fatalf("Acquire = epoch %d, %v; want 1", e, err)
	}
	for {
		e, err := l.Acquire(ctx, "relay", "successor", ttl)
		if err != nil {
			t.Fatalf("Acquire by the successor: %v", err)
		}
		if e == 2 {
			break
		}
		if e != 0 {
			t.Fatalf("Acquire by the successor = epoch %d; want 2, a take after the first", e)
		}
		if time.Since(start) > guard {
			t.Fatalf("the lease did not expire within %s of a %s ttl", guard, ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if held := time.Since(start); held < ttl {
		t.Fatalf("another holder took the lease %v after it was taken, before its %s ttl", held, ttl)
	}
	if e, err := l.Acquire(ctx, "relay", "stale", ttl); err != nil || e != 0 {
		t.Errorf("a renewal by the expired holder = epoch %d, %v; want 0", e, err)
	}
	if got, err := l.Holder(ctx, "relay"); err != nil || got != "successor" {
		t.Errorf("Holder = %q, %v; want successor", got, err)
	}
}
