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
	acquire := func(holder string, want bool) {
		t.Helper()
		got, err := l.Acquire(ctx, "relay", holder, ttl)
		if err != nil || got != want {
			t.Fatalf("Acquire(relay, %s) = %v, %v; want %v", holder, got, err, want)
		}
	}
	holder := func(want string) {
		t.Helper()
		if got, err := l.Holder(ctx, "relay"); err != nil || got != want {
			t.Fatalf("Holder(relay) = %q, %v; want %q", got, err, want)
		}
	}
	holder("")
	acquire("a", true)
	acquire("b", false)
	holder("a")
	acquire("a", true) // a renewal
	if ok, err := l.Acquire(ctx, "projector", "b", ttl); err != nil || !ok {
		t.Fatalf("Acquire of another lease = %v, %v; want true: leases are independent", ok, err)
	}
	if err := l.Release(ctx, "relay", "b"); err != nil {
		t.Fatalf("Release by a non-holder: %v", err)
	}
	holder("a")
	if err := l.Release(ctx, "relay", "a"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	holder("")
	acquire("b", true)
	acquire("a", false)
}

// testLeaseExpiry: a lease nobody renews passes to another holder, never
// before its ttl has run out, and the old holder cannot renew it then.
func testLeaseExpiry(t *testing.T, b backend) {
	l := as[store.Leases](t, b.open(t, nil))
	ctx := testContext(t)
	const ttl = 2 * time.Second
	start := time.Now()
	if ok, err := l.Acquire(ctx, "relay", "stale", ttl); err != nil || !ok {
		t.Fatalf("Acquire = %v, %v; want true", ok, err)
	}
	for {
		ok, err := l.Acquire(ctx, "relay", "successor", ttl)
		if err != nil {
			t.Fatalf("Acquire by the successor: %v", err)
		}
		if ok {
			break
		}
		if time.Since(start) > guard {
			t.Fatalf("the lease did not expire within %s of a %s ttl", guard, ttl)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if held := time.Since(start); held < ttl {
		t.Fatalf("another holder took the lease %v after it was taken, before its %s ttl", held, ttl)
	}
	if ok, err := l.Acquire(ctx, "relay", "stale", ttl); err != nil || ok {
		t.Errorf("a renewal by the expired holder = %v, %v; want false", ok, err)
	}
	if got, err := l.Holder(ctx, "relay"); err != nil || got != "successor" {
		t.Errorf("Holder = %q, %v; want successor", got, err)
	}
}
