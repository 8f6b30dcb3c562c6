package readmodeltest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// testChangedAfterApply checks the wake-up that read-your-writes waits on:
// Watch(id) is closed by an Apply that changed id's row and replaced by a
// fresh channel; an Apply of events already applied, here or by another
// instance, closes it too (a wait here must end whoever wrote the row); a
// batch of unprojected events, or of other aggregates only, does not.
func testChangedAfterApply(t *testing.T, b Backend) {
	l := newLifecycle(t)
	events := l.events()
	v := b.Views
	id := events[0].AggregateID

	ch, stop := v.Watch(id)
	defer stop()
	other, stopOther := v.Watch(uuid.New())
	defer stopOther()
	if closed(ch) {
		t.Fatal("Watch closed before any Apply")
	}
	apply(t, v, []store.Event{events[4]}) // the Warehouse event
	if closed(ch) {
		t.Error("Watch closed by an Apply of unprojected events only")
	}
	apply(t, v, events[:1])
	if !closed(ch) {
		t.Fatal("Watch not closed by an Apply that changed its row")
	}
	if closed(other) {
		t.Error("Watch of another id closed by an Apply that did not touch it")
	}
	next, stopNext := v.Watch(id)
	defer stopNext()
	if next == ch || closed(next) {
		t.Fatal("Watch not replaced by an open channel after an Apply")
	}
	apply(t, v, events[:1])
	if !closed(next) {
		t.Error("Watch not closed by an Apply of an event already applied")
	}

	if b.Second == nil {
		return
	}
	second := b.Second(t)
	apply(t, second, events[1:3])
	for _, e := range events[1:3] {
		ch, stop := v.Watch(e.AggregateID)
		apply(t, v, events[1:3])
		if !closed(ch) {
			t.Errorf("Watch of %s not closed by an Apply of events another instance applied first", e.AggregateID)
		}
		stop()
	}
}

// testSecondInstance has two instances share the storage: rows one applies
// are the other's, and each goes on from the rows the other wrote.
func testSecondInstance(t *testing.T, b Backend) {
	other := b.second(t)
	l := newLifecycle(t)
	events := l.events()
	apply(t, b.Views, events[:6])
	apply(t, other, events[3:]) // part again, then what is new
	l.check(t, b, b.Views)
	l.check(t, b, other)
}

// testConcurrentInstances runs three instances over the same orders at
// once, as after a failover, when the old projector has not noticed yet
// that it lost its lease: one applies every event alone, one batches of
// five, one batches of seven that each deliver the previous seven again. A
// watcher reads the rows meanwhile: no version may ever go back. All end
// with the rows the events fold to.
func testConcurrentInstances(t *testing.T, b Backend) {
	views := []Views{b.Views, b.second(t), b.Second(t)}
	h := newHistory(t)
	customer := uuid.Must(uuid.NewV7())
	h.register(at(0), customer, "ada@example.com", "Ada", "Lovelace", "")
	var orders []uuid.UUID
	for range 4 {
		orders = append(orders, uuid.Must(uuid.NewV7()))
	}
	product := uuid.Must(uuid.NewV7())
	const updates = 15
	for _, id := range orders {
		h.create(at(1), id, customer, []aggregate.Item{{ProductID: product, Quantity: 1}})
	}
	for i := range updates {
		for _, id := range orders {
			h.order(at(i+2), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
				return o.UpdateItems([]aggregate.Item{{ProductID: product, Quantity: i + 2}}, now)
			})
		}
	}
	for _, id := range orders {
		h.order(at(updates+2), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Confirm(now) })
	}
	events := h.events()

	var again [][]store.Event
	for i := 0; i < len(events); i += 7 {
		again = append(again, events[max(0, i-7):min(i+7, len(events))])
	}
	feeds := [][][]store.Event{chunks(events, 1), chunks(events, 5), again}

	ctx, stop := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watch(ctx, t, b.Views, orders)
	}()
	applyAtOnce(t, views, feeds)
	stop()
	<-watched

	want, customers := fold(t, events)
	var rows []readmodel.Order
	for _, id := range orders {
		rows = append(rows, b.order(want[id]))
	}
	for i, v := range views {
		t.Run(fmt.Sprintf("instance %d", i+1), func(t *testing.T) {
			checkRows(t, v, rows, []readmodel.Customer{b.customer(customers[customer])})
		})
	}
}

// watch reads the orders' rows until ctx ends and fails t if a version it
// reads is below one it read before.
func watch(ctx context.Context, t *testing.T, v Views, orders []uuid.UUID) {
	seen := map[uuid.UUID]int64{}
	for ctx.Err() == nil {
		for _, id := range orders {
			o, err := v.Order(ctx, id)
			if err != nil {
				continue // not created yet, or ctx ended during the read
			}
			if o.Version < seen[id] {
				t.Errorf("order %s went back from version %d to %d", id, seen[id], o.Version)
			}
			seen[id] = max(seen[id], o.Version)
		}
	}
}

// applyAtOnce has every instance views[i] apply its batches feeds[i] in
// order, all instances at the same time, and returns when all are done.
func applyAtOnce(t *testing.T, views []Views, feeds [][][]store.Event) {
	t.Helper()
	var wg sync.WaitGroup
	for i, batches := range feeds {
		wg.Go(func() {
			for _, batch := range batches {
				if err := views[i].Apply(context.Background(), batch); err != nil {
					t.Errorf("instance %d: Apply: %v", i+1, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
