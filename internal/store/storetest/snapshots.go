package storetest

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// SnapshotsOpener returns a new, empty store.Snapshots, closed in
// t.Cleanup.
type SnapshotsOpener func(t *testing.T) store.Snapshots

// RunSnapshots runs the conformance suite of store.Snapshots against stores
// returned by open. Subtests run in parallel, each on its own store.
//
// It is apart from Run for the reason RunIdempotency is: a backend may keep
// its snapshots in a file of its own (SQLite does, so that a snapshot write
// never takes the event writer's lock).
//
// Beyond the doc comments of store.Snapshots, the suite holds a backend to:
// State comes back byte for byte, TakenAt to the millisecond in UTC.
func RunSnapshots(t *testing.T, open SnapshotsOpener) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Snapshots)
	}{
		{"RoundTrip", testSnapshotRoundTrip},
		{"LatestAtOrBelow", testSnapshotLatest},
		{"Replace", testSnapshotReplace},
		{"PerAggregate", testSnapshotPerAggregate},
		{"Concurrent", testSnapshotConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open(t))
		})
	}
}

func newSnapshot(id uuid.UUID, version int64, state string) store.Snapshot {
	return store.Snapshot{
		AggregateID: id, AggregateType: "Widget", Version: version, StateVersion: 3,
		State: []byte(state), TakenAt: time.Now().UTC(),
	}
}

func mustSave(t *testing.T, s store.Snapshots, snap store.Snapshot) {
	t.Helper()
	if err := s.Save(context.Background(), snap); err != nil {
		t.Fatalf("Save(%s@%d): %v", snap.AggregateID, snap.Version, err)
	}
}

// latest returns Latest's answer, failing the test on an error.
func latest(t *testing.T, s store.Snapshots, id uuid.UUID, atOrBelow int64) (store.Snapshot, bool) {
	t.Helper()
	snap, ok, err := s.Latest(context.Background(), id, atOrBelow)
	if err != nil {
		t.Fatalf("Latest(%s, %d): %v", id, atOrBelow, err)
	}
	return snap, ok
}

func sameSnapshot(t *testing.T, got, want store.Snapshot) {
	t.Helper()
	if got.AggregateID != want.AggregateID || got.AggregateType != want.AggregateType ||
		got.Version != want.Version || got.StateVersion != want.StateVersion ||
		!bytes.Equal(got.State, want.State) {
		t.Errorf("snapshot = %+v (state %q), want %+v (state %q)", got, got.State, want, want.State)
	}
	if d := got.TakenAt.Sub(want.TakenAt); d < -time.Millisecond || d > time.Millisecond || got.TakenAt.Location() != time.UTC {
		t.Errorf("TakenAt = %v, want %v to the millisecond, in UTC", got.TakenAt, want.TakenAt)
	}
}

// testSnapshotRoundTrip: a snapshot reads back as saved, state byte for
// byte (not JSON-equal: the store must not reformat it).
func testSnapshotRoundTrip(t *testing.T, s store.Snapshots) {
	id := uuid.New()
	if _, ok := latest(t, s, id, 1<<62); ok {
		t.Fatal("Latest of an aggregate with no snapshot found one")
	}
	want := newSnapshot(id, 7, "{\"b\": 1,  \"a\":[\"\\u00e9\"]}\n\x00\xff")
	mustSave(t, s, want)
	got, ok := latest(t, s, id, 7)
	if !ok {
		t.Fatal("Latest at the snapshot's version found none")
	}
	sameSnapshot(t, got, want)
}

// testSnapshotLatest: Latest returns the highest version at or below the
// bound, and none when every snapshot is above it.
func testSnapshotLatest(t *testing.T, s store.Snapshots) {
	id := uuid.New()
	for _, v := range []int64{200, 100, 300} { // out of order on purpose
		mustSave(t, s, newSnapshot(id, v, "v"))
	}
	for _, tc := range []struct {
		atOrBelow int64
		want      int64 // 0: none
	}{{99, 0}, {100, 100}, {199, 100}, {200, 200}, {299, 200}, {300, 300}, {1 << 62, 300}} {
		got, ok := latest(t, s, id, tc.atOrBelow)
		switch {
		case tc.want == 0 && ok:
			t.Errorf("Latest(≤%d) = version %d, want none", tc.atOrBelow, got.Version)
		case tc.want != 0 && (!ok || got.Version != tc.want):
			t.Errorf("Latest(≤%d) = version %d, %v; want %d", tc.atOrBelow, got.Version, ok, tc.want)
		}
	}
}

// testSnapshotReplace: a second save of one version replaces the first, for
// example one of a newer state schema.
func testSnapshotReplace(t *testing.T, s store.Snapshots) {
	id := uuid.New()
	mustSave(t, s, newSnapshot(id, 5, "old"))
	want := newSnapshot(id, 5, "new")
	want.StateVersion = 4
	mustSave(t, s, want)
	got, ok := latest(t, s, id, 5)
	if !ok {
		t.Fatal("Latest found none after two saves")
	}
	sameSnapshot(t, got, want)
}

// testSnapshotPerAggregate: one aggregate's snapshots never answer for
// another.
func testSnapshotPerAggregate(t *testing.T, s store.Snapshots) {
	a, b := uuid.New(), uuid.New()
	mustSave(t, s, newSnapshot(a, 10, "a"))
	mustSave(t, s, newSnapshot(b, 20, "b"))
	if got, ok := latest(t, s, a, 100); !ok || got.Version != 10 || string(got.State) != "a" {
		t.Errorf("Latest(a) = %+v, %v", got, ok)
	}
	if got, ok := latest(t, s, b, 15); ok {
		t.Errorf("Latest(b, ≤15) = version %d, want none", got.Version)
	}
}

// testSnapshotConcurrent: saves from many goroutines (the handler saves in
// the background) all land.
func testSnapshotConcurrent(t *testing.T, s store.Snapshots) {
	id := uuid.New()
	var wg sync.WaitGroup
	for v := int64(1); v <= 16; v++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Save(context.Background(), newSnapshot(id, v, "x")); err != nil {
				t.Errorf("Save(%d): %v", v, err)
			}
		}()
	}
	wg.Wait()
	for v := int64(1); v <= 16; v++ {
		if got, ok := latest(t, s, id, v); !ok || got.Version != v {
			t.Errorf("Latest(≤%d) = version %d, %v", v, got.Version, ok)
		}
	}
}
