package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/store/cqltest"
	"github.com/orderd/orderd/internal/worker"
)

// TestRelayStepDownE2E: two instances on one Cassandra keyspace, the first
// holding the relay's lease with a Kafka of its own (a broker the test
// starts on KAFKA_PORT+10002), the second with the shared broker. The
// first's broker stops: once its relay has published nothing for
// ORDERD_RELAY_STEP_DOWN (3 s here), it gives its lease up and stands
// aside, the second takes the lease and publishes what the first could
// not, and the first stays ready and keeps accepting commands throughout,
// its relay "degraded" in /readyz and orderd_worker_up 0.
func TestRelayStepDownE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a Kafka broker of its own")
	}
	hosts := cqltest.Hosts(t)
	shared := kafkatest.Brokers(t)
	own, stopOwn, _ := ownBrokerAt(t, 10002)
	keyspace := cqltest.Keyspace(t, hosts)
	prefix := "t" + strings.ReplaceAll(uuid.NewString()[:8], "-", "") + "-"
	kek := testKEK(t) // the two instances share one key-encryption key
	env := func(instance, broker string) map[string]string {
		return map[string]string{
			"ORDERD_KEK":   kek,
			"ORDERD_STORE": "scylla", "ORDERD_SCYLLA_HOSTS": strings.Join(hosts, ","),
			"ORDERD_SCYLLA_KEYSPACE": keyspace, "ORDERD_INSTANCE_ID": instance,
			"ORDERD_LEASE_TTL": "1s", "ORDERD_RELAY_STEP_DOWN": "3s",
			// A 1 s TTL renews every lease three times a second: 8 shards,
			// not 64, keep that within what one shared node serves.
			"ORDERD_SHARDS":        "8",
			"ORDERD_KAFKA_BROKERS": broker, "ORDERD_KAFKA_TOPIC_PREFIX": prefix,
			"ORDERD_RETRY_MAX": "500ms", "ORDERD_BREAKER_OPEN": "1s",
			// The new holder's hint polls start at its takeover: what
			// was hinted before is the reconciliation pass's to deliver,
			// and a short interval keeps the test short.
			"ORDERD_RECONCILE_INTERVAL": "3s",
		}
	}
	a := start(t, "", env("cut", own))
	relayOf := func(s *service) (int, readyzBody) {
		r := s.call(t, "GET", "/readyz", nil, nil, true)
		var body readyzBody
		r.json(t, &body)
		return r.Status, body
	}
	waitUntil(t, "the first instance runs the relay", func() bool {
		_, body := relayOf(a)
		return body.Components["relay"].Role == worker.RoleActive
	})
	b := start(t, "", env("reaching", shared[0]))
	cust := a.registerCustomer(t, "stepdown@example.com")
	before := a.createOrder(t, cust.ID)
	a.waitRelayed(t, 60*time.Second)

	stopOwn()
	stopped := time.Now()
	// Commands keep being accepted on the cut instance; its relay cannot
	// publish them.
	var after []uuid.UUID
	for range 5 {
		after = append(after, a.createOrder(t, cust.ID).ID)
	}
	var took time.Duration
	// Split into shards, the second instance held some of the relay since
	// it joined: it takes the relay when it holds every shard.
	waitUntil(t, "the second instance takes the relay", func() bool {
		_, body := relayOf(b)
		if c := body.Components["relay"]; c.Role == worker.RoleActive && len(c.held()) == c.shards() {
			took = time.Since(stopped)
			return true
		}
		return false
	})
	status, body := relayOf(a)
	if status != http.StatusOK || body.Status != "ready" {
		t.Errorf("the cut instance's /readyz: %d %+v; want 200 ready", status, body)
	}
	if c := body.Components["relay"]; c.Role != worker.RoleStandby || c.Status != "degraded" || !strings.Contains(c.Detail, "stepping down") {
		t.Errorf("the cut instance's relay in /readyz: %+v; want a degraded standby that stepped down", c)
	}
	if m := a.metrics(t); m[`orderd_worker_up{worker="relay"}`] != 0 || m[`orderd_worker_active{worker="relay"}`] != 0 {
		t.Errorf("the cut instance's relay series: up %v, active %v; want 0 and 0",
			m[`orderd_worker_up{worker="relay"}`], m[`orderd_worker_active{worker="relay"}`])
	}
	after = append(after, a.createOrder(t, cust.ID).ID)

	// What the cut instance accepted reaches the shared broker.
	var missing []uuid.UUID
	deadline := time.Now().Add(90 * time.Second)
	for {
		seen := map[string]bool{}
		for _, m := range consumeAll(t, shared, prefix+"order-events") {
			seen[string(m.Key)] = true
		}
		missing = missing[:0]
		for _, id := range after {
			if !seen[id.String()] {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	delivered := time.Since(stopped)
	if len(missing) > 0 {
		t.Errorf("%d of the %d orders created after the cut are not on the reachable broker's topic after 90 s: %v", len(missing), len(after), missing)
	}
	t.Logf("the relay moved to the instance that reaches Kafka %v after the first's broker stopped (step-down 3 s, lease TTL 1 s), and every order created since was on its topic %v after the stop; order %s before the cut went to the first's broker",
		took.Round(time.Millisecond), delivered.Round(time.Millisecond), before.ID)
}
