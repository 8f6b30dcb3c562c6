package scylla_test

import (
	"context"
	"reflect"
	"sync"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/scylla"
	"github.com/orderd/orderd/internal/store"
)

// lostRace is the message Project logs when a conditional write lost.
const lostRace = "read model row moved on under a write; retrying"

// laggingHistory is the event store seen through a replica that is behind:
// it returns events up to sequence upTo only. before runs first, so that a
// test can move a row on while a projector is between its read and its
// write.
type laggingHistory struct {
	h      scylla.History
	upTo   int64
	before func()
}

func (l laggingHistory) Load(ctx context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
	l.before()
	evs, err := l.h.Load(ctx, id, after)
	var out []store.Event
	for _, e := range evs {
		if e.Sequence <= l.upTo {
			out = append(out, e)
		}
	}
	return out, err
}

// TestStaleWriterLoses moves a row on while a projector holds an older
// copy of it: the projector's conditional write must fail, and its retry
// must find its events applied, leaving the newer row. Without the
// condition it would write version 3 over version 4.
func TestStaleWriterLoses(t *testing.T) {
	e := newEnv(t)
	events := lifecycle(t)
	f := &feed{t: t, events: events}
	f.add(aggregate.OrderType, orderA, 4, aggregate.OrderDelivered{DeliveredAt: at(7)})
	events = f.events
	e.appendAll(events)
	a1, a2, a3, a4 := events[1], events[3], events[6], events[8]

	ctx := context.Background()
	other := e.views(nil)
	core, logs := observer.New(zapcore.DebugLevel)
	var once sync.Once
	stale := e.viewsWith(laggingHistory{h: e.store, upTo: 3, before: func() {
		once.Do(func() {
			if err := other.Project(ctx, []store.Event{a2, a3, a4}); err != nil {
				t.Errorf("the other projector: %v", err)
			}
		})
	}}, zap.New(core))

	if err := stale.Project(ctx, []store.Event{a1}); err != nil {
		t.Fatal(err)
	}
	// Sequence 3 after 1: the gap makes stale load History, during which
	// the other projector takes the row to 4.
	if err := stale.Project(ctx, []store.Event{a3}); err != nil {
		t.Fatalf("stale Project: %v", err)
	}
	if n := logs.FilterMessage(lostRace).Len(); n != 1 {
		t.Errorf("lost conditional writes: %d, want 1", n)
	}
	want := wantA
	want.Status, want.Version, want.UpdatedAt = readmodel.StatusDelivered, 4, ms(at(7))
	for name, v := range map[string]*scylla.Views{"stale": stale, "other": other} {
		got, err := v.Order(ctx, orderA)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: Order(A) =\n%+v, %v\nwant\n%+v", name, got, err, want)
		}
		list, err := v.CustomerOrders(ctx, customer, uuid.Nil, 10)
		if err != nil || !reflect.DeepEqual(list, []readmodel.OrderSummary{want.Summary()}) {
			t.Errorf("%s: CustomerOrders =\n%+v, %v\nwant\n%+v", name, list, err, []readmodel.OrderSummary{want.Summary()})
		}
	}
}

// TestConcurrentProjectorsAgree runs three Views, as three orderd
// processes would, over the same keyspace and the same orders at once,
// each fed differently: every event one by one, every third event (the
// rest heal from History), and batches of five. They must end in the rows
// the events fold to.
func TestConcurrentProjectorsAgree(t *testing.T) {
	e := newEnv(t)
	f := &feed{t: t}
	var orders []uuid.UUID
	for range 4 {
		orders = append(orders, uuid.Must(uuid.NewV7()))
	}
	const updates = 20
	for _, id := range orders {
		f.add(aggregate.OrderType, id, 1, aggregate.OrderCreated{CustomerID: customer, CreatedAt: at(0)})
	}
	for i := range updates {
		for _, id := range orders {
			items := []aggregate.Item{{ProductID: product, Quantity: i + 1}}
			f.add(aggregate.OrderType, id, int64(i+2), aggregate.OrderItemsUpdated{Items: items, UpdatedAt: at(i + 1)})
		}
	}
	for _, id := range orders {
		f.add(aggregate.OrderType, id, updates+2, aggregate.OrderConfirmed{ConfirmedAt: at(updates + 1)})
	}
	events := f.events
	e.appendAll(events)

	want := map[uuid.UUID]readmodel.Order{}
	for _, ev := range events {
		o := want[ev.AggregateID]
		if _, err := o.Apply(ev); err != nil {
			t.Fatal(err)
		}
		o.CreatedAt, o.UpdatedAt = ms(o.CreatedAt), ms(o.UpdatedAt)
		want[ev.AggregateID] = o
	}

	var everyThird []store.Event
	for i, ev := range events {
		if i%3 == 2 || i == len(events)-1 {
			everyThird = append(everyThird, ev)
		}
	}
	feeds := [][][]store.Event{chunks(events, 1), chunks(everyThird, 1), chunks(events, 5)}
	core, logs := observer.New(zapcore.DebugLevel)
	var wg sync.WaitGroup
	views := make([]*scylla.Views, len(feeds))
	for i, batches := range feeds {
		views[i] = e.views(zap.New(core))
		wg.Go(func() {
			for _, b := range batches {
				if err := views[i].Project(context.Background(), b); err != nil {
					t.Errorf("projector %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("lost conditional writes, retried: %d; gaps healed: %d",
		logs.FilterMessage(lostRace).Len(), logs.FilterMessageSnippet("healed a gap").Len())

	ctx := context.Background()
	var summaries []readmodel.OrderSummary
	for _, id := range orders { // UUIDv7 made in a row: in list order
		summaries = append(summaries, want[id].Summary())
		for i, v := range views {
			got, err := v.Order(ctx, id)
			if err != nil || !reflect.DeepEqual(got, want[id]) {
				t.Errorf("projector %d: Order(%s) =\n%+v, %v\nwant\n%+v", i, id, got, err, want[id])
			}
		}
	}
	list, err := views[0].CustomerOrders(ctx, customer, uuid.Nil, 10)
	if err != nil || !reflect.DeepEqual(list, summaries) {
		t.Errorf("CustomerOrders =\n%+v, %v\nwant\n%+v", list, err, summaries)
	}
}

// chunks splits events into calls of n events each.
func chunks(events []store.Event, n int) [][]store.Event {
	var out [][]store.Event
	for len(events) > 0 {
		k := min(n, len(events))
		out = append(out, events[:k])
		events = events[k:]
	}
	return out
}
