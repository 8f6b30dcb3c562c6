package aggregate

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestOrderAtEqualsReplay is time travel's property test: over random
// command sequences, with a snapshot every 3 events, the order at each of
// its versions, from the snapshot at or below it plus the events after,
// equals the order replayed from its first events up to that version.
func TestOrderAtEqualsReplay(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	h := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 3))
	cust := uuid.New()
	registerCustomer(t, h, cust)
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 2))
		id := uuid.New()
		if _, err := h.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
			t.Fatal(err)
		}
		for range 5 + r.IntN(25) {
			_, _ = h.Order(ctx, id, Meta{Expected: AnyVersion}, randomOrderCommand(r))
		}
		h.snaps.wg.Wait()
		events, err := st.Load(ctx, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		current := int64(len(events))
		for v := int64(1); v <= current; v++ {
			var want Order
			for _, e := range events[:v] {
				ev, err := Decode(e)
				if err != nil {
					t.Fatal(err)
				}
				want.apply(ev)
			}
			want.replayed(id, v)
			got, cur, err := h.OrderAt(ctx, id, v)
			if err != nil || cur != current || !reflect.DeepEqual(got, want) {
				t.Fatalf("seed %d: OrderAt(%d) = %+v, current %d, %v\nwant %+v, current %d", seed, v, got, cur, err, want, current)
			}
		}
		if got, cur, err := h.OrderAt(ctx, id, current+10); err != nil || cur != current || got.Version != current {
			t.Fatalf("OrderAt beyond the current version = version %d, current %d, %v", got.Version, cur, err)
		}
	}
	if s := h.SnapshotStats(); s.Saved == 0 {
		t.Fatal("no snapshot was saved: the test did not exercise them")
	}
	if _, cur, err := h.OrderAt(ctx, uuid.New(), 1); err != nil || cur != 0 {
		t.Fatalf("OrderAt of an unknown order: current %d, %v", cur, err)
	}
	if _, cur, err := h.OrderAt(ctx, cust, 1); err != nil || cur != 0 {
		t.Fatalf("OrderAt of a customer's id: current %d, %v; want none", cur, err)
	}
}

// TestOrderAtPages: with no snapshot to start from, a past state of a
// history longer than a page (pastPage) is read a page at a time, and
// still equals the replay of its events up to that version.
func TestOrderAtPages(t *testing.T) {
	ctx := context.Background()
	st, snaps := openStore(t), openSnapshots(t)
	writer := newTestHandler(t, st, time.Now, WithSnapshots(snaps, 100)) // fast writes only
	cust := uuid.New()
	registerCustomer(t, writer, cust)
	id := uuid.New()
	if _, err := writer.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	const n = 2*pastPage + 101
	for i := 2; i <= n; i++ {
		if _, err := writer.Order(ctx, id, Meta{Expected: AnyVersion}, func(o *Order, now time.Time) ([]Event, error) {
			return o.UpdateItems([]Item{{ProductID: uuid.New(), Quantity: i}}, now)
		}); err != nil {
			t.Fatal(err)
		}
	}
	events, err := st.Load(ctx, id, 0)
	if err != nil || len(events) != n {
		t.Fatalf("%d events, %v; want %d", len(events), err, n)
	}
	reader := newTestHandler(t, st, time.Now) // no snapshots: every event from the first
	for _, v := range []int64{1, pastPage, pastPage + 1, 2*pastPage + 50, n, n + 5} {
		var want Order
		for _, e := range events[:min(v, n)] {
			ev, err := Decode(e)
			if err != nil {
				t.Fatal(err)
			}
			want.apply(ev)
		}
		want.replayed(id, min(v, n))
		got, cur, err := reader.OrderAt(ctx, id, v)
		if err != nil || cur != n || !reflect.DeepEqual(got, want) {
			t.Errorf("OrderAt(%d) = version %d, items %v, current %d, %v; want version %d, items %v, current %d",
				v, got.Version, got.Items, cur, err, want.Version, want.Items, n)
		}
	}
}
