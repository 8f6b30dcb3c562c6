package aggregate

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseEmail(t *testing.T) {
	local64 := strings.Repeat("l", 64)
	long := local64 + "@" + strings.Repeat("d", 63) + "." + strings.Repeat("d", 63) + "." + strings.Repeat("d", 58) + ".com" // 255 bytes
	if len(long) != 255 {
		t.Fatalf("len(long) = %d, want 255", len(long))
	}
	tests := []struct {
		in   string
		want string // empty when in is refused
	}{
		{"ann@example.com", "ann@example.com"},
		{"  ann@example.com\t", "ann@example.com"},
		{"Ann.Lee+tag@Example.COM", "Ann.Lee+tag@example.com"}, // local parts are case-sensitive
		{"a@sub.example.co.uk", "a@sub.example.co.uk"},
		{"a@xn--bcher-kva.example", "a@xn--bcher-kva.example"},
		{"jörg@bücher.de", "jörg@bücher.de"},
		{"o'brien@example.ie", "o'brien@example.ie"},
		{local64 + "@example.com", local64 + "@example.com"},
		{long[:254], long[:254]},

		{"", ""},
		{"   ", ""},
		{"plain", ""},
		{"@example.com", ""},
		{"ann@", ""},
		{"ann@@example.com", ""},
		{"ann@localhost", ""},            // no dot
		{"ann@example.com.", ""},         // empty label
		{"ann@.example.com", ""},         // empty label
		{"ann@example..com", ""},         // empty label
		{"ann@-example.com", ""},         // hyphen at a label's edge
		{"ann@exa_mple.com", ""},         // not a host name
		{"ann@[192.168.0.1]", ""},        // domain literal
		{"Ann <ann@example.com>", ""},    // display name
		{"<ann@example.com>", ""},        // angle brackets
		{"ann@example.com (Ann)", ""},    // comment
		{`"ann lee"@example.com`, ""},    // quoted local part
		{"ann lee@example.com", ""},      // space
		{"ann@example.com, b@b.com", ""}, // a list
		{"ann.@example.com", ""},
		{"ann\xff@example.com", ""},
		{"l" + local64 + "@example.com", ""}, // local part over 64
		{long, ""},                           // over 254
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseEmail(tc.in)
			if tc.want == "" {
				checkErr(t, err, invalid("invalid_email", ""))
				if got != (Email{}) {
					t.Errorf("refused email = %q, want the zero Email", got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Errorf("ParseEmail(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParsePhone(t *testing.T) {
	tests := []struct {
		in   string
		want string // empty when in is refused
	}{
		{"+14155552671", "+14155552671"},
		{"+442071838750", "+442071838750"},
		{" +14155552671 ", "+14155552671"},
		{"+12345678", "+12345678"},               // 8 digits
		{"+123456789012345", "+123456789012345"}, // 15 digits

		{"", ""},
		{"14155552671", ""},       // no plus
		{"+04155552671", ""},      // leading zero
		{"+1234567", ""},          // 7 digits
		{"+1234567890123456", ""}, // 16 digits
		{"+1 415 555 2671", ""},
		{"+1-415-555-2671", ""},
		{"+1 (415) 5552671", ""},
		{"++14155552671", ""},
		{"+1415555267a", ""},
		{"+١٤١٥٥٥٥٢٦٧١", ""}, // digits, but not ASCII ones
		{"+14155552671\n+14155552672", ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePhone(tc.in)
			if tc.want == "" {
				checkErr(t, err, invalid("invalid_phone", ""))
				if got != (PhoneNumber{}) {
					t.Errorf("refused phone = %q, want the zero PhoneNumber", got)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Errorf("ParsePhone(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// TestErrorDetailIsBounded checks that a huge input is not echoed back whole
// in an error a client will read.
func TestErrorDetailIsBounded(t *testing.T) {
	huge := strings.Repeat("x", 1<<20)
	for name, err := range map[string]error{
		"email": second(ParseEmail(huge)),
		"phone": second(ParsePhone(huge)),
	} {
		var e *Error
		if !errors.As(err, &e) || len(e.Detail) > 200 {
			t.Errorf("%s: err = %.300v, want an *Error with a detail of at most 200 bytes", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestAtField(t *testing.T) {
	err := atField(Invalid("invalid_email", "", "bad"), "/email")
	checkErr(t, err, invalid("invalid_email", "/email"))

	// A field already set is the more precise one and stays.
	err = atField(Invalid("invalid_email", "/contacts/0", "bad"), "/email")
	checkErr(t, err, invalid("invalid_email", "/contacts/0"))

	// The parsed error is copied, not changed, in case a caller keeps it.
	orig := Invalid("invalid_phone", "", "bad")
	_ = atField(orig, "/phone")
	checkErr(t, orig, invalid("invalid_phone", ""))
}

// TestChecksAreTheDecisions: each exported input check refuses exactly
// what its decision refuses of the input, on an aggregate in a state that
// takes the command, with the same error; the API relies on it when it
// checks input before anything is loaded.
func TestChecksAreTheDecisions(t *testing.T) {
	long := strings.Repeat("x", 501)
	ann := customer(registered)
	check := func(name string, checkErr, decideErr error) {
		t.Helper()
		if !reflect.DeepEqual(checkErr, decideErr) {
			t.Errorf("%s: the check says %v, the decision %v", name, checkErr, decideErr)
		}
	}
	for _, items := range [][]Item{nil, {itemA}, {itemA, itemA}, {{Quantity: 1}}, {{ProductID: productA}}, {itemB, {ProductID: productA, Quantity: 10001}}} {
		_, cerr := CheckItems(items)
		_, derr := noOrder().Create(customerID, items, t0)
		check(fmt.Sprintf("create %v", items), cerr, derr)
		_, derr = createdOrder().UpdateItems(items, t0)
		check(fmt.Sprintf("update items %v", items), cerr, derr)
	}
	for _, s := range [][2]string{{"T-1", "DHL"}, {"", "DHL"}, {"T-1", " "}, {long, "DHL"}, {"T-1", long}, {"\xff", ""}} {
		_, _, cerr := CheckShipment(s[0], s[1])
		_, derr := confirmedOrder().Ship(s[0], s[1], t0)
		check(fmt.Sprintf("ship %q", s), cerr, derr)
	}
	for _, s := range []string{"", "J. Doe", long, "\xff"} {
		_, cerr := CheckSignature(s)
		_, derr := shippedOrder().Deliver(s, t0)
		check(fmt.Sprintf("deliver %q", s), cerr, derr)
		_, cerr = CheckReason(s)
		_, derr = createdOrder().Cancel(s, t0)
		check(fmt.Sprintf("cancel %q", s), cerr, derr)
	}
	for _, s := range []string{"", "bob@example.com", "bob", "root@localhost"} {
		_, cerr := CheckEmail(s)
		_, derr := ann().ChangeEmail(s, t0)
		check(fmt.Sprintf("change email %q", s), cerr, derr)
	}
	for _, s := range []string{"", "+14155550000", "555", "+1 415 555"} {
		_, cerr := CheckPhone(s)
		_, derr := ann().ChangePhone(s, t0)
		check(fmt.Sprintf("change phone %q", s), cerr, derr)
	}
}
