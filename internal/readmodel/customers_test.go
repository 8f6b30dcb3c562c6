package readmodel_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/readmodel"
	"github.com/orderd/orderd/internal/store"
)

func TestCustomerApply(t *testing.T) {
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	registered := aggregate.CustomerRegistered{Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890", RegisteredAt: at(0)}
	email := aggregate.CustomerEmailChanged{Email: "ada@lovelace.example", ChangedAt: at(1)}
	phone := aggregate.CustomerPhoneChanged{Phone: "+33123456789", ChangedAt: at(2)}

	base := readmodel.Customer{ID: custID, Email: "ada@example.com", FirstName: "Ada", LastName: "Lovelace", Phone: "+441234567890", Version: 1, RegisteredAt: at(0), UpdatedAt: at(0)}
	with := func(f func(c *readmodel.Customer)) readmodel.Customer {
		c := base
		f(&c)
		return c
	}
	ev := func(seq int64, e aggregate.Event) store.Event {
		return envelope(t, aggregate.CustomerType, custID, seq, e)
	}

	tests := []struct {
		name        string
		given       []aggregate.Event
		when        store.Event
		want        readmodel.Customer
		wantChanged bool
		wantErr     error
	}{
		{"registered", nil, ev(1, registered), base, true, nil},
		{"email changed", []aggregate.Event{registered}, ev(2, email), with(func(c *readmodel.Customer) {
			c.Email, c.Version, c.UpdatedAt = "ada@lovelace.example", 2, at(1)
		}), true, nil},
		{"phone changed", []aggregate.Event{registered, email}, ev(3, phone), with(func(c *readmodel.Customer) {
			c.Email, c.Phone, c.Version, c.UpdatedAt = "ada@lovelace.example", "+33123456789", 3, at(2)
		}), true, nil},
		{"duplicate", []aggregate.Event{registered, email}, ev(2, email), with(func(c *readmodel.Customer) {
			c.Email, c.Version, c.UpdatedAt = "ada@lovelace.example", 2, at(1)
		}), false, nil},
		{"older", []aggregate.Event{registered, email}, ev(1, registered), with(func(c *readmodel.Customer) {
			c.Email, c.Version, c.UpdatedAt = "ada@lovelace.example", 2, at(1)
		}), false, nil},
		{"gap", []aggregate.Event{registered}, ev(3, phone), base, false, readmodel.ErrGap},
		{"first event is not a registration", nil, ev(1, email), readmodel.Customer{}, false, errAny},
		{"second registration", []aggregate.Event{registered}, ev(2, registered), base, false, errAny},
		{"order event", []aggregate.Event{registered}, ev(2, aggregate.OrderConfirmed{ConfirmedAt: at(1)}), base, false, errAny},
		{"order aggregate", nil, envelope(t, aggregate.OrderType, custID, 1, registered), readmodel.Customer{}, false, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c readmodel.Customer
			for i, g := range tt.given {
				if changed, err := c.Apply(ev(int64(i+1), g)); err != nil || !changed {
					t.Fatalf("given event %d (%s): changed %v, err %v", i+1, g.EventType(), changed, err)
				}
			}
			changed, err := c.Apply(tt.when)
			checkErr(t, err, tt.wantErr)
			if changed != tt.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tt.wantChanged)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Errorf("customer =\n%+v\nwant\n%+v", c, tt.want)
			}
		})
	}
}
