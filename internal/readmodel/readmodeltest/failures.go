package readmodeltest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// shippedOrder is an order created, confirmed and shipped, for the tests
// that leave events out.
func shippedOrder(h *history, id, customer uuid.UUID) []store.Event {
	h.create(at(0), id, customer, []aggregate.Item{{ProductID: uuid.Must(uuid.NewV7()), Quantity: 1}})
	h.order(at(1), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) { return o.Confirm(now) })
	h.order(at(2), id, func(o *aggregate.Order, now time.Time) ([]aggregate.Event, error) {
		return o.Ship("T-1", "DHL", now)
	})
	return h.of(id)
}

// testGap hands Apply an event that skips past its row's version+1, which
// a feed never does: Apply must report it as ErrGap and leave that row as
// it was, whether the row exists or not, alone in the batch or not. Once
// the missing events come, as a feed would deliver them after the error,
// the rows complete.
func testGap(t *testing.T, b Backend) {
	ctx := context.Background()
	h := newHistory(t)
	customer := uuid.Must(uuid.NewV7())
	h.register(at(0), customer, "ada@example.com", "Ada", "Lovelace", "")
	a, d, e := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	evA, evD := shippedOrder(h, a, customer), shippedOrder(h, d, customer)
	h.create(at(3), e, customer, []aggregate.Item{{ProductID: uuid.Must(uuid.NewV7()), Quantity: 2}})
	evE := h.of(e)
	apply(t, b.Views, evA[:1])
	before, err := b.Views.Order(ctx, a)
	if err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name  string
		batch []store.Event
	}{
		{"past an existing row", []store.Event{evA[2]}},
		{"past a row that does not exist", []store.Event{evD[1]}},
		{"in a batch with good events", []store.Event{evE[0], evA[2]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := b.Views.Apply(ctx, tt.batch)
			if !errors.Is(err, readmodel.ErrGap) {
				t.Fatalf("Apply: error %v, want ErrGap", err)
			}
			if got, err := b.Views.Order(ctx, a); err != nil || !reflect.DeepEqual(got, before) {
				t.Errorf("order A after the gap = %+v, %v; want it unchanged, %+v", got, err, before)
			}
			if got, err := b.Views.Order(ctx, d); !errors.Is(err, readmodel.ErrNotFound) {
				t.Errorf("order D after the gap = %+v, %v; want ErrNotFound", got, err)
			}
		})
	}

	apply(t, b.Views, h.events())
	orders, customers := fold(t, h.events())
	checkRows(t, b.Views,
		[]readmodel.Order{b.order(orders[a]), b.order(orders[d]), b.order(orders[e])},
		[]readmodel.Customer{b.customer(customers[customer])})
}

// testUndecodableEvent hands Apply an event whose payload does not decode:
// an error, and the row stays as it was, so that the projector stops
// rather than skip an event and serve a wrong row.
func testUndecodableEvent(t *testing.T, b Backend) {
	ctx := context.Background()
	h := newHistory(t)
	customer, id := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	h.register(at(0), customer, "ada@example.com", "Ada", "Lovelace", "")
	events := shippedOrder(h, id, customer)

	bad := events[0]
	bad.Data = json.RawMessage(`{"items": "none"}`)
	if err := b.Views.Apply(ctx, []store.Event{bad}); err == nil {
		t.Fatal("Apply of an undecodable OrderCreated succeeded")
	}
	if o, err := b.Views.Order(ctx, id); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("order after the failed Apply = %+v, %v; want ErrNotFound", o, err)
	}

	apply(t, b.Views, events[:1])
	before, err := b.Views.Order(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	bad = events[1]
	bad.Data = json.RawMessage(`{"confirmed_at": 7}`)
	if err := b.Views.Apply(ctx, []store.Event{bad}); err == nil {
		t.Fatal("Apply of an undecodable OrderConfirmed succeeded")
	} else if errors.Is(err, readmodel.ErrGap) {
		t.Errorf("Apply of an undecodable event: %v, which is not a gap", err)
	}
	if got, err := b.Views.Order(ctx, id); err != nil || !reflect.DeepEqual(got, before) {
		t.Errorf("order after the failed Apply = %+v, %v; want it unchanged, %+v", got, err, before)
	}

	apply(t, b.Views, events)
	orders, _ := fold(t, events)
	checkRows(t, b.Views, []readmodel.Order{b.order(orders[id])}, nil)
}
