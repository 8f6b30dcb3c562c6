package cql

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// table is how Apply reads, projects and writes the rows of one
// aggregate type, so that one generic loop (project) serves orders and
// customers alike.
type table[R any] interface {
	// read returns the aggregate's row, the zero R when it has none.
	read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (R, error)
	// apply projects e onto r with readmodel's pure function.
	apply(r *R, e store.Event) (bool, error)
	version(r R) int64
	// write stores r if the row is still at version base (absent for 0),
	// reporting whether it was.
	write(ctx context.Context, r R, base int64) (bool, error)
	// written writes what derives from r once r is stored.
	written(ctx context.Context, r R) error
}

// orderTable is order_read_model (of the Views' generation), with
// orders_by_customer beside it.
type orderTable struct{ v *Views }

func (t orderTable) read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Order, error) {
	o, err := t.v.order(ctx, id, c)
	if errors.Is(err, readmodel.ErrNotFound) {
		return readmodel.Order{}, nil
	}
	return o, err
}

func (orderTable) apply(o *readmodel.Order, e store.Event) (bool, error) { return o.Apply(e) }
func (orderTable) version(o readmodel.Order) int64                       { return o.Version }

func (t orderTable) write(ctx context.Context, o readmodel.Order, base int64) (bool, error) {
	items, err := json.Marshal(o.Items)
	if err != nil {
		return false, fmt.Errorf("encode items of order %s: %w", o.ID, err)
	}
	if base == 0 {
		return t.v.cas(ctx, t.v.q.insertOrder, o.ID, o.CustomerID, o.Status, string(items), o.TrackingNumber,
			o.Carrier, o.CancelledReason, o.Version, o.CreatedAt, o.UpdatedAt)
	}
	return t.v.cas(ctx, t.v.q.updateOrder, o.CustomerID, o.Status, string(items), o.TrackingNumber,
		o.Carrier, o.CancelledReason, o.Version, o.CreatedAt, o.UpdatedAt, o.ID, base)
}

// written upserts the order's row in its customer's list without a
// condition, which is safe because the write timestamp is the version:
// Cassandra keeps, cell by cell, the write with the highest timestamp,
// whatever order writes arrive in. So a projector that stalls between its
// conditional write of version n and this one cannot, when it wakes, undo
// the row of version n+1 that another projector wrote meanwhile; and two
// writes of one version carry the same values, as both are projected from
// the same events. A crash between the two writes leaves the list behind
// only until the feed delivers the batch again, as it does with every batch
// Apply did not return nil for (Apply rewrites the list when the last event
// it is given is the row's version).
// The customer of an order never changes, so its list row never moves
// partition. Conditioning this write as well would cost a second Paxos
// round per event for nothing.
func (t orderTable) written(ctx context.Context, o readmodel.Order) error {
	s := o.Summary()
	err := t.v.session.Session.Query(t.v.q.writeSummary, o.CustomerID, s.ID, s.Status, s.ItemCount, s.Quantity,
		s.Version, s.CreatedAt, s.UpdatedAt, s.Version).WithContext(ctx).Consistency(t.v.consistency).
		Idempotent(true).Exec() // the timestamp makes a repeat harmless, so the driver may retry it
	if err != nil {
		return fmt.Errorf("write order %s of customer %s: %w", o.ID, o.CustomerID, err)
	}
	return nil
}

// customerTable is customers.
type customerTable struct{ v *Views }

func (t customerTable) read(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Customer, error) {
	cu, err := t.v.customer(ctx, id, c)
	if errors.Is(err, readmodel.ErrNotFound) {
		return readmodel.Customer{}, nil
	}
	return cu, err
}

func (customerTable) apply(c *readmodel.Customer, e store.Event) (bool, error) { return c.Apply(e) }
func (customerTable) version(c readmodel.Customer) int64                       { return c.Version }

func (t customerTable) write(ctx context.Context, c readmodel.Customer, base int64) (bool, error) {
	if base == 0 {
		return t.v.cas(ctx, t.v.q.insertCustomer, c.ID, c.Email, c.FirstName, c.LastName, c.Phone,
			c.Version, c.RegisteredAt, c.UpdatedAt)
	}
	return t.v.cas(ctx, t.v.q.updateCustomer, c.Email, c.FirstName, c.LastName, c.Phone,
		c.Version, c.RegisteredAt, c.UpdatedAt, c.ID, base)
}

func (customerTable) written(context.Context, readmodel.Customer) error { return nil }

// cas runs a conditional write and reports whether it was applied. A
// refused condition returns the row's current values; Apply re-reads
// instead, so gocqlx's ExecCAS, which scans and drops them, suits.
func (v *Views) cas(ctx context.Context, stmt string, args ...any) (bool, error) {
	q := v.session.ContextQuery(ctx, stmt, nil).Bind(args...)
	q.Consistency(v.consistency)
	q.SerialConsistency(v.serial)
	applied, err := q.ExecCASRelease()
	if err != nil {
		return false, fmt.Errorf("conditional write: %w", err)
	}
	return applied, nil
}

// order reads one order row at consistency c. A missing row is an error
// wrapping readmodel.ErrNotFound.
func (v *Views) order(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Order, error) {
	var o readmodel.Order
	var items string
	err := v.session.Session.Query(v.q.selectOrder, id).WithContext(ctx).Consistency(c).Idempotent(true).Scan(&o.ID, &o.CustomerID,
		&o.Status, &items, &o.TrackingNumber, &o.Carrier, &o.CancelledReason, &o.Version, &o.CreatedAt, &o.UpdatedAt)
	if errors.Is(err, gocql.ErrNotFound) {
		return readmodel.Order{}, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Order{}, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return readmodel.Order{}, fmt.Errorf("order %s: items: %w", id, err)
	}
	o.CreatedAt, o.UpdatedAt = utc(o.CreatedAt), utc(o.UpdatedAt)
	return o, nil
}

// customer reads one customer row at consistency c, with the same
// not-found convention as order.
func (v *Views) customer(ctx context.Context, id uuid.UUID, c gocql.Consistency) (readmodel.Customer, error) {
	var cu readmodel.Customer
	err := v.session.Session.Query(v.q.selectCustomer, id).WithContext(ctx).Consistency(c).Idempotent(true).Scan(&cu.ID, &cu.Email,
		&cu.FirstName, &cu.LastName, &cu.Phone, &cu.Version, &cu.RegisteredAt, &cu.UpdatedAt)
	if errors.Is(err, gocql.ErrNotFound) {
		return readmodel.Customer{}, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Customer{}, err
	}
	cu.RegisteredAt, cu.UpdatedAt = utc(cu.RegisteredAt), utc(cu.UpdatedAt)
	return cu, nil
}
