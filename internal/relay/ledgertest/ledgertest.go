// Package ledgertest is the conformance suite of relay.Ledger: every
// implementation runs it (internal/sqlite on a temporary file, internal/cql on
// a fresh keyspace of the test CQL server), so that the relay can rely on
// one contract whatever the backend.
package ledgertest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
)

// t0 has a zone other than UTC, so the suite sees whether times come back
// in UTC; it is whole milliseconds, the precision every backend keeps.
var t0 = time.Date(2025, 3, 1, 10, 30, 0, 123000000, time.FixedZone("CET", 3600))

var (
	aggA = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	aggB = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
)

// Run runs the suite; open returns an empty ledger, closed by t's cleanup.
func Run(t *testing.T, open func(t *testing.T) relay.Ledger) {
	for _, c := range []struct {
		name string
		test func(*testing.T, relay.Ledger)
	}{
		{"Empty", testEmpty},
		{"RecordAndGet", testRecordAndGet},
		{"RecordKeepsRecordedLetter", testRecordKeeps},
		{"RecordRefusesInvalid", testRecordRefuses},
		{"List", testList},
		{"OfAggregateBlockedCount", testOfAggregate},
		{"Update", testUpdate},
		{"Remove", testRemove},
		{"Requests", testRequests},
		{"RequestReplacesFinished", testRequestReplaces},
		{"Finish", testFinish},
		{"RecordPartitions", testRecordPartitions},
		{"ReplacePartitions", testReplacePartitions},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, open(t)) })
	}
}

// Letter returns a dead letter for the event at pos, sequence seq of agg,
// with times the suite can compare exactly.
func Letter(pos int64, agg uuid.UUID, seq int64, state string) relay.DeadLetter {
	d := relay.DeadLetter{
		Position: pos, EventID: uuid.Must(uuid.NewV7()), AggregateID: agg, AggregateType: "Order",
		Sequence: seq, EventType: "OrderCreated", Topic: "orders", State: state,
	}
	if state == relay.Failed {
		d.Error, d.Attempts = "kafka: message too large", 1
		d.FirstFailedAt, d.LastFailedAt = t0.Add(time.Duration(pos)*time.Second), t0.Add(time.Duration(pos)*time.Minute)
	}
	return d
}

// UTC is what letters read back as: the same instants, in UTC.
func UTC(ls ...relay.DeadLetter) []relay.DeadLetter {
	out := make([]relay.DeadLetter, len(ls))
	for i, d := range ls {
		if !d.FirstFailedAt.IsZero() {
			d.FirstFailedAt = d.FirstFailedAt.UTC()
		}
		if !d.LastFailedAt.IsZero() {
			d.LastFailedAt = d.LastFailedAt.UTC()
		}
		out[i] = d
	}
	return out
}

// Positions returns the letters' positions.
func Positions(ls []relay.DeadLetter) []int64 {
	ps := []int64{}
	for _, d := range ls {
		ps = append(ps, d.Position)
	}
	return ps
}

func record(t *testing.T, l relay.Ledger, letters ...relay.DeadLetter) {
	t.Helper()
	if err := l.Record(ctx(t), letters); err != nil {
		t.Fatalf("Record: %v", err)
	}
}

func list(t *testing.T, l relay.Ledger, after int64, limit int) []relay.DeadLetter {
	t.Helper()
	ls, err := l.List(ctx(t), after, limit)
	if err != nil {
		t.Fatalf("List(%d, %d): %v", after, limit, err)
	}
	return ls
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func testEmpty(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	if got := list(t, l, 0, 10); len(got) != 0 {
		t.Errorf("List = %v, want none", got)
	}
	if got, err := l.Blocked(c); err != nil || len(got) != 0 {
		t.Errorf("Blocked = %v, %v, want none", got, err)
	}
	if got, err := l.OfAggregate(c, aggA); err != nil || len(got) != 0 {
		t.Errorf("OfAggregate = %v, %v, want none", got, err)
	}
	if _, err := l.Get(c, 1); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Get(1) = %v, want ErrNotFound", err)
	}
	if got, err := l.Count(c); err != nil || !reflect.DeepEqual(got, map[string]int{relay.Failed: 0, relay.Parked: 0}) {
		t.Errorf("Count = %v, %v, want zeros", got, err)
	}
	if got, err := l.Requests(c); err != nil || len(got) != 0 {
		t.Errorf("Requests = %v, %v, want none", got, err)
	}
	if _, err := l.RequestAt(c, 1); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("RequestAt(1) = %v, want ErrNotFound", err)
	}
	if err := l.Record(c, nil); err != nil {
		t.Errorf("Record(nil) = %v", err)
	}
}

func testRecordAndGet(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	failed, parked := Letter(3, aggA, 1, relay.Failed), Letter(5, aggA, 2, relay.Parked)
	record(t, l, failed, parked)
	got, err := l.Get(c, 3)
	if err != nil {
		t.Fatalf("Get(3): %v", err)
	}
	if want := UTC(failed)[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("Get(3) =\n%+v\nwant\n%+v", got, want)
	}
	if got.FirstFailedAt.Location() != time.UTC {
		t.Errorf("FirstFailedAt in %v, want UTC", got.FirstFailedAt.Location())
	}
	if got, err := l.Get(c, 5); err != nil || !reflect.DeepEqual(got, parked) || !got.FirstFailedAt.IsZero() {
		t.Errorf("Get(5) = %+v, %v; want the parked letter, no failure times", got, err)
	}
	if got := list(t, l, 0, 10); !reflect.DeepEqual(got, UTC(failed, parked)) {
		t.Errorf("List = %+v", got)
	}
}

// testRecordKeeps records a letter again after it moved on, as a feed that
// hands an event again after a crash does: the stored letter wins.
func testRecordKeeps(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	d := Letter(3, aggA, 1, relay.Failed)
	record(t, l, d)
	moved := d
	moved.Attempts, moved.Error, moved.LastFailedAt = 4, "kafka: topic authorization failed", t0.Add(time.Hour)
	if err := l.Update(c, moved); err != nil {
		t.Fatalf("Update: %v", err)
	}
	again := d
	again.State, again.Error, again.Attempts = relay.Parked, "", 0 // redelivered behind itself: parked
	record(t, l, again, Letter(4, aggA, 2, relay.Parked))
	got, err := l.Get(c, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := UTC(moved)[0]; !reflect.DeepEqual(got, want) {
		t.Errorf("after recording again, Get(3) =\n%+v\nwant\n%+v", got, want)
	}
	if got := Positions(list(t, l, 0, 10)); !reflect.DeepEqual(got, []int64{3, 4}) {
		t.Errorf("letters = %v, want [3 4]: the new one beside the kept one", got)
	}
}

func testRecordRefuses(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	for _, bad := range []relay.DeadLetter{
		Letter(0, aggA, 1, relay.Failed),
		Letter(3, aggA, 1, "lost"),
		func() relay.DeadLetter { d := Letter(3, aggA, 1, relay.Failed); d.Attempts = -1; return d }(),
	} {
		if err := l.Record(c, []relay.DeadLetter{Letter(2, aggB, 1, relay.Failed), bad}); err == nil {
			t.Errorf("Record of %+v succeeded", bad)
		}
	}
	if _, err := l.Get(c, 3); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("an invalid letter was stored: %v", err)
	}
}

func testList(t *testing.T, l relay.Ledger) {
	// Recorded out of position order.
	record(t, l, Letter(7, aggA, 2, relay.Parked), Letter(3, aggA, 1, relay.Failed))
	record(t, l, Letter(9, aggB, 2, relay.Parked), Letter(5, aggB, 1, relay.Failed))
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
		if got := Positions(list(t, l, c.after, c.limit)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("List(%d, %d) = %v, want %v", c.after, c.limit, got, c.want)
		}
	}
	if _, err := l.List(ctx(t), 0, 0); err == nil {
		t.Error("List with limit 0 succeeded")
	}
}

func testOfAggregate(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	// Recorded out of sequence order, across two calls; positions not in
	// sequence order either, as ids derived from event ids are not.
	record(t, l, Letter(8, aggA, 3, relay.Parked), Letter(20, aggA, 1, relay.Failed))
	record(t, l, Letter(5, aggA, 2, relay.Parked), Letter(9, aggB, 4, relay.Failed), Letter(2, aggB, 5, relay.Parked))
	got, err := l.OfAggregate(c, aggA)
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
	blocked, err := l.Blocked(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uuid.UUID]int64{aggA: 1, aggB: 4}; !reflect.DeepEqual(blocked, want) {
		t.Errorf("Blocked = %v, want %v (the lowest sequence of each)", blocked, want)
	}
	counts, err := l.Count(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int{relay.Failed: 2, relay.Parked: 3}; !reflect.DeepEqual(counts, want) {
		t.Errorf("Count = %v, want %v", counts, want)
	}
}

func testUpdate(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	d := Letter(5, aggA, 2, relay.Parked)
	record(t, l, d)
	u := d
	u.State, u.Error, u.Attempts, u.LastFailedAt = relay.Failed, "kafka: record too large", 2, t0.Add(48*time.Hour)
	u.Topic, u.FirstFailedAt = "elsewhere", t0.Add(time.Hour) // history: not updated
	if err := l.Update(c, u); err != nil {
		t.Fatalf("Update: %v", err)
	}
	got, err := l.Get(c, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := UTC(u)[0]
	want.Topic, want.FirstFailedAt = d.Topic, d.FirstFailedAt
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after Update, Get =\n%+v\nwant\n%+v", got, want)
	}
	if err := l.Update(c, Letter(6, aggA, 3, relay.Failed)); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Update of an unknown letter = %v, want ErrNotFound", err)
	}
	if _, err := l.Get(c, 6); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Update of an unknown letter created it: %v", err)
	}
	u.State = "published"
	if err := l.Update(c, u); err == nil || errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Update to an unknown state = %v, want a validation error", err)
	}
}

func testRemove(t *testing.T, l relay.Ledger) {
	c := ctx(t)
	record(t, l, Letter(3, aggA, 1, relay.Failed), Letter(5, aggA, 2, relay.Parked), Letter(9, aggB, 1, relay.Failed))
	if err := l.Remove(c); err != nil {
		t.Fatalf("Remove(): %v", err)
	}
	if err := l.Remove(c, 3, 5, 42); err != nil {
		t.Fatalf("Remove(3, 5, 42): %v", err)
	}
	if got := Positions(list(t, l, 0, 10)); !reflect.DeepEqual(got, []int64{9}) {
		t.Errorf("after Remove, letters = %v, want [9]", got)
	}
	if _, err := l.Get(c, 3); !errors.Is(err, relay.ErrNotFound) {
		t.Errorf("Get of a removed letter = %v, want ErrNotFound", err)
	}
	if err := l.Remove(c, 3); err != nil {
		t.Errorf("removing again: %v", err)
	}
	if b, err := l.Blocked(c); err != nil || !reflect.DeepEqual(b, map[uuid.UUID]int64{aggB: 1}) {
		t.Errorf("Blocked after Remove = %v, %v; want only B", b, err)
	}
}
