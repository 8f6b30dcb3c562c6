package sqlite

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
)

// t0 has nanoseconds and a zone other than UTC, so the tests see whether
// times round-trip exactly and come back in UTC.
var t0 = time.Date(2025, 3, 1, 10, 30, 0, 123456789, time.FixedZone("CET", 3600))

var (
	aggA = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	aggB = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
)

func mustOpen(t testing.TB, path string) *Ledger {
	t.Helper()
	l, err := Open(path, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func newLedger(t testing.TB) *Ledger {
	t.Helper()
	return mustOpen(t, filepath.Join(t.TempDir(), "relay.db"))
}

// letter is a dead letter for the event at pos, sequence seq of agg.
func letter(pos int64, agg uuid.UUID, seq int64, state string) relay.DeadLetter {
	d := relay.DeadLetter{
		Position: pos, EventID: uuid.Must(uuid.NewV7()), AggregateID: agg, AggregateType: "Order",
		Sequence: seq, EventType: "OrderCreated", Topic: "orders", State: state, Attempts: 1,
		FirstFailedAt: t0.Add(time.Duration(pos) * time.Second), LastFailedAt: t0.Add(time.Duration(pos) * time.Minute),
	}
	if state == relay.Failed {
		d.Error = "kafka: message too large"
	}
	return d
}

// utc is what a letter reads back as: the same instants, in UTC.
func utc(ls ...relay.DeadLetter) []relay.DeadLetter {
	out := make([]relay.DeadLetter, len(ls))
	for i, d := range ls {
		d.FirstFailedAt, d.LastFailedAt = d.FirstFailedAt.UTC(), d.LastFailedAt.UTC()
		out[i] = d
	}
	return out
}

func positions(ls []relay.DeadLetter) []int64 {
	ps := []int64{}
	for _, d := range ls {
		ps = append(ps, d.Position)
	}
	return ps
}

func advance(t testing.TB, l *Ledger, through int64, letters ...relay.DeadLetter) {
	t.Helper()
	if err := l.Advance(context.Background(), through, letters); err != nil {
		t.Fatalf("Advance(%d): %v", through, err)
	}
}

func checkpoint(t testing.TB, l *Ledger) int64 {
	t.Helper()
	pos, err := l.Checkpoint(context.Background())
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	return pos
}

func list(t testing.TB, l *Ledger, after int64, limit int) []relay.DeadLetter {
	t.Helper()
	ls, err := l.List(context.Background(), after, limit)
	if err != nil {
		t.Fatalf("List(%d, %d): %v", after, limit, err)
	}
	return ls
}

func TestEmpty(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	if got := checkpoint(t, l); got != 0 {
		t.Errorf("Checkpoint = %d, want 0", got)
	}
	if got := list(t, l, 0, 10); len(got) != 0 {
		t.Errorf("List = %v, want none", got)
	}
	if got, err := l.Blocked(ctx); err != nil || len(got) != 0 {
		t.Errorf("Blocked = %v, %v, want none", got, err)
	}
	if got, err := l.OfAggregate(ctx, aggA); err != nil || len(got) != 0 {
		t.Errorf("OfAggregate = %v, %v, want none", got, err)
	}
	if _, err := l.Get(ctx, 1); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Get(1) = %v, want ErrNotFound", err)
	}
	if got, err := l.Count(ctx); err != nil || !reflect.DeepEqual(got, map[string]int{relay.Failed: 0, relay.Parked: 0}) {
		t.Errorf("Count = %v, %v, want zeros", got, err)
	}
}

func TestAdvanceRecordsLetters(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	failed, parked := letter(3, aggA, 1, relay.Failed), letter(5, aggA, 2, relay.Parked)
	advance(t, l, 7, failed, parked)

	if got := checkpoint(t, l); got != 7 {
		t.Errorf("Checkpoint = %d, want 7", got)
	}
	got, err := l.Get(ctx, 3)
	if err != nil {
		t.Fatalf("Get(3): %v", err)
	}
	if want := utc(failed)[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("Get(3) =\n%+v\nwant\n%+v", got, want)
	}
	if got.FirstFailedAt.Location() != time.UTC || !got.LastFailedAt.Equal(failed.LastFailedAt) {
		t.Errorf("times %v, %v: want the same instants in UTC", got.FirstFailedAt, got.LastFailedAt)
	}
	if got := list(t, l, 0, 10); !reflect.DeepEqual(got, utc(failed, parked)) {
		t.Errorf("List = %+v", got)
	}
}

func TestCheckpointNeverMovesBack(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	advance(t, l, 10)
	advance(t, l, 4, letter(3, aggA, 1, relay.Failed)) // late, but its letter still counts
	if got := checkpoint(t, l); got != 10 {
		t.Errorf("Checkpoint after Advance(4) = %d, want 10", got)
	}
	if _, err := l.Get(ctx, 3); err != nil {
		t.Errorf("the letter of a backwards Advance was not recorded: %v", err)
	}
	advance(t, l, 12)
	if got := checkpoint(t, l); got != 12 {
		t.Errorf("Checkpoint = %d, want 12", got)
	}
	if err := l.Advance(ctx, -1, nil); err == nil {
		t.Error("Advance(-1) succeeded")
	}

	// Racing advances end at the highest, whatever their order.
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if err := l.Advance(ctx, int64(100+i*7%16), nil); err != nil {
				t.Errorf("Advance: %v", err)
			}
		})
	}
	wg.Wait()
	if got := checkpoint(t, l); got != 115 {
		t.Errorf("Checkpoint after racing advances = %d, want 115", got)
	}
}

// TestAdvanceIsAtomic makes the last insert of an Advance fail: neither the
// checkpoint nor the letters before it may be stored.
func TestAdvanceIsAtomic(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	first := letter(3, aggA, 1, relay.Failed)
	advance(t, l, 3, first)

	good := letter(8, aggB, 1, relay.Failed)
	sameEvent := letter(9, aggA, 1, relay.Parked) // aggA's sequence 1 is at position 3
	if err := l.Advance(ctx, 9, []relay.DeadLetter{good, sameEvent}); err == nil {
		t.Fatal("Advance with a second position for one event succeeded")
	}
	if got := checkpoint(t, l); got != 3 {
		t.Errorf("Checkpoint = %d after a failed Advance, want 3", got)
	}
	if got := positions(list(t, l, 0, 10)); !reflect.DeepEqual(got, []int64{3}) {
		t.Errorf("letters after a failed Advance: %v, want [3]", got)
	}

	bad := letter(10, aggB, 2, "lost")
	if err := l.Advance(ctx, 10, []relay.DeadLetter{good, bad}); err == nil {
		t.Error("Advance with an unknown state succeeded")
	}
	if got := checkpoint(t, l); got != 3 {
		t.Errorf("Checkpoint = %d after a refused Advance, want 3", got)
	}
}

// TestAdvanceKeepsRecordedLetter replays an Advance after the letter moved
// on: the stored letter wins.
func TestAdvanceKeepsRecordedLetter(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	d := letter(3, aggA, 1, relay.Failed)
	advance(t, l, 3, d)
	moved := d
	moved.Attempts, moved.Error, moved.LastFailedAt = 4, "kafka: topic authorization failed", t0.Add(time.Hour)
	if err := l.Update(ctx, moved); err != nil {
		t.Fatalf("Update: %v", err)
	}
	advance(t, l, 3, d) // a retried Advance
	got, err := l.Get(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := utc(moved)[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("after a repeated Advance, Get(3) =\n%+v\nwant\n%+v", got, want)
	}
}

func TestList(t *testing.T) {
	l := newLedger(t)
	advance(t, l, 9, letter(3, aggA, 1, relay.Failed), letter(5, aggB, 1, relay.Failed),
		letter(7, aggA, 2, relay.Parked), letter(9, aggB, 2, relay.Parked))
	for _, c := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 2, []int64{3, 5}},
		{5, 10, []int64{7, 9}},
		{4, 1, []int64{5}},
		{9, 10, []int64{}},
	} {
		if got := positions(list(t, l, c.after, c.limit)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("List(%d, %d) = %v, want %v", c.after, c.limit, got, c.want)
		}
	}
	if _, err := l.List(context.Background(), 0, 0); err == nil {
		t.Error("List with limit 0 succeeded")
	}
}

func TestOfAggregateAndBlocked(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	// Recorded out of sequence order, across two calls.
	advance(t, l, 8, letter(8, aggA, 3, relay.Parked), letter(2, aggA, 1, relay.Failed))
	advance(t, l, 9, letter(5, aggA, 2, relay.Parked), letter(9, aggB, 4, relay.Failed))

	got, err := l.OfAggregate(ctx, aggA)
	if err != nil {
		t.Fatal(err)
	}
	seqs := []int64{}
	for _, d := range got {
		seqs = append(seqs, d.Sequence)
	}
	if !reflect.DeepEqual(seqs, []int64{1, 2, 3}) {
		t.Errorf("OfAggregate(A) sequences = %v, want [1 2 3]", seqs)
	}
	blocked, err := l.Blocked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(blocked, []uuid.UUID{aggA, aggB}) {
		t.Errorf("Blocked = %v, want [A B]", blocked)
	}
	counts, err := l.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{relay.Failed: 2, relay.Parked: 2}; !reflect.DeepEqual(counts, want) {
		t.Errorf("Count = %v, want %v", counts, want)
	}
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	d := letter(5, aggA, 2, relay.Parked)
	advance(t, l, 5, d)

	u := d
	u.State, u.Error, u.Attempts, u.LastFailedAt = relay.Failed, "kafka: record too large", 2, t0.Add(48*time.Hour)
	u.Topic, u.FirstFailedAt = "elsewhere", t0.Add(time.Hour) // history: not updated
	if err := l.Update(ctx, u); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, err := l.Get(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := utc(u)[0]
	want.Topic, want.FirstFailedAt = d.Topic, d.FirstFailedAt.UTC()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after Update, Get =\n%+v\nwant\n%+v", got, want)
	}

	if err := l.Update(ctx, letter(6, aggA, 3, relay.Failed)); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Update of an unknown letter = %v, want ErrNotFound", err)
	}
	u.State = "published"
	if err := l.Update(ctx, u); err == nil || errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Update to an unknown state = %v, want a validation error", err)
	}
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	l := newLedger(t)
	advance(t, l, 9, letter(3, aggA, 1, relay.Failed), letter(5, aggA, 2, relay.Parked), letter(9, aggB, 1, relay.Failed))
	if err := l.Remove(ctx); err != nil {
		t.Fatalf("Remove(): %v", err)
	}
	if err := l.Remove(ctx, 3, 5, 42); err != nil {
		t.Fatalf("Remove(3, 5, 42): %v", err)
	}
	if got := positions(list(t, l, 0, 10)); !reflect.DeepEqual(got, []int64{9}) {
		t.Errorf("after Remove, letters = %v, want [9]", got)
	}
	if _, err := l.Get(ctx, 3); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Get of a removed letter = %v, want ErrNotFound", err)
	}
	if err := l.Remove(ctx, 3); err != nil {
		t.Errorf("removing again: %v", err)
	}
}

// TestReopen closes the ledger and opens the file again, at a path that
// needs escaping in a DSN.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay ?#%.db")
	l := mustOpen(t, path)
	want := utc(letter(3, aggA, 1, relay.Failed), letter(4, aggA, 2, relay.Parked))
	advance(t, l, 6, want...)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	l = mustOpen(t, path)
	if got := checkpoint(t, l); got != 6 {
		t.Errorf("Checkpoint after reopen = %d, want 6", got)
	}
	if got := list(t, l, 0, 10); !reflect.DeepEqual(got, want) {
		t.Errorf("letters after reopen =\n%+v\nwant\n%+v", got, want)
	}
}

// TestDurabilitySettings checks the pragmas the package comment promises.
func TestDurabilitySettings(t *testing.T) {
	l := newLedger(t)
	for pragma, want := range map[string]string{"journal_mode": "wal", "synchronous": "2"} { // 2 is FULL
		var got string
		if err := l.w.QueryRow("PRAGMA " + pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Checkpoint(context.Background()); err == nil {
		t.Error("Checkpoint after Close succeeded")
	}
}

// TestHandled: handled sequences are per aggregate, only go up, and
// survive a reopen.
func TestHandled(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	l := mustOpen(t, path)
	a, b, c := uuid.New(), uuid.New(), uuid.New()
	if err := l.MarkHandled(ctx, map[uuid.UUID]int64{a: 3, b: 1}); err != nil {
		t.Fatal(err)
	}
	if err := l.MarkHandled(ctx, map[uuid.UUID]int64{a: 2, b: 5}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	got, err := mustOpen(t, path).Handled(ctx, []uuid.UUID{a, b, c})
	if err != nil || len(got) != 2 || got[a] != 3 || got[b] != 5 {
		t.Fatalf("Handled = %v, %v; want a:3 b:5 and nothing for c", got, err)
	}
}
