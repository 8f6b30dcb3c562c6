package readmodeltest

import (
	"context"
	"errors"
	"math"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

// testCustomerOrdersPages pages a customer's orders by id, beside another
// customer's.
func testCustomerOrdersPages(t *testing.T, b Backend) {
	ctx := context.Background()
	h := newHistory(t)
	customer, other := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
	h.register(at(0), customer, "ada@example.com", "Ada", "Lovelace", "")
	h.register(at(0), other, "bob@example.com", "Bob", "Babbage", "")
	var ids []uuid.UUID
	for i := range 5 {
		id := uuid.Must(uuid.NewV7())
		ids = append(ids, id)
		h.create(at(i), id, customer, []aggregate.Item{{ProductID: uuid.Must(uuid.NewV7()), Quantity: i + 1}})
		h.create(at(i), uuid.Must(uuid.NewV7()), other, []aggregate.Item{{ProductID: uuid.Must(uuid.NewV7()), Quantity: 1}})
	}
	apply(t, b.Views, h.events())

	orders, _ := fold(t, h.events())
	var got []readmodel.OrderSummary
	after := uuid.Nil
	for page := 0; ; page++ {
		list, err := b.Views.CustomerOrders(ctx, customer, after, 2)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if len(list) > 2 {
			t.Fatalf("page %d has %d rows, limit 2", page, len(list))
		}
		if len(list) == 0 {
			break
		}
		got = append(got, list...)
		after = list[len(list)-1].ID
	}
	var want []readmodel.OrderSummary
	for _, id := range ids { // UUIDv7 ids made in a row sort in creation order
		want = append(want, b.order(orders[id]).Summary())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paged orders =\n%+v\nwant\n%+v", got, want)
	}
	if list, err := b.Views.CustomerOrders(ctx, customer, ids[2], 10); err != nil || !reflect.DeepEqual(list, want[3:]) {
		t.Errorf("CustomerOrders(after the third) = %+v, %v; want %+v", list, err, want[3:])
	}
	if list, err := b.Views.CustomerOrders(ctx, uuid.Must(uuid.NewV7()), uuid.Nil, 10); err != nil || list == nil || len(list) != 0 {
		t.Errorf("CustomerOrders(unknown) = %#v, %v; want an empty, non-nil list", list, err)
	}
	if _, err := b.Views.CustomerOrders(ctx, customer, uuid.Nil, 0); err == nil {
		t.Error("CustomerOrders with limit 0 succeeded")
	}
}

// storedVersions is the event store as Queries ask it (readmodel.Versions):
// the type and last sequence of each aggregate of some events, each ahead
// of them by ahead (events the views are never given), so that a test
// decides whether a row is behind the store or beyond it.
type storedVersions struct {
	mu       sync.Mutex
	types    map[uuid.UUID]string
	versions map[uuid.UUID]int64
}

func storedOf(events []store.Event, ahead int64) *storedVersions {
	s := &storedVersions{types: map[uuid.UUID]string{}, versions: map[uuid.UUID]int64{}}
	for _, e := range events {
		s.set(e.AggregateID, e.AggregateType, e.Sequence+ahead)
	}
	return s
}

func (s *storedVersions) set(id uuid.UUID, aggType string, v int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.types[id], s.versions[id] = aggType, v
}

func (s *storedVersions) Version(_ context.Context, id uuid.UUID) (string, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.types[id], s.versions[id], nil
}

// readSpy reports the version of each order row it reads, so that a test
// knows when a query waiting for a newer version has read an older one and
// is about to wait on the Changed channel it took before that read.
type readSpy struct {
	readmodel.Views
	versions chan int64
}

func (s readSpy) Order(ctx context.Context, id uuid.UUID) (readmodel.Order, error) {
	o, err := s.Views.Order(ctx, id)
	select {
	case s.versions <- o.Version:
	default:
	}
	return o, err
}

// testQueriesWaitForVersion asks for a version the row has not reached:
// the read waits, and ends as soon as Apply brings the row there.
func testQueriesWaitForVersion(t *testing.T, b Backend) {
	ctx := context.Background()
	l := newLifecycle(t)
	events := l.events()
	apply(t, b.Views, events[:4]) // order A at version 2

	spy := readSpy{Views: b.Views, versions: make(chan int64, 1)}
	q := readmodel.NewQueries(spy, storedOf(events, 0), guard, 0)
	type result struct {
		o   readmodel.Order
		err error
	}
	done := make(chan result, 1)
	go func() {
		o, err := q.Order(ctx, l.orderA, 5)
		done <- result{o, err}
	}()
	select {
	case v := <-spy.versions:
		if v != 2 {
			t.Fatalf("the query read order A at version %d, want 2", v)
		}
	case <-time.After(guard):
		t.Fatal("the query did not read order A")
	}
	apply(t, b.Views, events[4:])
	select {
	case r := <-done:
		want, _, _ := l.want(b)
		if r.err != nil || !reflect.DeepEqual(r.o, want) {
			t.Errorf("Order(A, min 5) = %+v, %v; want %+v", r.o, r.err, want)
		}
	case <-time.After(guard):
		t.Fatal("Order(A, min 5) still waiting after Apply brought order A to version 5")
	}
}

// testQueriesBehind asks for a version that never comes: ErrBehind once
// the wait is over.
func testQueriesBehind(t *testing.T, b Backend) {
	ctx := context.Background()
	l := newLifecycle(t)
	apply(t, b.Views, l.events())
	const wait = 100 * time.Millisecond
	q := readmodel.NewQueries(b.Views, storedOf(l.events(), 10), wait, 0) // the store is ahead
	start := time.Now()
	if _, err := q.Order(ctx, l.orderA, 6); !errors.Is(err, readmodel.ErrBehind) {
		t.Errorf("Order(A, min 6) error = %v, want ErrBehind", err)
	}
	if waited := time.Since(start); waited < wait {
		t.Errorf("Order(A, min 6) gave up after %v, before the wait of %v", waited, wait)
	}
	if _, err := q.Customer(ctx, l.custID, 4); !errors.Is(err, readmodel.ErrBehind) {
		t.Errorf("Customer(min 4) error = %v, want ErrBehind", err)
	}
}

// testQueriesAnswerAtOnce reads rows that are there, and rows that are not
// with no version asked for: nothing may wait, though the wait is an hour.
func testQueriesAnswerAtOnce(t *testing.T, b Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	l := newLifecycle(t)
	apply(t, b.Views, l.events())
	a, _, c := l.want(b)
	q := readmodel.NewQueries(b.Views, storedOf(l.events(), 0), time.Hour, 0)

	for _, minVersion := range []int64{0, 4, 5} {
		if o, err := q.Order(ctx, l.orderA, minVersion); err != nil || !reflect.DeepEqual(o, a) {
			t.Errorf("Order(A, min %d) = %+v, %v; want %+v", minVersion, o, err, a)
		}
	}
	if got, err := q.Customer(ctx, l.custID, 3); err != nil || !reflect.DeepEqual(got, c) {
		t.Errorf("Customer(min 3) = %+v, %v; want %+v", got, err, c)
	}
	if list, err := q.CustomerOrders(ctx, l.custID, uuid.Nil, 10); err != nil || len(list) != 2 {
		t.Errorf("CustomerOrders = %+v, %v; want orders A and B", list, err)
	}

	unknown := uuid.Must(uuid.NewV7())
	_, err := q.Order(ctx, unknown, 0)
	wantNotFound(t, "Order", err)
	_, err = q.Customer(ctx, unknown, 0)
	wantNotFound(t, "Customer", err)
	_, err = q.CustomerOrders(ctx, unknown, uuid.Nil, 10)
	wantNotFound(t, "CustomerOrders", err)

	// What waiting cannot help is answered at once too: an id the store
	// holds nothing under, or nothing of the type asked for, is not found;
	// a version above the stored one is not reached.
	_, err = q.Order(ctx, unknown, 1)
	wantNotFound(t, "Order(min 1)", err)
	_, err = q.Customer(ctx, unknown, 3)
	wantNotFound(t, "Customer(min 3)", err)
	_, err = q.Order(ctx, l.custID, 1)
	wantNotFound(t, "Order(a customer's id, min 1)", err)
	_, err = q.Customer(ctx, l.orderA, 1)
	wantNotFound(t, "Customer(an order's id, min 1)", err)
	var nr *readmodel.NotReachedError
	if _, err = q.Order(ctx, l.orderA, 6); !errors.As(err, &nr) || !errors.Is(err, readmodel.ErrNotReached) ||
		nr.Stored != 5 || nr.Want != 6 || nr.Error() != "order "+l.orderA.String()+" is at version 5; version 6 does not exist yet" {
		t.Errorf("Order(A, min 6) error = %v, want a NotReachedError at 5 of 6", err)
	}
	if _, err = q.Customer(ctx, l.custID, math.MaxInt64); !errors.Is(err, readmodel.ErrNotReached) {
		t.Errorf("Customer(min MaxInt64) error = %v, want ErrNotReached", err)
	}
	if n := q.Waiting(); n != 0 {
		t.Errorf("%d reads wait after reads that needed no wait", n)
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("%s(unknown) error = %v, want readmodel.ErrNotFound", what, err)
	}
}

// testQueriesWaitForUnknownRow asks for a version of a row that does not
// exist yet, though the store holds it: it is waited for like an old row,
// until ctx ends.
func testQueriesWaitForUnknownRow(t *testing.T, b Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	id := uuid.Must(uuid.NewV7())
	stored := storedOf(nil, 0)
	stored.set(id, aggregate.OrderType, 1)
	_, err := readmodel.NewQueries(b.Views, stored, time.Hour, 0).Order(ctx, id, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Order(unknown, min 1) with an ending ctx: error %v, want DeadlineExceeded", err)
	}
}

// testQueriesSeeOtherInstance: a query waiting on one Views, whose rows
// another instance projects (the active projector of a cluster), sees the
// row reach its version by polling, long before its wait is over.
func testQueriesSeeOtherInstance(t *testing.T, b Backend) {
	other := b.second(t)
	ctx := context.Background()
	l := newLifecycle(t)
	events := l.events()
	apply(t, other, events[:4]) // order A at version 2
	q := readmodel.NewQueries(b.Views, storedOf(events, 0), guard, 20*time.Millisecond)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := q.Order(ctx, l.orderA, 5)
		done <- err
	}()
	apply(t, other, events[4:])
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Order(A, min 5) = %v after the other instance projected version 5", err)
		}
	case <-time.After(guard):
		t.Fatalf("Order(A, min 5) still waiting %s after another instance projected version 5", time.Since(start))
	}
}

// testQueriesTooManyWaiters: reads beyond the bound of waiting reads fail
// at once with ErrTooManyWaiters, while a read that needs no wait still
// answers; the waiting reads wake when their row is applied.
func testQueriesTooManyWaiters(t *testing.T, b Backend) {
	events := newLifecycle(t).events()
	first, second := -1, -1 // an order's first two events
	for i, e := range events {
		switch {
		case first < 0 && e.AggregateType == aggregate.OrderType:
			first = i
		case first >= 0 && second < 0 && e.AggregateID == events[first].AggregateID:
			second = i
		}
	}
	if second < 0 {
		t.Fatal("the lifecycle has no order with two events")
	}
	apply(t, b.Views, events[:first+1])
	id := events[first].AggregateID
	stored := storedOf(events, 0)
	q := readmodel.NewQueries(b.Views, stored, 10*time.Second, 0).WithMaxWaiters(2)

	results := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := q.Order(context.Background(), id, events[second].Sequence)
			results <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Waiting() < 2 {
		select {
		case err := <-results:
			t.Fatalf("a waiting read ended before its row was applied: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reads waiting, want 2", q.Waiting())
		}
	}
	third := uuid.Must(uuid.NewV7()) // stored, not yet projected
	stored.set(third, aggregate.OrderType, 1)
	if _, err := q.Order(context.Background(), third, 1); !errors.Is(err, readmodel.ErrTooManyWaiters) {
		t.Fatalf("a third waiting read: %v, want ErrTooManyWaiters", err)
	}
	if _, err := q.Order(context.Background(), id, events[first].Sequence); err != nil {
		t.Errorf("a read that needs no wait while the waiters are full: %v", err)
	}
	apply(t, b.Views, events[first+1:second+1])
	for range 2 {
		select {
		case err := <-results:
			if err != nil {
				t.Errorf("a waiting read: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting read did not wake when its row was applied")
		}
	}
}

// AllStored is a readmodel.Versions for benchmarks: it says that the event
// store holds every id as an order at every version, so that a read of a
// row the views lack or hold older waits for the projection.
type AllStored struct{}

// Version returns aggregate.OrderType and math.MaxInt64 for every id.
func (AllStored) Version(context.Context, uuid.UUID) (string, int64, error) {
	return aggregate.OrderType, math.MaxInt64, nil
}
