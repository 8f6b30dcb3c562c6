package relay_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/sqlite"
)

// TestRelayBreaker injects produce faults with kfake (an in-process Kafka
// protocol implementation): while the broker answers NotLeaderForPartition
// the relay retries, its breaker opens, and nothing is dead-lettered; once
// the fault clears, the breaker closes and every event is published.
func TestRelayBreaker(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "widgets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	dir := t.TempDir()
	events, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	ledger, err := sqlite.OpenLedger(filepath.Join(dir, "relay.db"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	k, err := relay.NewKafka(relay.KafkaConfig{Brokers: cluster.ListenAddrs(), WriteTimeout: time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	reg := prometheus.NewRegistry()
	rl := relay.New(events, k, ledger, relay.Config{
		Topics:       relay.Topics{ByType: map[string]string{"Widget": "widgets"}},
		RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		BreakerFailures: 5, BreakerOpen: 200 * time.Millisecond, BreakerSuccesses: 3,
	}, zaptest.NewLogger(t), relay.NewMetrics(reg))
	r := &rig{t: t, events: events, seq: map[uuid.UUID]int64{}}

	heal := kafkatest.FailProduce(cluster, int16(kafka.NotLeaderForPartition))
	for range 10 {
		r.appendEvent(uuid.New(), 10)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rl.Serve(ctx, events) }()
	lag := func() int64 {
		l, err := events.Lag(context.Background(), relay.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		return l.Events
	}
	waitFor(t, "the breaker to open", func() bool { return rl.Breaker() == "open" })
	if n := lag(); n != 10 {
		t.Fatalf("the relay is %d events behind while every produce failed, want 10", n)
	}
	heal()
	waitFor(t, "the relay to catch up", func() bool { return lag() == 0 })
	// Half-open, the breaker closes after 3 successful publishes: the
	// backlog went out in one; three more events, one at a time, make up
	// the rest.
	for range 3 {
		r.appendEvent(uuid.New(), 10)
		waitFor(t, "the next event", func() bool { return lag() == 0 })
	}
	waitFor(t, "the breaker to close", func() bool { return rl.Breaker() == "closed" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := gauge(t, reg, "orderd_relay_breaker_transitions_total", "open"); n < 1 {
		t.Errorf("breaker opened %v times", n)
	}
	if n := gauge(t, reg, "orderd_relay_retries_total", ""); n < 5 {
		t.Errorf("%v retries, want at least the 5 that open the breaker", n)
	}
	if n := gauge(t, reg, "orderd_relay_published_total", ""); n != 13 {
		t.Errorf("%v published, want 13", n)
	}
	if letters, _ := ledger.List(context.Background(), 0, 10); len(letters) != 0 {
		t.Errorf("transient faults dead-lettered %d events", len(letters))
	}
}

// TestRelayStepDown: while every produce fails, Serve gives up with
// ErrCannotPublish once no publish has succeeded for Config.StepDown, and
// not before; nothing is dead-lettered and the events stay unpublished
// (the feed hands them to the next holder). A relay with nothing to
// publish never steps down, whatever Kafka does.
func TestRelayStepDown(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "widgets"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	dir := t.TempDir()
	events, err := sqlite.OpenStore(filepath.Join(dir, "events.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	ledger, err := sqlite.OpenLedger(filepath.Join(dir, "relay.db"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	k, err := relay.NewKafka(relay.KafkaConfig{Brokers: cluster.ListenAddrs(), WriteTimeout: time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	const stepDown = 500 * time.Millisecond
	rl := relay.New(events, k, ledger, relay.Config{
		Topics:       relay.Topics{ByType: map[string]string{"Widget": "widgets"}},
		RetryInitial: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		BreakerFailures: 5, BreakerOpen: 100 * time.Millisecond, BreakerSuccesses: 1,
		StepDown: stepDown,
	}, zaptest.NewLogger(t), relay.NewMetrics(nil))
	r := &rig{t: t, events: events, seq: map[uuid.UUID]int64{}}

	// Idle, with Kafka refusing: nothing to publish, no step-down.
	heal := kafkatest.FailProduce(cluster, int16(kafka.NotLeaderForPartition))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	began := time.Now()
	go func() { done <- rl.Serve(ctx, events) }()
	select {
	case err := <-done:
		t.Fatalf("an idle relay stopped after %v: %v", time.Since(began), err)
	case <-time.After(3 * stepDown):
	}

	// The relay's clock may start before Append returns (the feed hands a
	// commit to its consumers before the appender hears of it), never
	// before Append is called.
	appended := time.Now()
	r.appendEvent(uuid.New(), 10)
	var err2 error
	select {
	case err2 = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the relay did not step down within 30 s of failing publishes")
	}
	if !errors.Is(err2, relay.ErrCannotPublish) {
		t.Fatalf("Serve returned %v, want ErrCannotPublish", err2)
	}
	if took := time.Since(appended); took < stepDown {
		t.Errorf("the relay stepped down %v after its first publish, before its %v", took, stepDown)
	}
	if l, err := events.Lag(context.Background(), relay.Consumer); err != nil || l.Events != 1 {
		t.Errorf("lag after the step-down %+v (%v), want the event unpublished", l, err)
	}
	if letters, _ := ledger.List(context.Background(), 0, 10); len(letters) != 0 {
		t.Errorf("a step-down dead-lettered %d events", len(letters))
	}
	heal()
}
