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

// Error is a refusal with a stable, machine-readable code (for example
// "order_already_confirmed") and, for invalid input, the offending field as
// a JSON pointer into the command's body (for example "/items/0/quantity").
// It is the one error type from the domain to the API's problem table: the
// domain raises it with one of the kinds above; the API raises it too, with
// kinds of its own that only HTTP knows (a route that does not exist, a
// body too large), which the domain never sees.
type Error struct {
	Kind   error  // ErrNotFound, ErrInvalid, ErrRejected, ErrExists or ErrStale, or a caller's own kind
	Code   string // stable, snake_case; empty: the code the caller's table gives Kind
	Field  string // JSON pointer, or the name of a header or parameter; empty when no single field is at fault
	Detail string // human-readable, safe to show to the client
}

func (e *Error) Error() string {
	s := e.Kind.Error()
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Field != "" {
		s += " (" + e.Field + ")"
	}
	return s + ": " + e.Detail
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
