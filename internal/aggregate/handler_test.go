package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// openStore is the real embedded store on a file of the test's own (see
// export_test.go).
func openStore(t testing.TB) EventStore {
	t.Helper()
	return OpenSQLiteStore(t)
}

func registerCustomer(t testing.TB, h *Handler, id uuid.UUID) {
	t.Helper()
	if _, err := h.Customer(context.Background(), id, Meta{CommandID: uuid.New(), Expected: AnyVersion},
		func(c *Customer, now time.Time) ([]Event, error) {
			return c.Register("ann@example.com", "Ann", "Lee", "", now)
		}); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerNoOp: a decision with no events appends nothing and keeps the
// version.
func TestHandlerNoOp(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	h := newTestHandler(t, st, func() time.Time { return now })
	registerCustomer(t, h, customerID)
	head, _ := st.Head(ctx)

	v, err := h.Customer(ctx, customerID, Meta{Expected: 1}, func(c *Customer, now time.Time) ([]Event, error) {
		return c.ChangeEmail("ann@EXAMPLE.com", now)
	})
	if after, _ := st.Head(ctx); err != nil || v != 1 || after != head {
		t.Fatalf("unchanged email = version %d, %v, head %d → %d; want version 1 and no append", v, err, head, after)
	}
	c, _, err := load[Customer](ctx, st, CustomerType, customerID)
	if err != nil || c.Email != "ann@example.com" || c.Version != 1 || !c.RegisteredAt.Equal(now) {
		t.Errorf("the customer loads as %+v, %v", c, err)
	}
}

// TestHandlerCreate: a second create of one id is ErrExists, an order needs
// a registered customer, and a stale expected version is ErrStale.
func TestHandlerCreate(t *testing.T) {
	ctx := context.Background()
	h := newTestHandler(t, openStore(t), time.Now)
	items := []Item{{ProductID: uuid.New(), Quantity: 1}}
	meta := Meta{CommandID: uuid.New(), Expected: AnyVersion}

	_, err := h.CreateOrder(ctx, orderID, meta, customerID, items)
	var de *Error
	if !errors.As(err, &de) || de.Code != "customer_not_found" || !errors.Is(err, ErrNotFound) {
		t.Fatalf("order for an unregistered customer: %v", err)
	}
	registerCustomer(t, h, customerID)
	if v, err := h.CreateOrder(ctx, orderID, meta, customerID, items); err != nil || v != 1 {
		t.Fatalf("create = %d, %v", v, err)
	}
	if _, err := h.CreateOrder(ctx, orderID, meta, customerID, items); !errors.Is(err, ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
	stale := Meta{CommandID: uuid.New(), Expected: 3}
	_, err = h.Order(ctx, orderID, stale, func(o *Order, now time.Time) ([]Event, error) { return o.Confirm(now) })
	if !errors.As(err, &de) || de.Code != "version_mismatch" || !errors.Is(err, ErrStale) {
		t.Fatalf("stale If-Match = %v, want version_mismatch", err)
	}
}

// TestHandlerRetriesAcrossProcesses: two handlers on one store stand for two
// processes, whose commands only the store's expected-version check orders.
// Without If-Match every command still succeeds, each at its own version.
func TestHandlerRetriesAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	a, b := newTestHandler(t, st, time.Now), newTestHandler(t, st, time.Now)
	registerCustomer(t, a, customerID)
	if _, err := a.CreateOrder(ctx, orderID, Meta{CommandID: uuid.New(), Expected: AnyVersion}, customerID,
		[]Item{{ProductID: uuid.New(), Quantity: 1}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var versions []int64
	var wg sync.WaitGroup
	for i := range 16 {
		for _, h := range []*Handler{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, err := h.Order(ctx, orderID, Meta{CommandID: uuid.New(), Expected: AnyVersion}, func(o *Order, now time.Time) ([]Event, error) {
					return o.UpdateItems([]Item{{ProductID: uuid.New(), Quantity: i + 1}}, now)
				})
				if err != nil {
					t.Errorf("update: %v", err)
					return
				}
				mu.Lock()
				versions = append(versions, v)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("versions %v, want 2..33 each once", versions)
		}
	}
}

// TestHandlerUpcastsOnLoad: an order whose OrderCreated was stored in the
// seed's v1 shape loads with its creation time taken from the envelope.
func TestHandlerUpcastsOnLoad(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	at := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	data, _ := json.Marshal(map[string]any{"customer_id": customerID, "items": []Item{{ProductID: uuid.New(), Quantity: 2}}})
	err := st.Append(ctx, orderID, 0, []store.Event{{
		ID: uuid.Must(uuid.NewV7()), AggregateID: orderID, AggregateType: OrderType, Sequence: 1,
		Type: "OrderCreated", SchemaVersion: 1, Data: data, CausationID: uuid.New(), CorrelationID: uuid.New(), Timestamp: at,
	}})
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := load[Order](ctx, st, OrderType, orderID)
	if err != nil || o.Status != Created || !o.CreatedAt.Equal(at) || o.CustomerID != customerID || len(o.Items) != 1 {
		t.Fatalf("v1 order loads as %+v, %v", o, err)
	}
}

// TestHandlerAppended: WithAppended hears of every append that succeeded,
// and of nothing else (a registration's e-mail claim is a row, not an
// append).
func TestHandlerAppended(t *testing.T) {
	ctx := context.Background()
	counts := map[string]int{}
	h := newTestHandler(t, openStore(t), time.Now, WithAppended(func(aggregateType string, events int) {
		counts[aggregateType] += events
	}))
	if _, err := h.RegisterCustomer(ctx, customerID, Meta{CommandID: uuid.New(), Expected: AnyVersion},
		"ann@example.com", "Ann", "Lee", ""); err != nil {
		t.Fatal(err)
	}
	items := []Item{{ProductID: uuid.New(), Quantity: 1}}
	if _, err := h.CreateOrder(ctx, orderID, Meta{CommandID: uuid.New(), Expected: AnyVersion}, customerID, items); err != nil {
		t.Fatal(err)
	}
	// A refused create appends nothing.
	if _, err := h.CreateOrder(ctx, orderID, Meta{CommandID: uuid.New(), Expected: AnyVersion}, customerID, items); !errors.Is(err, ErrExists) {
		t.Fatalf("second create = %v, want ErrExists", err)
	}
	want := map[string]int{CustomerType: 1, OrderType: 1}
	if !maps.Equal(counts, want) {
		t.Fatalf("appended = %v, want %v", counts, want)
	}
}
