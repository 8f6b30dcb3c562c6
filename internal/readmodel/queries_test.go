package readmodel_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/sqlite"
	"github.com/orderd/orderd/internal/store"
)

func openViews(t testing.TB, path string) *sqlite.Views {
	t.Helper()
	v, err := sqlite.Open(path, zap.NewNop())
	if err != nil {
		t.Fatalf("open views %s: %v", path, err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

func TestQueriesWaitForVersion(t *testing.T) {
	views := openViews(t, filepath.Join(t.TempDir(), "views.db"))
	ctx := context.Background()
	created := envelope(t, aggregate.OrderType, orderID, 1, aggregate.OrderCreated{CustomerID: custID, CreatedAt: t0})
	confirmed := envelope(t, aggregate.OrderType, orderID, 2, aggregate.OrderConfirmed{ConfirmedAt: t0.Add(time.Minute)})
	if err := views.Apply(ctx, []store.Event{created}, 1); err != nil {
		t.Fatal(err)
	}

	// Version 2 arrives while Order waits for it. The wait is longer than
	// the delay, and the delay longer than a read, so the query really
	// waits on Changed.
	q := readmodel.NewQueries(views, 2*time.Second)
	applied := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		applied <- views.Apply(ctx, []store.Event{confirmed}, 2)
	}()
	o, err := q.Order(ctx, orderID, 2)
	if err != nil {
		t.Fatalf("Order(min 2): %v", err)
	}
	if o.Version != 2 || o.Status != readmodel.StatusConfirmed {
		t.Errorf("Order(min 2) = version %d, %s; want 2, confirmed", o.Version, o.Status)
	}
	if err := <-applied; err != nil {
		t.Fatalf("Apply version 2: %v", err)
	}

	// Version 5 never comes.
	q = readmodel.NewQueries(views, 200*time.Millisecond)
	start := time.Now()
	_, err = q.Order(ctx, orderID, 5)
	if !errors.Is(err, readmodel.ErrBehind) {
		t.Fatalf("Order(min 5) error = %v, want ErrBehind", err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("Order(min 5) gave up after %v, want ≥ 200ms", waited)
	}

	// An order that does not exist yet is waited for too, until ctx ends.
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := readmodel.NewQueries(views, time.Minute).Order(cctx, uuid.Must(uuid.NewV7()), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Order(unknown, min 1) with ending ctx: error %v, want DeadlineExceeded", err)
	}
}

func TestQueriesAnswerAtOnce(t *testing.T) {
	views := openViews(t, filepath.Join(t.TempDir(), "views.db"))
	// An hour's wait: with minVersion 0 nothing may wait at all.
	q := readmodel.NewQueries(views, time.Hour)
	ctx := context.Background()
	events := []store.Event{
		envelope(t, aggregate.CustomerType, custID, 1, aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: t0}),
		envelope(t, aggregate.OrderType, orderID, 1, aggregate.OrderCreated{CustomerID: custID, Items: []aggregate.Item{{ProductID: product1, Quantity: 2}}, CreatedAt: t0}),
	}
	if err := views.Apply(ctx, events, 2); err != nil {
		t.Fatal(err)
	}

	if o, err := q.Order(ctx, orderID, 0); err != nil || o.Version != 1 {
		t.Errorf("Order(min 0) = version %d, %v; want 1", o.Version, err)
	}
	if o, err := q.Order(ctx, orderID, 1); err != nil || o.Version != 1 {
		t.Errorf("Order(min 1) = version %d, %v; want 1", o.Version, err)
	}
	if c, err := q.Customer(ctx, custID, 0); err != nil || c.Email != "ada@example.com" {
		t.Errorf("Customer(min 0) = %+v, %v", c, err)
	}
	list, err := q.CustomerOrders(ctx, custID, uuid.Nil, 10)
	if err != nil || len(list) != 1 || list[0].ID != orderID || list[0].Quantity != 2 {
		t.Errorf("CustomerOrders = %+v, %v; want order %s with 2 units", list, err, orderID)
	}

	unknown := uuid.Must(uuid.NewV7())
	_, err = q.Order(ctx, unknown, 0)
	wantNotFound(t, "Order", err, "order_not_found")
	_, err = q.Customer(ctx, unknown, 0)
	wantNotFound(t, "Customer", err, "customer_not_found")
	_, err = q.CustomerOrders(ctx, unknown, uuid.Nil, 10)
	wantNotFound(t, "CustomerOrders", err, "customer_not_found")
}

func wantNotFound(t *testing.T, what string, err error, code string) {
	t.Helper()
	var de *aggregate.Error
	if !errors.As(err, &de) || !errors.Is(err, aggregate.ErrNotFound) || de.Code != code {
		t.Errorf("%s(unknown) error = %v, want ErrNotFound with code %s", what, err, code)
	}
}
