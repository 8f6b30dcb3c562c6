package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/segmentio/kafka-go"
	"go.uber.org/zap"
)

// ErrPartitionsChanged means that a topic's partition count differs from the
// one the relay recorded for it. Kafka keeps a key's records in order only
// on one partition, and a key's partition is its hash modulo the count:
// publishing on would put an aggregate's next events on another partition
// than its earlier ones, where consumers may read them first. The relay
// refuses to publish until an operator records the new count on purpose
// (the accept argument of GuardPartitions).
var ErrPartitionsChanged = errors.New("relay: a topic's partition count differs from the recorded one")

// PartitionRecord is where the relay keeps the partition count of each
// topic it publishes to. It is part of the Ledger, shared by every instance.
type PartitionRecord interface {
	// RecordPartitions records n (1 or more) as topic's partition count
	// unless a count is recorded already, and returns the count recorded
	// now: n, or the earlier one. Concurrent calls agree on one.
	RecordPartitions(ctx context.Context, topic string, n int) (int, error)

	// ReplacePartitions records n (1 or more) as topic's partition count in
	// place of the recorded one, if any.
	ReplacePartitions(ctx context.Context, topic string, n int) error
}

// partitionGuard holds the recorded partition count of each topic the
// relay publishes to, and the mismatches the writer met. Its balancer
// wraps the writer's: it sees the partition count of the writer's metadata
// for every message, so a change made while the relay runs is noticed at
// the next publish after the writer's metadata refresh (6 s at most).
type partitionGuard struct {
	mu       sync.Mutex
	expected map[string]int // topic -> recorded count; empty until GuardPartitions
	changed  map[string]int // topic -> the live count that differs
}

// TopicPartitions is a guarded topic's recorded partition count and the
// live count last seen, for metrics.
type TopicPartitions struct {
	Topic    string
	Recorded int
	Live     int // equal to Recorded unless it changed
}

// guardBalancer is the writer's balancer behind the guard. Where a topic
// has more partitions than recorded, it still hashes over the recorded
// ones, so that nothing lands on a new partition before Publish refuses.
type guardBalancer struct {
	guard *partitionGuard
	next  kafka.Balancer
}

func (b guardBalancer) Balance(msg kafka.Message, partitions ...int) int {
	if want := b.guard.saw(msg.Topic, len(partitions)); want > 0 && want < len(partitions) {
		partitions = partitions[:want]
	}
	return b.next.Balance(msg, partitions...)
}

// saw notes that topic has n partitions in the writer's metadata, and
// returns the recorded count (0 for a topic not guarded).
func (g *partitionGuard) saw(topic string, n int) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.expected[topic]
	if want > 0 && n != want {
		g.changed[topic] = n
	}
	return want
}

// err returns an error wrapping ErrPartitionsChanged that names the
// topics whose count changed, or nil.
func (g *partitionGuard) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.changed) == 0 {
		return nil
	}
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(g.changed)) {
		parts = append(parts, fmt.Sprintf("topic %s has %d partitions, %d recorded", t, g.changed[t], g.expected[t]))
	}
	return fmt.Errorf("%w: %s; per-key order would break, so the relay publishes nothing: "+
		"record the new count on purpose with ORDERD_KAFKA_ACCEPT_PARTITIONS=topic=n (see docs/operations.md)",
		ErrPartitionsChanged, strings.Join(parts, "; "))
}

// GuardPartitions compares the live partition count of each of topics
// with the one recorded in rec. A topic without a record gets its live
// count recorded (its first sight, usually right after EnsureTopics
// created it). A topic whose live count differs from the recorded one is
// refused, with an error wrapping ErrPartitionsChanged, unless accept maps
// it to exactly its live count: then that count replaces the record, since
// the operator says that the change was made on purpose. On success every
// later Publish checks the counts too, and fails with ErrPartitionsChanged
// once the writer sees another count; Partitions reports them.
func (k *Kafka) GuardPartitions(ctx context.Context, rec PartitionRecord, topics []string, accept map[string]int) error {
	live, err := k.livePartitions(ctx, topics)
	if err != nil {
		return err
	}
	expected := make(map[string]int, len(topics))
	changed := map[string]int{}
	for _, t := range topics {
		n := live[t]
		recorded, err := rec.RecordPartitions(ctx, t, n)
		if err != nil {
			return fmt.Errorf("relay: record the partitions of %s: %w", t, err)
		}
		if recorded != n && accept[t] == n {
			if err := rec.ReplacePartitions(ctx, t, n); err != nil {
				return fmt.Errorf("relay: record the partitions of %s: %w", t, err)
			}
			k.log.Warn("kafka topic's new partition count recorded, as ORDERD_KAFKA_ACCEPT_PARTITIONS says",
				zap.String("topic", t), zap.Int("was", recorded), zap.Int("partitions", n))
			recorded = n
		}
		expected[t] = recorded
		if recorded != n {
			changed[t] = n
		}
	}
	k.guard.mu.Lock()
	k.guard.expected, k.guard.changed = expected, changed
	k.guard.mu.Unlock()
	if err := k.guard.err(); err != nil {
		k.log.Error("refusing to publish", zap.Error(err))
		return err
	}
	return nil
}

// Partitions returns each guarded topic's recorded and live partition
// count, in topic order; none before GuardPartitions.
func (k *Kafka) Partitions() []TopicPartitions {
	k.guard.mu.Lock()
	defer k.guard.mu.Unlock()
	out := make([]TopicPartitions, 0, len(k.guard.expected))
	for _, t := range slices.Sorted(maps.Keys(k.guard.expected)) {
		live, ok := k.guard.changed[t]
		if !ok {
			live = k.guard.expected[t]
		}
		out = append(out, TopicPartitions{Topic: t, Recorded: k.guard.expected[t], Live: live})
	}
	return out
}

// livePartitions asks the cluster for the partition count of each of
// topics, which must exist.
func (k *Kafka) livePartitions(ctx context.Context, topics []string) (map[string]int, error) {
	c, done := k.freshClient()
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata of %v: %w", topics, err)
	}
	live := make(map[string]int, len(topics))
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("kafka: metadata of %s: %w", t.Name, t.Error)
		}
		live[t.Name] = len(t.Partitions)
	}
	for _, t := range topics {
		if live[t] == 0 {
			return nil, fmt.Errorf("kafka: topic %s: %w", t, kafka.UnknownTopicOrPartition)
		}
	}
	return live, nil
}
