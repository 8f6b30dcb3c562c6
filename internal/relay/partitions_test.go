package relay_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// publishOne publishes one message keyed key to topic.
func publishOne(k *relay.Kafka, topic, key string) error {
	return k.Publish(context.Background(), []relay.Message{{Topic: topic, Key: []byte(key), Value: []byte(key)}})
}

// TestKafkaPartitionGuard: the partition count of a topic orderd created
// is recorded at first sight; once partitions are added behind orderd's
// back, a starting relay refuses the topic, a running one refuses to
// publish as soon as its writer sees the new count (without having put a
// message on a new partition), and an operator's explicit acceptance of
// the new count records it.
func TestKafkaPartitionGuard(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ctx := context.Background()
	ledger := openPartitionLedger(t)
	topic := kafkatest.Name(t, brokers)
	running := openKafka(t, brokers, func(c *relay.KafkaConfig) { c.Partitions = 3 })
	if err := running.EnsureTopics(ctx, []string{topic}); err != nil {
		t.Fatal(err)
	}
	if err := running.GuardPartitions(ctx, ledger, []string{topic}, nil); err != nil {
		t.Fatalf("first sight: %v", err)
	}
	if n, err := ledger.RecordPartitions(ctx, topic, 99); err != nil || n != 3 {
		t.Fatalf("recorded %d partitions (%v), want 3", n, err)
	}
	if got := running.Partitions(); !slices.Equal(got, []relay.TopicPartitions{{Topic: topic, Recorded: 3, Live: 3}}) {
		t.Errorf("Partitions() = %+v", got)
	}
	if err := publishOne(running, topic, "before"); err != nil {
		t.Fatal(err)
	}

	kafkatest.AddPartitions(t, brokers, topic, 5)

	// A relay starting now (a fresh client) refuses the topic.
	starting := openKafka(t, brokers, nil)
	err := starting.GuardPartitions(ctx, ledger, []string{topic}, nil)
	if !errors.Is(err, relay.ErrPartitionsChanged) || !strings.Contains(err.Error(), "has 5 partitions, 3 recorded") ||
		!strings.Contains(err.Error(), "ORDERD_KAFKA_ACCEPT_PARTITIONS") {
		t.Fatalf("start after partitions were added: %v, want ErrPartitionsChanged naming 5 and 3", err)
	}
	if err := publishOne(starting, topic, "refused"); !errors.Is(err, relay.ErrPartitionsChanged) {
		t.Errorf("publish after a refused start: %v, want ErrPartitionsChanged", err)
	}
	if got := starting.Partitions(); !slices.Equal(got, []relay.TopicPartitions{{Topic: topic, Recorded: 3, Live: 5}}) {
		t.Errorf("Partitions() = %+v, want 3 recorded, 5 live", got)
	}
	// Accepting another count than the live one changes nothing.
	if err := starting.GuardPartitions(ctx, ledger, []string{topic}, map[string]int{topic: 4}); !errors.Is(err, relay.ErrPartitionsChanged) {
		t.Errorf("accepting 4 of 5: %v, want ErrPartitionsChanged", err)
	}

	// The running relay refuses once its writer's metadata (6 s at most
	// old) shows the new count; what it wrote meanwhile, and the call that
	// noticed, went to the recorded partitions.
	deadline := time.Now().Add(20 * time.Second)
	sent := 0
	for {
		err := publishOne(running, topic, "k"+string(rune('a'+sent%26))+time.Now().Format("150405.000"))
		if errors.Is(err, relay.ErrPartitionsChanged) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent++
		if time.Now().After(deadline) {
			t.Fatal("the running relay still publishes 20 s after partitions were added")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := publishOne(running, topic, "after"); !errors.Is(err, relay.ErrPartitionsChanged) {
		t.Errorf("publish after the change was seen: %v, want ErrPartitionsChanged", err)
	}
	ends := kafkatest.EndOffsets(t, brokers, topic)
	if ends[3] != 0 || ends[4] != 0 {
		t.Errorf("messages on the new partitions: %v", ends)
	}
	t.Logf("%d publishes before the running relay saw the change", sent)

	// The operator accepts the new count on purpose.
	accepting := openKafka(t, brokers, nil)
	if err := accepting.GuardPartitions(ctx, ledger, []string{topic}, map[string]int{topic: 5}); err != nil {
		t.Fatalf("accepting 5: %v", err)
	}
	if n, _ := ledger.RecordPartitions(ctx, topic, 3); n != 5 {
		t.Errorf("recorded %d after the acceptance, want 5", n)
	}
	if err := publishOne(accepting, topic, "accepted"); err != nil {
		t.Errorf("publish after the acceptance: %v", err)
	}
	// Leaving the setting in place is harmless: the next start agrees.
	if err := openKafka(t, brokers, nil).GuardPartitions(ctx, ledger, []string{topic}, map[string]int{topic: 5}); err != nil {
		t.Errorf("restart with the acceptance left set: %v", err)
	}
}

// TestKafkaPartitionGuardMissingTopic: the guard runs after EnsureTopics;
// a topic that is not there is an error, not a record of 0.
func TestKafkaPartitionGuardMissingTopic(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ledger := openPartitionLedger(t)
	topic := kafkatest.Name(t, brokers)
	err := openKafka(t, brokers, nil).GuardPartitions(context.Background(), ledger, []string{topic}, nil)
	if err == nil || errors.Is(err, relay.ErrPartitionsChanged) {
		t.Fatalf("guard of a missing topic: %v", err)
	}
	if n, _ := ledger.RecordPartitions(context.Background(), topic, 7); n != 7 {
		t.Errorf("a count was recorded for the missing topic: %d", n)
	}
}

// TestRelayStopsWhenPartitionsChange: a relay serving the feed stops with
// ErrPartitionsChanged, its last batch unacknowledged, once partitions are
// added to its topic; nothing reached the new partition, and every event
// published is on its aggregate's recorded partition, in order.
func TestRelayStopsWhenPartitionsChange(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if err := r.kafka.GuardPartitions(ctx, r.ledger, []string{r.topic}, nil); err != nil {
		t.Fatal(err)
	}
	ids := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	want := map[uuid.UUID]int64{}
	for _, id := range ids {
		r.appendEvent(id, 10)
		want[id]++
	}
	kafkatest.AddPartitions(t, r.brokers, r.topic, 4)

	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.relay.Serve(sctx, r.events) }()
	var err error
	for stopped := false; !stopped; {
		select {
		case err = <-done:
			stopped = true
		case <-time.After(100 * time.Millisecond):
			id := ids[len(want)%len(ids)]
			r.appendEvent(id, 10)
			want[id]++
		}
	}
	if !errors.Is(err, relay.ErrPartitionsChanged) {
		t.Fatalf("Serve: %v, want ErrPartitionsChanged", err)
	}
	if lag, err := r.events.Lag(ctx, relay.Consumer); err != nil || lag.Events == 0 {
		t.Errorf("lag after the refusal: %+v, %v; want the refused batch still to publish", lag, err)
	}
	if ends := kafkatest.EndOffsets(t, r.brokers, r.topic); ends[3] != 0 {
		t.Errorf("%d records on the new partition", ends[3])
	}
	for _, m := range r.consumeAll() {
		if p := javaPartition(m.Key, 3); m.Partition != p {
			t.Errorf("key %s on partition %d, recorded layout puts it on %d", m.Key, m.Partition, p)
		}
	}
}
