package readmodel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
)

// ErrNotFound is returned, wrapped, when a view has no row for the id: the
// read side says only that it has nothing, and the API decides what that
// means to a client.
var ErrNotFound = errors.New("readmodel: not found")

// ErrNotCurrent is returned by Catalog.Promote when the generation it was
// to replace is not the current one any more.
var ErrNotCurrent = errors.New("readmodel: the generation to replace is not current")

// ErrBehind is returned, wrapped, when a view has not reached the version a
// client asked for within the wait. The API answers 503 with Retry-After
// rather than serve a row older than the client's own write.
var ErrBehind = errors.New("readmodel: projection is behind the requested version")

// ErrNotReached is returned, wrapped in a *NotReachedError, when a read
// asks for a version above the one the event store holds: waiting cannot
// help, so it is answered at once.
var ErrNotReached = errors.New("readmodel: version not stored")

// NotReachedError is the error of a read for a version the event store
// does not hold yet. It wraps ErrNotReached.
type NotReachedError struct {
	What   string // "order <id>" or "customer <id>"
	Stored int64  // the version the event store holds
	Want   int64  // the version asked for
}

func (e *NotReachedError) Error() string {
	return fmt.Sprintf("%s is at version %d; version %d does not exist yet", e.What, e.Stored, e.Want)
}

// Unwrap makes errors.Is(err, ErrNotReached) work.
func (e *NotReachedError) Unwrap() error { return ErrNotReached }

// ErrTooManyWaiters is returned, wrapped, when a read would have to wait
// for its version while the most reads a Queries lets wait at once are
// waiting already. The API answers 503 with Retry-After at once.
var ErrTooManyWaiters = errors.New("readmodel: too many reads waiting for a version")

// DefaultMaxWaiters is how many reads a Queries lets wait for a version at
// once unless WithMaxWaiters says otherwise.
const DefaultMaxWaiters = 1024

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

	// Watch returns a channel that is closed when this Views' next Apply
	// that held an event of aggregate id returns, whether the event changed
	// the row or had been applied before (by this process or another), and
	// stop, which the caller calls once it no longer waits. A write by
	// another process's Views does not close it. Changes implements it.
	Watch(id uuid.UUID) (changed <-chan struct{}, stop func())
}

// Versions is the part of the event store that queries ask when a row is
// missing or older than asked: the type and version of one aggregate, read
// without its history (store.Store's Version).
type Versions interface {
	Version(ctx context.Context, aggregateID uuid.UUID) (aggregateType string, version int64, err error)
}

// Queries serves the views with read-your-writes: a client that has just
// written version n can ask for at least n and wait briefly for the
// projector to get there. It is the one read-your-writes path: what
// waiting cannot help (an unknown id, a version not stored) it answers at
// once, from the event store's Versions.
type Queries struct {
	v       Views
	stored  Versions
	wait    time.Duration
	poll    time.Duration
	waiters chan struct{}  // a slot per read waiting for a version
	keys    aggregate.Keys // decrypt the rows' personal fields; nil: none
}

// NewQueries returns queries over v that wait at most wait for a requested
// version (about 2 s in production: long enough for the projector's usual
// lag, short enough to answer 503 before a client times out). stored
// tells, when a row is missing or behind, whether the event store holds
// the version asked for.
//
// A waiting query wakes when v's Watch says this process projected an
// event of its row, and only then. Where the projector may run in another process (several
// instances on one CQL keyspace, one of them the active projector), whose
// commits close no channel here, poll > 0 makes a waiting query also read
// its row again every poll; 0 relies on Changed alone.
//
// At most DefaultMaxWaiters reads wait at once; see WithMaxWaiters.
func NewQueries(v Views, stored Versions, wait, poll time.Duration) *Queries {
	return &Queries{v: v, stored: stored, wait: wait, poll: poll, waiters: make(chan struct{}, DefaultMaxWaiters)}
}

// WithMaxWaiters lets at most n reads (n ≥ 1) wait for a version at once;
// a read that would have to wait beyond them fails at once with an error
// wrapping ErrTooManyWaiters. Call it before serving.
func (q *Queries) WithMaxWaiters(n int) *Queries {
	q.waiters = make(chan struct{}, max(n, 1))
	return q
}

// WithKeys has the queries decrypt the personal fields of the rows they
// return with keys (the rows keep the ciphertext; see Customer.Open).
// Call it before serving.
func (q *Queries) WithKeys(keys aggregate.Keys) *Queries {
	q.keys = keys
	return q
}

// Waiting returns how many reads wait for a version now.
func (q *Queries) Waiting() int { return len(q.waiters) }

// Order returns the order with at least version minVersion. A missing
// order is an error wrapping ErrNotFound, at once, when minVersion is 0 or
// the event store holds no order id (ids are shared by all aggregate
// types: the events of a customer are no order); a minVersion above the
// stored version is a *NotReachedError, at once. Otherwise the projection
// is behind the store and is waited for: the read ends in an error
// wrapping ErrBehind, or ctx's error if ctx ends first.
func (q *Queries) Order(ctx context.Context, id uuid.UUID, minVersion int64) (Order, error) {
	return atLeast(ctx, q, aggregate.OrderType, id, minVersion,
		func(ctx context.Context) (Order, error) { return q.v.Order(ctx, id) },
		func(o Order) int64 { return o.Version },
		"order "+id.String())
}

// Customer returns the customer with at least version minVersion, with the
// same waiting and errors as Order.
func (q *Queries) Customer(ctx context.Context, id uuid.UUID, minVersion int64) (Customer, error) {
	c, err := atLeast(ctx, q, aggregate.CustomerType, id, minVersion,
		func(ctx context.Context) (Customer, error) { return q.v.Customer(ctx, id) },
		func(c Customer) int64 { return c.Version },
		"customer "+id.String())
	if err != nil {
		return c, err
	}
	return c.Open(ctx, q.keys)
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

// atLeast reads the row of id with get until its version reaches
// minVersion. A row that is there already costs one read and no wait
// slot. Otherwise it asks the event store for the version of id (one row,
// not the history), answers what waiting cannot help at once, and waits:
// it takes a slot (or fails with ErrTooManyWaiters) and watches id before
// each read, so that a commit that lands between the read and the wait
// still wakes it; it polls only when q.poll says the projector may be
// elsewhere.
func atLeast[T any](ctx context.Context, q *Queries, aggType string, id uuid.UUID, minVersion int64,
	get func(context.Context) (T, error), version func(T) int64, what string,
) (T, error) {
	var zero T
	row, err := get(ctx)
	switch {
	case err == nil && version(row) >= minVersion:
		return row, nil
	case errors.Is(err, ErrNotFound) && minVersion <= 0:
		return zero, fmt.Errorf("%w: %s", ErrNotFound, what)
	case err != nil && !errors.Is(err, ErrNotFound):
		return zero, fmt.Errorf("readmodel: %s: %w", what, err)
	}

	typ, stored, err := q.stored.Version(ctx, id)
	switch {
	case err != nil:
		return zero, fmt.Errorf("readmodel: %s: stored version: %w", what, err)
	case stored == 0 || typ != aggType:
		return zero, fmt.Errorf("%w: %s", ErrNotFound, what)
	case stored < minVersion:
		return zero, &NotReachedError{What: what, Stored: stored, Want: minVersion}
	}

	select {
	case q.waiters <- struct{}{}:
		defer func() { <-q.waiters }()
	default:
		return zero, fmt.Errorf("%w: %d are waiting; %s", ErrTooManyWaiters, cap(q.waiters), what)
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
		changed, stop := q.v.Watch(id)
		row, err := get(ctx)
		switch {
		case err == nil && version(row) >= minVersion:
			stop()
			return row, nil
		case err == nil:
			have = version(row)
		case !errors.Is(err, ErrNotFound):
			stop()
			return zero, fmt.Errorf("readmodel: %s: %w", what, err)
		}
		select {
		case <-changed:
		case <-poll:
		case <-timeout.C:
			stop()
			return zero, fmt.Errorf("%w: %s is at version %d after %s, want %d", ErrBehind, what, have, q.wait, minVersion)
		case <-ctx.Done():
			stop()
			return zero, fmt.Errorf("readmodel: %s: waiting for version %d: %w", what, minVersion, ctx.Err())
		}
		stop()
	}
}
