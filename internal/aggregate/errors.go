package aggregate

import (
	"errors"
	"fmt"
)

// The kinds of domain error. Every error the domain returns wraps exactly one
// of them, so callers sort errors with errors.Is and never by message.
var (
	ErrNotFound = errors.New("not found")
	ErrInvalid  = errors.New("invalid")                // the command itself is malformed
	ErrRejected = errors.New("rejected")               // not allowed in the current state
	ErrExists   = errors.New("already exists")         // a create for an id that has events
	ErrStale    = errors.New("stale expected version") // If-Match did not match
)

// Error is a domain error with a stable, machine-readable code (for example
// "order_already_confirmed") and, for invalid input, the offending field as
// a JSON pointer into the command's body (for example "/items/0/quantity").
type Error struct {
	Kind   error  // one of ErrNotFound, ErrInvalid, ErrRejected, ErrExists, ErrStale
	Code   string // stable, snake_case
	Field  string // JSON pointer; empty when no single field is at fault
	Detail string // human-readable, safe to show to the client
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s): %s", e.Kind, e.Code, e.Field, e.Detail)
	}
	return fmt.Sprintf("%s: %s: %s", e.Kind, e.Code, e.Detail)
}

// Unwrap makes errors.Is(err, ErrInvalid) and friends work.
func (e *Error) Unwrap() error { return e.Kind }

// Invalid returns an ErrInvalid error. The api package uses it too, for input
// refused before it reaches an aggregate, such as a body that is not JSON.
func Invalid(code, field, format string, args ...any) error {
	return &Error{Kind: ErrInvalid, Code: code, Field: field, Detail: fmt.Sprintf(format, args...)}
}

func rejected(code, format string, args ...any) error {
	return &Error{Kind: ErrRejected, Code: code, Detail: fmt.Sprintf(format, args...)}
}
