package aggregate

import (
	"errors"
	"fmt"
	"net/mail"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Email is a validated email address: a bare local@domain, its domain in
// lower case. Its zero value is the empty address, which no constructor
// returns.
type Email struct{ addr string }

// ParseEmail returns the email address in s, trimmed of surrounding space
// and with its domain lower-cased. It returns an ErrInvalid error with code
// "invalid_email" and no Field, since only the caller knows where in its
// input the address was; Customer's decisions set it to "/email".
//
// Only the bare form is accepted: no display name, angle brackets, comments
// or quoted local part, because what is stored must be exactly an address
// that mail can be sent to. The domain must be a host name with a dot, not a
// domain literal, so that "root@localhost" and "a@[10.0.0.1]" are refused.
func ParseEmail(s string) (Email, error) {
	s = strings.TrimSpace(s)
	refuse := func(why string) (Email, error) {
		// The detail never repeats the address: a refusal may be kept as an
		// Idempotency-Key's answer, which must hold no personal data.
		return Email{}, Invalid("invalid_email", "", "not a valid email address: %s", why)
	}
	if s == "" {
		return refuse("it is empty")
	}
	// RFC 5321 bounds a forward path to 256 octets including the brackets.
	if len(s) > 254 {
		return refuse("it is longer than 254 bytes")
	}
	if !utf8.ValidString(s) {
		return refuse("it is not valid UTF-8")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return refuse("want a bare address such as name@example.com")
	}
	at := strings.LastIndexByte(s, '@')
	local, domain := s[:at], s[at+1:]
	if len(local) > 64 {
		return refuse("its local part is longer than 64 bytes")
	}
	if !hostName(domain) {
		return refuse("its domain must be a host name with a dot")
	}
	return Email{addr: local + "@" + strings.ToLower(domain)}, nil
}

// String returns the address.
func (e Email) String() string { return e.addr }

// Key returns the address as uniqueness compares it: lower-cased whole,
// local part included (see emailKey).
func (e Email) Key() string { return emailKey(e.addr) }

// hostName reports whether domain is at least two dot-separated labels of
// letters, digits and inner hyphens. Letters may be non-ASCII: internationalised
// domains are stored as typed, not in punycode.
func hostName(domain string) bool {
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if r != '-' && !unicode.IsLetter(r) && !unicode.IsDigit(r) {
				return false
			}
		}
	}
	return true
}

// PhoneNumber is a validated phone number in E.164 form, such as
// "+14155552671". Its zero value is the empty number, which no constructor
// returns.
type PhoneNumber struct{ e164 string }

var e164 = regexp.MustCompile(`^\+[1-9][0-9]{7,14}$`)

// ParsePhone returns the phone number in s, trimmed of surrounding space. It
// returns an ErrInvalid error with code "invalid_phone" and no Field (see
// ParseEmail) unless s is strict E.164: a plus and 8 to 15 digits, the first
// not 0. Separators such as spaces, dashes and brackets are refused rather
// than stripped, so that a client learns the one form it will read back.
func ParsePhone(s string) (PhoneNumber, error) {
	s = strings.TrimSpace(s)
	if !e164.MatchString(s) {
		return PhoneNumber{}, Invalid("invalid_phone", "",
			"not an E.164 phone number: want a plus and 8 to 15 digits, such as +14155552671")
	}
	return PhoneNumber{e164: s}, nil
}

// String returns the number in E.164 form.
func (p PhoneNumber) String() string { return p.e164 }

// The checks of a command's input, pure functions of it. The decisions
// call them before they look at the state; the API calls them too, before
// anything is loaded, so that a malformed command is refused as such
// whether or not its aggregate exists (input, then existence, then state).

// CheckItems returns a copy of items, so that a caller changing its slice
// later cannot change the event, or the first ErrInvalid error found: items
// must be 1 to 100 lines ("items_required", "too_many_items", Field
// "/items"), each with a product id ("invalid_product_id") used once
// ("duplicate_product", Field "/items/N/product_id") and a quantity from 1
// to 10000 ("invalid_quantity", Field "/items/N/quantity").
func CheckItems(items []Item) ([]Item, error) {
	if len(items) == 0 {
		return nil, Invalid("items_required", "/items", "an order needs at least one item")
	}
	if len(items) > maxItems {
		return nil, Invalid("too_many_items", "/items", "an order has at most %d items, got %d", maxItems, len(items))
	}
	seen := make(map[uuid.UUID]bool, len(items))
	for i, it := range items {
		if it.ProductID == uuid.Nil {
			return nil, Invalid("invalid_product_id", fmt.Sprintf("/items/%d/product_id", i), "item %d has no product_id", i)
		}
		if seen[it.ProductID] {
			return nil, Invalid("duplicate_product", fmt.Sprintf("/items/%d/product_id", i),
				"product %s is listed twice; give one line with the total quantity", it.ProductID)
		}
		seen[it.ProductID] = true
		if it.Quantity < 1 || it.Quantity > maxQuantity {
			return nil, Invalid("invalid_quantity", fmt.Sprintf("/items/%d/quantity", i),
				"item %d has quantity %d, want 1 to %d", i, it.Quantity, maxQuantity)
		}
	}
	return slices.Clone(items), nil
}

// CheckShipment returns the tracking number and the carrier of a shipment,
// trimmed, or an ErrInvalid error: both are required and at most 100
// characters, the tracking number checked first.
func CheckShipment(trackingNumber, carrier string) (string, string, error) {
	trackingNumber, err := trackingNumberField.parse(trackingNumber)
	if err != nil {
		return "", "", err
	}
	carrier, err = carrierField.parse(carrier)
	if err != nil {
		return "", "", err
	}
	return trackingNumber, carrier, nil
}

// CheckSignature returns a delivery's signature, trimmed, or an ErrInvalid
// error: it is optional and at most 200 characters.
func CheckSignature(signature string) (string, error) { return signatureField.parse(signature) }

// CheckReason returns a cancellation's reason, trimmed, or an ErrInvalid
// error: it is optional and at most 500 characters.
func CheckReason(reason string) (string, error) { return reasonField.parse(reason) }

// CheckEmail is ParseEmail for a command's "email" field: its error has
// Field "/email".
func CheckEmail(email string) (Email, error) {
	addr, err := ParseEmail(email)
	return addr, atField(err, "/email")
}

// CheckPhone is ParsePhone for a command's "phone" field: its error has
// Field "/phone".
func CheckPhone(phone string) (PhoneNumber, error) {
	number, err := ParsePhone(phone)
	return number, atField(err, "/phone")
}

// textField describes a free-text command field: where it sits in the
// command's body, the codes of its refusals and its length limit. Keeping
// the codes spelled out here, rather than derived from the field name, keeps
// them greppable.
type textField struct {
	field    string // JSON pointer
	required string // code when blank; empty for an optional field
	tooLong  string // code when longer than max
	max      int    // in characters (runes), not bytes
}

// parse returns s trimmed of surrounding space, or an ErrInvalid error.
// Invalid UTF-8 is refused because JSON would replace it on the way to the
// store, so the event replayed would differ from the event decided.
func (f textField) parse(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", Invalid("invalid_encoding", f.field, "%s is not valid UTF-8", f.field)
	}
	s = strings.TrimSpace(s)
	if s == "" && f.required != "" {
		return "", Invalid(f.required, f.field, "%s is required", f.field)
	}
	if n := utf8.RuneCountInString(s); n > f.max {
		return "", Invalid(f.tooLong, f.field, "%s is %d characters long, at most %d are allowed", f.field, n, f.max)
	}
	return s, nil
}

// truncate shortens s for an error detail, so that a huge input is not
// echoed back whole.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// atField returns err with its Field set to field when it is a domain error
// without one. Value objects do not know where in a command they came from;
// the decision that parses them does.
func atField(err error, field string) error {
	var e *Error
	if errors.As(err, &e) && e.Field == "" {
		c := *e
		c.Field = field
		return &c
	}
	return err
}
