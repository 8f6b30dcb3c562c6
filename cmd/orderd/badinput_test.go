package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestBadInput: every refusal is a precise problem with the right 4xx, and
// nothing of a refused command is stored.
func TestBadInput(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "bad@example.com")
	o := s.createOrder(t, cust.ID)
	order := "/v1/orders/" + o.ID.String()
	prod := uuid.NewString()
	newOrder := func(items string) string {
		return fmt.Sprintf(`{"id":%q,"customer_id":%q,"items":%s}`, uuid.NewString(), cust.ID, items)
	}
	huge := `{"customer_id":"` + cust.ID.String() + `","items":[],"pad":"` + strings.Repeat("x", 2<<20) + `"}`

	cases := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		status       int
		code, field  string
	}{
		{"malformed json", "POST", "/v1/orders", `{"customer_id":`, nil, 400, "malformed_json", ""},
		{"not an object", "POST", "/v1/orders", `[1,2]`, nil, 400, "malformed_json", ""},
		{"null body", "POST", "/v1/orders", `null`, nil, 400, "malformed_json", ""},
		{"empty body", "POST", "/v1/orders", ``, nil, 400, "malformed_json", ""},
		{"trailing data", "POST", "/v1/orders", newOrder(`[{"product_id":"`+prod+`","quantity":1}]`) + `{}`, nil, 400, "malformed_json", ""},
		{"number for uuid", "POST", "/v1/orders", `{"customer_id":12,"items":[]}`, nil, 400, "invalid_field", "/customer_id"},
		{"string for quantity", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":"2"}]`), nil, 400, "invalid_field", "/items/0/quantity"},
		{"fraction quantity", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":1.5}]`), nil, 400, "invalid_field", "/items/0/quantity"},
		{"object for items", "POST", "/v1/orders", newOrder(`{}`), nil, 400, "invalid_field", "/items"},
		{"unknown field", "POST", "/v1/orders", `{"customer_id":"` + cust.ID.String() + `","colour":"red","items":[]}`, nil, 400, "invalid_field", "/colour"},
		{"bad customer uuid", "POST", "/v1/orders", `{"customer_id":"abc","items":[{"product_id":"` + prod + `","quantity":1}]}`, nil, 400, "invalid_id", "/customer_id"},
		{"bad order uuid", "POST", "/v1/orders", `{"id":"0190","customer_id":"` + cust.ID.String() + `","items":[{"product_id":"` + prod + `","quantity":1}]}`, nil, 400, "invalid_id", "/id"},
		{"bad product uuid", "POST", "/v1/orders", newOrder(`[{"product_id":"x","quantity":1}]`), nil, 400, "invalid_id", "/items/0/product_id"},
		{"empty items", "POST", "/v1/orders", newOrder(`[]`), nil, 400, "items_required", "/items"},
		{"missing items", "POST", "/v1/orders", `{"customer_id":"` + cust.ID.String() + `"}`, nil, 400, "items_required", "/items"},
		{"quantity 0", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":0}]`), nil, 400, "invalid_quantity", "/items/0/quantity"},
		{"negative quantity", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":-3}]`), nil, 400, "invalid_quantity", "/items/0/quantity"},
		{"duplicate product", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":1},{"product_id":"` + prod + `","quantity":2}]`), nil, 400, "duplicate_product", "/items/1/product_id"},
		{"unknown customer", "POST", "/v1/orders", fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, uuid.NewString(), prod), nil, 404, "customer_not_found", "/customer_id"},
		{"existing order id", "POST", "/v1/orders", fmt.Sprintf(`{"id":%q,"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, o.ID, cust.ID, prod), nil, 409, "order_exists", ""},
		{"order id of a customer", "POST", "/v1/orders", fmt.Sprintf(`{"id":%q,"customer_id":%q,"items":[{"product_id":%q,"quantity":1}]}`, cust.ID, cust.ID, prod), nil, 409, "order_exists", ""},
		{"2 MiB body", "POST", "/v1/orders", huge, nil, 413, "body_too_large", ""},
		{"text/plain", "POST", "/v1/orders", newOrder(`[]`), map[string]string{"Content-Type": "text/plain"}, 415, "unsupported_media_type", "Content-Type"},
		{"no content type", "POST", "/v1/orders", newOrder(`[]`), map[string]string{"Content-Type": ""}, 415, "unsupported_media_type", "Content-Type"},
		{"latin-1 json", "POST", "/v1/orders", newOrder(`[]`), map[string]string{"Content-Type": "application/json; charset=latin1"}, 415, "unsupported_media_type", "Content-Type"},
		{"bad email", "POST", "/v1/customers", `{"email":"john.doe@","first_name":"J","last_name":"D"}`, nil, 400, "invalid_email", "/email"},
		{"display-name email", "POST", "/v1/customers", `{"email":"John <j@example.com>","first_name":"J","last_name":"D"}`, nil, 400, "invalid_email", "/email"},
		{"phone not E.164", "POST", "/v1/customers", `{"email":"j@example.com","first_name":"J","last_name":"D","phone":"+1-555-0123"}`, nil, 400, "invalid_phone", "/phone"},
		{"blank first name", "POST", "/v1/customers", `{"email":"j@example.com","first_name":"  ","last_name":"D"}`, nil, 400, "first_name_required", "/first_name"},
		{"existing customer id", "POST", "/v1/customers", fmt.Sprintf(`{"id":%q,"email":"j@example.com","first_name":"J","last_name":"D"}`, cust.ID), nil, 409, "customer_exists", ""},
		{"change to bad email", "POST", "/v1/customers/" + cust.ID.String() + "/email", `{"email":"nope"}`, nil, 400, "invalid_email", "/email"},
		{"change phone of unknown customer", "POST", "/v1/customers/" + uuid.NewString() + "/phone", `{"phone":"+4915112345678"}`, nil, 404, "customer_not_found", ""},
		{"bad path id", "POST", "/v1/orders/not-a-uuid/confirm", ``, nil, 400, "invalid_id", "id"},
		{"unknown order", "POST", "/v1/orders/" + uuid.NewString() + "/confirm", ``, nil, 404, "order_not_found", ""},
		{"ship without carrier", "POST", order + "/ship", `{"tracking_number":"T-1"}`, nil, 400, "carrier_required", "/carrier"},
		{"ship a created order", "POST", order + "/ship", `{"tracking_number":"T-1","carrier":"DHL"}`, nil, 409, "invalid_transition", ""},
		{"deliver a created order", "POST", order + "/deliver", ``, nil, 409, "invalid_transition", ""},
		{"confirm with a body field", "POST", order + "/confirm", `{"force":true}`, nil, 400, "invalid_field", "/force"},
		{"weak If-Match", "POST", order + "/confirm", ``, map[string]string{"If-Match": `W/"1"`}, 400, "invalid_if_match", "If-Match"},
		{"unquoted If-Match", "POST", order + "/confirm", ``, map[string]string{"If-Match": `1`}, 400, "invalid_if_match", "If-Match"},
		{"stale If-Match", "POST", order + "/confirm", ``, map[string]string{"If-Match": `"7"`}, 412, "version_mismatch", ""},
		{"bad correlation id", "POST", order + "/confirm", ``, map[string]string{"X-Correlation-ID": "req-42"}, 400, "invalid_correlation_id", "X-Correlation-ID"},
		{"bad min_version", "GET", order + "?min_version=abc", ``, nil, 400, "invalid_query", "min_version"},
		{"zero min_version", "GET", order + "?min_version=0", ``, nil, 400, "invalid_query", "min_version"},
		{"limit over 500", "GET", "/v1/customers/" + cust.ID.String() + "/orders?limit=501", ``, nil, 400, "invalid_query", "limit"},
		{"bad after cursor", "GET", "/v1/customers/" + cust.ID.String() + "/orders?after=x", ``, nil, 400, "invalid_query", "after"},
		{"unknown order read", "GET", "/v1/orders/" + uuid.NewString(), ``, nil, 404, "order_not_found", ""},
		{"unknown order history", "GET", "/v1/orders/" + uuid.NewString() + "/events", ``, nil, 404, "order_not_found", ""},
		{"customer history as order", "GET", "/v1/orders/" + cust.ID.String() + "/events", ``, nil, 404, "order_not_found", ""},
		{"unknown route", "GET", "/v1/widgets", ``, nil, 404, "not_found", ""},
		// Strict JSON.
		{"invalid UTF-8", "POST", "/v1/customers", "{\"email\":\"j@example.com\",\"first_name\":\"J\xff\",\"last_name\":\"D\"}", nil, 400, "invalid_encoding", "/first_name"},
		{"lone surrogate", "POST", "/v1/customers", `{"email":"j@example.com","first_name":"J\ud800","last_name":"D"}`, nil, 400, "invalid_encoding", "/first_name"},
		{"duplicate key", "POST", "/v1/customers", `{"email":"j@example.com","email":"k@example.com","first_name":"J","last_name":"D"}`, nil, 400, "duplicate_field", "/email"},
		{"key in another case", "POST", "/v1/customers", `{"EMAIL":"j@example.com","first_name":"J","last_name":"D"}`, nil, 400, "invalid_field", "/EMAIL"},
		{"control character", "POST", "/v1/customers", `{"email":"j@example.com","first_name":"J\u0000","last_name":"D"}`, nil, 400, "invalid_character", "/first_name"},
		{"bidi override", "POST", "/v1/customers", `{"email":"j@example.com","first_name":"J","last_name":"\u202eD"}`, nil, 400, "invalid_character", "/last_name"},
		{"zero-width space", "POST", order + "/ship", `{"tracking_number":"T\u200b1","carrier":"DHL"}`, nil, 400, "invalid_character", "/tracking_number"},
		{"C1 control in a reason", "POST", order + "/cancel", `{"reason":"\u009b"}`, nil, 400, "invalid_character", "/reason"},
		{"quantity beyond float64", "POST", "/v1/orders", newOrder(`[{"product_id":"` + prod + `","quantity":1e309}]`), nil, 400, "invalid_field", "/items/0/quantity"},
		// Ids and empty values.
		{"nil customer id", "POST", "/v1/orders", `{"customer_id":"00000000-0000-0000-0000-000000000000","items":[{"product_id":"` + prod + `","quantity":1}]}`, nil, 400, "invalid_id", "/customer_id"},
		{"nil path id", "GET", "/v1/orders/00000000-0000-0000-0000-000000000000", ``, nil, 400, "invalid_id", "id"},
		{"empty id", "POST", "/v1/customers", `{"id":"","email":"j@example.com","first_name":"J","last_name":"D"}`, nil, 400, "invalid_id", "/id"},
		{"empty after", "GET", "/v1/customers/" + cust.ID.String() + "/orders?after=", ``, nil, 400, "invalid_query", "after"},
		{"empty min_version", "GET", order + "?min_version=", ``, nil, 400, "invalid_query", "min_version"},
		{"limit twice", "GET", "/v1/customers/" + cust.ID.String() + "/orders?limit=1&limit=2", ``, nil, 400, "invalid_query", "limit"},
		{"empty correlation id", "GET", order, ``, map[string]string{"X-Correlation-ID": ""}, 400, "invalid_correlation_id", "X-Correlation-ID"},
		{"nil correlation id", "GET", order, ``, map[string]string{"X-Correlation-ID": "00000000000000000000000000000000"}, 400, "invalid_correlation_id", "X-Correlation-ID"},
		{"empty If-Match", "POST", order + "/confirm", ``, map[string]string{"If-Match": ""}, 400, "invalid_if_match", "If-Match"},
		{"If-Match list", "POST", order + "/confirm", ``, map[string]string{"If-Match": `"1", "2"`}, 400, "invalid_if_match", "If-Match"},
		{"If-Match 0", "POST", order + "/confirm", ``, map[string]string{"If-Match": `"0"`}, 412, "version_mismatch", ""},
		{"If-Match beyond int64", "POST", order + "/confirm", ``, map[string]string{"If-Match": `"99999999999999999999"`}, 412, "version_mismatch", ""},
		// Input, then existence, then state.
		{"unknown order, zero quantity", "PUT", "/v1/orders/" + uuid.NewString() + "/items", `{"items":[{"product_id":"` + prod + `","quantity":0}]}`, nil, 400, "invalid_quantity", "/items/0/quantity"},
		{"unknown order, bad product id", "PUT", "/v1/orders/" + uuid.NewString() + "/items", `{"items":[{"product_id":"x","quantity":1}]}`, nil, 400, "invalid_id", "/items/0/product_id"},
		{"unknown order, valid items", "PUT", "/v1/orders/" + uuid.NewString() + "/items", `{"items":[{"product_id":"` + prod + `","quantity":1}]}`, nil, 404, "order_not_found", ""},
		{"unknown order, If-Match", "POST", "/v1/orders/" + uuid.NewString() + "/confirm", ``, map[string]string{"If-Match": `"5"`}, 404, "order_not_found", ""},
		{"customer's id as an order, If-Match", "POST", "/v1/orders/" + cust.ID.String() + "/confirm", ``, map[string]string{"If-Match": `"5"`}, 404, "order_not_found", ""},
		{"unknown order, no carrier", "POST", "/v1/orders/" + uuid.NewString() + "/ship", `{"tracking_number":"T-1","carrier":" "}`, nil, 400, "carrier_required", "/carrier"},
		{"unknown customer, bad phone", "POST", "/v1/customers/" + uuid.NewString() + "/phone", `{"phone":"555"}`, nil, 400, "invalid_phone", "/phone"},
		{"created order, reason too long", "POST", order + "/cancel", `{"reason":"` + strings.Repeat("r", 501) + `"}`, nil, 400, "reason_too_long", "/reason"},
		{"wrong method", "DELETE", order, ``, nil, 405, "method_not_allowed", ""},
	}
	before := storedEvents(t, s)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body any
			header := map[string]string{}
			if c.body != "" {
				body = c.body
			}
			for k, v := range c.header {
				header[k] = v
			}
			n0 := storedEvents(t, s)
			r := s.call(t, c.method, c.path, body, header, false)
			if n := storedEvents(t, s); n != n0 {
				t.Errorf("the refused request stored %d events", n-n0)
			}
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			p := r.problem(t)
			if p.Code != c.code || p.Field != c.field || p.Status != c.status || p.Detail == "" {
				t.Errorf("problem %+v, want code %q field %q", p, c.code, c.field)
			}
			if p.CorrelationID != r.Header.Get("X-Correlation-ID") {
				t.Errorf("problem's correlation id %q, header's %q", p.CorrelationID, r.Header.Get("X-Correlation-ID"))
			}
		})
	}
	if after := storedEvents(t, s); after != before {
		t.Errorf("refused requests stored %d events", after-before)
	}
	if got := s.order(t, o.ID, 1); got.Status != "created" || got.Version != 1 {
		t.Errorf("the order changed: %+v", got)
	}
}
