package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay/kafkatest"
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
// Apache Cassandra, which has no CDC log: commands, optimistic concurrency
// and the event history work through the lightweight-transaction store,
// and the projector, fed by hints and the reconciliation pass, serves
// read-your-writes; /readyz shows this single instance running it.
func TestScyllaBackendOnCassandra(t *testing.T) {
	env := scyllaEnv(t)
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

	if got := s.order(t, o.ID, 3); got.Status != "shipped" || got.Version != 3 {
		t.Fatalf("read model on Cassandra: %+v, want shipped at version 3", got)
	}

	var ready struct {
		Status     string
		Components map[string]struct{ Status, Detail, Role, Active string }
	}
	s.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
	if c := ready.Components["projector"]; c.Status != "up" || c.Role != roleActive || c.Active == "" {
		t.Errorf("projector: %+v, want up and active on this instance", c)
	}
	if c := ready.Components["relay"]; c.Status != "off" {
		t.Errorf("relay: %+v, want off without brokers", c)
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

// TestScyllaCDC needs a real ScyllaDB, which no script here can start:
// point ORDERD_TEST_SCYLLA at one (host:port; `docker compose up -d scylla`
// gives one on 127.0.0.1:9042). It runs orderd on it with the test broker
// and checks what Cassandra cannot show: a command's events reach the read
// model through the CDC log (GET with min_version) and Kafka through the
// relay, in order. Without ORDERD_TEST_SCYLLA it skips, in CI too.
func TestScyllaCDC(t *testing.T) {
	host := os.Getenv("ORDERD_TEST_SCYLLA")
	if host == "" {
		t.Skip("needs a real ScyllaDB: ORDERD_TEST_SCYLLA=127.0.0.1:9042 (docker compose up -d scylla)")
	}
	brokers := kafkatest.Brokers(t)
	env := kafkaEnv(t, brokers,
		"ORDERD_STORE", "scylla", "ORDERD_SCYLLA_HOSTS", host,
		"ORDERD_SCYLLA_KEYSPACE", "orderd_cdc_"+strings.ReplaceAll(uuid.NewString()[:8], "-", ""),
		"ORDERD_READ_WAIT", "20s")
	s := start(t, "", env)
	cust := s.registerCustomer(t, "cdc@example.com")
	o := s.createOrder(t, cust.ID)
	s.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK)
	if got := s.order(t, o.ID, 2); got.Status != "confirmed" || got.Version != 2 {
		t.Fatalf("read model through CDC: %+v", got)
	}
	var seqs []string
	for _, m := range kafkatest.Consume(t, brokers, env["ORDERD_KAFKA_TOPIC_PREFIX"]+"order-events", 2, 60*time.Second) {
		seqs = append(seqs, kafkaHeader(m.Headers, "ce_sequence"))
	}
	if strings.Join(seqs, ",") != "1,2" {
		t.Fatalf("order-events through CDC: sequences %v, want 1,2", seqs)
	}
}
