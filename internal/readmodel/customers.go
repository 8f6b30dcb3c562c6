package readmodel

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// Customer is the read model of one customer, served by GET /customers/{id}.
type Customer struct {
	ID           uuid.UUID
	Email        string
	FirstName    string
	LastName     string
	Phone        string // E.164, empty when none was given
	Version      int64  // sequence of the last applied event; 0 for no row
	RegisteredAt time.Time
	UpdatedAt    time.Time
}

// Apply projects the stored customer event e onto c, which is the zero
// Customer when the customer has no row yet. It reports whether c changed
// and follows the same rules as Order.Apply: an event at or below c.Version
// changes nothing, one beyond c.Version+1 is an error wrapping ErrGap, and
// on any error c is left unchanged.
func (c *Customer) Apply(e store.Event) (bool, error) {
	if err := checkTarget(e, aggregate.CustomerType, c.ID, c.Version); err != nil {
		return false, err
	}
	if next, err := admit(e, c.Version); !next || err != nil {
		return false, err
	}
	ev, err := aggregate.Decode(e)
	if err != nil {
		return false, fmt.Errorf("readmodel: %w", err)
	}
	_, creates := ev.(aggregate.CustomerRegistered)
	if creates != (c.Version == 0) {
		return false, fmt.Errorf("readmodel: customer %s: %s at sequence %d: only CustomerRegistered starts a customer", e.AggregateID, e.Type, e.Sequence)
	}
	switch ev := ev.(type) {
	case aggregate.CustomerRegistered:
		at := ev.RegisteredAt.UTC()
		*c = Customer{
			ID:           e.AggregateID,
			Email:        ev.Email,
			FirstName:    ev.FirstName,
			LastName:     ev.LastName,
			Phone:        ev.Phone,
			RegisteredAt: at,
			UpdatedAt:    at,
		}
	case aggregate.CustomerEmailChanged:
		c.Email, c.UpdatedAt = ev.Email, ev.ChangedAt.UTC()
	case aggregate.CustomerPhoneChanged:
		c.Phone, c.UpdatedAt = ev.Phone, ev.ChangedAt.UTC()
	default:
		return false, fmt.Errorf("readmodel: customer %s: %s is not a customer event", e.AggregateID, e.Type)
	}
	c.Version = e.Sequence
	return true, nil
}

// CustomerOf returns the read model of the aggregate's state c, as OrderOf
// does for orders.
func CustomerOf(c aggregate.Customer) Customer {
	return Customer{
		ID: c.ID, Email: c.Email, FirstName: c.FirstName, LastName: c.LastName, Phone: c.Phone,
		Version: c.Version, RegisteredAt: c.RegisteredAt.UTC(), UpdatedAt: c.UpdatedAt.UTC(),
	}
}
