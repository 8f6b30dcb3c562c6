package scylla_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/scylla"
	"github.com/orderd/orderd/internal/store"
)

// checkViews asserts that v holds exactly the rows lifecycle leaves.
func checkViews(t *testing.T, v *scylla.Views) {
	t.Helper()
	ctx := context.Background()
	for _, want := range []readmodel.Order{wantA, wantB} {
		got, err := v.Order(ctx, want.ID)
		if err != nil {
			t.Fatalf("Order(%s): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Order(%s) =\n%+v\nwant\n%+v", want.ID, got, want)
		}
	}
	c, err := v.Customer(ctx, customer)
	if err != nil {
		t.Fatalf("Customer: %v", err)
	}
	if !reflect.DeepEqual(c, wantCustomer) {
		t.Errorf("Customer =\n%+v\nwant\n%+v", c, wantCustomer)
	}
	list, err := v.CustomerOrders(ctx, customer, uuid.Nil, 10)
	if err != nil {
		t.Fatalf("CustomerOrders: %v", err)
	}
	if want := []readmodel.OrderSummary{wantA.Summary(), wantB.Summary()}; !reflect.DeepEqual(list, want) {
		t.Errorf("CustomerOrders =\n%+v\nwant\n%+v", list, want)
	}
}

func TestProjectThenRead(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	events := lifecycle(t)
	// Two calls split inside order A's history, so the second starts from
	// rows the first wrote.
	if err := v.Project(ctx, events[:4]); err != nil {
		t.Fatalf("Project first part: %v", err)
	}
	if err := v.Project(ctx, events[4:]); err != nil {
		t.Fatalf("Project second part: %v", err)
	}
	checkViews(t, v)

	if _, err := v.Order(ctx, uuid.Must(uuid.NewV7())); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("Order(unknown) error = %v, want ErrNotFound", err)
	}
	if _, err := v.Customer(ctx, orderA); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("Customer(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestReplayChangesNothing(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	events := lifecycle(t)
	if err := v.Project(ctx, events); err != nil {
		t.Fatalf("Project: %v", err)
	}
	// A feed repeats events: the whole log, a prefix, older events after
	// newer ones, one event twice in one call.
	for name, replay := range map[string][]store.Event{
		"all again":     events,
		"prefix":        events[:3],
		"older last":    {events[6], events[3], events[1]},
		"twice in call": {events[7], events[7], events[0]},
	} {
		if err := v.Project(ctx, replay); err != nil {
			t.Fatalf("Project %s: %v", name, err)
		}
		checkViews(t, v)
	}
}

func TestGapHealsFromHistory(t *testing.T) {
	e := newEnv(t)
	events := lifecycle(t)
	e.appendAll(events)
	v := e.views(nil)
	ctx := context.Background()

	// The feed lost order A's creation and confirmation, and the customer's
	// registration: each row heals from the event store when a later event
	// arrives, even on a row that does not exist yet.
	lossy := []store.Event{events[2], events[5], events[6], events[7]}
	if err := v.Project(ctx, lossy); err != nil {
		t.Fatalf("Project with gaps: %v", err)
	}
	checkViews(t, v)

	// A row that History carried past the feed's events: the feed's late
	// delivery of them is a repeat.
	if err := v.Project(ctx, events[:4]); err != nil {
		t.Fatalf("Project of the lost events: %v", err)
	}
	checkViews(t, v)
}

func TestGapBeyondHistoryFails(t *testing.T) {
	e := newEnv(t) // the store has no events: History cannot heal
	v := e.views(nil)
	ctx := context.Background()
	events := lifecycle(t)
	err := v.Project(ctx, []store.Event{events[6]}) // order A #3, with no row
	if !errors.Is(err, readmodel.ErrGap) {
		t.Fatalf("Project of a gap History cannot fill: error %v, want ErrGap", err)
	}
	if _, err := v.Order(ctx, orderA); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("order A after the failed heal: error %v, want ErrNotFound", err)
	}
}

func TestUndecodableEventFails(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	bad := lifecycle(t)[1]
	bad.Data = json.RawMessage(`{"items": "none"}`)
	if err := v.Project(ctx, []store.Event{bad}); err == nil {
		t.Fatal("Project of an undecodable event succeeded")
	}
	if _, err := v.Order(ctx, orderA); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("order A after the failed Project: error %v, want ErrNotFound", err)
	}
}

func TestCustomerOrdersPages(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	other := uuid.Must(uuid.NewV7())
	f := &feed{t: t}
	var ids []uuid.UUID
	for i := range 5 {
		id := uuid.Must(uuid.NewV7())
		ids = append(ids, id)
		f.add(aggregate.OrderType, id, 1, aggregate.OrderCreated{CustomerID: customer, Items: []aggregate.Item{{ProductID: product, Quantity: i + 1}}, CreatedAt: at(i)})
		f.add(aggregate.OrderType, uuid.Must(uuid.NewV7()), 1, aggregate.OrderCreated{CustomerID: other, CreatedAt: at(i)})
	}
	if err := v.Project(ctx, f.events); err != nil {
		t.Fatal(err)
	}

	var got []uuid.UUID
	after := uuid.Nil
	for page := 0; ; page++ {
		list, err := v.CustomerOrders(ctx, customer, after, 2)
		if err != nil {
			t.Fatalf("page %d: %v", page, err)
		}
		if len(list) > 2 {
			t.Fatalf("page %d has %d rows, limit 2", page, len(list))
		}
		if len(list) == 0 {
			break
		}
		for _, s := range list {
			got = append(got, s.ID)
		}
		after = list[len(list)-1].ID
	}
	// UUIDv7 ids made in a row sort in creation order.
	if !reflect.DeepEqual(got, ids) {
		t.Errorf("paged ids = %v, want %v", got, ids)
	}
	if list, err := v.CustomerOrders(ctx, uuid.Must(uuid.NewV7()), uuid.Nil, 10); err != nil || len(list) != 0 {
		t.Errorf("CustomerOrders(unknown) = %v, %v; want an empty list", list, err)
	}
	if _, err := v.CustomerOrders(ctx, customer, uuid.Nil, 0); err == nil {
		t.Error("CustomerOrders with limit 0 succeeded")
	}
}

func TestChangedClosesOnProject(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	before := v.Changed()
	// Events of aggregate types without views touch no row.
	if err := v.Project(ctx, lifecycle(t)[4:5]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-before:
		t.Fatal("Changed closed by a Project that touched no row")
	default:
	}
	if err := v.Project(ctx, lifecycle(t)[:1]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-before:
	default:
		t.Fatal("Changed not closed by a Project")
	}
	if after := v.Changed(); after == before {
		t.Fatal("Changed not replaced after a Project")
	}
}

// TestRepeatRepairsCustomerList leaves the state of a projector that died
// between an order's conditional write and the write of its customer's
// list: the feed's repeat of the event must bring the list up to the row.
func TestRepeatRepairsCustomerList(t *testing.T) {
	e := newEnv(t)
	v := e.views(nil)
	ctx := context.Background()
	events := lifecycle(t)
	if err := v.Project(ctx, []store.Event{events[1], events[3]}); err != nil { // order A #1, #2
		t.Fatal(err)
	}
	// The dead projector's write of order A #3, as Project makes it.
	applied, err := session(t, e.hosts, e.ks).Query(`UPDATE order_read_model
		SET status = 'shipped', tracking_number = 'T-1', carrier = 'DHL', version = 3, updated_at = ?
		WHERE id = ? IF version = 2`, nil).Bind(at(5), orderA).ExecCASRelease()
	if err != nil || !applied {
		t.Fatalf("write order A #3 by hand: applied %v, %v", applied, err)
	}
	list, err := v.CustomerOrders(ctx, customer, uuid.Nil, 10)
	if err != nil || len(list) != 1 || list[0].Version != 2 {
		t.Fatalf("list before the repeat = %+v, %v; want order A at version 2", list, err)
	}

	if err := v.Project(ctx, []store.Event{events[6]}); err != nil { // the repeat of #3
		t.Fatal(err)
	}
	if got, err := v.Order(ctx, orderA); err != nil || !reflect.DeepEqual(got, wantA) {
		t.Errorf("Order(A) = %+v, %v; want %+v", got, err, wantA)
	}
	list, err = v.CustomerOrders(ctx, customer, uuid.Nil, 10)
	if want := []readmodel.OrderSummary{wantA.Summary()}; err != nil || !reflect.DeepEqual(list, want) {
		t.Errorf("list after the repeat = %+v, %v; want %+v", list, err, want)
	}
}
