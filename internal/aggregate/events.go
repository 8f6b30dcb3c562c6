package aggregate

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// Aggregate type names, as stored in every envelope. EmailClaimType is in
// emailclaim.go.
const (
	OrderType    = "Order"
	CustomerType = "Customer"
)

// Event is a domain event: an immutable fact, named in the past tense.
type Event interface {
	// EventType is the stable name stored in the envelope.
	EventType() string
}

// Item is one line of an order.
type Item struct {
	ProductID uuid.UUID `json:"product_id"`
	Quantity  int       `json:"quantity"`
}

// OrderCreated starts an order. Schema v2 added CreatedAt; v1 payloads (the
// seed tutorial's shape, {customer_id, items}) are upcast on read.
type OrderCreated struct {
	CustomerID uuid.UUID `json:"customer_id"`
	Items      []Item    `json:"items"`
	CreatedAt  time.Time `json:"created_at"`
}

// OrderItemsUpdated replaces the items of a created order.
type OrderItemsUpdated struct {
	Items     []Item    `json:"items"`
	UpdatedAt time.Time `json:"updated_at"`
}

// OrderConfirmed moves an order from created to confirmed.
type OrderConfirmed struct {
	ConfirmedAt time.Time `json:"confirmed_at"`
}

// OrderShipped moves a confirmed order to shipped.
type OrderShipped struct {
	TrackingNumber string    `json:"tracking_number"`
	Carrier        string    `json:"carrier"`
	ShippedAt      time.Time `json:"shipped_at"`
}

// OrderDelivered moves a shipped order to delivered, a terminal state.
type OrderDelivered struct {
	Signature   string    `json:"signature,omitempty"`
	DeliveredAt time.Time `json:"delivered_at"`
}

// OrderCancelled ends a created or confirmed order.
type OrderCancelled struct {
	Reason      string    `json:"reason,omitempty"`
	CancelledAt time.Time `json:"cancelled_at"`
}

// CustomerRegistered starts a customer.
type CustomerRegistered struct {
	Email        string    `json:"email"`
	FirstName    string    `json:"first_name"`
	LastName     string    `json:"last_name"`
	Phone        string    `json:"phone,omitempty"` // E.164
	RegisteredAt time.Time `json:"registered_at"`
}

// CustomerEmailChanged records a new email address.
type CustomerEmailChanged struct {
	Email     string    `json:"email"`
	ChangedAt time.Time `json:"changed_at"`
}

// CustomerPhoneChanged records a new phone number (E.164).
type CustomerPhoneChanged struct {
	Phone     string    `json:"phone"`
	ChangedAt time.Time `json:"changed_at"`
}

// CustomerErased records that the customer's personal data was erased: its
// data key is destroyed once this event is appended, so every copy of its
// personal fields (in the log, snapshots, backups, Kafka records) is
// unreadable from then on, and reads show them as pii.Erased. It carries
// no personal data itself.
type CustomerErased struct {
	ErasedAt time.Time `json:"erased_at"`
}

// EmailClaimed reserves an address (its key) for a customer. CustomerVersion
// is the customer's version when it claimed: the customer's event that
// takes the address is appended at that version.
type EmailClaimed struct {
	Email           string    `json:"email"`
	CustomerID      uuid.UUID `json:"customer_id"`
	CustomerVersion int64     `json:"customer_version"`
	ClaimedAt       time.Time `json:"claimed_at"`
}

// EmailReleased frees an address its customer moved away from.
type EmailReleased struct {
	Email      string    `json:"email"`
	CustomerID uuid.UUID `json:"customer_id"`
	ReleasedAt time.Time `json:"released_at"`
}

func (OrderCreated) EventType() string         { return "OrderCreated" }
func (OrderItemsUpdated) EventType() string    { return "OrderItemsUpdated" }
func (OrderConfirmed) EventType() string       { return "OrderConfirmed" }
func (OrderShipped) EventType() string         { return "OrderShipped" }
func (OrderDelivered) EventType() string       { return "OrderDelivered" }
func (OrderCancelled) EventType() string       { return "OrderCancelled" }
func (CustomerRegistered) EventType() string   { return "CustomerRegistered" }
func (CustomerEmailChanged) EventType() string { return "CustomerEmailChanged" }
func (CustomerPhoneChanged) EventType() string { return "CustomerPhoneChanged" }
func (CustomerErased) EventType() string       { return "CustomerErased" }
func (EmailClaimed) EventType() string         { return "EmailClaimed" }
func (EmailReleased) EventType() string        { return "EmailReleased" }

// SchemaVersion returns the current schema version of an event type, the one
// written by this code and produced by upcasting on every read.
func SchemaVersion(eventType string) int {
	if eventType == "OrderCreated" {
		return 2
	}
	return 1
}

// Decode turns a stored envelope, already upcast to the current schema, into
// its domain event.
func Decode(e store.Event) (Event, error) {
	if want := SchemaVersion(e.Type); e.SchemaVersion != want {
		return nil, fmt.Errorf("aggregate: event %s is %s v%d, want v%d (not upcast?)", e.ID, e.Type, e.SchemaVersion, want)
	}
	var ev Event
	var err error
	switch e.Type {
	case "OrderCreated":
		ev, err = decodeAs[OrderCreated](e.Data)
	case "OrderItemsUpdated":
		ev, err = decodeAs[OrderItemsUpdated](e.Data)
	case "OrderConfirmed":
		ev, err = decodeAs[OrderConfirmed](e.Data)
	case "OrderShipped":
		ev, err = decodeAs[OrderShipped](e.Data)
	case "OrderDelivered":
		ev, err = decodeAs[OrderDelivered](e.Data)
	case "OrderCancelled":
		ev, err = decodeAs[OrderCancelled](e.Data)
	case "CustomerRegistered":
		ev, err = decodeAs[CustomerRegistered](e.Data)
	case "CustomerEmailChanged":
		ev, err = decodeAs[CustomerEmailChanged](e.Data)
	case "CustomerPhoneChanged":
		ev, err = decodeAs[CustomerPhoneChanged](e.Data)
	case "CustomerErased":
		ev, err = decodeAs[CustomerErased](e.Data)
	case "EmailClaimed":
		ev, err = decodeAs[EmailClaimed](e.Data)
	case "EmailReleased":
		ev, err = decodeAs[EmailReleased](e.Data)
	default:
		return nil, fmt.Errorf("aggregate: event %s has unknown type %q", e.ID, e.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate: decode %s %s: %w", e.Type, e.ID, err)
	}
	return ev, nil
}

func decodeAs[T Event](data json.RawMessage) (Event, error) {
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	return v, nil
}
