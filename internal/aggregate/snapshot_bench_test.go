package aggregate

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkCommandLongHistory: a command on an order with 10,000 events,
// replaying them all; with snapshots every 100 events, from the state the
// last command left in memory, and cold, from the newest stored snapshot;
// and, for scale, a command on a new order.
//
//	go test -run '^$' -bench CommandLongHistory ./internal/aggregate/
func BenchmarkCommandLongHistory(b *testing.B) {
	ctx := context.Background()
	update := func(o *Order, now time.Time) ([]Event, error) {
		return o.UpdateItems([]Item{{ProductID: uuid.New(), Quantity: 1}}, now)
	}
	long := func(b *testing.B, h *Handler) uuid.UUID {
		b.Helper()
		cust, id := uuid.New(), uuid.New()
		registerCustomer(b, h, cust)
		if _, err := h.CreateOrder(ctx, id, Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
			b.Fatal(err)
		}
		for v := int64(1); v < 10_000; v += 1000 { // appended directly: 10,000 commands would take minutes
			evs := make([]Event, min(1000, 10_000-v))
			for i := range evs {
				evs[i] = OrderItemsUpdated{Items: []Item{{ProductID: uuid.New(), Quantity: 2}}, UpdatedAt: h.now()}
			}
			envs, err := h.envelopes(OrderType, id, v, evs, Meta{}, h.now())
			if err != nil {
				b.Fatal(err)
			}
			if err := h.store.Append(ctx, id, v, envs); err != nil {
				b.Fatal(err)
			}
		}
		// The first command replays everything and leaves a snapshot (when on).
		if v, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, update); err != nil || v != 10_001 {
			b.Fatalf("warm-up: version %d, %v", v, err)
		}
		h.snaps.wg.Wait()
		return id
	}
	run := func(b *testing.B, h *Handler, id uuid.UUID) {
		for b.Loop() {
			if _, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, update); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("10k-events/no-snapshots", func(b *testing.B) {
		h := newTestHandler(b, openStore(b), time.Now)
		run(b, h, long(b, h))
	})
	b.Run("10k-events/snapshots-every-100", func(b *testing.B) {
		h := newTestHandler(b, openStore(b), time.Now, WithSnapshots(openSnapshots(b), 100))
		run(b, h, long(b, h))
		b.ReportMetric(float64(h.SnapshotStats().Saved), "snapshots")
	})
	b.Run("10k-events/snapshots-every-100/cold", func(b *testing.B) {
		// Each command in a handler with nothing in memory, as the first
		// command after a restart or on another instance: the load reads
		// the newest stored snapshot and replays the events after it.
		st, snaps := openStore(b), openSnapshots(b)
		id := long(b, newTestHandler(b, st, time.Now, WithSnapshots(snaps, 100)))
		for b.Loop() {
			h := newTestHandler(b, st, time.Now, WithSnapshots(snaps, 100))
			if _, err := h.Order(ctx, id, Meta{Expected: AnyVersion}, update); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("new-order", func(b *testing.B) {
		h := newTestHandler(b, openStore(b), time.Now, WithSnapshots(openSnapshots(b), 100))
		cust := uuid.New()
		registerCustomer(b, h, cust)
		for b.Loop() {
			if _, err := h.CreateOrder(ctx, uuid.New(), Meta{Expected: AnyVersion}, cust, []Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
