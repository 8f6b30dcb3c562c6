package aggregate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/store"
)

// v1Created is an OrderCreated payload as the seed tutorial's code wrote it.
const v1Created = `{"customer_id":"0190a000-0000-7000-8000-000000000002","items":[{"product_id":"0190a000-0000-7000-8000-00000000000a","quantity":2}]}`

var stampedAt = time.Date(2020, 2, 3, 4, 5, 6, 123456789, time.UTC)

func v1Event(data string) store.Event {
	return store.Event{
		ID:            uuid.MustParse("0190a000-0000-7000-8000-0000000000e1"),
		AggregateID:   orderID,
		AggregateType: OrderType,
		Sequence:      1,
		Type:          "OrderCreated",
		SchemaVersion: 1,
		Data:          json.RawMessage(data),
		Timestamp:     stampedAt,
	}
}

func TestUpcastOrderCreatedV1(t *testing.T) {
	tests := []struct {
		name string
		data string
		keep map[string]string // fields that must come out as they went in; nil when refused
	}{
		{"seed shape", v1Created, map[string]string{}},
		{"extra fields", `{"customer_id":"0190a000-0000-7000-8000-000000000002","note":"gift","channel":{"web":true,"n":[1,2]},` +
			`"items":[{"product_id":"0190a000-0000-7000-8000-00000000000a","quantity":2,"sku":"A-1"}]}`,
			map[string]string{"note": `"gift"`, "channel": `{"web":true,"n":[1,2]}`}},
		{"stray created_at is replaced", `{"customer_id":"0190a000-0000-7000-8000-000000000002",` +
			`"items":[{"product_id":"0190a000-0000-7000-8000-00000000000a","quantity":2}],"Created_At":"1999-01-01T00:00:00Z"}`,
			map[string]string{}},
		{"malformed JSON", `{"customer_id":`, nil},
		{"empty", ``, nil},
		{"null", `null`, nil},
		{"array", `[]`, nil},
		{"string", `"OrderCreated"`, nil},
		{"number", `42`, nil},
		{"trailing garbage", v1Created + `x`, nil},
		{"customer id of the wrong type", `{"customer_id":5,"items":[]}`, nil},
		{"customer id not a UUID", `{"customer_id":"nope","items":[]}`, nil},
		{"items of the wrong type", `{"customer_id":"0190a000-0000-7000-8000-000000000002","items":{}}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := upcastOrderCreatedV1(v1Event(tc.data))
			if tc.keep == nil {
				if err == nil {
					t.Fatalf("upcast = %s, want an error", data)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(data, &fields); err != nil {
				t.Fatal(err)
			}
			for k := range fields {
				if strings.EqualFold(k, "created_at") && k != "created_at" {
					t.Errorf("field %q survived; it would compete with created_at", k)
				}
			}
			for k, want := range tc.keep {
				if got := string(fields[k]); got != want {
					t.Errorf("field %q = %s, want %s", k, got, want)
				}
			}
			var got OrderCreated
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			want := OrderCreated{CustomerID: customerID, Items: []Item{itemA}, CreatedAt: stampedAt}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("upcast decodes as %+v\nwant %+v", got, want)
			}
		})
	}
}

// TestUpcasters runs the domain's chain as a store would: v1 becomes v2 and
// decodes; current payloads, and other types, pass untouched.
func TestUpcasters(t *testing.T) {
	chain := Upcasters()

	e, err := chain.Upcast(v1Event(v1Created))
	if err != nil {
		t.Fatal(err)
	}
	if e.SchemaVersion != 2 || e.SchemaVersion != SchemaVersion(e.Type) {
		t.Errorf("schema version = %d, want 2, the current one", e.SchemaVersion)
	}
	if !e.Timestamp.Equal(stampedAt) || e.ID != v1Event("").ID || e.Sequence != 1 {
		t.Errorf("upcast changed the envelope: %+v", e)
	}
	ev, err := Decode(e)
	if err != nil {
		t.Fatal(err)
	}
	if want := (OrderCreated{CustomerID: customerID, Items: []Item{itemA}, CreatedAt: stampedAt}); !reflect.DeepEqual(ev, want) {
		t.Errorf("decoded %+v, want %+v", ev, want)
	}

	for name, current := range map[string]store.Event{
		"OrderCreated v2":    encode(t, OrderType, orderID, []Event{created})[0],
		"OrderConfirmed":     encode(t, OrderType, orderID, []Event{created, confirmed})[1],
		"CustomerRegistered": encode(t, CustomerType, customerID, []Event{registered})[0],
	} {
		got, err := chain.Upcast(current)
		if err != nil || !reflect.DeepEqual(got, current) {
			t.Errorf("%s: upcast = %+v, %v; want it untouched", name, got, err)
		}
	}

	if _, err := chain.Upcast(v1Event(`null`)); err == nil {
		t.Error("upcast of a null v1 payload succeeded, want an error")
	}
}

// FuzzUpcastOrderCreated checks that no payload or timestamp makes the
// upcaster panic, and that whatever it accepts decodes as OrderCreated
// created at the envelope's time.
func FuzzUpcastOrderCreated(f *testing.F) {
	for _, seed := range []string{
		v1Created, `{}`, `null`, `[]`, `{"customer_id":`, `{"items":null}`, `{"created_at":"x","customer_id":null}`,
		`{"CREATED_AT":1,"customer_id":"0190a000-0000-7000-8000-000000000002","items":[]}`, `{"a":{"b":[1,"2",{}]}}`,
	} {
		f.Add([]byte(seed), stampedAt.UnixNano())
	}
	chain := Upcasters()
	f.Fuzz(func(t *testing.T, data []byte, nanos int64) {
		at := time.Unix(0, nanos).UTC()
		e := v1Event("")
		e.Data, e.Timestamp = data, at
		up, err := chain.Upcast(e)
		if err != nil {
			return
		}
		if up.SchemaVersion != 2 {
			t.Fatalf("schema version = %d, want 2", up.SchemaVersion)
		}
		ev, err := Decode(up)
		if err != nil {
			t.Fatalf("accepted %q but it does not decode: %v", data, err)
		}
		if oc, ok := ev.(OrderCreated); !ok || !oc.CreatedAt.Equal(at) {
			t.Fatalf("accepted %q as %#v, want OrderCreated created at %v", data, ev, at)
		}
	})
}
