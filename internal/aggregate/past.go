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

// pastPage is how many events loadAt reads and applies at a time.
const pastPage = 500

// loadAt is loadCached stopped at version. It learns the current version
// from the store's index and reads the events up to version only, a page
// at a time, so that a past state of a long history never holds the
// history whole.
func loadAt[T any, A interface {
	*T
	root
}](ctx context.Context, h *Handler, aggType string, id uuid.UUID, version int64) (A, int64, error) {
	typ, current, err := h.store.Version(ctx, id)
	switch {
	case err != nil:
		return A(new(T)), 0, fmt.Errorf("aggregate: version of %s: %w", id, err)
	case current == 0 || typ != aggType:
		return A(new(T)), 0, nil
	}
	upTo := min(version, current)
	a, from := A(new(T)), int64(0)
	if s, ok := any(a).(snapshotRoot); ok && h.snaps.store != nil {
		if v, ok := h.restore(ctx, s, aggType, id, upTo); ok {
			from = v
		} else {
			a = A(new(T)) // restore may have left part of a bad snapshot
		}
	}
	for from < upTo {
		events, err := h.store.LoadPage(ctx, id, from, int(min(upTo-from, pastPage)))
		if err != nil {
			return a, 0, fmt.Errorf("aggregate: load %s: %w", id, err)
		}
		if len(events) == 0 {
			break // cannot be, the events up to current being stored
		}
		for _, e := range events {
			ev, err := Decode(e)
			if err != nil {
				return a, 0, err
			}
			a.apply(ev)
			from = e.Sequence
		}
	}
	a.replayed(id, from)
	return a, current, nil
}
