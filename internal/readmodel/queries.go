package readmodel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// ErrNotFound is returned, wrapped, when a view has no row for the id: the
// read side says only that it has nothing, and the API decides what that
// means to a client.
var ErrNotFound = errors.New("readmodel: not found")

// ErrBehind is returned, wrapped, when a view has not reached the version a
// client asked for within the wait. The API answers 503 with Retry-After
// rather than serve a row older than the client's own write.
var ErrBehind = errors.New("readmodel: projection is behind the requested version")

// Views is the part of a view backend that queries read.
type Views interface {
	// Order returns the order's row, or an error wrapping
	// ErrNotFound when there is none.
	Order(ctx context.Context, id uuid.UUID) (Order, error)

	// Customer returns the customer's row, or an error wrapping
	// ErrNotFound when there is none.
	Customer(ctx context.Context, id uuid.UUID) (Customer, error)

	// CustomerOrders returns up to limit of the customer's orders whose id
	// is greater than after, in id order.
	CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]OrderSummary, error)

	// Changed returns a channel that is closed when this Views' next
	// Apply of events of projected types returns, whether those events
	// changed rows or had been applied before (by this process or
	// another). Each such Apply replaces it with a fresh one. A write by
	// another process's Views does not close it.
	Changed() <-chan struct{}
}

// Queries serves the views with read-your-writes: a client that has just
// written version n can ask for at least n and wait briefly for the
// projector to get there.
type Queries struct {
	v    Views
	wait time.Duration
	poll time.Duration
}

// NewQueries returns queries over v that wait at most wait for a requested
// version (about 2 s in production: long enough for the projector's usual
// lag, short enough to answer 503 before a client times out).
//
// A waiting query wakes when v's Changed says this process projected
// something. Where the projector may run in another process (several
// instances on one CQL keyspace, one of them the active projector), whose
// commits close no channel here, poll > 0 makes a waiting query also read
// its row again every poll; 0 relies on Changed alone.
func NewQueries(v Views, wait, poll time.Duration) *Queries {
	return &Queries{v: v, wait: wait, poll: poll}
}

// Order returns the order with at least version minVersion. With minVersion
// 0 it answers at once, and a missing order is an error wrapping
// ErrNotFound; otherwise, like an order older than minVersion, it is waited
// for and ends in an error wrapping ErrBehind, or ctx's error if ctx ends
// first.
func (q *Queries) Order(ctx context.Context, id uuid.UUID, minVersion int64) (Order, error) {
	return atLeast(ctx, q, minVersion,
		func(ctx context.Context) (Order, error) { return q.v.Order(ctx, id) },
		func(o Order) int64 { return o.Version },
		"order "+id.String())
}

// Customer returns the customer with at least version minVersion, with the
// same waiting and errors as Order.
func (q *Queries) Customer(ctx context.Context, id uuid.UUID, minVersion int64) (Customer, error) {
	return atLeast(ctx, q, minVersion,
		func(ctx context.Context) (Customer, error) { return q.v.Customer(ctx, id) },
		func(c Customer) int64 { return c.Version },
		"customer "+id.String())
}

// CustomerOrders returns up to limit of the customer's orders whose id is
// greater than after (uuid.Nil for the first page), in id order. It returns
// an error wrapping ErrNotFound when the customer has no view, so an
// unknown customer is not mistaken for one without orders.
func (q *Queries) CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]OrderSummary, error) {
	if _, err := q.v.Customer(ctx, customerID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: customer %s", ErrNotFound, customerID)
		}
		return nil, fmt.Errorf("readmodel: customer %s: %w", customerID, err)
	}
	orders, err := q.v.CustomerOrders(ctx, customerID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("readmodel: orders of customer %s: %w", customerID, err)
	}
	return orders, nil
}

// atLeast reads a row with get until its version reaches minVersion. It
// takes the Changed channel before each read, so a commit that lands
// between the read and the wait still wakes it; it polls only when q.poll
// says the projector may be elsewhere.
func atLeast[T any](ctx context.Context, q *Queries, minVersion int64,
	get func(context.Context) (T, error), version func(T) int64, what string,
) (T, error) {
	var zero T
	if minVersion <= 0 {
		row, err := get(ctx)
		switch {
		case errors.Is(err, ErrNotFound):
			return zero, fmt.Errorf("%w: %s", ErrNotFound, what)
		case err != nil:
			return zero, fmt.Errorf("readmodel: %s: %w", what, err)
		}
		return row, nil
	}

	timeout := time.NewTimer(q.wait)
	defer timeout.Stop()
	var poll <-chan time.Time // nil: never
	if q.poll > 0 {
		t := time.NewTicker(q.poll)
		defer t.Stop()
		poll = t.C
	}
	var have int64
	for {
		changed := q.v.Changed()
		row, err := get(ctx)
		switch {
		case err == nil && version(row) >= minVersion:
			return row, nil
		case err == nil:
			have = version(row)
		case !errors.Is(err, ErrNotFound):
			return zero, fmt.Errorf("readmodel: %s: %w", what, err)
		}
		select {
		case <-changed:
		case <-poll:
		case <-timeout.C:
			return zero, fmt.Errorf("%w: %s is at version %d after %s, want %d", ErrBehind, what, have, q.wait, minVersion)
		case <-ctx.Done():
			return zero, fmt.Errorf("readmodel: %s: waiting for version %d: %w", what, minVersion, ctx.Err())
		}
	}
}
