package scylla_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
)

// TestQueriesWaitForVersion runs readmodel.Queries, unchanged, on these
// views: a read for a version not projected yet waits for Project.
func TestQueriesWaitForVersion(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	q := readmodel.NewQueries(v, 10*time.Second)
	ctx := context.Background()
	events := lifecycle(t)

	type result struct {
		o   readmodel.Order
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := q.Order(ctx, orderA, 3)
		done <- result{o, err}
	}()
	if err := v.Project(ctx, events[:4]); err != nil { // order A only at version 2
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("Order(A, min 3) returned before version 3: %+v, %v", r.o, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := v.Project(ctx, events[4:]); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || !reflect.DeepEqual(r.o, wantA) {
			t.Errorf("Order(A, min 3) = %+v, %v; want %+v", r.o, r.err, wantA)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Order(A, min 3) still waiting after Project")
	}

	list, err := q.CustomerOrders(ctx, customer, uuid.Nil, 10)
	if want := []readmodel.OrderSummary{wantA.Summary(), wantB.Summary()}; err != nil || !reflect.DeepEqual(list, want) {
		t.Errorf("CustomerOrders = %+v, %v; want %+v", list, err, want)
	}

	short := readmodel.NewQueries(v, 100*time.Millisecond)
	if _, err := short.Order(ctx, orderA, 9); !errors.Is(err, readmodel.ErrBehind) {
		t.Errorf("Order(A, min 9) error = %v, want ErrBehind", err)
	}
	for name, err := range map[string]error{
		"order_not_found":    second(q.Order(ctx, uuid.Must(uuid.NewV7()), 0)),
		"customer_not_found": second(q.CustomerOrders(ctx, uuid.Must(uuid.NewV7()), uuid.Nil, 10)),
	} {
		var ae *aggregate.Error
		if !errors.As(err, &ae) || ae.Code != name || !errors.Is(err, aggregate.ErrNotFound) {
			t.Errorf("error = %v, want %s wrapping ErrNotFound", err, name)
		}
	}
}

// TestQueriesWokenByRepeat has another orderd process project an event
// first: this one's Project then finds it applied, and must still wake
// the reads waiting here for it.
func TestQueriesWokenByRepeat(t *testing.T) {
	e := newEnv(t)
	here, there := e.views(nil), e.views(nil)
	q := readmodel.NewQueries(here, 10*time.Second)
	ctx := context.Background()
	events := lifecycle(t)

	if err := here.Project(ctx, events[:1]); err != nil { // the customer at version 1
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := q.Customer(ctx, customer, 2)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // for the wait to read version 1 and block
	if err := there.Project(ctx, events[7:]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		// Only when the wait's first read came after there's write.
		t.Logf("Customer(min 2) returned before this process projected: %v", err)
		return
	case <-time.After(200 * time.Millisecond):
	}
	if err := here.Project(ctx, events[7:]); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Customer(min 2): %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Project that found its event applied did not wake the wait")
	}
}

func second[T any](_ T, err error) error { return err }
