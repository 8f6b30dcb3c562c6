package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderd/orderd/internal/aggregate"
)

func TestPointerAt(t *testing.T) {
	cases := []struct {
		name, body string
		into       any
		want       string
	}{
		{"top-level field", `{"customer_id": 12}`, &createOrderRequest{}, "/customer_id"},
		{"second item", `{"items":[{"product_id":"a","quantity":1},{"product_id":"b","quantity":"2"}]}`, &createOrderRequest{}, "/items/1/quantity"},
		{"item that is not an object", `{"items":[{"quantity":1}, 7]}`, &createOrderRequest{}, "/items/1"},
		{"array where a string goes", `{"id":"x","customer_id":["a"]}`, &createOrderRequest{}, "/customer_id"},
		{"object where an array goes", `{"items":{"a":1}}`, &createOrderRequest{}, "/items"},
		{"after nested values", `{"items":[{"product_id":"a","quantity":1}],"customer_id":{"x":[1,2]}}`, &createOrderRequest{}, "/customer_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			err := decode(r, c.into, false)
			var de *aggregate.Error
			if !errors.As(err, &de) || de.Code != "invalid_field" || de.Field != c.want {
				t.Fatalf("decode(%s) = %v, want invalid_field at %s", c.body, err, c.want)
			}
		})
	}
}

// FuzzDecodeCommand: whatever the body, decoding a command never panics and
// refuses with a client error (a 4xx problem), never anything a client
// would see as a server failure.
func FuzzDecodeCommand(f *testing.F) {
	seeds := []string{
		`{"customer_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","items":[{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abce","quantity":2}]}`,
		`{"items":[{"product_id":"a","quantity":"2"}]}`,
		`{"items":[1,[2],{"quantity":1e400}]}`,
		`{"customer_id":null,"id":"","items":null}`,
		`[]`, `null`, `{`, `{"a":1}{}`, "\xff\xfe{}", `{"id":"\ud800"}`,
	}
	for _, s := range seeds {
		f.Add(s, "application/json")
	}
	f.Add(`{}`, "text/plain")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		r := httptest.NewRequest("POST", "/v1/orders", strings.NewReader(body))
		r.Header.Set("Content-Type", contentType)
		var req createOrderRequest
		err := decode(r, &req, false)
		if err == nil {
			if _, err := items(req.Items); err != nil && statusOf(err) != http.StatusBadRequest {
				t.Fatalf("items(%q): %v", body, err)
			}
			return
		}
		var de *aggregate.Error
		if !errors.As(err, &de) || de.Code == "" {
			t.Fatalf("decode(%q) returned %v, not a coded problem", body, err)
		}
		if st := statusOf(err); st < 400 || st > 499 {
			t.Fatalf("decode(%q) maps to %d", body, st)
		}
		if de.Field != "" && !strings.HasPrefix(de.Field, "/") {
			t.Fatalf("decode(%q): field %q is not a JSON pointer", body, de.Field)
		}
	})
}
