package aggregate

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

var (
	registered = CustomerRegistered{Email: "ann@example.com", FirstName: "Ann", LastName: "Lee", Phone: "+14155552671", RegisteredAt: t0}
	noPhone    = CustomerRegistered{Email: "ann@example.com", FirstName: "Ann", LastName: "Lee", RegisteredAt: t0}
	emailMoved = CustomerEmailChanged{Email: "ann@example.org", ChangedAt: t0.Add(time.Hour)}
	phoneMoved = CustomerPhoneChanged{Phone: "+442071838750", ChangedAt: t0.Add(2 * time.Hour)}
)

// customer returns a constructor of the customer that history leaves, as the
// handler would load it.
func customer(history ...Event) func() *Customer {
	return func() *Customer {
		c := &Customer{}
		for _, e := range history {
			c.apply(e)
		}
		c.replayed(customerID, int64(len(history)))
		return c
	}
}

// foreignCustomer is how the handler loads a customer id that an order's
// events use.
func foreignCustomer() *Customer {
	c := &Customer{}
	c.replayed(uuid.Nil, 2)
	return c
}

type customerCommand func(c *Customer) ([]Event, error)

func register(email, first, last, phone string) customerCommand {
	return func(c *Customer) ([]Event, error) { return c.Register(email, first, last, phone, now) }
}
func changeEmail(email string) customerCommand {
	return func(c *Customer) ([]Event, error) { return c.ChangeEmail(email, now) }
}
func changePhone(phone string) customerCommand {
	return func(c *Customer) ([]Event, error) { return c.ChangePhone(phone, now) }
}

func TestCustomerDecisions(t *testing.T) {
	var (
		noCustomer      = customer()
		registeredOne   = customer(registered)
		withoutPhone    = customer(noPhone)
		customerExists  = refused(ErrExists, "customer_exists")
		customerMissing = refused(ErrNotFound, "customer_not_found")
		badEmail        = invalid("invalid_email", "/email")
		badPhone        = invalid("invalid_phone", "/phone")
	)
	tests := []struct {
		name  string
		given func() *Customer
		when  customerCommand
		then  []Event
		err   wantErr
	}{
		{"register new", noCustomer, register("ann@example.com", "Ann", "Lee", "+14155552671"),
			events(CustomerRegistered{"ann@example.com", "Ann", "Lee", "+14155552671", now}), ok},
		{"register normalises", noCustomer, register(" Ann@Example.COM ", " Ann ", "Lee\n", " +14155552671 "),
			events(CustomerRegistered{"Ann@example.com", "Ann", "Lee", "+14155552671", now}), ok},
		{"register without phone", noCustomer, register("ann@example.com", "Ann", "Lee", ""),
			events(CustomerRegistered{"ann@example.com", "Ann", "Lee", "", now}), ok},
		{"register blank phone", noCustomer, register("ann@example.com", "Ann", "Lee", "  "),
			events(CustomerRegistered{"ann@example.com", "Ann", "Lee", "", now}), ok},
		{"register 100 char names", noCustomer, register("a@example.com", strings.Repeat("ß", 100), "L", ""),
			events(CustomerRegistered{"a@example.com", strings.Repeat("ß", 100), "L", "", now}), ok},
		{"register other type", foreignCustomer, register("ann@example.com", "Ann", "Lee", ""), noEvents, customerExists},
		{"register registered", registeredOne, register("ann@example.com", "Ann", "Lee", ""), noEvents, customerExists},
		{"register registered with bad input", registeredOne, register("", "", "", ""), noEvents, customerExists},
		{"register bad email", noCustomer, register("Ann <ann@example.com>", "Ann", "Lee", ""), noEvents, badEmail},
		{"register no email", noCustomer, register("", "Ann", "Lee", ""), noEvents, badEmail},
		{"register no first name", noCustomer, register("ann@example.com", " ", "Lee", ""), noEvents, invalid("first_name_required", "/first_name")},
		{"register no last name", noCustomer, register("ann@example.com", "Ann", "", ""), noEvents, invalid("last_name_required", "/last_name")},
		{"register long first name", noCustomer, register("ann@example.com", strings.Repeat("a", 101), "Lee", ""), noEvents, invalid("first_name_too_long", "/first_name")},
		{"register long last name", noCustomer, register("ann@example.com", "Ann", strings.Repeat("a", 101), ""), noEvents, invalid("last_name_too_long", "/last_name")},
		{"register bad phone", noCustomer, register("ann@example.com", "Ann", "Lee", "+1 415 555 2671"), noEvents, badPhone},

		{"change email new", noCustomer, changeEmail("ann@example.org"), noEvents, customerMissing},
		{"change email other type", foreignCustomer, changeEmail("ann@example.org"), noEvents, customerMissing},
		{"change email registered", registeredOne, changeEmail("ann@example.org"), events(CustomerEmailChanged{"ann@example.org", now}), ok},
		{"change email unchanged", registeredOne, changeEmail("ann@example.com"), noEvents, ok},
		{"change email domain case", registeredOne, changeEmail(" ann@EXAMPLE.com"), noEvents, ok},
		{"change email local case", registeredOne, changeEmail("Ann@example.com"), events(CustomerEmailChanged{"Ann@example.com", now}), ok},
		{"change email invalid", registeredOne, changeEmail("ann@localhost"), noEvents, badEmail},
		{"change email invalid on missing", noCustomer, changeEmail(""), noEvents, customerMissing},

		{"change phone new", noCustomer, changePhone("+442071838750"), noEvents, customerMissing},
		{"change phone other type", foreignCustomer, changePhone("+442071838750"), noEvents, customerMissing},
		{"change phone registered", registeredOne, changePhone("+442071838750"), events(CustomerPhoneChanged{"+442071838750", now}), ok},
		{"change phone unchanged", registeredOne, changePhone("+14155552671"), noEvents, ok},
		{"change phone first one", withoutPhone, changePhone("+14155552671"), events(CustomerPhoneChanged{"+14155552671", now}), ok},
		{"change phone empty", registeredOne, changePhone(""), noEvents, badPhone},
		{"change phone separators", registeredOne, changePhone("+44 20 7183 8750"), noEvents, badPhone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, before := tc.given(), tc.given()
			got, err := tc.when(c)
			checkErr(t, err, tc.err)
			if !reflect.DeepEqual(got, tc.then) {
				t.Errorf("events = %#v\nwant %#v", got, tc.then)
			}
			if !reflect.DeepEqual(c, before) {
				t.Errorf("the decision changed the customer:\n%+v\nwas %+v", c, before)
			}
		})
	}
}

func TestCustomerApply(t *testing.T) {
	want := Customer{ID: customerID, Email: "ann@example.org", FirstName: "Ann", LastName: "Lee", Phone: "+442071838750",
		Version: 3, RegisteredAt: t0, UpdatedAt: phoneMoved.ChangedAt}
	if got := customer(registered, emailMoved, phoneMoved)(); !reflect.DeepEqual(*got, want) {
		t.Errorf("customer = %+v\nwant %+v", *got, want)
	}

	// Replayed twice through the store's JSON, a customer is the same, with
	// only the events' times.
	stored := encode(t, CustomerType, customerID, []Event{registered, emailMoved, phoneMoved})
	for range 2 {
		c := &Customer{}
		for _, e := range stored {
			ev, err := Decode(e)
			if err != nil {
				t.Fatal(err)
			}
			c.apply(ev)
		}
		c.replayed(customerID, 3)
		if !reflect.DeepEqual(*c, want) {
			t.Errorf("replayed customer = %+v\nwant %+v", *c, want)
		}
	}
}
