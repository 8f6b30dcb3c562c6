package aggregate

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Status is where an order is in its life cycle:
//
//	created ─► confirmed ─► shipped ─► delivered
//	   │           │
//	   └───────────┴─► cancelled
//
// Delivered and cancelled are terminal.
type Status string

// The statuses of an order.
const (
	Created   Status = "created"
	Confirmed Status = "confirmed"
	Shipped   Status = "shipped"
	Delivered Status = "delivered"
	Cancelled Status = "cancelled"
)

// Limits on order input. They bound the size of one event, so that a single
// request cannot write an unbounded payload into the log forever.
const (
	maxItems    = 100
	maxQuantity = 10000
)

var (
	trackingNumberField = textField{field: "/tracking_number", required: "tracking_number_required", tooLong: "tracking_number_too_long", max: 100}
	carrierField        = textField{field: "/carrier", required: "carrier_required", tooLong: "carrier_too_long", max: 100}
	signatureField      = textField{field: "/signature", tooLong: "signature_too_long", max: 200}
	reasonField         = textField{field: "/reason", tooLong: "reason_too_long", max: 500}
)

// Order is an order as its events leave it. Its decision methods check a
// command against it and return the events the command causes; they change
// nothing. Only apply, during replay, changes it.
//
// Every decision checks, in this order: that the order exists (ErrNotFound,
// or ErrExists for Create), that the command's input is valid (ErrInvalid),
// then that the order's status allows it (ErrRejected). Input comes before
// status so that the answer to a malformed command does not depend on state
// the client may not know, and a client fixing its input sees every 400
// before any 409.
//
// Decisions stamp events with now in UTC: a time in another zone or with a
// monotonic reading would not survive JSON unchanged, and the order replayed
// from the store must equal the order that decided.
type Order struct {
	ID              uuid.UUID
	CustomerID      uuid.UUID
	Items           []Item
	Status          Status
	TrackingNumber  string
	Carrier         string
	CancelledReason string
	Signature       string
	Version         int64 // 0 when the order has no events
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// orderNotFound is the error of every command on an order without events.
func orderNotFound(id uuid.UUID) error {
	detail := fmt.Sprintf("order %s does not exist", id)
	if id == uuid.Nil {
		detail = "no such order"
	}
	return &Error{Kind: ErrNotFound, Code: "order_not_found", Detail: detail}
}

// found returns orderNotFound unless the order has events of its own. The
// handler replays an id used by another aggregate type as a zero ID with
// that stream's version, so a version alone is not enough.
func (o *Order) found() error {
	if o.Version == 0 || o.ID == uuid.Nil {
		return orderNotFound(o.ID)
	}
	return nil
}

// invalidTransition is the refusal of a status change the life cycle has no
// arrow for.
func (o *Order) invalidTransition(to Status) error {
	return rejected("invalid_transition", "order %s cannot go from %s to %s", o.ID, o.Status, to)
}

// Create records OrderCreated for customerID with a copy of items. It
// returns an ErrInvalid error for a nil customer id or invalid items (see
// CheckItems). A create is decided on a zero Order and appended at version
// 0, so an id that already has events (of any aggregate type) is refused by
// the store, as the handler's ErrExists ("order_exists").
func (o *Order) Create(customerID uuid.UUID, items []Item, now time.Time) ([]Event, error) {
	if customerID == uuid.Nil {
		return nil, Invalid("invalid_customer_id", "/customer_id", "customer_id is required")
	}
	items, err := CheckItems(items)
	if err != nil {
		return nil, err
	}
	return []Event{OrderCreated{CustomerID: customerID, Items: items, CreatedAt: now.UTC()}}, nil
}

// UpdateItems records OrderItemsUpdated, replacing the order's items with a
// copy of items. Invalid items are an ErrInvalid error (see CheckItems). It returns an ErrRejected
// error ("order_not_editable") unless the order is created: once confirmed,
// what was confirmed is what ships.
//
// Items equal to the current ones cause no event, so a retried update is
// harmless and does not bump the version.
func (o *Order) UpdateItems(items []Item, now time.Time) ([]Event, error) {
	if err := o.found(); err != nil {
		return nil, err
	}
	items, err := CheckItems(items)
	if err != nil {
		return nil, err
	}
	if o.Status != Created {
		return nil, rejected("order_not_editable", "order %s is %s; items can change only while it is %s", o.ID, o.Status, Created)
	}
	if slices.Equal(items, o.Items) {
		return nil, nil
	}
	return []Event{OrderItemsUpdated{Items: items, UpdatedAt: now.UTC()}}, nil
}

// Confirm records OrderConfirmed. It returns an ErrRejected error,
// "order_already_confirmed" for a confirmed order and "invalid_transition"
// for any status but created.
func (o *Order) Confirm(now time.Time) ([]Event, error) {
	if err := o.found(); err != nil {
		return nil, err
	}
	switch o.Status {
	case Created:
		return []Event{OrderConfirmed{ConfirmedAt: now.UTC()}}, nil
	case Confirmed:
		return nil, rejected("order_already_confirmed", "order %s is already confirmed", o.ID)
	}
	return nil, o.invalidTransition(Confirmed)
}

// Ship records OrderShipped with the trimmed tracking number and carrier,
// both required and at most 100 characters (ErrInvalid otherwise). It
// returns an ErrRejected error ("invalid_transition") unless the order is
// confirmed.
func (o *Order) Ship(trackingNumber, carrier string, now time.Time) ([]Event, error) {
	if err := o.found(); err != nil {
		return nil, err
	}
	trackingNumber, carrier, err := CheckShipment(trackingNumber, carrier)
	if err != nil {
		return nil, err
	}
	if o.Status != Confirmed {
		return nil, o.invalidTransition(Shipped)
	}
	return []Event{OrderShipped{TrackingNumber: trackingNumber, Carrier: carrier, ShippedAt: now.UTC()}}, nil
}

// Deliver records OrderDelivered with the trimmed signature, which is
// optional and at most 200 characters (ErrInvalid otherwise). It returns an
// ErrRejected error ("invalid_transition") unless the order is shipped.
func (o *Order) Deliver(signature string, now time.Time) ([]Event, error) {
	if err := o.found(); err != nil {
		return nil, err
	}
	signature, err := CheckSignature(signature)
	if err != nil {
		return nil, err
	}
	if o.Status != Shipped {
		return nil, o.invalidTransition(Delivered)
	}
	return []Event{OrderDelivered{Signature: signature, DeliveredAt: now.UTC()}}, nil
}

// Cancel records OrderCancelled with the trimmed reason, which is optional
// and at most 500 characters (ErrInvalid otherwise). Only created and
// confirmed orders can be cancelled: goods on their way cannot be called
// back by an event. It returns an ErrRejected error,
// "order_already_cancelled" for a cancelled order and "invalid_transition"
// for a shipped or delivered one.
func (o *Order) Cancel(reason string, now time.Time) ([]Event, error) {
	if err := o.found(); err != nil {
		return nil, err
	}
	reason, err := CheckReason(reason)
	if err != nil {
		return nil, err
	}
	switch o.Status {
	case Created, Confirmed:
		return []Event{OrderCancelled{Reason: reason, CancelledAt: now.UTC()}}, nil
	case Cancelled:
		return nil, rejected("order_already_cancelled", "order %s is already cancelled", o.ID)
	}
	return nil, o.invalidTransition(Cancelled)
}

// apply changes the order by one event. It never fails and reads no clock:
// every time comes from the event, so replaying a history always gives the
// same order. Validation belongs to the decisions that raised the events;
// history is accepted as it is. Events of other aggregates are ignored.
func (o *Order) apply(e Event) {
	switch e := e.(type) {
	case OrderCreated:
		o.CustomerID, o.Items, o.Status = e.CustomerID, slices.Clone(e.Items), Created
		o.CreatedAt, o.UpdatedAt = e.CreatedAt, e.CreatedAt
	case OrderItemsUpdated:
		o.Items, o.UpdatedAt = slices.Clone(e.Items), e.UpdatedAt
	case OrderConfirmed:
		o.Status, o.UpdatedAt = Confirmed, e.ConfirmedAt
	case OrderShipped:
		o.Status, o.TrackingNumber, o.Carrier, o.UpdatedAt = Shipped, e.TrackingNumber, e.Carrier, e.ShippedAt
	case OrderDelivered:
		o.Status, o.Signature, o.UpdatedAt = Delivered, e.Signature, e.DeliveredAt
	case OrderCancelled:
		o.Status, o.CancelledReason, o.UpdatedAt = Cancelled, e.Reason, e.CancelledAt
	}
}

// replayed records the id and the version the order's history reached.
func (o *Order) replayed(id uuid.UUID, version int64) {
	o.ID, o.Version = id, version
}
