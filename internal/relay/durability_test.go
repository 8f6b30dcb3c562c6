package relay_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
	"github.com/orderd/orderd/internal/sqlite"
)

func TestDefaultReplication(t *testing.T) {
	for _, c := range []struct{ brokers, replication, minInsync int }{
		{0, 1, 1}, {1, 1, 1}, {2, 2, 1}, {3, 3, 2}, {4, 3, 2}, {5, 3, 2}, {100, 3, 2},
	} {
		if r, m := relay.DefaultReplication(c.brokers); r != c.replication || m != c.minInsync {
			t.Errorf("DefaultReplication(%d) = %d, %d; want %d, %d", c.brokers, r, m, c.replication, c.minInsync)
		}
	}
}

// topicConfig reads one config of topic back from the broker, with whether
// it is the topic's own (set at creation or later) rather than a default.
func topicConfig(t *testing.T, brokers []string, topic, name string) (value string, own bool) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	res, err := c.DescribeConfigs(context.Background(), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{name}}}})
	if err != nil {
		t.Fatalf("describe %s: %v", topic, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			t.Fatalf("describe %s: %v", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue, e.ConfigSource == 1 // DYNAMIC_TOPIC_CONFIG
			}
		}
	}
	t.Fatalf("%s has no config %s", topic, name)
	return "", false
}

// replicas returns the replication factor of topic's first partition.
func replicas(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) == 0 {
		t.Fatalf("metadata of %s: %+v, %v", topic, md, err)
	}
	return len(md.Topics[0].Partitions[0].Replicas)
}

// TestKafkaTopicDurability: a topic orderd creates on the single test
// broker gets the default replication (1) and its own min.insync.replicas
// (1), not the broker's default; settings the cluster cannot hold are
// refused before anything is created.
func TestKafkaTopicDurability(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ctx := context.Background()
	topic := kafkatest.Name(t, brokers)
	if err := openKafka(t, brokers, nil).EnsureTopics(ctx, []string{topic}); err != nil {
		t.Fatal(err)
	}
	if v, own := topicConfig(t, brokers, topic, "min.insync.replicas"); v != "1" || !own {
		t.Errorf("min.insync.replicas = %s (the topic's own: %v), want 1 set by orderd", v, own)
	}
	if n := replicas(t, brokers, topic); n != 1 {
		t.Errorf("replication factor %d, want 1 (one broker)", n)
	}

	for _, c := range []struct {
		name string
		mod  func(*relay.KafkaConfig)
		want string
	}{
		{"more replicas than brokers", func(c *relay.KafkaConfig) { c.ReplicationFactor = 2 }, "replication factor 2 is more than the cluster's 1 brokers"},
		{"min insync above the default replication", func(c *relay.KafkaConfig) { c.MinInsyncReplicas = 2 }, "min.insync.replicas 2 is more than the replication factor 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name := kafkatest.Name(t, brokers)
			err := openKafka(t, brokers, c.mod).EnsureTopics(ctx, []string{name})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if topicExists(t, brokers, name) {
				t.Errorf("topic %s was created anyway", name)
			}
		})
	}
}

// topicExists reports whether the cluster knows topic.
func topicExists(t *testing.T, brokers []string, topic string) bool {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers...)}
	md, err := c.Metadata(context.Background(), &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	return len(md.Topics) == 1 && md.Topics[0].Error == nil
}

// TestKafkaTopicDurabilityDefaults creates topics on in-process clusters of
// 1, 3 and 5 brokers (kfake) and reads what orderd asked for off the
// CreateTopics request: the replication factor and min.insync.replicas of
// DefaultReplication, or the configured ones.
func TestKafkaTopicDurabilityDefaults(t *testing.T) {
	for _, c := range []struct {
		brokers, replication, minInsync int
		mod                             func(*relay.KafkaConfig)
	}{
		{1, 1, 1, nil}, {3, 3, 2, nil}, {5, 3, 2, nil},
		{5, 5, 4, func(c *relay.KafkaConfig) { c.ReplicationFactor = 5 }},
		{5, 5, 3, func(c *relay.KafkaConfig) { c.ReplicationFactor, c.MinInsyncReplicas = 5, 3 }},
		{3, 3, 3, func(c *relay.KafkaConfig) { c.MinInsyncReplicas = 3 }},
	} {
		t.Run(strconv.Itoa(c.brokers)+"brokers-rf"+strconv.Itoa(c.replication)+"-min"+strconv.Itoa(c.minInsync), func(t *testing.T) {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(c.brokers))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)
			var (
				mu  sync.Mutex
				got []kmsg.CreateTopicsRequestTopic
			)
			cluster.ControlKey(kmsg.CreateTopics.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
				cluster.KeepControl()
				mu.Lock()
				got = append(got, req.(*kmsg.CreateTopicsRequest).Topics...)
				mu.Unlock()
				return nil, nil, false // the cluster creates them
			})
			k := openKafka(t, cluster.ListenAddrs(), c.mod)
			if err := k.EnsureTopics(context.Background(), []string{"orders"}); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("CreateTopics topics: %+v", got)
			}
			var minInsync string
			for _, cfg := range got[0].Configs {
				if cfg.Name == "min.insync.replicas" && cfg.Value != nil {
					minInsync = *cfg.Value
				}
			}
			if int(got[0].ReplicationFactor) != c.replication || minInsync != strconv.Itoa(c.minInsync) {
				t.Errorf("created with replication %d, min.insync.replicas %q; want %d, %d",
					got[0].ReplicationFactor, minInsync, c.replication, c.minInsync)
			}
		})
	}
}

// TestKafkaProducesWithAcksAll reads the acks of every produce request off
// the wire (kfake, whose control hooks see the request as sent). The real
// single broker cannot tell: Kafka caps min.insync.replicas at a
// partition's replica count, so a one-replica topic takes acks=all writes
// whatever it says.
func TestKafkaProducesWithAcksAll(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	var (
		mu   sync.Mutex
		acks []int16
	)
	cluster.ControlKey(kmsg.Produce.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		mu.Lock()
		acks = append(acks, req.(*kmsg.ProduceRequest).Acks)
		mu.Unlock()
		return nil, nil, false
	})
	k := openKafka(t, cluster.ListenAddrs(), nil)
	for i := range 3 {
		if err := k.Publish(context.Background(), []relay.Message{{Topic: "orders", Key: []byte{byte(i)}, Value: []byte("v")}}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if len(acks) == 0 || slices.ContainsFunc(acks, func(a int16) bool { return a != -1 }) {
		t.Errorf("produce acks %v, want -1 (all) on every request", acks)
	}
	mu.Unlock()
}

// openPartitionLedger returns a fresh ledger on a temporary SQLite file.
func openPartitionLedger(t *testing.T) *sqlite.Ledger {
	t.Helper()
	l, err := sqlite.OpenLedger(filepath.Join(t.TempDir(), "relay.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}
