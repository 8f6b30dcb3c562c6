package main

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/orderd/orderd/internal/store/cqltest"
)

// scyllaEnv is the environment of an orderd on the test's CQL node, in a
// keyspace of its own.
func scyllaEnv(t *testing.T) map[string]string {
	hosts := cqltest.Hosts(t)
	return map[string]string{
		"ORDERD_STORE":           "scylla",
		"ORDERD_SCYLLA_HOSTS":    strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE": cqltest.Keyspace(t, hosts),
	}
}

// TestScyllaBackendOnCassandra runs orderd with ORDERD_STORE=scylla against
// the Cassandra node, the CQL stand-in: commands, optimistic concurrency and
// the event history work through the lightweight-transaction store; the
// CDC-fed projector and relay, which need ScyllaDB's CDC log, say so in
// /readyz instead of crash-looping.
func TestScyllaBackendOnCassandra(t *testing.T) {
	env := scyllaEnv(t)
	env["ORDERD_KAFKA_BROKERS"] = "127.0.0.1:1" // configured, but the CDC log it would read is missing
	s := start(t, "", env)
	cust := s.registerCustomer(t, "cql@example.com")
	o := s.createOrder(t, cust.ID)
	id := o.ID.String()
	s.do(t, "POST", "/v1/orders/"+id+"/confirm", nil, http.StatusPreconditionFailed, "If-Match", `"7"`)

	s.do(t, "POST", "/v1/orders/"+id+"/confirm", nil, http.StatusOK, "If-Match", `"1"`)

	// Eight racing ships: one wins, and one OrderShipped is stored.
	var wg sync.WaitGroup
	ok := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			if r := s.call(t, "POST", "/v1/orders/"+id+"/ship", map[string]any{"tracking_number": "T", "carrier": "C"}, nil, true); r.Status == http.StatusOK {
				ok <- 1
			}
		})
	}
	wg.Wait()
	close(ok)
	var types []string
	for i, e := range s.events(t, "orders", o.ID) {
		if e.Sequence != int64(i+1) {
			t.Fatalf("event %d has sequence %d", i, e.Sequence)
		}
		types = append(types, e.EventType)
	}
	if len(ok) != 1 || strings.Join(types, ",") != "OrderCreated,OrderConfirmed,OrderShipped" {
		t.Fatalf("%d ships succeeded; history %v", len(ok), types)
	}

	var ready struct {
		Status     string
		Components map[string]struct{ Status, Detail string }
	}
	s.do(t, "GET", "/readyz", nil, http.StatusServiceUnavailable).json(t, &ready)
	for _, name := range []string{"projector", "relay"} {
		if c := ready.Components[name]; c.Status != "down" || !strings.Contains(c.Detail, "not ScyllaDB") {
			t.Errorf("%s: %+v, want down because the server has no CDC log", name, c)
		}
	}
	if ready.Components["store"].Status != "up" {
		t.Errorf("store: %+v", ready.Components["store"])
	}
}

// TestMigrateScylla: `orderd migrate` creates the keyspace and schema, and
// running it again changes nothing and succeeds.
func TestMigrateScylla(t *testing.T) {
	env := scyllaEnv(t)
	env["ORDERD_DATA_DIR"] = t.TempDir()
	getenv := func(k string) string { return env[k] }
	for range 2 {
		if err := runMigrate(t.Context(), nil, getenv, io.Discard); err != nil {
			t.Fatal(err)
		}
	}
}
