package cql

import (
	"context"
	"fmt"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/readmodel"
)

// Order returns the order's row, or an error wrapping readmodel.ErrNotFound
// when it has none. It reads at the configured consistency. The cluster's
// failures wrap store.ErrUnavailable, in every read of this file.
func (v *Views) Order(ctx context.Context, id uuid.UUID) (readmodel.Order, error) {
	o, _, err := v.order(ctx, id, v.consistency)
	if err != nil {
		return readmodel.Order{}, fmt.Errorf("scylla: views: order %s: %w", id, asUnavailable(ctx, err))
	}
	return o, nil
}

// Customer returns the customer's row, or an error wrapping
// readmodel.ErrNotFound when it has none. It reads at the configured
// consistency.
func (v *Views) Customer(ctx context.Context, id uuid.UUID) (readmodel.Customer, error) {
	c, _, err := v.customer(ctx, id, v.consistency)
	if err != nil {
		return readmodel.Customer{}, fmt.Errorf("scylla: views: customer %s: %w", id, asUnavailable(ctx, err))
	}
	return c, nil
}

// CustomerOrders returns up to limit of the customer's orders with an id
// greater than after, in the order of the uuid type: a slice of the
// customer's partition, so a page costs the same however deep it is. CQL's
// uuid order compares the version nibble first and then the bytes, which
// for orderd's ids, all UUIDv7, is the byte order SQLite pages in. It
// returns an error when limit is not positive. As in SQLite, a customer
// without orders, known or not, has an empty list: readmodel.Queries is
// what tells an unknown customer (customer_not_found) from one without
// orders, for every backend.
func (v *Views) CustomerOrders(ctx context.Context, customerID, after uuid.UUID, limit int) ([]readmodel.OrderSummary, error) {
	if limit < 1 {
		return nil, fmt.Errorf("scylla: views: orders of customer %s: limit %d is not positive", customerID, limit)
	}
	iter := v.session.Session.Query(v.q.selectSummaries, customerID, after, limit).
		WithContext(ctx).Consistency(v.consistency).Idempotent(true).PageSize(limit).Iter()
	out := []readmodel.OrderSummary{}
	var s readmodel.OrderSummary
	for iter.Scan(&s.ID, &s.Status, &s.ItemCount, &s.Quantity, &s.Version, &s.CreatedAt, &s.UpdatedAt) {
		s.CreatedAt, s.UpdatedAt = utc(s.CreatedAt), utc(s.UpdatedAt)
		out = append(out, s)
		s = readmodel.OrderSummary{}
	}
	if err := iter.Close(); err != nil {
		return nil, fmt.Errorf("scylla: views: orders of customer %s: %w", customerID, asUnavailable(ctx, err))
	}
	return out, nil
}
