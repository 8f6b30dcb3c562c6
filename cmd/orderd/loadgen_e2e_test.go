package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/cli"
)

// benchJSON is orderd bench -json as a program reads it: the test decodes
// the printed object, not the command's own types.
type benchJSON struct {
	Addr           string  `json:"addr"`
	Mix            string  `json:"mix"`
	Connections    int     `json:"connections"`
	Rate           float64 `json:"rate"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Total          benchOpJSON
	Ops            map[string]benchOpJSON
	Lag            *struct {
		Reads         int64
		P50, P99, Max float64
	} `json:"lag_ms"`
	MaxBacklog     int64  `json:"max_backlog"`
	FirstTransport string `json:"first_transport_error"`
}

type benchOpJSON struct {
	Count        int64
	OpsPerSecond float64 `json:"ops_per_second"`
	Errors       map[string]int64
	Latency      struct {
		P50, P90, P99, Max float64
		P999               float64 `json:"p99_9"`
	} `json:"latency_ms"`
}

// runBenchJSON runs orderd bench -json with args; the run must succeed.
func runBenchJSON(t testing.TB, args ...string) benchJSON {
	t.Helper()
	out, err := benchOutput(args...)
	if err != nil {
		t.Fatalf("orderd bench %q: %v", args, err)
	}
	return decodeBench(t, out)
}

// benchOutput runs orderd bench -json with args and returns its stdout;
// the error includes what it printed on stderr. Safe off the test's goroutine.
func benchOutput(args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	if err := cli.Bench(context.Background(), append(args, "-json"), func(string) string { return "" }, &stdout, &stderr, false); err != nil {
		return nil, fmt.Errorf("%w\n%s", err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// decodeBench decodes a -json report: one object, with no field the test
// does not know.
func decodeBench(t testing.TB, out []byte) benchJSON {
	t.Helper()
	var rep benchJSON
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("the report is not the expected JSON: %v\n%s", err, out)
	}
	if dec.More() {
		t.Fatalf("more than one JSON object on stdout: %s", out)
	}
	return rep
}

// TestBenchLifecycle runs 20 whole lifecycles (200 operations) and checks
// the report's figures against each other and against what the store holds.
func TestBenchLifecycle(t *testing.T) {
	s := start(t, "", nil)
	rep := runBenchJSON(t, "-addr", s.base, "-count", "200", "-mix", "lifecycle", "-connections", "8")

	if rep.Addr != s.base || rep.Mix != "lifecycle" || rep.Connections != 8 || rep.Rate != 0 || rep.ElapsedSeconds <= 0 {
		t.Errorf("header: %s, mix %q, %d connections, rate %g, %g s", rep.Addr, rep.Mix, rep.Connections, rep.Rate, rep.ElapsedSeconds)
	}
	want := map[string]int64{"create": 20, "update": 20, "confirm": 20, "ship": 20, "deliver": 20, "get": 100}
	if len(rep.Ops) != len(want) {
		t.Errorf("operation types %v, want %v", keys(rep.Ops), keys(want))
	}
	var sum int64
	for name, n := range want {
		o, ok := rep.Ops[name]
		if !ok {
			t.Errorf("no %s in the report", name)
			continue
		}
		sum += o.Count
		if o.Count != n {
			t.Errorf("%s: %d, want %d", name, o.Count, n)
		}
		checkOp(t, name, o)
	}
	if rep.Total.Count != 200 || sum != 200 {
		t.Errorf("total %d, the operations add up to %d; want 200", rep.Total.Count, sum)
	}
	checkOp(t, "total", rep.Total)
	if rep.Lag == nil {
		t.Fatal("no lag in a lifecycle report")
	}
	if l := rep.Lag; l.Reads != 100 || l.P50 <= 0 || l.P50 > l.P99 || l.P99 > l.Max {
		t.Errorf("lag: %d reads, p50 %g, p99 %g, max %g ms", l.Reads, l.P50, l.P99, l.Max)
	}

	// The store holds what the report claims: 8 customers, 20 orders of 5
	// events each, all delivered in the read model.
	for query, want := range map[string]int64{
		`SELECT count(*) FROM events WHERE aggregate_type = 'Customer'`:                                        8,
		`SELECT count(*) FROM events WHERE aggregate_type = 'Order'`:                                           100,
		`SELECT count(DISTINCT aggregate_id) FROM events WHERE sequence = 5 AND event_type = 'OrderDelivered'`: 20,
	} {
		if got := scalar(t, s.eventsDB(), query); got != want {
			t.Errorf("%s: %d, want %d", query, got, want)
		}
	}
	views := filepath.Join(s.dataDir, "views.db")
	if n := scalar(t, views, `SELECT count(*) FROM order_read_model WHERE status = 'delivered' AND version = 5`); n != 20 {
		t.Errorf("%d delivered orders in the read model, want 20", n)
	}
	// One worker's customer, through the API.
	cust := scalarText(t, views, `SELECT customer_id FROM order_read_model ORDER BY id LIMIT 1`)
	var page struct {
		Orders []struct {
			Status  string
			Version int64
		}
	}
	s.do(t, "GET", "/v1/customers/"+cust+"/orders", nil, http.StatusOK).json(t, &page)
	mine := scalar(t, views, fmt.Sprintf(`SELECT count(*) FROM order_read_model WHERE customer_id = '%s'`, cust))
	if len(page.Orders) == 0 || int64(len(page.Orders)) != mine {
		t.Errorf("customer %s: %d orders through the API, %d in the read model", cust, len(page.Orders), mine)
	}
	for _, o := range page.Orders {
		if o.Status != "delivered" || o.Version != 5 {
			t.Errorf("customer %s: an order %s at version %d, want delivered at 5", cust, o.Status, o.Version)
		}
	}
}

// checkOp checks one row: no errors, latencies positive and ordered.
func checkOp(t *testing.T, name string, o benchOpJSON) {
	t.Helper()
	if len(o.Errors) != 0 {
		t.Errorf("%s: errors %v", name, o.Errors)
	}
	l := o.Latency
	if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.P999 || l.P999 > l.Max {
		t.Errorf("%s: latencies p50 %g, p90 %g, p99 %g, p99.9 %g, max %g ms", name, l.P50, l.P90, l.P99, l.P999, l.Max)
	}
	if o.OpsPerSecond <= 0 {
		t.Errorf("%s: %g ops/s", name, o.OpsPerSecond)
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// TestBenchOpenLoop: at -rate 200 for 2 s the schedule, not the server's
// pace, decides how many operations are sent.
func TestBenchOpenLoop(t *testing.T) {
	s := start(t, "", nil)
	rep := runBenchJSON(t, "-addr", s.base, "-rate", "200", "-duration", "2s", "-mix", "create", "-connections", "8")
	if n := rep.Total.Count; n < 340 || n > 460 {
		t.Errorf("%d operations at 200/s for 2 s, want 400 ± 15%%", n)
	}
	if rep.Rate != 200 || rep.Lag != nil || len(rep.Ops) != 1 || rep.Ops["create"].Count != rep.Total.Count {
		t.Errorf("rate %g, lag %v, operations %v", rep.Rate, rep.Lag, keys(rep.Ops))
	}
	checkOp(t, "create", rep.Ops["create"])
	if n := scalar(t, s.eventsDB(), `SELECT count(*) FROM events WHERE event_type = 'OrderCreated'`); n != rep.Total.Count {
		t.Errorf("%d orders stored, the report says %d", n, rep.Total.Count)
	}
}

// TestBenchSpreads: with two addresses, the workers are shared between
// the two instances round-robin: each registers the customers of its
// workers and receives their orders, and together they hold what the
// report counts.
func TestBenchSpreads(t *testing.T) {
	a, b := start(t, "", nil), start(t, "", nil)
	rep := runBenchJSON(t, "-addr", a.base+","+b.base+"/", "-count", "60", "-mix", "create", "-connections", "6")
	if rep.Total.Count != 60 || len(rep.Ops["create"].Errors) != 0 {
		t.Fatalf("%d operations, errors %v; want 60 without errors", rep.Total.Count, rep.Ops["create"].Errors)
	}
	var total int64
	for _, s := range []*service{a, b} {
		if n := scalar(t, s.eventsDB(), `SELECT count(*) FROM events WHERE event_type = 'CustomerRegistered'`); n != 3 {
			t.Errorf("%s: %d customers registered, want 3 (one per worker of its share)", s.base, n)
		}
		n := scalar(t, s.eventsDB(), `SELECT count(*) FROM events WHERE event_type = 'OrderCreated'`)
		if n == 0 {
			t.Errorf("%s received no order", s.base)
		}
		total += n
	}
	if total != 60 {
		t.Errorf("the instances hold %d orders, the report says 60", total)
	}
}

// transportError is the report's error key of a request that got no (whole)
// answer.
const transportError = "transport"

// TestBenchCountsErrors stops orderd in the middle of a run: the requests
// after that fail to connect and are counted as transport errors, and the
// run still ends with a report (exit 0).
func TestBenchCountsErrors(t *testing.T) {
	s := start(t, "", nil)
	type result struct {
		out []byte
		err error
	}
	results := make(chan result, 1)
	go func() {
		out, err := benchOutput("-addr", s.base, "-duration", "3s", "-mix", "create", "-connections", "4")
		results <- result{out, err}
	}()
	time.Sleep(time.Second)
	if err := s.stop(); err != nil {
		t.Fatalf("stop orderd: %v", err)
	}
	var res result
	select {
	case res = <-results:
	case <-time.After(time.Minute):
		t.Fatal("orderd bench did not end")
	}
	if res.err != nil {
		t.Fatalf("orderd bench ended with an error, want a report: %v", res.err)
	}
	rep := decodeBench(t, res.out)
	create := rep.Ops["create"]
	failed := create.Errors[transportError]
	if failed == 0 || rep.Total.Errors[transportError] != failed || rep.FirstTransport == "" {
		t.Errorf("errors %v (total %v), first transport error %q: want transport errors", create.Errors, rep.Total.Errors, rep.FirstTransport)
	}
	var errs int64
	for _, n := range create.Errors {
		errs += n
	}
	stored := scalar(t, s.eventsDB(), `SELECT count(*) FROM events WHERE event_type = 'OrderCreated'`)
	if ok := create.Count - errs; ok <= 0 || ok != stored {
		t.Errorf("%d creates, %d errors: %d succeeded, and %d are stored", create.Count, errs, ok, stored)
	}
	if create.Latency.P50 <= 0 {
		t.Errorf("no latency for the creates that succeeded: %+v", create.Latency)
	}
}
