package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap/zaptest"

	"github.com/orderd/orderd/internal/relay"
	"github.com/orderd/orderd/internal/relay/kafkatest"
)

// openKafka returns a Kafka on brokers, closed when the test ends; mod, if
// not nil, adjusts the config first.
func openKafka(t testing.TB, brokers []string, mod func(*relay.KafkaConfig)) *relay.Kafka {
	t.Helper()
	cfg := relay.KafkaConfig{Brokers: brokers, ClientID: "orderd-test", WriteTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	k, err := relay.NewKafka(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k
}

// javaPartition is the partition the Java client's default partitioner
// picks for a keyed record, computed by franz-go: an implementation
// independent of kafka-go's.
func javaPartition(key []byte, partitions int) int {
	return kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: key}, partitions)
}

func TestJavaPartitionMatchesKafkaPython(t *testing.T) {
	// Vectors of kafka-python's Java-compatible murmur2 partitioner, 1000
	// partitions: they pin the oracle the other tests trust.
	for key, want := range map[string]int{"": 681, "a": 524, "ab": 434, "abc": 107} {
		if got := javaPartition([]byte(key), 1000); got != want {
			t.Errorf("javaPartition(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestKafkaPublishKeepsOrderPerKey(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.Topic(t, brokers, 3)
	k := openKafka(t, brokers, nil)

	keys := []string{"3f0c1d2e-order-a", "9b1e4a77-order-b", "c2d4e6f8-order-c"}
	t0 := time.Now().Truncate(time.Millisecond) // Kafka keeps milliseconds
	var msgs []relay.Message
	for i := range 20 { // interleaved, as the relay sends them
		for _, key := range keys {
			msgs = append(msgs, relay.Message{
				Topic: topic,
				Key:   []byte(key),
				Value: fmt.Appendf(nil, `{"key":%q,"seq":%d}`, key, i),
				Headers: []relay.Header{
					{Key: "ce_sequence", Value: []byte(strconv.Itoa(i))},
					{Key: "ce_type", Value: []byte("OrderPlaced")},
					{Key: "empty", Value: []byte{}},
				},
				Time: t0.Add(time.Duration(i) * time.Millisecond),
			})
		}
	}
	if err := k.Publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}

	got := kafkatest.Consume(t, brokers, topic, len(msgs), 20*time.Second)
	if len(got) != len(msgs) {
		t.Fatalf("consumed %d messages, want %d", len(got), len(msgs))
	}
	byKey := map[string][]kafka.Message{} // in partition order, then offset order
	for _, m := range got {
		byKey[string(m.Key)] = append(byKey[string(m.Key)], m)
	}
	for _, key := range keys {
		var want []relay.Message
		for _, m := range msgs {
			if string(m.Key) == key {
				want = append(want, m)
			}
		}
		gotKey := byKey[key]
		if len(gotKey) != len(want) {
			t.Fatalf("key %s: %d messages, want %d", key, len(gotKey), len(want))
		}
		wantPartition := javaPartition([]byte(key), 3)
		for i, m := range gotKey {
			if m.Partition != wantPartition {
				t.Errorf("key %s on partition %d, want %d (Java's murmur2)", key, m.Partition, wantPartition)
			}
			if !bytes.Equal(m.Value, want[i].Value) {
				t.Errorf("key %s #%d: value %s, want %s", key, i, m.Value, want[i].Value)
			}
			if !m.Time.Equal(want[i].Time) {
				t.Errorf("key %s #%d: time %v, want %v", key, i, m.Time, want[i].Time)
			}
			if len(m.Headers) != len(want[i].Headers) {
				t.Fatalf("key %s #%d: %d headers, want %d", key, i, len(m.Headers), len(want[i].Headers))
			}
			for j, h := range m.Headers {
				if w := want[i].Headers[j]; h.Key != w.Key || !bytes.Equal(h.Value, w.Value) {
					t.Errorf("key %s #%d: header %s=%q, want %s=%q", key, i, h.Key, h.Value, w.Key, w.Value)
				}
			}
		}
	}
}

func TestKafkaEnsureTopics(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	k := openKafka(t, brokers, func(c *relay.KafkaConfig) { c.Partitions = 4 })
	ctx := context.Background()
	existing := kafkatest.Topic(t, brokers, 2)
	a, b := kafkatest.Name(t, brokers), kafkatest.Name(t, brokers)

	if err := k.EnsureTopics(ctx, []string{a, existing}); err != nil {
		t.Fatal(err)
	}
	// Again, with one more: already existing topics are no error.
	if err := k.EnsureTopics(ctx, []string{a, b, existing}); err != nil {
		t.Fatalf("second EnsureTopics: %v", err)
	}
	for topic, want := range map[string]int{a: 4, b: 4, existing: 2} {
		if got := kafkatest.Partitions(t, brokers, topic); len(got) != want {
			t.Errorf("%s: %d partitions, want %d", topic, len(got), want)
		}
	}
	// The publisher knows the new topics at once: no UnknownTopicOrPartition
	// while its metadata cache catches up.
	if err := k.Publish(ctx, []relay.Message{{Topic: b, Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatalf("publish right after EnsureTopics: %v", err)
	}

	bad := openKafka(t, brokers, func(c *relay.KafkaConfig) { c.ReplicationFactor = 3 }) // one broker
	if err := bad.EnsureTopics(ctx, []string{kafkatest.Name(t, brokers)}); !errors.Is(err, kafka.InvalidReplicationFactor) {
		t.Errorf("replication factor 3 on one broker: err = %v, want InvalidReplicationFactor", err)
	}
}

// keysAround returns n keys of other aggregates on the partition of big
// and n on other partitions, so a test knows which share big's batch.
func keysAround(big []byte, partitions, n int) (same, other [][]byte) {
	p := javaPartition(big, partitions)
	for i := 0; len(same) < n || len(other) < n; i++ {
		key := fmt.Appendf(nil, "aggregate-%d", i)
		switch {
		case javaPartition(key, partitions) == p && len(same) < n:
			same = append(same, key)
		case javaPartition(key, partitions) != p && len(other) < n:
			other = append(other, key)
		}
	}
	return same, other
}

func TestKafkaMessageTooLargeIsPermanent(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	maxBytes := kafka.ConfigEntry{ConfigName: "max.message.bytes", ConfigValue: "10240"}
	big := relay.Message{Key: []byte("big-order"), Value: bytes.Repeat([]byte("x"), 20<<10)}
	small := func(topic string, key []byte) relay.Message {
		return relay.Message{Topic: topic, Key: key, Value: []byte(`{"small":true}`)}
	}

	t.Run("alone", func(t *testing.T) {
		topic := kafkatest.Topic(t, brokers, 3, maxBytes)
		big.Topic = topic
		err := openKafka(t, brokers, nil).Publish(context.Background(), []relay.Message{big})
		if !errors.Is(err, relay.ErrPermanent) || !errors.Is(err, kafka.MessageSizeTooLarge) {
			t.Fatalf("err = %v, want ErrPermanent and MessageSizeTooLarge", err)
		}
		if pe := (*relay.PublishError)(nil); !errors.As(err, &pe) || !slices.Equal(pe.Permanent, []int{0}) {
			t.Errorf("err = %#v, want a PublishError naming message 0", err)
		}
	})

	// The broker refuses the record batch of big's partition as a whole:
	// small messages sharing it fail with big and are listed as permanent
	// too; those on other partitions are written.
	t.Run("with small messages of other aggregates", func(t *testing.T) {
		topic := kafkatest.Topic(t, brokers, 3, maxBytes)
		same, other := keysAround(big.Key, 3, 2)
		big.Topic = topic
		msgs := []relay.Message{small(topic, same[0]), small(topic, other[0]), big, small(topic, same[1]), small(topic, other[1])}
		err := openKafka(t, brokers, nil).Publish(context.Background(), msgs)
		var pe *relay.PublishError
		if !errors.Is(err, relay.ErrPermanent) || !errors.As(err, &pe) {
			t.Fatalf("err = %v, want a PublishError wrapping ErrPermanent", err)
		}
		if want := []int{0, 2, 3}; !slices.Equal(pe.Permanent, want) || !slices.Equal(pe.Failed, want) {
			t.Errorf("Permanent = %v, Failed = %v, want both %v (big's partition batch)", pe.Permanent, pe.Failed, want)
		}
		ends := kafkatest.EndOffsets(t, brokers, topic)
		for p, n := range ends {
			want := int64(0)
			for _, m := range []relay.Message{msgs[1], msgs[4]} {
				if javaPartition(m.Key, 3) == p {
					want++
				}
			}
			if n != want {
				t.Errorf("partition %d holds %d records, want %d", p, n, want)
			}
		}
	})

	// Bigger than BatchBytes: kafka-go refuses it before sending anything.
	t.Run("over BatchBytes", func(t *testing.T) {
		topic := kafkatest.Topic(t, brokers, 3)
		big.Topic = topic
		k := openKafka(t, brokers, func(c *relay.KafkaConfig) { c.BatchBytes = 4 << 10 })
		msgs := []relay.Message{small(topic, []byte("a")), big, small(topic, []byte("b"))}
		err := k.Publish(context.Background(), msgs)
		var pe *relay.PublishError
		if !errors.Is(err, relay.ErrPermanent) || !errors.As(err, &pe) {
			t.Fatalf("err = %v, want a PublishError wrapping ErrPermanent", err)
		}
		if !slices.Equal(pe.Permanent, []int{1}) || !slices.Equal(pe.Failed, []int{0, 1, 2}) {
			t.Errorf("Permanent = %v, Failed = %v, want [1] and all", pe.Permanent, pe.Failed)
		}
		for p, n := range kafkatest.EndOffsets(t, brokers, topic) {
			if n != 0 {
				t.Errorf("partition %d holds %d records, want none", p, n)
			}
		}
	})
}

func TestKafkaTransientErrors(t *testing.T) {
	msgs := func(topic string) []relay.Message {
		return []relay.Message{{Topic: topic, Key: []byte("k"), Value: []byte("v")}}
	}
	// A listener that accepts connections and never answers.
	hung := mustListen(t)
	go func() {
		var conns []net.Conn
		for {
			c, err := hung.Accept()
			if err != nil { // closed at cleanup
				for _, c := range conns {
					_ = c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()

	for name, addr := range map[string]string{"broker down": "127.0.0.1:1", "broker hangs": hung.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			k := openKafka(t, []string{addr}, func(c *relay.KafkaConfig) { c.WriteTimeout = time.Second })
			start := time.Now()
			err := k.Publish(context.Background(), msgs("orders"))
			if err == nil || errors.Is(err, relay.ErrPermanent) {
				t.Fatalf("err = %v, want a transient error", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("failed after %s, want within the 1s write timeout", d)
			}
		})
	}
	t.Run("unknown topic", func(t *testing.T) {
		brokers := kafkatest.Brokers(t)
		err := openKafka(t, brokers, nil).Publish(context.Background(), msgs(kafkatest.Name(t, brokers)))
		if errors.Is(err, relay.ErrPermanent) || !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Fatalf("err = %v, want a transient UnknownTopicOrPartition", err)
		}
	})
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// kafka-go caches a failed metadata fetch until its next refresh (up to 6
// s), so publishes recover that long after the broker does.
func TestKafkaRecoversWhenBrokerReturns(t *testing.T) {
	ln := mustListen(t)
	addr := ln.Addr().(*net.TCPAddr)
	_ = ln.Close() // nothing listens there now
	k := openKafka(t, []string{addr.String()}, func(c *relay.KafkaConfig) { c.WriteTimeout = time.Second })
	msgs := []relay.Message{{Topic: "orders", Key: []byte("order-1"), Value: []byte("{}")}}
	if err := k.Publish(context.Background(), msgs); err == nil || errors.Is(err, relay.ErrPermanent) {
		t.Fatalf("broker down: err = %v, want a transient error", err)
	}

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(addr.Port), kfake.SeedTopics(3, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	start := time.Now()
	for err = k.Publish(context.Background(), msgs); err != nil; err = k.Publish(context.Background(), msgs) {
		if errors.Is(err, relay.ErrPermanent) || time.Since(start) > 15*time.Second {
			t.Fatalf("broker back for %s: %v", time.Since(start), err)
		}
		time.Sleep(100 * time.Millisecond) // the relay's backoff
	}
	t.Logf("recovered %s after the broker came back", time.Since(start))
}

// TestKafkaProduceErrorClasses injects produce errors with kfake, an
// in-process implementation of the Kafka protocol.
func TestKafkaProduceErrorClasses(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	k := openKafka(t, cluster.ListenAddrs(), nil)
	ctx := context.Background()
	msgs := []relay.Message{
		{Topic: "orders", Key: []byte("order-1"), Value: []byte(`{"n":1}`)},
		{Topic: "orders", Key: []byte("order-2"), Value: []byte(`{"n":2}`)},
		{Topic: "orders", Key: []byte("order-3"), Value: []byte(`{"n":3}`)},
	}
	if err := k.Publish(ctx, msgs); err != nil {
		t.Fatalf("publish to kfake: %v", err)
	}

	for _, tc := range []struct {
		code      kafka.Error
		permanent bool
	}{
		{kafka.NotLeaderForPartition, false},
		{kafka.LeaderNotAvailable, false},
		{kafka.RequestTimedOut, false},
		{kafka.NotEnoughReplicas, false},
		{kafka.InvalidMessage, false}, // CORRUPT_MESSAGE: a CRC error in transit
		{kafka.TopicAuthorizationFailed, false},
		{kafka.InvalidRecord, true},
		{kafka.MessageSizeTooLarge, true},
		{kafka.RecordListTooLarge, true},
		{kafka.InvalidTimestamp, false}, // a clock or topic setting: fix the setup, keep the events
	} {
		t.Run(tc.code.Title(), func(t *testing.T) {
			heal := kafkatest.FailProduce(cluster, int16(tc.code))
			err := k.Publish(ctx, msgs)
			if !errors.Is(err, tc.code) {
				t.Fatalf("err = %v, want %v", err, tc.code)
			}
			if got := errors.Is(err, relay.ErrPermanent); got != tc.permanent {
				t.Errorf("permanent = %v, want %v: %v", got, tc.permanent, err)
			}
			if pe := (*relay.PublishError)(nil); tc.permanent && (!errors.As(err, &pe) || len(pe.Permanent) != len(msgs)) {
				t.Errorf("err = %#v, want a PublishError naming all %d messages", err, len(msgs))
			}
			heal()
			if err := k.Publish(ctx, msgs); err != nil {
				t.Errorf("publish once the fault cleared: %v", err)
			}
		})
	}
}

// BenchmarkKafkaPublish publishes batches of 500 messages of ~300 bytes,
// the relay's default batch, to a 3-partition topic on the real broker, at
// several BatchTimeouts: the relay publishes one batch at a time, so the
// time a batch waits for more messages is pure latency.
func BenchmarkKafkaPublish(b *testing.B) {
	brokers := kafkatest.Brokers(b)
	value := bytes.Repeat([]byte("v"), 300)
	for _, linger := range []time.Duration{100 * time.Microsecond, 2 * time.Millisecond} { // the default; 2 ms for comparison
		b.Run("BatchTimeout="+linger.String(), func(b *testing.B) {
			topic := kafkatest.Topic(b, brokers, 3)
			k := openKafka(b, brokers, func(c *relay.KafkaConfig) { c.BatchTimeout = linger })
			msgs := make([]relay.Message, 500)
			for i := range msgs {
				msgs[i] = relay.Message{
					Topic: topic, Key: fmt.Appendf(nil, "aggregate-%d", i), Value: value,
					Headers: []relay.Header{{Key: "ce_type", Value: []byte("OrderPlaced")}},
				}
			}
			ctx := context.Background()
			b.SetBytes(int64(len(msgs) * len(value)))
			for b.Loop() {
				if err := k.Publish(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
