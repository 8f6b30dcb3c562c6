package ledgertest

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/store"
)

// RunFenced runs the fencing cases of the suite: open returns an empty
// ledger and the leases of the same store, whose fences
// (store.WithFence) the ledger honours.
func RunFenced(t *testing.T, open func(t *testing.T) (relay.Ledger, store.Leases)) {
	t.Run("LapsedHolderChangesNothing", func(t *testing.T) {
		l, leases := open(t)
		testLapsedHolder(t, l, leases)
	})
}

// take acquires the relay's lease for holder and returns the context of
// its writes, fenced at the epoch of the take.
func take(t *testing.T, leases store.Leases, holder string, want int64) store.Fence {
	t.Helper()
	e, err := leases.Acquire(ctx(t), relay.Consumer, holder, time.Minute)
	if err != nil || e != want {
		t.Fatalf("Acquire(%s, %s) = epoch %d, %v; want %d", relay.Consumer, holder, e, err, want)
	}
	return store.Fence{Lease: relay.Consumer, Epoch: e}
}

// testLapsedHolder: once a new holder took the lease and read the blocked
// set, every write of the holder before it (Record, Update, Remove,
// Finish, and Blocked, which claims) is refused with store.ErrFenced and
// leaves nothing behind; the new holder sees what its predecessor
// committed, and its own writes go through.
func testLapsedHolder(t *testing.T, l relay.Ledger, leases store.Leases) {
	c := ctx(t)
	a := store.WithFence(c, take(t, leases, "a", 1))
	if blocked, err := l.Blocked(a); err != nil || len(blocked) != 0 {
		t.Fatalf("Blocked(a) = %v, %v; want none", blocked, err)
	}
	failed := Letter(3, aggA, 1, relay.Failed)
	if err := l.Record(a, []relay.DeadLetter{failed}); err != nil {
		t.Fatalf("Record(a): %v", err)
	}
	q, err := l.Request(c, request(3, relay.OpReplay, t0)) // an operator's: not fenced
	if err != nil {
		t.Fatal(err)
	}

	// a's lease lapses; b takes it and reads the blocked set.
	if err := leases.Release(c, relay.Consumer, "a"); err != nil {
		t.Fatal(err)
	}
	b := store.WithFence(c, take(t, leases, "b", 2))
	want := map[uuid.UUID]int64{aggA: 1}
	blocked, err := l.Blocked(b)
	if err != nil || len(blocked) != 1 || blocked[aggA] != want[aggA] {
		t.Fatalf("Blocked(b) = %v, %v; want what a committed: %v", blocked, err, want)
	}

	parked := Letter(5, aggB, 1, relay.Parked)
	moved := failed
	moved.Attempts, moved.Error = 9, "from the lapsed holder"
	finished := q
	finished.State, finished.FinishedAt = relay.RequestDone, t0.Add(time.Minute)
	for what, err := range map[string]error{
		"Record":  l.Record(a, []relay.DeadLetter{parked}),
		"Update":  l.Update(a, moved),
		"Remove":  l.Remove(a, failed.Position),
		"Finish":  l.Finish(a, finished),
		"Blocked": func() error { _, err := l.Blocked(a); return err }(),
	} {
		if !errors.Is(err, store.ErrFenced) {
			t.Errorf("%s by the lapsed holder = %v, want store.ErrFenced", what, err)
		}
	}
	if got, err := l.Get(c, failed.Position); err != nil || !reflect.DeepEqual(got, UTC(failed)[0]) {
		t.Errorf("the failed letter after the lapsed holder's writes = %+v, %v; want it as recorded", got, err)
	}
	if _, err := l.Get(c, parked.Position); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("the lapsed holder's Record is stored: Get = %v, want ErrNotFound", err)
	}
	if at, err := l.RequestAt(c, 3); err != nil || at.State != relay.RequestPending {
		t.Errorf("the lapsed holder's Finish is stored: %+v, %v", at, err)
	}
	if counts, err := l.Count(c); err != nil || counts[relay.Failed] != 1 || counts[relay.Parked] != 0 {
		t.Errorf("Count = %v, %v; want the one failed letter", counts, err)
	}

	// The holder of the lease writes as before.
	if err := l.Record(b, []relay.DeadLetter{parked}); err != nil {
		t.Fatalf("Record(b): %v", err)
	}
	if err := l.Update(b, moved); err != nil {
		t.Fatalf("Update(b): %v", err)
	}
	if err := l.Finish(b, finished); err != nil {
		t.Fatalf("Finish(b): %v", err)
	}
	if err := l.Remove(b, failed.Position, parked.Position); err != nil {
		t.Fatalf("Remove(b): %v", err)
	}
	if blocked, err := l.Blocked(b); err != nil || len(blocked) != 0 {
		t.Errorf("Blocked(b) after b removed every letter = %v, %v; want none", blocked, err)
	}
	if ls := list(t, l, 0, 10); len(ls) != 0 {
		t.Errorf("List after b removed every letter = %+v", ls)
	}
}
