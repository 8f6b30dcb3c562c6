package api

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// behindViews is a read side whose order row stays at version 1.
type behindViews struct{ waited bool }

func (v *behindViews) Order(_ context.Context, id uuid.UUID, min int64) (readmodel.Order, error) {
	if min > 1 {
		v.waited = true
		return readmodel.Order{}, fmt.Errorf("%w: order %s", readmodel.ErrBehind, id)
	}
	return readmodel.Order{ID: id, Version: 1}, nil
}

func (v *behindViews) Customer(context.Context, uuid.UUID, int64) (readmodel.Customer, error) {
	return readmodel.Customer{}, readmodel.ErrNotFound
}

func (v *behindViews) CustomerOrders(context.Context, uuid.UUID, uuid.UUID, int) ([]readmodel.OrderSummary, error) {
	return nil, nil
}

// history holds three events of one order.
type history struct{ id uuid.UUID }

func (h history) Load(_ context.Context, id uuid.UUID, _ int64) ([]store.Event, error) {
	if id != h.id {
		return nil, nil
	}
	return []store.Event{{AggregateType: aggregate.OrderType, Sequence: 1}, {Sequence: 2}, {Sequence: 3}}, nil
}

// TestAtLeast: only a projection behind a stored version is waited for.
func TestAtLeast(t *testing.T) {
	id := uuid.Must(uuid.NewV7())
	for _, c := range []struct {
		id     uuid.UUID
		min    int64
		status int
		code   string
		waited bool
	}{
		{id, 1, 200, "", false},
		{id, 3, 503, "projection_behind", true},
		{id, 4, 409, "version_not_reached", false},
		{uuid.Must(uuid.NewV7()), 1, 200, "", false}, // the fake's row exists for any id
	} {
		v := &behindViews{}
		s := New(nil, v, history{id}, nil, nil, zap.NewNop())
		_, err := atLeast(context.Background(), s, aggregate.OrderType, c.id, c.min, v.Order, func(o readmodel.Order) int64 { return o.Version })
		status := 200
		var code string
		if err != nil {
			var p problemJSON
			status, p, _ = describe(err)
			code = p.Code
		}
		if status != c.status || code != c.code || v.waited != c.waited {
			t.Errorf("min %d: %d %s (waited %v), want %d %s (waited %v)", c.min, status, code, v.waited, c.status, c.code, c.waited)
		}
	}
	s := New(nil, &behindViews{}, history{id}, nil, nil, zap.NewNop())
	_, err := atLeast(context.Background(), s, aggregate.CustomerType, uuid.Must(uuid.NewV7()), 2, s.queries.Customer, func(c readmodel.Customer) int64 { return c.Version })
	if status, p, _ := describe(err); status != 404 || p.Code != "customer_not_found" {
		t.Errorf("unknown customer at min 2: %d %s", status, p.Code)
	}
}
