package readmodeltest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// lifecycle is a customer who changes email and phone, with one order
// delivered after an items update and one cancelled, their events
// interleaved as a feed has them, and an event of an aggregate type without
// views among them.
type lifecycle struct {
	*history
	custID, orderA, orderB, warehouse uuid.UUID
	items                             []aggregate.Item
}

func newLifecycle(t testing.TB) *lifecycle {
	t.Helper()
	l := &lifecycle{
		history: newHistory(t),
		custID:  uuid.Must(uuid.NewV7()), orderA: uuid.Must(uuid.NewV7()), orderB: uuid.Must(uuid.NewV7()),
		warehouse: uuid.Must(uuid.NewV7()),
		items:     []aggregate.Item{{ProductID: uuid.Must(uuid.NewV7()), Quantity: 3}, {ProductID: uuid.Must(uuid.NewV7()), Quantity: 1}},
	}
	l.register(at(0), l.custID, "ada@example.com", "Ada", "Lovelace", "")
	l.create(at(1), l.orderA, l.custID, l.items)
	l.create(at(2), l.orderB, l.custID, l.items[:1])
	l.order(at(3), l.orderA, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.UpdateItems([]aggregate.Item{l.items[0], {ProductID: l.items[1].ProductID, Quantity: 5}}, now)
	})
	l.foreign(l.warehouse)
	l.order(at(4), l.orderA, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Confirm(now) })
	l.order(at(5), l.orderB, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Cancel("duplicate", now)
	})
	l.customer(at(6), l.custID, func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return c.ChangeEmail("ada@lovelace.example", now)
	})
	l.order(at(7), l.orderA, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Ship("T-1", "DHL", now)
	})
	l.order(at(8), l.orderA, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Deliver("J. Doe", now)
	})
	l.customer(at(9), l.custID, func(c *aggregate.Customer, now time.Time) ([]aggregate.Event, error) {
		return c.ChangePhone("+441234567890", now)
	})
	return l
}

// want returns the rows the lifecycle's events say, as b keeps them:
// written out from the commands above, not folded, so that the suite does
// not take the projection's word for what it should produce.
func (l *lifecycle) want(b Backend) (a, bo readmodel.Order, c readmodel.Customer) {
	a = b.order(readmodel.Order{
		ID: l.orderA, CustomerID: l.custID, Status: readmodel.StatusDelivered,
		Items:          []aggregate.Item{l.items[0], {ProductID: l.items[1].ProductID, Quantity: 5}},
		TrackingNumber: "T-1", Carrier: "DHL", Version: 5, CreatedAt: at(1), UpdatedAt: at(8),
	})
	bo = b.order(readmodel.Order{
		ID: l.orderB, CustomerID: l.custID, Status: readmodel.StatusCancelled, Items: l.items[:1],
		CancelledReason: "duplicate", Version: 2, CreatedAt: at(2), UpdatedAt: at(5),
	})
	c = b.customer(readmodel.Customer{
		ID: l.custID, Email: "ada@lovelace.example", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890",
		Version: 3, RegisteredAt: at(0), UpdatedAt: at(9),
	})
	return a, bo, c
}

// check asserts that v holds exactly the lifecycle's rows.
func (l *lifecycle) check(t *testing.T, b Backend, v Views) {
	t.Helper()
	a, bo, c := l.want(b)
	checkRows(t, v, []readmodel.Order{a, bo}, []readmodel.Customer{c})
}

// checkRows asserts that v holds orders and customers exactly, and that
// each customer's order list holds the summaries of those of orders that
// are theirs, in id order.
func checkRows(t *testing.T, v Views, orders []readmodel.Order, customers []readmodel.Customer) {
	t.Helper()
	ctx := context.Background()
	lists := map[uuid.UUID][]readmodel.OrderSummary{}
	for _, want := range orders {
		got, err := v.Order(ctx, want.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Order(%s) =\n%+v, %v\nwant\n%+v", want.ID, got, err, want)
		}
		lists[want.CustomerID] = append(lists[want.CustomerID], want.Summary())
	}
	for _, want := range customers {
		got, err := v.Customer(ctx, want.ID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("Customer(%s) =\n%+v, %v\nwant\n%+v", want.ID, got, err, want)
		}
	}
	for id, want := range lists {
		slices.SortFunc(want, func(x, y readmodel.OrderSummary) int { return compareUUID(x.ID, y.ID) })
		got, err := v.CustomerOrders(ctx, id, uuid.Nil, len(want)+1)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("CustomerOrders(%s) =\n%+v, %v\nwant\n%+v", id, got, err, want)
		}
	}
}

func compareUUID(x, y uuid.UUID) int { return slices.Compare(x[:], y[:]) }

// notFound asserts that v has no order and no customer row for id.
func notFound(t *testing.T, v Views, id uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	if o, err := v.Order(ctx, id); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Order(%s) = %+v, %v; want ErrNotFound", id, o, err)
	}
	if c, err := v.Customer(ctx, id); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Customer(%s) = %+v, %v; want ErrNotFound", id, c, err)
	}
}

// testLifecycle projects a whole order lifecycle and a customer's changes,
// in two batches split inside order A's history, so that the second starts
// from rows the first wrote.
func testLifecycle(t *testing.T, b Backend) {
	l := newLifecycle(t)
	events := l.events()
	apply(t, b.Views, events[:5], events[5:])
	l.check(t, b, b.Views)
	notFound(t, b.Views, l.warehouse)
	notFound(t, b.Views, uuid.Must(uuid.NewV7()))
	if _, err := b.Views.Customer(context.Background(), l.orderA); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("Customer(an order's id) error = %v, want ErrNotFound", err)
	}
}

// testRedelivery delivers again what was applied, in every shape a feed may
// repeat it: nothing may change.
func testRedelivery(t *testing.T, b Backend) {
	l := newLifecycle(t)
	events := l.events()
	apply(t, b.Views, events)
	l.check(t, b, b.Views)

	var reversed []store.Event
	for i := len(events) - 1; i >= 0; i-- {
		reversed = append(reversed, events[i])
	}
	for _, replay := range []struct {
		name    string
		batches [][]store.Event
	}{
		{"the whole batch", [][]store.Event{events}},
		{"a prefix", [][]store.Event{events[:3]}},
		{"a middle part", [][]store.Event{events[3:8]}},
		{"each event alone", chunks(events, 1)},
		{"each event alone, newest first", chunks(reversed, 1)},
		{"older events after newer in one batch", [][]store.Event{reversed}},
		{"one event twice in one batch", [][]store.Event{{events[9], events[9], events[0]}}},
	} {
		t.Run(replay.name, func(t *testing.T) {
			apply(t, b.Views, replay.batches...)
			l.check(t, b, b.Views)
		})
	}
}

// testOverlappingBatches delivers batches that repeat part of the one
// before and carry new events after it, as a feed does after a restart.
func testOverlappingBatches(t *testing.T, b Backend) {
	l := newLifecycle(t)
	events := l.events()
	apply(t, b.Views, events[:4], events[2:7], events[5:], events[9:])
	l.check(t, b, b.Views)
}

// testUnknownAggregateTypes hands Apply events of a type without views,
// whose payload no order or customer event could decode: they are skipped,
// alone in a batch or among projected events.
func testUnknownAggregateTypes(t *testing.T, b Backend) {
	h := newHistory(t)
	w1, w2 := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	h.foreign(w1)
	h.foreign(w2)
	h.foreign(w1)
	apply(t, b.Views, h.events())
	notFound(t, b.Views, w1)
	notFound(t, b.Views, w2)

	l := newLifecycle(t) // with a Warehouse event in the middle
	apply(t, b.Views, l.events())
	l.check(t, b, b.Views)
	notFound(t, b.Views, l.warehouse)
}

// chunks splits events into batches of n.
func chunks(events []store.Event, n int) [][]store.Event {
	var out [][]store.Event
	for len(events) > 0 {
		k := min(n, len(events))
		out = append(out, events[:k])
		events = events[k:]
	}
	return out
}
