package aggregate

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// OrderAt returns order id as it was at version: its newest usable
// snapshot at or below version, if any, and its events after that up to
// version. It also returns the order's current version, 0 when there is
// no order id (or id is another type's). A version above the current one
// answers the current state.
func (h *Handler) OrderAt(ctx context.Context, id uuid.UUID, version int64) (Order, int64, error) {
	o, current, err := loadAt[Order](ctx, h, OrderType, id, version)
	if err != nil || current == 0 {
		return Order{}, current, err
	}
	return *o, current, nil
}

// CustomerAt is OrderAt for customers.
func (h *Handler) CustomerAt(ctx context.Context, id uuid.UUID, version int64) (Customer, int64, error) {
	c, current, err := loadAt[Customer](ctx, h, CustomerType, id, version)
	if err != nil || current == 0 {
		return Customer{}, current, err
	}
	return *c, current, nil
}

// loadAt is loadCached stopped at version: the events after it are read,
// to learn the current version, but not applied.
func loadAt[T any, A interface {
	*T
	root
}](ctx context.Context, h *Handler, aggType string, id uuid.UUID, version int64) (A, int64, error) {
	a, from := A(new(T)), int64(0)
	if s, ok := any(a).(snapshotRoot); ok && h.snaps.store != nil {
		if v, ok := h.restore(ctx, s, aggType, id, version); ok {
			from = v
		} else {
			a = A(new(T)) // restore may have left part of a bad snapshot
		}
	}
	events, err := h.store.Load(ctx, id, from)
	if err != nil {
		return a, 0, fmt.Errorf("aggregate: load %s: %w", id, err)
	}
	current := from
	if n := len(events); n > 0 {
		current = events[n-1].Sequence
		if events[0].AggregateType != aggType {
			return a, 0, nil
		}
	}
	for _, e := range events {
		if e.Sequence > version {
			break
		}
		ev, err := Decode(e)
		if err != nil {
			return a, 0, err
		}
		a.apply(ev)
	}
	a.replayed(id, min(version, current))
	return a, current, nil
}
