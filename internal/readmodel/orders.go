package readmodel

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// ErrGap is returned, wrapped, when an event's sequence skips past the next
// version of its row: an event in between was never applied. A complete,
// ordered feed never produces one, so it reports a bug rather than a race.
var ErrGap = errors.New("readmodel: event sequence gap")

// The statuses of an order as the read side shows them.
const (
	StatusCreated   = "created"
	StatusConfirmed = "confirmed"
	StatusShipped   = "shipped"
	StatusDelivered = "delivered"
	StatusCancelled = "cancelled"
)

// Order is the read model of one order, served by GET /orders/{id}.
type Order struct {
	ID              uuid.UUID
	CustomerID      uuid.UUID
	Status          string
	Items           []aggregate.Item
	TrackingNumber  string
	Carrier         string
	CancelledReason string
	Version         int64 // sequence of the last applied event; 0 for no row
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// OrderSummary is one row of a customer's order list.
type OrderSummary struct {
	ID        uuid.UUID
	Status    string
	ItemCount int // number of lines
	Quantity  int // total units over all lines
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Apply projects the stored order event e onto o, which is the zero Order
// when the order has no row yet. It reports whether o changed: an event at or
// below o.Version was applied before and changes nothing, so replaying a
// batch is harmless. It returns an error wrapping ErrGap when e.Sequence is
// beyond o.Version+1, and an error when e belongs to another aggregate, does
// not decode, or is not an order event; o is then left unchanged.
func (o *Order) Apply(e store.Event) (bool, error) {
	if err := checkTarget(e, aggregate.OrderType, o.ID, o.Version); err != nil {
		return false, err
	}
	if next, err := admit(e, o.Version); !next || err != nil {
		return false, err
	}
	ev, err := aggregate.Decode(e)
	if err != nil {
		return false, fmt.Errorf("readmodel: %w", err)
	}
	_, creates := ev.(aggregate.OrderCreated)
	if creates != (o.Version == 0) {
		return false, fmt.Errorf("readmodel: order %s: %s at sequence %d: only OrderCreated starts an order", e.AggregateID, e.Type, e.Sequence)
	}
	switch ev := ev.(type) {
	case aggregate.OrderCreated:
		at := ev.CreatedAt.UTC()
		*o = Order{
			ID:         e.AggregateID,
			CustomerID: ev.CustomerID,
			Status:     StatusCreated,
			Items:      copyItems(ev.Items),
			CreatedAt:  at,
			UpdatedAt:  at,
		}
	case aggregate.OrderItemsUpdated:
		o.Items, o.UpdatedAt = copyItems(ev.Items), ev.UpdatedAt.UTC()
	case aggregate.OrderConfirmed:
		o.Status, o.UpdatedAt = StatusConfirmed, ev.ConfirmedAt.UTC()
	case aggregate.OrderShipped:
		o.Status, o.TrackingNumber, o.Carrier, o.UpdatedAt = StatusShipped, ev.TrackingNumber, ev.Carrier, ev.ShippedAt.UTC()
	case aggregate.OrderDelivered:
		o.Status, o.UpdatedAt = StatusDelivered, ev.DeliveredAt.UTC()
	case aggregate.OrderCancelled:
		o.Status, o.CancelledReason, o.UpdatedAt = StatusCancelled, ev.Reason, ev.CancelledAt.UTC()
	default:
		return false, fmt.Errorf("readmodel: order %s: %s is not an order event", e.AggregateID, e.Type)
	}
	o.Version = e.Sequence
	return true, nil
}

// Summary returns the row of o in its customer's order list.
func (o Order) Summary() OrderSummary {
	s := OrderSummary{
		ID:        o.ID,
		Status:    o.Status,
		ItemCount: len(o.Items),
		Version:   o.Version,
		CreatedAt: o.CreatedAt,
		UpdatedAt: o.UpdatedAt,
	}
	for _, it := range o.Items {
		s.Quantity += it.Quantity
	}
	return s
}

// copyItems returns a non-nil copy, so an order without items reads back as
// an empty list rather than null, and the row never aliases an event.
func copyItems(items []aggregate.Item) []aggregate.Item {
	return append(make([]aggregate.Item, 0, len(items)), items...)
}

// checkTarget refuses an event that belongs to another aggregate type or,
// once the row exists, to another aggregate: applying it would corrupt the
// row, and only a bug in the caller's routing can cause it.
func checkTarget(e store.Event, aggregateType string, id uuid.UUID, version int64) error {
	if e.AggregateType != aggregateType {
		return fmt.Errorf("readmodel: event %s of %s %s cannot apply to a %s", e.ID, e.AggregateType, e.AggregateID, aggregateType)
	}
	if version > 0 && e.AggregateID != id {
		return fmt.Errorf("readmodel: event %s of %s %s cannot apply to %s %s", e.ID, e.AggregateType, e.AggregateID, aggregateType, id)
	}
	return nil
}

// admit reports whether e is the next event of a row at version: false for
// an event already applied, an error wrapping ErrGap for one that skips ahead.
func admit(e store.Event, version int64) (bool, error) {
	switch {
	case e.Sequence < 1:
		return false, fmt.Errorf("readmodel: event %s of %s %s has sequence %d", e.ID, e.AggregateType, e.AggregateID, e.Sequence)
	case e.Sequence <= version:
		return false, nil
	case e.Sequence > version+1:
		return false, fmt.Errorf("%w: %s %s is at version %d, event %s has sequence %d", ErrGap, e.AggregateType, e.AggregateID, version, e.ID, e.Sequence)
	}
	return true, nil
}

// OrderOf returns the read model of the aggregate's state o: what applying
// o's events gives, for time travel from a snapshot.
func OrderOf(o aggregate.Order) Order {
	return Order{
		ID: o.ID, CustomerID: o.CustomerID, Status: string(o.Status), Items: copyItems(o.Items),
		TrackingNumber: o.TrackingNumber, Carrier: o.Carrier, CancelledReason: o.CancelledReason,
		Version: o.Version, CreatedAt: o.CreatedAt.UTC(), UpdatedAt: o.UpdatedAt.UTC(),
	}
}
