package sqlite_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/readmodel/sqlite"
	"github.com/orderd/orderd/internal/store"
)

// t0 has nanoseconds, so the tests see whether times round-trip exactly.
var t0 = time.Date(2025, 3, 1, 9, 30, 0, 123456789, time.UTC)

func at(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

func mustOpen(t testing.TB, path string) *sqlite.Views {
	t.Helper()
	v, err := sqlite.Open(path, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = v.Close() })
	return v
}

// feed numbers events as the event store's feed would: positions from
// first on, in slice order.
type feed struct {
	t      testing.TB
	events []store.Event
}

func (f *feed) add(aggType string, id uuid.UUID, seq int64, ev aggregate.Event) *feed {
	f.t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		f.t.Fatalf("marshal %T: %v", ev, err)
	}
	f.events = append(f.events, store.Event{
		ID: uuid.Must(uuid.NewV7()), AggregateID: id, AggregateType: aggType, Sequence: seq,
		Type: ev.EventType(), SchemaVersion: aggregate.SchemaVersion(ev.EventType()), Data: data,
		Timestamp: t0, Position: int64(len(f.events) + 1),
	})
	return f
}

var (
	orderA   = uuid.MustParse("0195a000-0000-7000-8000-00000000000a")
	orderB   = uuid.MustParse("0195a000-0000-7000-8000-00000000000b")
	customer = uuid.MustParse("0195a000-0000-7000-8000-0000000000c1")
	product  = uuid.MustParse("0195a000-0000-7000-8000-0000000000a1")
)

// lifecycle is a customer with one shipped and one cancelled order, with
// events of one order interleaved with the other's as a real feed has them.
func lifecycle(t testing.TB) []store.Event {
	f := &feed{t: t}
	items := []aggregate.Item{{ProductID: product, Quantity: 3}, {ProductID: uuid.MustParse("0195a000-0000-7000-8000-0000000000a2"), Quantity: 1}}
	f.add(aggregate.CustomerType, customer, 1, aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", RegisteredAt: at(0)})
	f.add(aggregate.OrderType, orderA, 1, aggregate.OrderCreated{CustomerID: customer, Items: items, CreatedAt: at(1)})
	f.add(aggregate.OrderType, orderB, 1, aggregate.OrderCreated{CustomerID: customer, Items: items[:1], CreatedAt: at(2)})
	f.add(aggregate.OrderType, orderA, 2, aggregate.OrderConfirmed{ConfirmedAt: at(3)})
	f.add("Warehouse", uuid.MustParse("0195a000-0000-7000-8000-0000000000f1"), 1, aggregate.OrderConfirmed{ConfirmedAt: at(3)})
	f.add(aggregate.OrderType, orderB, 2, aggregate.OrderCancelled{Reason: "duplicate", CancelledAt: at(4)})
	f.add(aggregate.OrderType, orderA, 3, aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at(5)})
	f.add(aggregate.CustomerType, customer, 2, aggregate.CustomerPhoneChanged{Phone: "+441234567890", ChangedAt: at(6)})
	return f.events
}

var (
	wantA = readmodel.Order{
		ID: orderA, CustomerID: customer, Status: readmodel.StatusShipped,
		Items:          []aggregate.Item{{ProductID: product, Quantity: 3}, {ProductID: uuid.MustParse("0195a000-0000-7000-8000-0000000000a2"), Quantity: 1}},
		TrackingNumber: "T-1", Carrier: "DHL", Version: 3, CreatedAt: at(1), UpdatedAt: at(5),
	}
	wantB = readmodel.Order{
		ID: orderB, CustomerID: customer, Status: readmodel.StatusCancelled, Items: []aggregate.Item{{ProductID: product, Quantity: 3}},
		CancelledReason: "duplicate", Version: 2, CreatedAt: at(2), UpdatedAt: at(4),
	}
	wantCustomer = readmodel.Customer{
		ID: customer, Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890",
		Version: 2, RegisteredAt: at(0), UpdatedAt: at(6),
	}
)

// checkViews asserts that v holds exactly the views of lifecycle, through
// checkpoint.
func checkViews(t *testing.T, v *sqlite.Views, checkpoint int64) {
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
	if pos, err := v.Checkpoint(ctx); err != nil || pos != checkpoint {
		t.Errorf("Checkpoint() = %d, %v; want %d", pos, err, checkpoint)
	}
}

func TestApplyThenQuery(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"))
	ctx := context.Background()
	if pos, err := v.Checkpoint(ctx); err != nil || pos != 0 {
		t.Fatalf("Checkpoint() of a new file = %d, %v; want 0", pos, err)
	}
	events := lifecycle(t)
	// Two batches, split inside order A's history, so a batch also starts
	// from rows an earlier commit wrote.
	if err := v.Apply(ctx, events[:4], 4); err != nil {
		t.Fatalf("Apply first batch: %v", err)
	}
	if err := v.Apply(ctx, events[4:], 8); err != nil {
		t.Fatalf("Apply second batch: %v", err)
	}
	checkViews(t, v, 8)

	_, err := v.Order(ctx, uuid.Must(uuid.NewV7()))
	if !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("Order(unknown) error = %v, want ErrNotFound", err)
	}
	_, err = v.Customer(ctx, orderA)
	if !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("Customer(unknown) error = %v, want ErrNotFound", err)
	}
}

func TestCheckpointCommitsWithRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "views.db")
	v, err := sqlite.Open(path, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(context.Background(), lifecycle(t), 8); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checkViews(t, mustOpen(t, path), 8)
}

func TestReapplyChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "views.db")
	ctx := context.Background()
	events := lifecycle(t)
	if err := mustOpen(t, path).Apply(ctx, events, 8); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	// A restarted projector whose checkpoint lagged its rows would feed
	// them again: whole, in part, or from an older position.
	v := mustOpen(t, path)
	for _, replay := range []struct {
		events  []store.Event
		through int64
	}{{events, 8}, {events[:3], 3}, {events[2:6], 6}} {
		if err := v.Apply(ctx, replay.events, replay.through); err != nil {
			t.Fatalf("re-Apply through %d: %v", replay.through, err)
		}
		checkViews(t, v, 8)
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"))
	ctx := context.Background()
	events := lifecycle(t)
	if err := v.Apply(ctx, events[:2], 2); err != nil {
		t.Fatal(err)
	}
	// events[3] is order A's sequence 2, events[6] its sequence 3: leaving
	// out [3] makes a gap after order B was created in the same batch.
	bad := []store.Event{events[2], events[6]}
	if err := v.Apply(ctx, bad, 7); !errors.Is(err, readmodel.ErrGap) {
		t.Fatalf("Apply with a gap: error %v, want ErrGap", err)
	}
	undecodable := events[2]
	undecodable.Data = json.RawMessage(`{"items": "none"}`)
	if err := v.Apply(ctx, []store.Event{undecodable}, 3); err == nil {
		t.Fatal("Apply of an undecodable event succeeded")
	}

	if _, err := v.Order(ctx, orderB); !errors.Is(err, aggregate.ErrNotFound) {
		t.Errorf("order B after failed Apply: error %v, want ErrNotFound", err)
	}
	if pos, _ := v.Checkpoint(ctx); pos != 2 {
		t.Errorf("Checkpoint() after failed Apply = %d, want 2", pos)
	}
	if err := v.Apply(ctx, events[2:], 8); err != nil {
		t.Fatalf("Apply after failures: %v", err)
	}
	checkViews(t, v, 8)
}

func TestCustomerOrdersPages(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"))
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
	if err := v.Apply(ctx, f.events, int64(len(f.events))); err != nil {
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

func TestChangedClosesOnCommit(t *testing.T) {
	v := mustOpen(t, filepath.Join(t.TempDir(), "views.db"))
	before := v.Changed()
	select {
	case <-before:
		t.Fatal("Changed closed before any commit")
	default:
	}
	if err := v.Apply(context.Background(), lifecycle(t)[:1], 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-before:
	default:
		t.Fatal("Changed not closed by a commit")
	}
	if after := v.Changed(); after == before {
		t.Fatal("Changed not replaced after a commit")
	}
}
