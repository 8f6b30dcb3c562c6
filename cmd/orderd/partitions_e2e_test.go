package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// TestRelayPartitionsChanged: orderd records the partition count of the
// topics it creates; after partitions are added to one behind its back, a
// restarted orderd keeps accepting commands but publishes nothing, and says
// why in /readyz and /metrics; restarted with the new count accepted, it
// publishes the backlog.
func TestRelayPartitionsChanged(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	dir := t.TempDir()
	env := kafkaEnv(t, brokers)
	orders := env["ORDERD_KAFKA_TOPIC_PREFIX"] + "order-events"
	series := `orderd_relay_topic_partitions_changed{topic="` + orders + `"}`

	s1 := start(t, dir, env)
	cust := s1.registerCustomer(t, "partitions@example.com")
	s1.createOrder(t, cust.ID)
	if m := s1.waitRelayed(t, 60*time.Second); m[series] != 0 {
		t.Fatalf("%s = %v before any change, want 0", series, m[series])
	}
	if err := s1.stop(); err != nil {
		t.Fatal(err)
	}

	kafkatest.AddPartitions(t, brokers, orders, 5)
	before := kafkatest.EndOffsets(t, brokers, orders)

	s2 := start(t, dir, env)
	s2.createOrder(t, cust.ID) // accepted: the outbox keeps it
	var ready struct {
		Status     string
		Components map[string]struct{ Status, Detail string }
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s2.do(t, "GET", "/readyz", nil, http.StatusOK).json(t, &ready)
		if r := ready.Components["relay"]; r.Status == "degraded" && strings.Contains(r.Detail, "has 5 partitions, 3 recorded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after partitions were added: %+v", ready)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ready.Status != "ready" {
		t.Errorf("the refusal made the service unready: %+v", ready)
	}
	m := s2.metrics(t)
	if m[series] != 1 {
		t.Errorf("%s = %v while refused, want 1", series, m[series])
	}
	if lag := m[`orderd_feed_lag_events{consumer="relay"}`]; lag != 1 {
		t.Errorf("relay lag %v, want the new order's event waiting", lag)
	}
	if after := kafkatest.EndOffsets(t, brokers, orders); after[0]+after[1]+after[2]+after[3]+after[4] != before[0]+before[1]+before[2] {
		t.Errorf("records published while refused: %v, before %v", after, before)
	}
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}

	env["ORDERD_KAFKA_ACCEPT_PARTITIONS"] = orders + "=5"
	s3 := start(t, dir, env)
	if m := s3.waitRelayed(t, 60*time.Second); m[series] != 0 {
		t.Errorf("%s = %v after the new count was accepted, want 0", series, m[series])
	}
}
