package api

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/aggregate"
	"github.com/orderd/orderd/internal/store"
)

// TestDecode: a body is decoded strictly, and each refusal names its code
// and the field at fault.
func TestDecode(t *testing.T) {
	const prod = `"0192f3a4-5b6c-7d8e-9f01-23456789abce"`
	cases := []struct {
		name, body  string
		code, field string
	}{
		{"top-level field", `{"customer_id": 12}`, "invalid_field", "/customer_id"},
		{"second item", `{"items":[{"product_id":"a","quantity":1},{"product_id":"b","quantity":"2"}]}`, "invalid_field", "/items/1/quantity"},
		{"item that is not an object", `{"items":[{"quantity":1}, 7]}`, "invalid_field", "/items/1"},
		{"array where a string goes", `{"id":"x","customer_id":["a"]}`, "invalid_field", "/customer_id"},
		{"object where an array goes", `{"items":{"a":1}}`, "invalid_field", "/items"},
		{"after nested values", `{"items":[{"product_id":"a","quantity":1}],"customer_id":{"x":[1,2]}}`, "invalid_field", "/customer_id"},
		{"fraction", `{"items":[{"product_id":` + prod + `,"quantity":1.5}]}`, "invalid_field", "/items/0/quantity"},
		{"beyond float64", `{"items":[{"product_id":` + prod + `,"quantity":1e309}]}`, "invalid_field", "/items/0/quantity"},
		{"beyond int", `{"items":[{"product_id":` + prod + `,"quantity":99999999999999999999}]}`, "invalid_field", "/items/0/quantity"},
		{"unknown field", `{"colour":"red"}`, "invalid_field", "/colour"},
		{"name in another case", `{"CUSTOMER_ID":"x"}`, "invalid_field", "/CUSTOMER_ID"},
		{"duplicate name", `{"customer_id":"a","customer_id":"b"}`, "duplicate_field", "/customer_id"},
		{"duplicate name in an item", `{"items":[{"quantity":1,"quantity":2}]}`, "duplicate_field", "/items/0/quantity"},
		{"invalid UTF-8", "{\"customer_id\":\"a\xffb\"}", "invalid_encoding", "/customer_id"},
		{"lone surrogate", `{"customer_id":"a\ud800b"}`, "invalid_encoding", "/customer_id"},
		{"lone low surrogate", `{"id":"\udc00"}`, "invalid_encoding", "/id"},
		{"escaped control", `{"customer_id":"a\u0007"}`, "invalid_character", "/customer_id"},
		{"C1 control", `{"customer_id":"a\u0085"}`, "invalid_character", "/customer_id"},
		{"bidi override", "{\"items\":[{\"product_id\":\"a\u202eb\"}]}", "invalid_character", "/items/0/product_id"},
		{"zero-width space", `{"customer_id":"a\u200bb"}`, "invalid_character", "/customer_id"},
		{"byte order mark", `{"customer_id":"\ufeffa"}`, "invalid_character", "/customer_id"},
		{"syntax before type", `{"customer_id":12,`, "malformed_json", ""},
		{"trailing data", `{}{}`, "malformed_json", ""},
		{"not an object", `[1]`, "malformed_json", ""},
		{"null", `null`, "malformed_json", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			var req createOrderRequest
			err := decode(r, &req, false)
			status, p, _ := describe(err)
			if status != http.StatusBadRequest || p.Code != c.code || p.Field != c.field {
				t.Fatalf("decode(%s) = %v: %d %+v, want 400 %s at %q", c.body, err, status, p, c.code, c.field)
			}
		})
	}
}

func TestDecodeWholeNumber(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"items":[{"quantity":1.5}]}`))
	r.Header.Set("Content-Type", "application/json")
	var req createOrderRequest
	_, p, _ := describe(decode(r, &req, false))
	if p.Detail != "/items/0/quantity must be a whole number, not 1.5" {
		t.Errorf("detail %q", p.Detail)
	}
}

func TestDecodeAccepts(t *testing.T) {
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"first_name":"Zoë \t","last_name":"Åström-Ünal","email":"a@b.example"}`))
	r.Header.Set("Content-Type", "application/json")
	var req registerCustomerRequest
	if err := decode(r, &req, false); err == nil || !strings.Contains(err.Error(), "invalid_character") {
		t.Errorf("a tab in a name: %v, want invalid_character", err)
	}
	r = httptest.NewRequest("POST", "/", strings.NewReader(`{"first_name":"Zoë","last_name":"Åström-Ünal 😀","email":"a@b.example"}`))
	r.Header.Set("Content-Type", "application/json; charset=UTF-8")
	if err := decode(r, &req, false); err != nil || req.ID != nil || req.LastName != "Åström-Ünal 😀" {
		t.Errorf("decode = %v, %+v", err, req)
	}
}

// TestProblemsTable: each kind of error has its status and code, and an
// error of no kind is a 500 that shows nothing of itself.
func TestProblemsTable(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{invalid("invalid_id", "id", "x"), 400, "invalid_id"},
		{aggregate.Invalid("invalid_quantity", "/items/0/quantity", "x"), 400, "invalid_quantity"},
		{notFound(aggregate.OrderType, [16]byte{1}), 404, "order_not_found"},
		{notFound(aggregate.CustomerType, [16]byte{1}), 404, "customer_not_found"},
		{&aggregate.Error{Kind: errNotReached, Code: "version_not_reached"}, 409, "version_not_reached"},
		{errors.New("disk on fire"), 500, "internal"},
		// An append whose outcome is unknown is "try later", never a refusal.
		{fmt.Errorf("append: %w: no answer", store.ErrOutcomeUnknown), 503, "storage_unavailable"},
	} {
		status, p, retry := describe(c.err)
		if status != c.status || p.Code != c.code {
			t.Errorf("describe(%v) = %d %s, want %d %s", c.err, status, p.Code, c.status, c.code)
		}
		if status == 503 && retry == "" {
			t.Errorf("describe(%v): 503 without Retry-After", c.err)
		}
		if errors.Is(c.err, store.ErrOutcomeUnknown) && (strings.Contains(p.Detail, "nothing was stored") || !strings.Contains(p.Detail, "may or may not")) {
			t.Errorf("describe(%v): detail %q claims to know the outcome", c.err, p.Detail)
		}
		if status == 500 && strings.Contains(p.Detail, "fire") {
			t.Errorf("a 500 shows its error: %q", p.Detail)
		}
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
		`[]`, `null`, `{`, `{"a":1}{}`, "\xff\xfe{}", `{"id":"\ud800"}`, `{"id":"a","ID":"b"}`,
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
			if _, err := items(req.Items); err != nil {
				if status, _, _ := describe(err); status != http.StatusBadRequest {
					t.Fatalf("items(%q): %v", body, err)
				}
			}
			return
		}
		status, p, _ := describe(err)
		if p.Code == "" || status < 400 || status > 499 {
			t.Fatalf("decode(%q) = %v: %d %q", body, err, status, p.Code)
		}
		if p.Field != "" && p.Field != "Content-Type" && !strings.HasPrefix(p.Field, "/") {
			t.Fatalf("decode(%q): field %q is not a JSON pointer", body, p.Field)
		}
	})
}

// BenchmarkDecode decodes the CreateOrder body of scripts/wrk.sh as a
// command handler does: the media type, the token scan, the unmarshal.
func BenchmarkDecode(b *testing.B) {
	const body = `{"customer_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","items":[{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abcd","quantity":2},{"product_id":"0192f3a4-5b6c-7d8e-9f01-23456789abce","quantity":1}]}`
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var req createOrderRequest
		if err := decode(r, &req, false); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSlowBody: a body that does not arrive within the server's read
// timeout is answered 408 request_timeout, and the connection closed; a
// body cut short by the client (no timeout) stays a 400.
func TestSlowBody(t *testing.T) {
	s := newStreamed(t, StreamOptions{}, func(ts *httptest.Server) { ts.Config.ReadTimeout = 300 * time.Millisecond })
	for _, c := range []struct {
		name   string
		finish func(net.Conn)
		status int
		code   string
	}{
		{"stalled", func(net.Conn) {}, http.StatusRequestTimeout, "request_timeout"},
		{"cut short", func(c net.Conn) { _ = c.(*net.TCPConn).CloseWrite() }, http.StatusBadRequest, "unreadable_body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			const part = `{"email":"slow@example.com",`
			fmt.Fprintf(conn, "POST /v1/customers HTTP/1.1\r\nHost: orderd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n%s", part)
			c.finish(conn)
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			req, _ := http.NewRequest("POST", s.base+"/v1/customers", strings.NewReader(part))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.ReadResponse(bufio.NewReader(conn), req)
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			checkContract(t, req, resp, raw)
			var p problemJSON
			if err := json.Unmarshal(raw, &p); err != nil || resp.StatusCode != c.status || p.Code != c.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, raw, c.status, c.code)
			}
			if c.status == http.StatusRequestTimeout && !resp.Close {
				t.Errorf("408 without Connection: close")
			}
		})
	}
}
