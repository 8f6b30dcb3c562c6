package readmodel_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

var (
	t0       = time.Date(2025, 3, 1, 9, 30, 0, 123456789, time.UTC)
	orderID  = uuid.MustParse("0195a000-0000-7000-8000-000000000001")
	custID   = uuid.MustParse("0195a000-0000-7000-8000-0000000000c1")
	product1 = uuid.MustParse("0195a000-0000-7000-8000-0000000000a1")
	product2 = uuid.MustParse("0195a000-0000-7000-8000-0000000000a2")
)

// envelope wraps ev the way the store returns it: JSON payload at the
// current schema version.
func envelope(t testing.TB, aggType string, id uuid.UUID, seq int64, ev aggregate.Event) store.Event {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatalf("marshal %T: %v", ev, err)
	}
	return store.Event{
		ID:            uuid.Must(uuid.NewV7()),
		AggregateID:   id,
		AggregateType: aggType,
		Sequence:      seq,
		Type:          ev.EventType(),
		SchemaVersion: aggregate.SchemaVersion(ev.EventType()),
		Data:          data,
		Timestamp:     t0,
	}
}

func TestOrderApply(t *testing.T) {
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	items := []aggregate.Item{{ProductID: product1, Quantity: 2}, {ProductID: product2, Quantity: 1}}
	created := aggregate.OrderCreated{CustomerID: custID, Items: items, CreatedAt: at(0)}
	updated := aggregate.OrderItemsUpdated{Items: items[:1], UpdatedAt: at(1)}
	confirmed := aggregate.OrderConfirmed{ConfirmedAt: at(2)}
	shipped := aggregate.OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: at(3)}
	delivered := aggregate.OrderDelivered{Signature: "J. Doe", DeliveredAt: at(4)}
	cancelled := aggregate.OrderCancelled{Reason: "changed mind", CancelledAt: at(2)}

	base := readmodel.Order{ID: orderID, CustomerID: custID, Status: readmodel.StatusCreated, Items: items, Version: 1, CreatedAt: at(0), UpdatedAt: at(0)}
	with := func(f func(o *readmodel.Order)) readmodel.Order {
		o := base
		f(&o)
		return o
	}
	ev := func(seq int64, e aggregate.Event) store.Event {
		return envelope(t, aggregate.OrderType, orderID, seq, e)
	}

	tests := []struct {
		name        string
		given       []aggregate.Event // applied at sequences 1, 2, …
		when        store.Event
		want        readmodel.Order
		wantChanged bool
		wantErr     error // nil, ErrGap, or errAny for another error
	}{
		{"created", nil, ev(1, created), base, true, nil},
		{"items updated", []aggregate.Event{created}, ev(2, updated), with(func(o *readmodel.Order) {
			o.Items, o.Version, o.UpdatedAt = items[:1], 2, at(1)
		}), true, nil},
		{"confirmed", []aggregate.Event{created}, ev(2, confirmed), with(func(o *readmodel.Order) {
			o.Status, o.Version, o.UpdatedAt = readmodel.StatusConfirmed, 2, at(2)
		}), true, nil},
		{"shipped", []aggregate.Event{created, confirmed}, ev(3, shipped), with(func(o *readmodel.Order) {
			o.Status, o.TrackingNumber, o.Carrier, o.Version, o.UpdatedAt = readmodel.StatusShipped, "T-1", "DHL", 3, at(3)
		}), true, nil},
		{"delivered", []aggregate.Event{created, confirmed, shipped}, ev(4, delivered), with(func(o *readmodel.Order) {
			o.Status, o.TrackingNumber, o.Carrier, o.Version, o.UpdatedAt = readmodel.StatusDelivered, "T-1", "DHL", 4, at(4)
		}), true, nil},
		{"cancelled", []aggregate.Event{created}, ev(2, cancelled), with(func(o *readmodel.Order) {
			o.Status, o.CancelledReason, o.Version, o.UpdatedAt = readmodel.StatusCancelled, "changed mind", 2, at(2)
		}), true, nil},
		{"duplicate", []aggregate.Event{created, confirmed}, ev(2, confirmed), with(func(o *readmodel.Order) {
			o.Status, o.Version, o.UpdatedAt = readmodel.StatusConfirmed, 2, at(2)
		}), false, nil},
		{"older", []aggregate.Event{created, confirmed, shipped}, ev(1, created), with(func(o *readmodel.Order) {
			o.Status, o.TrackingNumber, o.Carrier, o.Version, o.UpdatedAt = readmodel.StatusShipped, "T-1", "DHL", 3, at(3)
		}), false, nil},
		{"gap", []aggregate.Event{created}, ev(3, shipped), base, false, readmodel.ErrGap},
		{"gap before creation", nil, ev(2, confirmed), readmodel.Order{}, false, readmodel.ErrGap},
		{"first event is not a creation", nil, ev(1, confirmed), readmodel.Order{}, false, errAny},
		{"second creation", []aggregate.Event{created}, ev(2, created), base, false, errAny},
		{"customer event", []aggregate.Event{created}, ev(2, aggregate.CustomerEmailChanged{Email: "x@example.com", ChangedAt: at(1)}), base, false, errAny},
		{"customer aggregate", nil, envelope(t, aggregate.CustomerType, orderID, 1, created), readmodel.Order{}, false, errAny},
		{"other order", []aggregate.Event{created}, envelope(t, aggregate.OrderType, product1, 2, confirmed), base, false, errAny},
		{"undecodable", []aggregate.Event{created}, func() store.Event { e := ev(2, confirmed); e.Data = []byte(`{"confirmed_at": 7}`); return e }(), base, false, errAny},
		{"not upcast", nil, func() store.Event { e := ev(1, created); e.SchemaVersion = 1; return e }(), readmodel.Order{}, false, errAny},
		{"zero sequence", []aggregate.Event{created}, ev(0, confirmed), base, false, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o readmodel.Order
			for i, g := range tt.given {
				if changed, err := o.Apply(ev(int64(i+1), g)); err != nil || !changed {
					t.Fatalf("given event %d (%s): changed %v, err %v", i+1, g.EventType(), changed, err)
				}
			}
			changed, err := o.Apply(tt.when)
			checkErr(t, err, tt.wantErr)
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if !reflect.DeepEqual(o, tt.want) {
				t.Errorf("order =\n%+v\nwant\n%+v", o, tt.want)
			}
		})
	}
}

func TestOrderApplyStoresUTC(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	var o readmodel.Order
	e := envelope(t, aggregate.OrderType, orderID, 1, aggregate.OrderCreated{CustomerID: custID, CreatedAt: t0.In(paris)})
	if _, err := o.Apply(e); err != nil {
		t.Fatal(err)
	}
	if o.CreatedAt.Location() != time.UTC || !o.CreatedAt.Equal(t0) || o.UpdatedAt != o.CreatedAt {
		t.Errorf("CreatedAt %v, UpdatedAt %v; want %v in UTC", o.CreatedAt, o.UpdatedAt, t0)
	}
	if o.Items == nil || len(o.Items) != 0 {
		t.Errorf("Items = %#v, want an empty, non-nil list", o.Items)
	}
}

func TestOrderSummary(t *testing.T) {
	o := readmodel.Order{
		ID: orderID, CustomerID: custID, Status: readmodel.StatusShipped, Version: 4, CreatedAt: t0, UpdatedAt: t0.Add(time.Hour),
		Items: []aggregate.Item{{ProductID: product1, Quantity: 2}, {ProductID: product2, Quantity: 5}},
	}
	want := readmodel.OrderSummary{ID: orderID, Status: readmodel.StatusShipped, ItemCount: 2, Quantity: 7, Version: 4, CreatedAt: t0, UpdatedAt: t0.Add(time.Hour)}
	if got := o.Summary(); got != want {
		t.Errorf("Summary() = %+v, want %+v", got, want)
	}
}

// errAny stands for an error that matters only in that there is one.
var errAny = errors.New("any error")

func checkErr(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == errAny && err == nil, want != nil && want != errAny && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	}
}
