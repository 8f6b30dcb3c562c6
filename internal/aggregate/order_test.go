package aggregate

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// t0 is years from any wall clock, so a time read from the clock instead of
// an event would show.
var (
	t0  = time.Date(2021, 3, 4, 5, 6, 7, 890, time.UTC)
	now = t0.Add(72 * time.Hour)

	orderID    = uuid.MustParse("0190a000-0000-7000-8000-000000000001")
	customerID = uuid.MustParse("0190a000-0000-7000-8000-000000000002")
	productA   = uuid.MustParse("0190a000-0000-7000-8000-00000000000a")
	productB   = uuid.MustParse("0190a000-0000-7000-8000-00000000000b")

	itemA = Item{ProductID: productA, Quantity: 2}
	itemB = Item{ProductID: productB, Quantity: 1}

	created   = OrderCreated{CustomerID: customerID, Items: []Item{itemA}, CreatedAt: t0}
	confirmed = OrderConfirmed{ConfirmedAt: t0.Add(1 * time.Hour)}
	shipped   = OrderShipped{TrackingNumber: "T-1", Carrier: "DHL", ShippedAt: t0.Add(2 * time.Hour)}
	delivered = OrderDelivered{Signature: "J. Doe", DeliveredAt: t0.Add(3 * time.Hour)}
	cancelled = OrderCancelled{Reason: "changed mind", CancelledAt: t0.Add(1 * time.Hour)}
)

// order returns a constructor of the order that history leaves, as the
// handler would load it.
func order(history ...Event) func() *Order {
	return func() *Order {
		o := &Order{}
		for _, e := range history {
			o.apply(e)
		}
		o.replayed(orderID, int64(len(history)))
		return o
	}
}

// foreignOrder is how the handler loads an order id that a customer's events
// use: a version and no id.
func foreignOrder() *Order {
	o := &Order{}
	o.replayed(uuid.Nil, 3)
	return o
}

var (
	noOrder        = order()
	createdOrder   = order(created)
	confirmedOrder = order(created, confirmed)
	shippedOrder   = order(created, confirmed, shipped)
	deliveredOrder = order(created, confirmed, shipped, delivered)
	cancelledOrder = order(created, cancelled)
)

type orderCommand func(o *Order) ([]Event, error)

func create(c uuid.UUID, items ...Item) orderCommand {
	return func(o *Order) ([]Event, error) { return o.Create(c, items, now) }
}
func updateItems(items ...Item) orderCommand {
	return func(o *Order) ([]Event, error) { return o.UpdateItems(items, now) }
}
func confirm() orderCommand { return func(o *Order) ([]Event, error) { return o.Confirm(now) } }
func ship(tracking, carrier string) orderCommand {
	return func(o *Order) ([]Event, error) { return o.Ship(tracking, carrier, now) }
}
func deliver(sig string) orderCommand {
	return func(o *Order) ([]Event, error) { return o.Deliver(sig, now) }
}
func cancel(reason string) orderCommand {
	return func(o *Order) ([]Event, error) { return o.Cancel(reason, now) }
}

// wantErr is the expected error: its kind, code and field. A zero wantErr
// expects none.
type wantErr struct {
	kind        error
	code, field string
}

func refused(kind error, code string) wantErr { return wantErr{kind: kind, code: code} }
func invalid(code, field string) wantErr      { return wantErr{ErrInvalid, code, field} }

var (
	ok            = wantErr{}
	orderMissing  = refused(ErrNotFound, "order_not_found")
	badTransition = refused(ErrRejected, "invalid_transition")
	notEditable   = refused(ErrRejected, "order_not_editable")
	isConfirmed   = refused(ErrRejected, "order_already_confirmed")
	isCancelled   = refused(ErrRejected, "order_already_cancelled")
	noEvents      []Event
)

func events(e ...Event) []Event { return e }

func checkErr(t *testing.T, err error, want wantErr) {
	t.Helper()
	if want.kind == nil {
		if err != nil {
			t.Fatalf("err = %v, want none", err)
		}
		return
	}
	if !errors.Is(err, want.kind) {
		t.Fatalf("err = %v, want kind %v", err, want.kind)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != want.code || e.Field != want.field {
		t.Fatalf("err = %v, want code %q field %q", err, want.code, want.field)
	}
}

// TestOrderTransitions runs every command from every state: no events,
// another aggregate's stream, and each of the five statuses.
func TestOrderTransitions(t *testing.T) {
	tests := []orderCase{
		{"create new", noOrder, create(customerID, itemA), events(OrderCreated{customerID, []Item{itemA}, now}), ok},

		{"update items new", noOrder, updateItems(itemB), noEvents, orderMissing},
		{"update items other type", foreignOrder, updateItems(itemB), noEvents, orderMissing},
		{"update items created", createdOrder, updateItems(itemB, itemA), events(OrderItemsUpdated{[]Item{itemB, itemA}, now}), ok},
		{"update items created unchanged", createdOrder, updateItems(itemA), noEvents, ok},
		{"update items confirmed", confirmedOrder, updateItems(itemB), noEvents, notEditable},
		{"update items shipped", shippedOrder, updateItems(itemB), noEvents, notEditable},
		{"update items delivered", deliveredOrder, updateItems(itemB), noEvents, notEditable},
		{"update items cancelled", cancelledOrder, updateItems(itemB), noEvents, notEditable},

		{"confirm new", noOrder, confirm(), noEvents, orderMissing},
		{"confirm other type", foreignOrder, confirm(), noEvents, orderMissing},
		{"confirm created", createdOrder, confirm(), events(OrderConfirmed{now}), ok},
		{"confirm confirmed", confirmedOrder, confirm(), noEvents, isConfirmed},
		{"confirm shipped", shippedOrder, confirm(), noEvents, badTransition},
		{"confirm delivered", deliveredOrder, confirm(), noEvents, badTransition},
		{"confirm cancelled", cancelledOrder, confirm(), noEvents, badTransition},

		{"ship new", noOrder, ship("T-2", "UPS"), noEvents, orderMissing},
		{"ship other type", foreignOrder, ship("T-2", "UPS"), noEvents, orderMissing},
		{"ship created", createdOrder, ship("T-2", "UPS"), noEvents, badTransition},
		{"ship confirmed", confirmedOrder, ship("T-2", "UPS"), events(OrderShipped{"T-2", "UPS", now}), ok},
		{"ship shipped", shippedOrder, ship("T-2", "UPS"), noEvents, badTransition},
		{"ship delivered", deliveredOrder, ship("T-2", "UPS"), noEvents, badTransition},
		{"ship cancelled", cancelledOrder, ship("T-2", "UPS"), noEvents, badTransition},

		{"deliver new", noOrder, deliver("A. B."), noEvents, orderMissing},
		{"deliver other type", foreignOrder, deliver("A. B."), noEvents, orderMissing},
		{"deliver created", createdOrder, deliver("A. B."), noEvents, badTransition},
		{"deliver confirmed", confirmedOrder, deliver("A. B."), noEvents, badTransition},
		{"deliver shipped", shippedOrder, deliver("A. B."), events(OrderDelivered{"A. B.", now}), ok},
		{"deliver delivered", deliveredOrder, deliver("A. B."), noEvents, badTransition},
		{"deliver cancelled", cancelledOrder, deliver("A. B."), noEvents, badTransition},

		{"cancel new", noOrder, cancel("late"), noEvents, orderMissing},
		{"cancel other type", foreignOrder, cancel("late"), noEvents, orderMissing},
		{"cancel created", createdOrder, cancel("late"), events(OrderCancelled{"late", now}), ok},
		{"cancel confirmed", confirmedOrder, cancel("late"), events(OrderCancelled{"late", now}), ok},
		{"cancel shipped", shippedOrder, cancel("late"), noEvents, badTransition},
		{"cancel delivered", deliveredOrder, cancel("late"), noEvents, badTransition},
		{"cancel cancelled", cancelledOrder, cancel("late"), noEvents, isCancelled},
	}
	runOrderTests(t, tests)
}

// TestOrderInput covers input validation, and that existence is checked
// before input and input before status.
func TestOrderInput(t *testing.T) {
	hundred := make([]Item, 100)
	for i := range hundred {
		hundred[i] = Item{ProductID: uuid.New(), Quantity: 1}
	}
	tooMany := append(append([]Item(nil), hundred...), itemA)
	nilProduct := Item{Quantity: 1}
	nowInTokyo := now.In(time.FixedZone("JST", 9*3600))
	longTracking, maxLenTracking := strings.Repeat("t", 101), strings.Repeat("t", 100)
	tests := []orderCase{
		{"create nil customer", noOrder, create(uuid.Nil, itemA), noEvents, invalid("invalid_customer_id", "/customer_id")},
		{"create no items", noOrder, create(customerID), noEvents, invalid("items_required", "/items")},
		{"create 100 items", noOrder, create(customerID, hundred...), events(OrderCreated{customerID, hundred, now}), ok},
		{"create 101 items", noOrder, create(customerID, tooMany...), noEvents, invalid("too_many_items", "/items")},
		{"create nil product", noOrder, create(customerID, itemA, nilProduct), noEvents, invalid("invalid_product_id", "/items/1/product_id")},
		{"create duplicate product", noOrder, create(customerID, itemA, itemB, itemA), noEvents, invalid("duplicate_product", "/items/2/product_id")},
		{"create quantity 0", noOrder, create(customerID, Item{productA, 0}), noEvents, invalid("invalid_quantity", "/items/0/quantity")},
		{"create quantity -1", noOrder, create(customerID, Item{productA, -1}), noEvents, invalid("invalid_quantity", "/items/0/quantity")},
		{"create quantity 10000", noOrder, create(customerID, Item{productA, 10000}), events(OrderCreated{customerID, []Item{{productA, 10000}}, now}), ok},
		{"create quantity 10001", noOrder, create(customerID, itemA, Item{productB, 10001}), noEvents, invalid("invalid_quantity", "/items/1/quantity")},
		{"create stamps UTC", noOrder, func(o *Order) ([]Event, error) { return o.Create(customerID, []Item{itemA}, nowInTokyo) },
			events(OrderCreated{customerID, []Item{itemA}, now}), ok},

		{"update items none", createdOrder, updateItems(), noEvents, invalid("items_required", "/items")},
		{"update items bad on confirmed", confirmedOrder, updateItems(Item{productA, 0}), noEvents, invalid("invalid_quantity", "/items/0/quantity")},
		{"update items bad on missing", noOrder, updateItems(), noEvents, orderMissing},

		{"ship trims", confirmedOrder, ship("  T-2\t", " UPS "), events(OrderShipped{"T-2", "UPS", now}), ok},
		{"ship no tracking", confirmedOrder, ship("", "UPS"), noEvents, invalid("tracking_number_required", "/tracking_number")},
		{"ship blank tracking", confirmedOrder, ship(" \n", "UPS"), noEvents, invalid("tracking_number_required", "/tracking_number")},
		{"ship no carrier", confirmedOrder, ship("T-2", " "), noEvents, invalid("carrier_required", "/carrier")},
		{"ship 100 char tracking", confirmedOrder, ship(maxLenTracking, "UPS"), events(OrderShipped{maxLenTracking, "UPS", now}), ok},
		{"ship 101 char tracking", confirmedOrder, ship(longTracking, "UPS"), noEvents, invalid("tracking_number_too_long", "/tracking_number")},
		{"ship 101 char carrier", confirmedOrder, ship("T-2", longTracking), noEvents, invalid("carrier_too_long", "/carrier")},
		{"ship invalid UTF-8", confirmedOrder, ship("T-\xff", "UPS"), noEvents, invalid("invalid_encoding", "/tracking_number")},
		{"ship bad input on created", createdOrder, ship("", ""), noEvents, invalid("tracking_number_required", "/tracking_number")},
		{"ship bad input on missing", noOrder, ship("", ""), noEvents, orderMissing},

		{"deliver unsigned", shippedOrder, deliver(""), events(OrderDelivered{"", now}), ok},
		{"deliver trims", shippedOrder, deliver(" A. B. "), events(OrderDelivered{"A. B.", now}), ok},
		{"deliver 200 runes", shippedOrder, deliver(strings.Repeat("é", 200)), events(OrderDelivered{strings.Repeat("é", 200), now}), ok},
		{"deliver 201 runes", shippedOrder, deliver(strings.Repeat("é", 201)), noEvents, invalid("signature_too_long", "/signature")},

		{"cancel without reason", createdOrder, cancel(""), events(OrderCancelled{"", now}), ok},
		{"cancel 500 chars", createdOrder, cancel(strings.Repeat("r", 500)), events(OrderCancelled{strings.Repeat("r", 500), now}), ok},
		{"cancel 501 chars", createdOrder, cancel(strings.Repeat("r", 501)), noEvents, invalid("reason_too_long", "/reason")},
		{"cancel long reason on shipped", shippedOrder, cancel(strings.Repeat("r", 501)), noEvents, invalid("reason_too_long", "/reason")},
	}
	runOrderTests(t, tests)
}

// orderCase is one given/when/then case: given the order a history leaves,
// when a command is decided, then these events or this error.
type orderCase struct {
	name  string
	given func() *Order
	when  orderCommand
	then  []Event
	err   wantErr
}

func runOrderTests(t *testing.T, tests []orderCase) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, before := tc.given(), tc.given()
			got, err := tc.when(o)
			checkErr(t, err, tc.err)
			if !reflect.DeepEqual(got, tc.then) {
				t.Errorf("events = %#v\nwant %#v", got, tc.then)
			}
			if !reflect.DeepEqual(o, before) {
				t.Errorf("the decision changed the order:\n%+v\nwas %+v", o, before)
			}
		})
	}
}

// TestOrderEventsAreCopies checks that neither a command's caller nor an
// event's holder can change the other's items through a shared array.
func TestOrderEventsAreCopies(t *testing.T) {
	items := []Item{itemA}
	evs, err := noOrder().Create(customerID, items, now)
	if err != nil {
		t.Fatal(err)
	}
	items[0].Quantity = 99
	if got := evs[0].(OrderCreated).Items[0].Quantity; got != 2 {
		t.Errorf("event quantity = %d after the caller changed its slice, want 2", got)
	}

	o := &Order{}
	o.apply(evs[0])
	evs[0].(OrderCreated).Items[0].Quantity = 7
	if got := o.Items[0].Quantity; got != 2 {
		t.Errorf("order quantity = %d after the event changed, want 2", got)
	}
}

// TestOrderApply checks the state each event leaves, with every time taken
// from the events.
func TestOrderApply(t *testing.T) {
	itemsUpdated := OrderItemsUpdated{Items: []Item{itemB}, UpdatedAt: t0.Add(30 * time.Minute)}
	tests := []struct {
		name    string
		history []Event
		want    Order
	}{
		{"created", []Event{created}, Order{ID: orderID, CustomerID: customerID, Items: []Item{itemA}, Status: Created, Version: 1, CreatedAt: t0, UpdatedAt: t0}},
		{"items updated", []Event{created, itemsUpdated}, Order{ID: orderID, CustomerID: customerID, Items: []Item{itemB}, Status: Created, Version: 2, CreatedAt: t0, UpdatedAt: itemsUpdated.UpdatedAt}},
		{"delivered", []Event{created, itemsUpdated, confirmed, shipped, delivered}, Order{
			ID: orderID, CustomerID: customerID, Items: []Item{itemB}, Status: Delivered, TrackingNumber: "T-1", Carrier: "DHL",
			Signature: "J. Doe", Version: 5, CreatedAt: t0, UpdatedAt: delivered.DeliveredAt,
		}},
		{"cancelled after confirmation", []Event{created, confirmed, cancelled}, Order{
			ID: orderID, CustomerID: customerID, Items: []Item{itemA}, Status: Cancelled, CancelledReason: "changed mind",
			Version: 3, CreatedAt: t0, UpdatedAt: cancelled.CancelledAt,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := order(tc.history...)(); !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("order = %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// TestOrderReplayIsDeterministic replays one history twice through the JSON
// of the store. Both orders must equal each other and the order replayed
// from memory, and carry only times from the events, which they would not
// if apply read a clock or drew an id.
func TestOrderReplayIsDeterministic(t *testing.T) {
	history := []Event{created, OrderItemsUpdated{Items: []Item{itemA, itemB}, UpdatedAt: t0.Add(time.Minute)}, confirmed, shipped, delivered}
	stored := encode(t, OrderType, orderID, history)
	replay := func() *Order {
		o := &Order{}
		for _, e := range stored {
			ev, err := Decode(e)
			if err != nil {
				t.Fatal(err)
			}
			o.apply(ev)
		}
		o.replayed(orderID, stored[len(stored)-1].Sequence)
		return o
	}
	first, second := replay(), replay()
	if !reflect.DeepEqual(first, second) {
		t.Errorf("replays differ:\n%+v\n%+v", first, second)
	}
	if want := order(history...)(); !reflect.DeepEqual(first, want) {
		t.Errorf("replay from the store = %+v\nfrom memory %+v", first, want)
	}
	if !first.CreatedAt.Equal(t0) || !first.UpdatedAt.Equal(delivered.DeliveredAt) {
		t.Errorf("times = %v, %v; want %v, %v from the events", first.CreatedAt, first.UpdatedAt, t0, delivered.DeliveredAt)
	}
}

// encode turns a history into envelopes as the handler would store them.
func encode(t *testing.T, aggType string, id uuid.UUID, history []Event) []store.Event {
	t.Helper()
	envs, err := NewHandler(nil, time.Now).envelopes(aggType, id, 0, history, Meta{}, now)
	if err != nil {
		t.Fatal(err)
	}
	return envs
}
