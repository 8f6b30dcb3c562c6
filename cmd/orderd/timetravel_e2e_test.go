package main

import (
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// asOfState is what GET answered for one version of an aggregate, decoded
// generically so that a past read is compared field by field, shape
// included.
type asOfState map[string]any

// lifecycleStates drives an order through its whole lifecycle and returns
// what GET with min_version answered after each command, by version.
func lifecycleStates(t *testing.T, s *service, cust uuid.UUID) (uuid.UUID, map[int64]asOfState) {
	t.Helper()
	states := map[int64]asOfState{}
	read := func(id uuid.UUID, v int64) {
		t.Helper()
		var st asOfState
		s.do(t, "GET", fmt.Sprintf("/v1/orders/%s?min_version=%d", id, v), nil, http.StatusOK).json(t, &st)
		if got := st["version"].(float64); int64(got) != v {
			t.Fatalf("GET min_version=%d answered version %v", v, got)
		}
		states[v] = st
	}
	order := s.createOrder(t, cust)
	read(order.ID, 1)
	path := "/v1/orders/" + order.ID.String()
	steps := []struct {
		method, path string
		body         any
	}{
		{"PUT", path + "/items", map[string]any{"items": []itemBody{{uuid.NewString(), 3}}}},
		{"POST", path + "/confirm", nil},
		{"POST", path + "/ship", map[string]any{"tracking_number": "TRACK-1", "carrier": "DHL"}},
		{"POST", path + "/deliver", nil},
	}
	for i, step := range steps {
		var res commandResult
		s.do(t, step.method, step.path, step.body, http.StatusOK).json(t, &res)
		if res.Version != int64(i+2) {
			t.Fatalf("%s %s answered version %d, want %d", step.method, step.path, res.Version, i+2)
		}
		read(order.ID, res.Version)
	}
	return order.ID, states
}

// past reads an aggregate at query (as_of_version=… or as_of=…) and
// checks that the ETag names the version the body reflects.
func (s *service) past(t *testing.T, kind string, id uuid.UUID, query string) asOfState {
	t.Helper()
	var st asOfState
	r := s.do(t, "GET", fmt.Sprintf("/v1/%s/%s?%s", kind, id, query), nil, http.StatusOK)
	r.json(t, &st)
	if want := fmt.Sprintf(`"%d"`, int64(st["version"].(float64))); r.Header.Get("ETag") != want {
		t.Fatalf("GET %s: ETag %s, body version %v", query, r.Header.Get("ETag"), st["version"])
	}
	return st
}

func asOfQuery(at time.Time) string {
	return "as_of=" + url.QueryEscape(at.Format(time.RFC3339Nano))
}

// expectAsOf checks every event timestamp of an aggregate, and the
// instants just before, between and after them: each answers the state
// after the last event at or before it.
func expectAsOf(t *testing.T, s *service, kind string, id uuid.UUID, states map[int64]asOfState) {
	t.Helper()
	events := s.events(t, kind, id)
	stamps := make([]time.Time, len(events))
	for i, e := range events {
		ts, err := time.Parse(time.RFC3339Nano, e.Timestamp)
		if err != nil {
			t.Fatal(err)
		}
		stamps[i] = ts
	}
	// want is the version of the last event at or before at.
	want := func(at time.Time) int64 {
		var v int64
		for i, ts := range stamps {
			if ts.After(at) {
				break
			}
			v = events[i].Sequence
		}
		return v
	}
	instants := []time.Time{stamps[len(stamps)-1].Add(time.Hour)}
	for i, ts := range stamps {
		instants = append(instants, ts)
		if i+1 < len(stamps) && stamps[i+1].Sub(ts) > time.Nanosecond {
			instants = append(instants, ts.Add(stamps[i+1].Sub(ts)/2)) // between two events
		}
	}
	for _, at := range instants {
		v := want(at)
		got := s.past(t, kind, id, asOfQuery(at))
		if !reflect.DeepEqual(got, states[v]) {
			t.Errorf("as_of=%s:\n got %v\nwant %v (version %d)", at.Format(time.RFC3339Nano), got, states[v], v)
		}
	}
	// In another offset, the same instant.
	last := stamps[len(stamps)-1]
	if got := s.past(t, kind, id, asOfQuery(last.In(time.FixedZone("", 5*3600+1800)))); !reflect.DeepEqual(got, states[want(last)]) {
		t.Errorf("as_of at +05:30: got %v", got)
	}
	// Just before the first event the aggregate did not exist.
	code := map[string]string{"orders": "order_not_found", "customers": "customer_not_found"}[kind]
	p := s.do(t, "GET", fmt.Sprintf("/v1/%s/%s?%s", kind, id, asOfQuery(stamps[0].Add(-time.Nanosecond))), nil, http.StatusNotFound).problem(t)
	if p.Code != code || p.Field != "as_of" {
		t.Errorf("as_of before creation: %+v", p)
	}
}

// snapshotModes runs a time-travel test with snapshots off, and with a
// snapshot after every command: then a past read starts from the snapshot
// at or below its version, and must answer exactly what the events alone
// answer. wait, called once the test's commands are done, waits until
// their snapshots are saved (they are saved in the background).
func snapshotModes(t *testing.T, test func(t *testing.T, s *service, wait func(n int64))) {
	for _, mode := range []struct{ name, every string }{{"no snapshots", "0"}, {"a snapshot per command", "1"}} {
		t.Run(mode.name, func(t *testing.T) {
			s := start(t, "", map[string]string{"ORDERD_SNAPSHOT_EVERY": mode.every})
			test(t, s, func(n int64) {
				if mode.every == "0" {
					return
				}
				waitFor(t, 10*time.Second, "the snapshots to be saved", func() bool {
					return scalar(t, filepath.Join(s.dataDir, "snapshots.db"), `SELECT count(*) FROM snapshots`) >= n
				})
			})
		})
	}
}

// TestTimeTravelOrder reads every version of a lifecycle order, by version
// and by time, and compares it with what GET answered at that step.
func TestTimeTravelOrder(t *testing.T) {
	snapshotModes(t, testTimeTravelOrder)
}

func testTimeTravelOrder(t *testing.T, s *service, wait func(n int64)) {
	cust := s.registerCustomer(t, "time.travel@example.com")
	id, states := lifecycleStates(t, s, cust.ID)
	wait(6) // the customer's, and one per version of the order
	for v := int64(1); v <= 5; v++ {
		if got := s.past(t, "orders", id, fmt.Sprintf("as_of_version=%d", v)); !reflect.DeepEqual(got, states[v]) {
			t.Errorf("as_of_version=%d:\n got %v\nwant %v", v, got, states[v])
		}
	}
	expectAsOf(t, s, "orders", id, states)

	// HEAD answers the headers of the same read.
	if r := s.do(t, "HEAD", "/v1/orders/"+id.String()+"?as_of_version=2", nil, http.StatusOK); r.Header.Get("ETag") != `"2"` {
		t.Errorf("HEAD as_of_version=2: ETag %s", r.Header.Get("ETag"))
	}
}

// TestTimeTravelCustomer does the same for a customer.
func TestTimeTravelCustomer(t *testing.T) {
	snapshotModes(t, testTimeTravelCustomer)
}

func testTimeTravelCustomer(t *testing.T, s *service, wait func(n int64)) {
	cust := s.registerCustomer(t, "before@example.com")
	path := "/v1/customers/" + cust.ID.String()
	states := map[int64]asOfState{}
	read := func(v int64) {
		var st asOfState
		s.do(t, "GET", fmt.Sprintf("%s?min_version=%d", path, v), nil, http.StatusOK).json(t, &st)
		states[v] = st
	}
	read(1)
	s.do(t, "POST", path+"/email", map[string]any{"email": "after@example.com"}, http.StatusOK)
	read(2)
	s.do(t, "POST", path+"/phone", map[string]any{"phone": "+4915112345678"}, http.StatusOK)
	read(3)
	wait(3) // one per version
	for v := int64(1); v <= 3; v++ {
		if got := s.past(t, "customers", cust.ID, fmt.Sprintf("as_of_version=%d", v)); !reflect.DeepEqual(got, states[v]) {
			t.Errorf("as_of_version=%d:\n got %v\nwant %v", v, got, states[v])
		}
	}
	expectAsOf(t, s, "customers", cust.ID, states)
}

// TestTimeTravelRefusals checks the problems of past reads, in the order
// of the precedence rule: input, then existence, then state.
func TestTimeTravelRefusals(t *testing.T) {
	s := start(t, "", nil)
	cust := s.registerCustomer(t, "refusals@example.com")
	order := s.createOrder(t, cust.ID)
	o, c, unknown := "/v1/orders/"+order.ID.String(), "/v1/customers/"+cust.ID.String(), "/v1/orders/"+uuid.NewString()
	for _, tc := range []struct {
		name, path string
		valid      bool // whether openapi.yaml admits the request
		status     int
		code       string
		field      string
	}{
		{"version beyond", o + "?as_of_version=2", true, 409, "version_not_reached", "as_of_version"},
		{"customer version beyond", c + "?as_of_version=9", true, 409, "version_not_reached", "as_of_version"},
		{"unknown order", unknown + "?as_of_version=1", true, 404, "order_not_found", ""},
		{"unknown order by time", unknown + "?as_of=2024-11-05T10:00:00Z", true, 404, "order_not_found", ""},
		{"a customer read as an order", "/v1/orders/" + cust.ID.String() + "?as_of_version=1", true, 404, "order_not_found", ""},
		{"before creation", o + "?as_of=2000-01-01T00:00:00Z", true, 404, "order_not_found", "as_of"},
		{"customer before creation", c + "?as_of=2000-01-01T00:00:00%2B01:00", true, 404, "customer_not_found", "as_of"},
		{"version and time", o + "?as_of_version=1&as_of=2024-11-05T10:00:00Z", true, 400, "conflicting_query", "as_of"},
		{"min_version and version", o + "?min_version=1&as_of_version=1", true, 400, "conflicting_query", "as_of_version"},
		{"min_version and time", c + "?min_version=1&as_of=2024-11-05T10:00:00Z", true, 400, "conflicting_query", "as_of"},
		{"conflict before existence", unknown + "?as_of_version=1&as_of=2024-11-05T10:00:00Z", true, 400, "conflicting_query", "as_of"},
		{"version zero", o + "?as_of_version=0", false, 400, "invalid_query", "as_of_version"},
		{"version not a number", unknown + "?as_of_version=two", false, 400, "invalid_query", "as_of_version"},
		{"version empty", o + "?as_of_version=", false, 400, "invalid_query", "as_of_version"},
		{"version twice", o + "?as_of_version=1&as_of_version=1", false, 400, "invalid_query", "as_of_version"},
		{"time without offset", o + "?as_of=2024-11-05T10:00:00", false, 400, "invalid_query", "as_of"},
		{"time with an unescaped +", o + "?as_of=2024-11-05T10:00:00+01:00", false, 400, "invalid_query", "as_of"},
		{"time with a comma", o + "?as_of=2024-11-05T10:00:00,5Z", false, 400, "invalid_query", "as_of"},
		{"a date only", c + "?as_of=2024-11-05", false, 400, "invalid_query", "as_of"},
		{"bad id first", "/v1/orders/nope?as_of_version=0", false, 400, "invalid_id", "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(t, "GET", tc.path, nil, nil, tc.valid)
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
			}
			if p := r.problem(t); p.Code != tc.code || p.Field != tc.field {
				t.Errorf("code %q field %q, want %q %q: %s", p.Code, p.Field, tc.code, tc.field, p.Detail)
			} else if tc.code == "conflicting_query" && !strings.Contains(p.Detail, "cannot be given") {
				t.Errorf("detail %q does not say which parameters conflict", p.Detail)
			}
		})
	}
	// RFC 3339 admits lower-case t and z (which openapi.yaml's validator
	// does not) and a leap second.
	if r := s.call(t, "GET", o+"?as_of=2999-01-01t00:00:00z", nil, nil, false); r.Status != http.StatusOK {
		t.Errorf("lower-case t and z: %d %s", r.Status, r.Body)
	}
	s.do(t, "GET", o+"?as_of=2998-12-31T23:59:60.5Z", nil, http.StatusOK)
}

// BenchmarkTimeTravel is the latency of a past read: an order with 100
// events (created, then 99 item updates), read at as_of_version=50, one
// request at a time over loopback. Besides ns/op it reports p50 and p99.
func BenchmarkTimeTravel(b *testing.B) {
	s := start(b, "", map[string]string{"ORDERD_LOG_LEVEL": "error"})
	cust := s.registerCustomer(b, "bench.tt@example.com").ID
	order := s.createOrder(b, cust)
	client := &http.Client{}
	defer client.CloseIdleConnections()
	for i := 2; i <= 100; i++ {
		body := fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":%d}]}`, uuid.NewString(), i)
		req, _ := http.NewRequest("PUT", s.base+"/v1/orders/"+order.ID.String()+"/items", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("update %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	url := s.base + "/v1/orders/" + order.ID.String() + "?as_of_version=50"
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		t0 := time.Now()
		if err := get(client, url); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, "", lat)
}
