package readmodel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/pii"
	"github.com/orderd/orderd/internal/store"
)

// Customer is the read model of one customer, served by GET /customers/{id}.
//
// Its personal fields are kept as the events carry them: ciphertext
// (pii1:…) once encryption is on, pii.Erased once the customer is erased;
// Queries decrypt them (Open).
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
	case aggregate.CustomerErased:
		c.Email, c.FirstName, c.LastName, c.Phone = pii.Erased, pii.Erased, pii.Erased, pii.Erased
		c.UpdatedAt = ev.ErasedAt.UTC()
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

// Erased reports whether the customer's personal data was erased.
func (c Customer) Erased() bool { return c.Email == pii.Erased }

// Open returns c with its personal fields decrypted by keys, or pii.Erased
// where the customer's key is destroyed. A nil keys, or fields in
// plaintext, leave them as they are.
func (c Customer) Open(ctx context.Context, keys aggregate.Keys) (Customer, error) {
	if keys == nil || !(pii.IsSealed(c.Email) || pii.IsSealed(c.FirstName) || pii.IsSealed(c.LastName) || pii.IsSealed(c.Phone)) {
		return c, nil
	}
	key, err := keys.Existing(ctx, c.ID)
	erased := errors.Is(err, pii.ErrErased) || errors.Is(err, store.ErrKeyNotFound)
	if err != nil && !erased {
		return c, fmt.Errorf("readmodel: key of customer %s: %w", c.ID, err)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{pii.FieldEmail, &c.Email}, {pii.FieldFirstName, &c.FirstName}, {pii.FieldLastName, &c.LastName}, {pii.FieldPhone, &c.Phone}} {
		if !pii.IsSealed(*f.v) {
			continue
		}
		if erased {
			*f.v = pii.Erased
			continue
		}
		if *f.v, err = key.Open(f.name, *f.v); err != nil {
			return c, fmt.Errorf("readmodel: customer %s: %w", c.ID, err)
		}
	}
	return c, nil
}
