package aggregate

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/pii"
)

var (
	firstNameField = textField{field: "/first_name", required: "first_name_required", tooLong: "first_name_too_long", max: 100}
	lastNameField  = textField{field: "/last_name", required: "last_name_required", tooLong: "last_name_too_long", max: 100}
)

// Customer is a customer as its events leave it. Like Order, its decisions
// check existence first (ErrNotFound, or ErrExists for Register), then the
// input (ErrInvalid), and change nothing; apply changes it during replay.
//
// Email is stored as ParseEmail returns it and Phone in E.164 form, empty
// when the customer gave none.
type Customer struct {
	ID        uuid.UUID
	Email     string
	FirstName string
	LastName  string
	Phone     string
	// Erased: the customer's personal data was erased (CustomerErased);
	// its fields then read pii.Erased.
	Erased       bool
	Version      int64 // 0 when the customer has no events
	RegisteredAt time.Time
	UpdatedAt    time.Time
}

// customerNotFound is the error of every command on a customer without
// events.
func customerNotFound(id uuid.UUID) error {
	detail := fmt.Sprintf("customer %s does not exist", id)
	if id == uuid.Nil {
		detail = "no such customer"
	}
	return &Error{Kind: ErrNotFound, Code: "customer_not_found", Detail: detail}
}

// found returns customerNotFound unless the customer has events of its own;
// see Order.found.
func (c *Customer) found() error {
	if c.Version == 0 || c.ID == uuid.Nil {
		return customerNotFound(c.ID)
	}
	return nil
}

// Register records CustomerRegistered. Email is required (see ParseEmail),
// phone optional (see ParsePhone), first and last name required and at most
// 100 characters after trimming; otherwise it returns an ErrInvalid error
// whose Field names the first bad one. It returns an ErrExists error
// ("customer_exists") when the id already has events, even of another
// aggregate type.
func (c *Customer) Register(email, firstName, lastName, phone string, now time.Time) ([]Event, error) {
	if c.Version > 0 {
		return nil, &Error{Kind: ErrExists, Code: "customer_exists", Detail: "the customer id is already in use"}
	}
	addr, err := CheckEmail(email)
	if err != nil {
		return nil, err
	}
	firstName, err = firstNameField.parse(firstName)
	if err != nil {
		return nil, err
	}
	lastName, err = lastNameField.parse(lastName)
	if err != nil {
		return nil, err
	}
	var number PhoneNumber
	if strings.TrimSpace(phone) != "" { // a blank phone is no phone
		if number, err = CheckPhone(phone); err != nil {
			return nil, err
		}
	}
	return []Event{CustomerRegistered{
		Email:        addr.String(),
		FirstName:    firstName,
		LastName:     lastName,
		Phone:        number.String(),
		RegisteredAt: now.UTC(),
	}}, nil
}

// ChangeEmail records CustomerEmailChanged. It returns an ErrInvalid error
// ("invalid_email", Field "/email") for an invalid address.
//
// An address equal to the current one, after normalisation, causes no event
// rather than a refusal: the customer ends in the state the client asked for,
// so a retried request succeeds, and the log gains no fact that is not one.
func (c *Customer) ChangeEmail(email string, now time.Time) ([]Event, error) {
	if err := c.found(); err != nil {
		return nil, err
	}
	if err := c.notErased(); err != nil {
		return nil, err
	}
	addr, err := CheckEmail(email)
	if err != nil {
		return nil, err
	}
	if addr.String() == c.Email {
		return nil, nil
	}
	return []Event{CustomerEmailChanged{Email: addr.String(), ChangedAt: now.UTC()}}, nil
}

// ChangePhone records CustomerPhoneChanged. It returns an ErrInvalid error
// ("invalid_phone", Field "/phone") unless phone is E.164; an empty phone is
// invalid too, since CustomerPhoneChanged always carries a number. As with
// ChangeEmail, the current number causes no event.
func (c *Customer) ChangePhone(phone string, now time.Time) ([]Event, error) {
	if err := c.found(); err != nil {
		return nil, err
	}
	if err := c.notErased(); err != nil {
		return nil, err
	}
	number, err := CheckPhone(phone)
	if err != nil {
		return nil, err
	}
	if number.String() == c.Phone {
		return nil, nil
	}
	return []Event{CustomerPhoneChanged{Phone: number.String(), ChangedAt: now.UTC()}}, nil
}

// notErased refuses a change of an erased customer's personal data
// (ErrRejected, "customer_erased"): an erased person is not brought back.
func (c *Customer) notErased() error {
	if c.Erased {
		return &Error{Kind: ErrRejected, Code: "customer_erased",
			Detail: fmt.Sprintf("customer %s was erased; register a new customer", c.ID)}
	}
	return nil
}

// Erase records CustomerErased. Erasing an erased customer causes no event
// (the handler destroys the key again all the same, so that a retry after
// a failure completes the erasure).
func (c *Customer) Erase(now time.Time) ([]Event, error) {
	if err := c.found(); err != nil {
		return nil, err
	}
	if c.Erased {
		return nil, nil
	}
	return []Event{CustomerErased{ErasedAt: now.UTC()}}, nil
}

// apply changes the customer by one event. Like Order.apply it never fails
// and takes every time from the event.
func (c *Customer) apply(e Event) {
	switch e := e.(type) {
	case CustomerRegistered:
		c.Email, c.FirstName, c.LastName, c.Phone = e.Email, e.FirstName, e.LastName, e.Phone
		c.RegisteredAt, c.UpdatedAt = e.RegisteredAt, e.RegisteredAt
	case CustomerEmailChanged:
		c.Email, c.UpdatedAt = e.Email, e.ChangedAt
	case CustomerPhoneChanged:
		c.Phone, c.UpdatedAt = e.Phone, e.ChangedAt
	case CustomerErased:
		c.Email, c.FirstName, c.LastName, c.Phone = pii.Erased, pii.Erased, pii.Erased, pii.Erased
		c.Erased, c.UpdatedAt = true, e.ErasedAt
	}
}

// replayed records the id and the version the customer's history reached.
func (c *Customer) replayed(id uuid.UUID, version int64) {
	c.ID, c.Version = id, version
}
