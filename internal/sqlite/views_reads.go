package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
)

// Order returns the order's row, or an error wrapping readmodel.ErrNotFound
// when it has none.
func (v *Views) Order(ctx context.Context, id uuid.UUID) (readmodel.Order, error) {
	o, err := v.orders.read(id, func() (readmodel.Order, error) {
		return scanOrder(v.reads.order.QueryRowContext(pointRead(ctx), id))
	})
	if err != nil {
		return readmodel.Order{}, fmt.Errorf("sqlite: views: order %s: %w", id, err)
	}
	o.Items = slices.Clone(o.Items) // a cached row's are not the caller's
	return o, nil
}

// Customer returns the customer's row, or an error wrapping
// readmodel.ErrNotFound when it has none.
func (v *Views) Customer(ctx context.Context, id uuid.UUID) (readmodel.Customer, error) {
	c, err := v.customers.read(id, func() (readmodel.Customer, error) {
		return scanCustomer(v.reads.customer.QueryRowContext(pointRead(ctx), id))
	})
	if err != nil {
		return readmodel.Customer{}, fmt.Errorf("sqlite: views: customer %s: %w", id, err)
	}
	return c, nil
}

// pointRead is the context of a read of one row by its key: it cannot end,
// since such a read takes microseconds and a context that can end costs
// database/sql and the driver a goroutine each to watch it (wrk's GET of
// an order: 51–54 µs of CPU against 56–62, three rounds side by side). The
// read pool's reads are all this short, so a wait for one of its
// connections is short too.
func pointRead(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// CustomerOrders returns up to limit of the customer's orders with an id
// greater than after, in id order: keyset paging, so a page costs the same
// however deep it is. It returns an error when limit is not positive. A
// customer without orders, known or not, has an empty list.
func (v *Views) CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]readmodel.OrderSummary, error) {
	if limit < 1 {
		return nil, fmt.Errorf("sqlite: views: orders of customer %s: limit %d is not positive", customerID, limit)
	}
	rows, err := v.reads.summaries.QueryContext(ctx, customerID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: views: orders of customer %s: %w", customerID, err)
	}
	defer rows.Close()
	out := []readmodel.OrderSummary{}
	for rows.Next() {
		var s readmodel.OrderSummary
		var created, updated string
		if err := rows.Scan(&s.ID, &s.Status, &s.ItemCount, &s.Quantity, &s.Version, &created, &updated); err != nil {
			return nil, fmt.Errorf("sqlite: views: orders of customer %s: %w", customerID, err)
		}
		if s.CreatedAt, err = parseTime(created); err != nil {
			return nil, fmt.Errorf("sqlite: views: order %s of customer %s: created_at: %w", s.ID, customerID, err)
		}
		if s.UpdatedAt, err = parseTime(updated); err != nil {
			return nil, fmt.Errorf("sqlite: views: order %s of customer %s: updated_at: %w", s.ID, customerID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: views: orders of customer %s: %w", customerID, err)
	}
	return out, nil
}

// scanOrder reads one order_read_model row selected with orderColumns. A
// missing row is an error wrapping readmodel.ErrNotFound, which Apply takes
// for an order that starts in this batch.
func scanOrder(row *sql.Row) (readmodel.Order, error) {
	var o readmodel.Order
	var items, created, updated string
	err := row.Scan(&o.ID, &o.CustomerID, &o.Status, &items, &o.TrackingNumber, &o.Carrier,
		&o.CancelledReason, &o.Version, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return readmodel.Order{}, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Order{}, err
	}
	if err := json.Unmarshal([]byte(items), &o.Items); err != nil {
		return readmodel.Order{}, fmt.Errorf("order %s: items: %w", o.ID, err)
	}
	if o.CreatedAt, err = parseTime(created); err != nil {
		return readmodel.Order{}, fmt.Errorf("order %s: created_at: %w", o.ID, err)
	}
	if o.UpdatedAt, err = parseTime(updated); err != nil {
		return readmodel.Order{}, fmt.Errorf("order %s: updated_at: %w", o.ID, err)
	}
	return o, nil
}

// scanCustomer reads one customers row selected with customerColumns, with
// the same not-found convention as scanOrder.
func scanCustomer(row *sql.Row) (readmodel.Customer, error) {
	var c readmodel.Customer
	var registered, updated string
	err := row.Scan(&c.ID, &c.Email, &c.FirstName, &c.LastName, &c.Phone, &c.Version, &registered, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return readmodel.Customer{}, readmodel.ErrNotFound
	}
	if err != nil {
		return readmodel.Customer{}, err
	}
	if c.RegisteredAt, err = parseTime(registered); err != nil {
		return readmodel.Customer{}, fmt.Errorf("customer %s: registered_at: %w", c.ID, err)
	}
	if c.UpdatedAt, err = parseTime(updated); err != nil {
		return readmodel.Customer{}, fmt.Errorf("customer %s: updated_at: %w", c.ID, err)
	}
	return c, nil
}
