package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// behindViews is a read side whose order rows stay at version 1, for any
// id, and which has no customer rows. waited records that a read watched a
// row, which only a read that waits does.
type behindViews struct{ waited atomic.Bool }

func (v *behindViews) Order(_ context.Context, id uuid.UUID) (readmodel.Order, error) {
	return readmodel.Order{ID: id, Version: 1}, nil
}

func (v *behindViews) Customer(_ context.Context, id uuid.UUID) (readmodel.Customer, error) {
	return readmodel.Customer{}, fmt.Errorf("%w: customer %s", readmodel.ErrNotFound, id)
}

func (v *behindViews) CustomerOrders(context.Context, uuid.UUID, uuid.UUID, int) ([]readmodel.OrderSummary, error) {
	return nil, nil
}

func (v *behindViews) Watch(uuid.UUID) (<-chan struct{}, func()) {
	v.waited.Store(true)
	return make(chan struct{}), func() {}
}

// probeOnly is an event store that holds three events of one order and
// two of one customer, and answers only Version: a read that loads a
// history fails the test, and is counted.
type probeOnly struct {
	t               *testing.T
	order, customer uuid.UUID
	versions, loads atomic.Int64
}

func (s *probeOnly) Version(_ context.Context, id uuid.UUID) (string, int64, error) {
	s.versions.Add(1)
	switch id {
	case s.order:
		return aggregate.OrderType, 3, nil
	case s.customer:
		return aggregate.CustomerType, 2, nil
	}
	return "", 0, nil
}

func (s *probeOnly) Load(_ context.Context, id uuid.UUID, after int64) ([]store.Event, error) {
	s.loads.Add(1)
	s.t.Errorf("Load(%s, %d): a read loaded the aggregate's history", id, after)
	return nil, nil
}

func (s *probeOnly) LoadPage(_ context.Context, id uuid.UUID, after int64, limit int) ([]store.Event, error) {
	s.loads.Add(1)
	s.t.Errorf("LoadPage(%s, %d, %d): a read loaded the aggregate's history", id, after, limit)
	return nil, nil
}

// TestReadYourWrites: a GET with min_version goes through readmodel.Queries
// alone. Only a projection behind a stored version is waited for (503
// projection_behind); an id with nothing of the type stored is 404 and a
// version beyond the stored one 409 version_not_reached, both at once; and
// no read loads the aggregate's history (the store fails the test on Load
// and counts the cheap Version probes instead).
func TestReadYourWrites(t *testing.T) {
	st := &probeOnly{t: t, order: uuid.Must(uuid.NewV7()), customer: uuid.Must(uuid.NewV7())}
	for _, c := range []struct {
		path   string
		status int
		code   string
		field  string
		detail string
		waited bool
		probed bool
	}{
		{"/v1/orders/" + st.order.String() + "?min_version=1", 200, "", "", "", false, false},
		{"/v1/orders/" + st.order.String() + "?min_version=3", 503, "projection_behind", "", "", true, true},
		{"/v1/orders/" + st.order.String() + "?min_version=4", 409, "version_not_reached", "min_version",
			"order " + st.order.String() + " is at version 3; version 4 does not exist yet", false, true},
		{"/v1/orders/" + st.customer.String() + "?min_version=2", 404, "order_not_found", "", "", false, true}, // a customer is no order
		{"/v1/orders/" + uuid.NewString() + "?min_version=1", 200, "", "", "", false, false},                   // the fake's row exists for any id
		{"/v1/customers/" + st.customer.String() + "?min_version=2", 503, "projection_behind", "", "", true, true},
		{"/v1/customers/" + st.customer.String() + "?min_version=3", 409, "version_not_reached", "min_version",
			"customer " + st.customer.String() + " is at version 2; version 3 does not exist yet", false, true},
		{"/v1/customers/" + st.order.String() + "?min_version=1", 404, "customer_not_found", "", "", false, true},
		{"/v1/customers/" + uuid.NewString() + "?min_version=2", 404, "customer_not_found", "", "", false, true},
		{"/v1/customers/" + uuid.NewString(), 404, "customer_not_found", "", "", false, false},
	} {
		v := &behindViews{}
		q := readmodel.NewQueries(v, st, 20*time.Millisecond, 0)
		h := New(nil, q, st, nil, nil, zap.NewNop()).Handler()
		probes := st.versions.Load()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		var p problemJSON
		if rec.Code != 200 {
			if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
				t.Fatalf("GET %s: %d %s: %v", c.path, rec.Code, rec.Body, err)
			}
		}
		if rec.Code != c.status || p.Code != c.code || v.waited.Load() != c.waited {
			t.Errorf("GET %s: %d %s (waited %v), want %d %s (waited %v)", c.path, rec.Code, p.Code, v.waited.Load(), c.status, c.code, c.waited)
		}
		if c.field != "" && (p.Field != c.field || p.Detail != c.detail) {
			t.Errorf("GET %s: field %q, detail %q; want %q, %q", c.path, p.Field, p.Detail, c.field, c.detail)
		}
		if probed := st.versions.Load() > probes; c.probed && !probed {
			t.Errorf("GET %s did not ask the store's version", c.path)
		}
	}
	if n := st.loads.Load(); n != 0 {
		t.Errorf("reads loaded a history %d times", n)
	}
}
