package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gocql/gocql"
	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/worker"
)

// scyllaEnv is the environment of an orderd on the test's CQL node, in a
// keyspace of its own.
func scyllaEnv(t testing.TB) map[string]string {
	hosts := cqltest.Hosts(t)
	return map[string]string{
		"ORDERD_STORE":           "scylla",
		"ORDERD_SCYLLA_HOSTS":    strings.Join(hosts, ","),
		"ORDERD_SCYLLA_KEYSPACE": cqltest.Keyspace(t, hosts),
		// Every instance on the keyspace needs the same key-encryption
		// key; each would make its own in its data directory.
		"ORDERD_KEK": testKEK(t),
	}
}

// testKEK returns a new random key-encryption key, as ORDERD_KEK takes it.
func testKEK(t testing.TB) string {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(raw)
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
	if c := ready.Components["projector"]; c.Status != "up" || c.Role != worker.RoleActive || c.Active == "" {
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
// gives one on 127.0.0.1:9042). It checks what Cassandra cannot show:
//   - commands taken by one instance reach the read model on another and
//     Kafka through the CDC log, in order;
//   - a relay that starts after the events (its consumer new to the log)
//     publishes them all;
//   - a change the CDC reader cannot see, written with a timestamp behind
//     its confidence window (as a lightweight transaction completed late
//     by Paxos is) and with its row in the index of touched aggregates (as
//     every append writes before its transaction), is delivered by the
//     recent pass to the read model and to Kafka;
//   - one with no index row (written before the index existed) is
//     delivered by the full sweep (every 5 s here).
//
// Without ORDERD_TEST_SCYLLA it skips, in CI too.
func TestScyllaCDC(t *testing.T) {
	host := os.Getenv("ORDERD_TEST_SCYLLA")
	if host == "" {
		t.Skip("needs a real ScyllaDB: ORDERD_TEST_SCYLLA=127.0.0.1:9042 (docker compose up -d scylla)")
	}
	brokers := kafkatest.Brokers(t)
	keyspace := "orderd_cdc_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	env := kafkaEnv(t, brokers,
		"ORDERD_STORE", "scylla", "ORDERD_SCYLLA_HOSTS", host, "ORDERD_SCYLLA_KEYSPACE", keyspace,
		"ORDERD_READ_WAIT", "20s", "ORDERD_RECONCILE_INTERVAL", "3s", "ORDERD_SWEEP_INTERVAL", "5s", "ORDERD_LEASE_TTL", "3s")
	quiet := maps.Clone(env)
	delete(quiet, "ORDERD_KAFKA_BROKERS") // the first instance has no relay
	c := &cluster{t: t, env: quiet}
	a := c.start("node-a")
	c.active("projector", 30*time.Second)

	cust := a.svc.registerCustomer(t, "cdc@example.com")
	o := a.svc.createOrder(t, cust.ID)
	a.svc.do(t, "POST", "/v1/orders/"+o.ID.String()+"/confirm", nil, http.StatusOK)

	c.env = env
	started := time.Now()
	b := c.start("node-b")
	if got := b.svc.order(t, o.ID, 2); got.Status != "confirmed" || got.Version != 2 {
		t.Fatalf("read model through CDC, read on the other instance: %+v", got)
	}
	topic := env["ORDERD_KAFKA_TOPIC_PREFIX"] + "order-events"
	var seqs []string
	for _, m := range kafkatest.Consume(t, brokers, topic, 2, 60*time.Second) {
		seqs = append(seqs, kafkaHeader(m.Headers, "ce_sequence"))
	}
	if strings.Join(seqs, ",") != "1,2" {
		t.Fatalf("order-events through CDC: sequences %v, want 1,2", seqs)
	}
	t.Logf("a relay started after the events published them within %s", time.Since(started).Round(time.Millisecond))

	// Orders written an hour in the past: their CDC log rows land far
	// behind the reader's window, so only the reconciliation finds them:
	// the recent pass the one with an index row, the sweep the other.
	sess := scyllaSession(t, host, keyspace)
	late := lateOrder(t, sess, cust.ID, true)
	unindexed := lateOrder(t, sess, cust.ID, false)
	for _, id := range []uuid.UUID{late, unindexed} {
		if got := a.svc.order(t, id, 1); got.Status != "created" {
			t.Fatalf("the order the CDC reader cannot see: %+v", got)
		}
	}
	found := map[string]bool{}
	for _, m := range kafkatest.Consume(t, brokers, topic, 4, 60*time.Second) {
		found[string(m.Key)] = true
	}
	if !found[late.String()] || !found[unindexed.String()] {
		t.Fatalf("the orders the CDC reader cannot see are not both on Kafka: %v", found)
	}
}

// lateOrder writes an OrderCreated of customer an hour in the past, as
// orderd never would, and, if indexed, its row in the index of touched
// aggregates at the present minute, as Append writes it before its
// transaction (bucket: unix minutes; shard: the top 6 bits of the token).
func lateOrder(t *testing.T, sess *gocql.Session, customer uuid.UUID, indexed bool) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	at := time.Now().Add(-time.Hour)
	data := fmt.Sprintf(`{"customer_id":%q,"items":[{"product_id":%q,"quantity":1}],"created_at":%q}`,
		customer, uuid.NewString(), at.UTC().Format(time.RFC3339Nano))
	batch := sess.NewBatch(gocql.UnloggedBatch)
	batch.Query(`UPDATE events USING TIMESTAMP ? SET version = 1 WHERE aggregate_id = ?`, at.UnixMicro(), id)
	batch.Query(`INSERT INTO events (aggregate_id, sequence, event_id, aggregate_type, event_type, event_version,
		data, causation_id, correlation_id, timestamp) VALUES (?, 1, ?, 'Order', 'OrderCreated', 2, ?, ?, ?, ?) USING TIMESTAMP ?`,
		id, uuid.Must(uuid.NewV7()), data, uuid.New(), uuid.New(), at.UnixMilli(), at.UnixMicro())
	if err := sess.ExecuteBatch(batch); err != nil {
		t.Fatal(err)
	}
	if !indexed {
		return id
	}
	var tok int64
	if err := sess.Query(`SELECT token(aggregate_id) FROM events WHERE aggregate_id = ? LIMIT 1`, id).Scan(&tok); err != nil {
		t.Fatal(err)
	}
	shard := int((uint64(tok) ^ 1<<63) >> 58)
	if err := sess.Query(`INSERT INTO feed_touched (bucket, shard, aggregate_id) VALUES (?, ?, ?)`,
		time.Now().Unix()/60, shard, id).Exec(); err != nil {
		t.Fatal(err)
	}
	return id
}

// scyllaSession is a plain driver session on keyspace, for writing what
// orderd never would.
func scyllaSession(t *testing.T, host, keyspace string) *gocql.Session {
	cl := gocql.NewCluster(host)
	cl.Keyspace = keyspace
	cl.Timeout = 10 * time.Second
	sess, err := cl.CreateSession()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The instances have stopped by now (cleanups run last first).
		_ = sess.Query(`DROP KEYSPACE IF EXISTS ` + keyspace).Exec()
		sess.Close()
	})
	return sess
}

// TestScyllaIdempotencyRestart: on CQL, where instances share the keys, an
// instance killed (SIGKILL) with a keyed command in flight and restarted
// under the same name settles the key's record at once: the record is
// what the kill left (pending, just changed, owned by a boot of this
// instance before the restart) and the retry answers what the command
// answered, from its events, without running it again. A record pending
// for another instance whose events are not there is a live attempt as
// far as this one knows: 409.
func TestScyllaIdempotencyRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	env := scyllaEnv(t)
	env["ORDERD_INSTANCE_ID"] = "orderd-a"
	dir := t.TempDir()
	p := startProcess(t, dir, env)
	s := p.client(t, dir)
	cust := s.registerCustomer(t, "cql-kill9-keys@example.com")
	req := orderRequest(uuid.New(), cust.ID)
	first := s.keyedCall(t, "POST", "/v1/orders", "cql-kill-9", req)
	otherReq := orderRequest(uuid.New(), cust.ID)
	other := s.keyedCall(t, "POST", "/v1/orders", "cql-other-instance", otherReq)
	if first.Status != http.StatusCreated || other.Status != http.StatusCreated {
		t.Fatalf("first: %d %s; %d %s", first.Status, first.Body, other.Status, other.Body)
	}
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	sess := scyllaSession(t, cqltest.Hosts(t)[0], env["ORDERD_SCYLLA_KEYSPACE"])
	// A command whose events are its answer leaves its record pending;
	// these writes make it just changed, by a boot of each instance. The
	// other instance's is moved to an aggregate without its events: an
	// attempt that has not committed yet, as far as this one can tell.
	for key, instance := range map[string]string{"cql-kill-9": "orderd-a", "cql-other-instance": "orderd-b"} {
		agg := gocql.UUID(req["id"].(uuid.UUID))
		if key == "cql-other-instance" {
			agg = gocql.TimeUUID()
		}
		if err := sess.Query(`UPDATE idempotency_keys SET state = 'pending', status = null, header = null, body = null,
			updated_at = ?, instance = ?, boot = ?, aggregate_id = ? WHERE key = ?`, time.Now(), instance, gocql.TimeUUID(), agg, key).Exec(); err != nil {
			t.Fatal(err)
		}
	}

	p2 := startProcess(t, dir, env)
	s2 := p2.client(t, dir)
	start := time.Now()
	sameAnswer(t, first, s2.keyedCall(t, "POST", "/v1/orders", "cql-kill-9", req))
	if took := time.Since(start); took > time.Second {
		t.Errorf("the retry took %v: it waited for the dead attempt", took)
	}
	if n := len(s2.events(t, "orders", req["id"].(uuid.UUID))); n != 1 {
		t.Fatalf("%d events of the order, want 1: the command ran again", n)
	}
	if r := s2.keyedCall(t, "POST", "/v1/orders", "cql-other-instance", otherReq); r.Status != http.StatusConflict || r.problem(t).Code != "idempotency_key_in_flight" {
		t.Fatalf("a key pending for another instance: %d %s, want 409 idempotency_key_in_flight", r.Status, r.Body)
	}
}
